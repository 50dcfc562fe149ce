//! Float weights (F32, F16, BF16) x f32 activations, 8 values per 256-bit register: each
//! output keeps two registers of lane sums, the canonical sixteen lanes of
//! [`crate::kernels::types`]' float order, folded the same way at the end.

// Register tiles are indexed in lockstep (acc[r][c], wv[r], x[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::super::walk::{prefetch_record, row_major_gemm};
use super::hsum;
use crate::kernels::blocks::QK;
use crate::kernels::prepared::{OutPtr, Prepared};
use crate::kernels::types::{BlockBF16, BlockF16, BlockF32};

/// The float types, as a tile's const parameter.
pub(in crate::kernels::x86) const F32: u8 = 0;
pub(in crate::kernels::x86) const F16: u8 = 1;
pub(in crate::kernels::x86) const BF16: u8 = 2;

/// Bytes per value of float type `T`.
pub(in crate::kernels::x86) const fn value_bytes<const T: u8>() -> usize {
    if T == F32 {
        4
    } else {
        2
    }
}

/// Eight values of type `T` at `p`, widened exactly to f32.
///
/// # Safety
/// AVX2 + F16C present; 8 values readable at `p`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen8<const T: u8>(p: *const u8) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        match T {
            F32 => _mm256_loadu_ps(p.cast()),
            F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _ => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(p.cast()),
            ))),
        }
    }
}

/// An `R x C` tile of float weight rows from `w` (rows of `nb` blocks of type `T`) against
/// activation rows `c0..c0 + C`.
///
/// # Safety
/// AVX2 + FMA + F16C present; the rows and activation rows exist; `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_float<const T: u8, const R: usize, const C: usize>(
    w: *const u8,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: usize,
) {
    let (k, vb) = (nb * QK, value_bytes::<T>());
    let mut acc = [[[_mm256_setzero_ps(); 2]; C]; R];
    let x: [*const f32; C] = std::array::from_fn(|c| a.floats(c0 + c).as_ptr());
    for e in (0..k).step_by(16) {
        for r in 0..R {
            if e % QK == 0 {
                // A block is 128 bytes of f32 or 64 of f16/bf16.
                prefetch_record(w.wrapping_add((r * k + e) * vb), pf, vb / 2);
            }
        }
        for h in 0..2 {
            // SAFETY: values `e + 8h .. e + 8h + 8` of each row exist (`k` is a multiple of 32).
            let wv: [__m256; R] =
                std::array::from_fn(|r| unsafe { widen8::<T>(w.add((r * k + e + 8 * h) * vb)) });
            for c in 0..C {
                // SAFETY: as above, for the activation row.
                let xv = unsafe { _mm256_loadu_ps(x[c].add(e + 8 * h)) };
                for r in 0..R {
                    acc[r][c][h] = _mm256_fmadd_ps(wv[r], xv, acc[r][c][h]);
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let v = hsum(_mm256_add_ps(acc[r][c][0], acc[r][c][1]));
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, v) };
        }
    }
}

/// Defines `$name::<R, C>`, `$tile::<$t, R, C>` (compiled for `$features`) for weights of
/// the block type `$block`, the shape `row_major_gemm!` calls.
macro_rules! float_tile {
    ($name:ident, $features:literal, $tile:ident, $block:ty, $t:expr) => {
        /// # Safety
        /// As the generic tile's.
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const R: usize, const C: usize>(
            w: *const $block,
            nb: usize,
            a: &Prepared,
            c0: usize,
            r0: usize,
            out: OutPtr,
            pf: usize,
        ) {
            // SAFETY: the caller's contract.
            unsafe { $tile::<{ $t }, R, C>(w.cast(), nb, a, c0, r0, out, pf) }
        }
    };
}
pub(in crate::kernels::x86) use float_tile;

float_tile!(tile_f32, "avx2,fma,f16c", tile_float, BlockF32, F32);
float_tile!(tile_f16, "avx2,fma,f16c", tile_float, BlockF16, F16);
float_tile!(tile_bf16, "avx2,fma,f16c", tile_float, BlockBF16, BF16);

// 3 x 2 tiles: twelve accumulators, three widened weight registers and one activation register.
row_major_gemm!(gemm_f32, "avx2,fma,f16c", BlockF32, tile_f32, 3 x 2);
row_major_gemm!(gemm_f16, "avx2,fma,f16c", BlockF16, tile_f16, 3 x 2);
row_major_gemm!(gemm_bf16, "avx2,fma,f16c", BlockBF16, tile_bf16, 3 x 2);
