//! Float weights (F32, F16, BF16) x f32 activations, 8 values per 256-bit register, in the two
//! orders of the float types (`kernels::types::float`). Row-major: each output keeps two
//! registers of lane sums, the canonical sixteen lanes, folded the same way at the end. Repacked
//! 16 rows at a time: each group as two 8-row halves, one register per half and element, times
//! a broadcast activation: one FMA chain per output, as on AVX-512.

// Register tiles are indexed in lockstep (acc[r][c], wv[r], x[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use std::ops::Range;

use super::super::walk::{for_each_group_run, prefetch_record, row_major_gemm, Prefetch};
use super::{hsum, store_half};
use crate::kernels::blocks::QK;
use crate::kernels::matmul::QWeight;
use crate::kernels::packed::GROUP;
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
    pf: Prefetch,
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
            pf: Prefetch,
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

/// A run of `G` groups x `C` activation rows of a float matrix repacked 16 rows at a time, the
/// whole row: per element, each group's two 8-row halves widened, one broadcast activation per
/// row, `2 G C` FMA chains.
///
/// # Safety
/// AVX2 + FMA + F16C present; `w` is packed, of type `T`, with groups `g0..g0 + G`, `k` values
/// per row; the activation rows exist; `rows` (starting on group `g0`) and `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn packed_tile<const T: u8, const G: usize, const C: usize>(
    w: &QWeight<'_>,
    g0: usize,
    k: usize,
    a: &Prepared,
    c0: usize,
    rows: &Range<usize>,
    out: OutPtr,
) {
    let vb = value_bytes::<T>();
    let base: [*const u8; G] = std::array::from_fn(|j| w.group(g0 + j).cast::<u8>());
    let x: [*const f32; C] = std::array::from_fn(|c| a.floats(c0 + c).as_ptr());
    let mut acc = [[[_mm256_setzero_ps(); C]; 2]; G];
    for e in 0..k {
        let at = e * GROUP * vb;
        // SAFETY: element `e` of every group holds 16 values.
        let wv: [[__m256; 2]; G] = std::array::from_fn(|j| {
            std::array::from_fn(|h| unsafe { widen8::<T>(base[j].add(at + 8 * h * vb)) })
        });
        for c in 0..C {
            // SAFETY: activation rows hold `k` values.
            let xv = _mm256_broadcast_ss(unsafe { &*x[c].add(e) });
            for j in 0..G {
                for h in 0..2 {
                    acc[j][h][c] = _mm256_fmadd_ps(wv[j][h], xv, acc[j][h][c]);
                }
            }
        }
    }
    for j in 0..G {
        for h in 0..2 {
            let r0 = (g0 + j) * GROUP + 8 * h;
            let end = rows.end.min(r0 + 8);
            if r0 < end {
                // SAFETY: the caller's contract.
                unsafe { store_half(&acc[j][h], c0, r0..end, out) };
            }
        }
    }
}

/// The 16-row gemm of float type `T`: runs of two groups for one or two activation rows (four
/// independent chains per element), else one group x up to six rows (twelve accumulators).
///
/// # Safety
/// See `GemmFn`: `w` is packed, of float type `T`; `a` holds f32 activations.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_packed_float<const T: u8>(
    w: &QWeight<'_>,
    a: &Prepared,
    rows: Range<usize>,
    out: OutPtr,
) {
    let k = a.nb * QK;
    let run = |n: usize| if n <= 2 { 2 } else { 1 };
    for_each_group_run(rows.clone(), a.m, run, 6, |g, ng, c0, nc| {
        // SAFETY: the walk stays inside the matrix's groups and `0..m`; the caller's contract.
        unsafe {
            match (ng, nc) {
                (2, 1) => packed_tile::<T, 2, 1>(w, g, k, a, c0, &rows, out),
                (2, _) => packed_tile::<T, 2, 2>(w, g, k, a, c0, &rows, out),
                (_, 1) => packed_tile::<T, 1, 1>(w, g, k, a, c0, &rows, out),
                (_, 2) => packed_tile::<T, 1, 2>(w, g, k, a, c0, &rows, out),
                (_, 3) => packed_tile::<T, 1, 3>(w, g, k, a, c0, &rows, out),
                (_, 4) => packed_tile::<T, 1, 4>(w, g, k, a, c0, &rows, out),
                (_, 5) => packed_tile::<T, 1, 5>(w, g, k, a, c0, &rows, out),
                _ => packed_tile::<T, 1, 6>(w, g, k, a, c0, &rows, out),
            }
        }
    });
}

/// Defines the `GemmFn` `$name`, `$gemm::<$t>` compiled for `$features`.
macro_rules! float_packed_gemm {
    ($name:ident, $features:literal, $gemm:ident, $t:expr) => {
        /// # Safety
        /// See `GemmFn`: `w` is packed, of this float type; `a` holds f32 activations.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(w: &QWeight<'_>, a: &Prepared, rows: Range<usize>, out: OutPtr) {
            // SAFETY: the caller's contract.
            unsafe { $gemm::<{ $t }>(w, a, rows, out) }
        }
    };
}
pub(in crate::kernels::x86) use float_packed_gemm;

float_packed_gemm!(gemm_f32x16, "avx2,fma,f16c", gemm_packed_float, F32);
float_packed_gemm!(gemm_f16x16, "avx2,fma,f16c", gemm_packed_float, F16);
float_packed_gemm!(gemm_bf16x16, "avx2,fma,f16c", gemm_packed_float, BF16);
