//! Float weights (F32, F16, BF16) x f32 activations, 16 values per 512-bit register, in the two
//! orders of the float types (`kernels::types::float`), so the bits equal the AVX2 path's.
//! Row-major: one register of lane sums per output, the canonical sixteen lanes. Repacked 16
//! rows at a time: one register per group and element, times a broadcast activation.

// Register tiles are indexed in lockstep (acc[r][c], wv[r], x[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use std::ops::Range;

use super::super::avx2::{float_packed_gemm, float_tile, hsum, value_bytes, BF16, F16, F32};
use super::super::walk::{for_each_group_run, prefetch_record, row_major_gemm, Prefetch};
use super::store_group;
use crate::kernels::blocks::QK;
use crate::kernels::matmul::QWeight;
use crate::kernels::packed::GROUP;
use crate::kernels::prepared::{OutPtr, Prepared};
use crate::kernels::types::{BlockBF16, BlockF16, BlockF32};

/// Sixteen values of type `T` at `p`, widened exactly to f32.
///
/// # Safety
/// AVX-512 F present; 16 values readable at `p`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn widen16<const T: u8>(p: *const u8) -> __m512 {
    // SAFETY: the caller's contract.
    unsafe {
        match T {
            F32 => _mm512_loadu_ps(p.cast()),
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())),
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(p.cast()),
            ))),
        }
    }
}

/// An `R x C` tile of float weight rows from `w` (rows of `nb` blocks of type `T`) against
/// activation rows `c0..c0 + C`.
///
/// # Safety
/// AVX-512 F present; the rows and activation rows exist; `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let x: [*const f32; C] = std::array::from_fn(|c| a.floats(c0 + c).as_ptr());
    for e in (0..k).step_by(16) {
        if e % QK == 0 {
            for r in 0..R {
                // A block is 128 bytes of f32 or 64 of f16/bf16.
                prefetch_record(w.wrapping_add((r * k + e) * vb), pf, vb / 2);
            }
        }
        // SAFETY: values `e..e + 16` of each row exist (`k` is a multiple of 32).
        let wv: [__m512; R] =
            std::array::from_fn(|r| unsafe { widen16::<T>(w.add((r * k + e) * vb)) });
        for c in 0..C {
            // SAFETY: as above, for the activation row.
            let xv = unsafe { _mm512_loadu_ps(x[c].add(e)) };
            for r in 0..R {
                acc[r][c] = _mm512_fmadd_ps(wv[r], xv, acc[r][c]);
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            let v = acc[r][c];
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
            let v = hsum(_mm256_add_ps(_mm512_castps512_ps256(v), high));
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, v) };
        }
    }
}

float_tile!(tile_f32, "avx512f,avx2,fma,f16c", tile_float, BlockF32, F32);
float_tile!(tile_f16, "avx512f,avx2,fma,f16c", tile_float, BlockF16, F16);
float_tile!(
    tile_bf16,
    "avx512f,avx2,fma,f16c",
    tile_float,
    BlockBF16,
    BF16
);

// 4 x 4 tiles: sixteen accumulators, four widened weight registers and one activation register.
row_major_gemm!(gemm_f32, "avx512f,avx2,fma,f16c", BlockF32, tile_f32, 4 x 4);
row_major_gemm!(gemm_f16, "avx512f,avx2,fma,f16c", BlockF16, tile_f16, 4 x 4);
row_major_gemm!(gemm_bf16, "avx512f,avx2,fma,f16c", BlockBF16, tile_bf16, 4 x 4);

/// A run of `G` groups x `C` activation rows of a float matrix repacked 16 rows at a time, the
/// whole row: per element, each group's 16 values widened, one broadcast activation per row,
/// `G C` FMA chains.
///
/// # Safety
/// AVX-512 F present; `w` is packed, of type `T`, with groups `g0..g0 + G`, `k` values per row;
/// the activation rows exist; `rows` (starting on group `g0`) and `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
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
    let mut acc = [[_mm512_setzero_ps(); C]; G];
    for e in 0..k {
        // SAFETY: element `e` of every group holds 16 values.
        let wv: [__m512; G] =
            std::array::from_fn(|j| unsafe { widen16::<T>(base[j].add(e * GROUP * vb)) });
        for c in 0..C {
            // SAFETY: activation rows hold `k` values.
            let xv = _mm512_set1_ps(unsafe { *x[c].add(e) });
            for j in 0..G {
                acc[j][c] = _mm512_fmadd_ps(wv[j], xv, acc[j][c]);
            }
        }
    }
    for (j, acc) in acc.iter().enumerate() {
        let r0 = (g0 + j) * GROUP;
        let end = rows.end.min(r0 + GROUP);
        if r0 < end {
            // SAFETY: the caller's contract.
            unsafe { store_group(acc, c0, r0..end, out) };
        }
    }
}

/// The 16-row gemm of float type `T`: runs of four groups for one or two activation rows
/// (independent chains to cover the FMA latency), else two groups x up to twelve rows
/// (twenty-four accumulators: each widened weight register serves twelve FMAs, so the weights'
/// loads and widening cost less per FMA; 13% faster than six rows at SmolLM2's shapes).
///
/// # Safety
/// See `GemmFn`: `w` is packed, of float type `T`; `a` holds f32 activations.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn gemm_packed_float<const T: u8>(
    w: &QWeight<'_>,
    a: &Prepared,
    rows: Range<usize>,
    out: OutPtr,
) {
    let k = a.nb * QK;
    let run = |n: usize| if n <= 2 { 4 } else { 2 };
    for_each_group_run(rows.clone(), a.m, run, 12, |g, ng, c0, nc| {
        // SAFETY: the walk stays inside the matrix's groups and `0..m`; the caller's contract.
        unsafe {
            match (ng, nc) {
                (4, 1) => packed_tile::<T, 4, 1>(w, g, k, a, c0, &rows, out),
                (4, _) => packed_tile::<T, 4, 2>(w, g, k, a, c0, &rows, out),
                (2, 1) => packed_tile::<T, 2, 1>(w, g, k, a, c0, &rows, out),
                (2, 2) => packed_tile::<T, 2, 2>(w, g, k, a, c0, &rows, out),
                (2, 3) => packed_tile::<T, 2, 3>(w, g, k, a, c0, &rows, out),
                (2, 4) => packed_tile::<T, 2, 4>(w, g, k, a, c0, &rows, out),
                (2, 5) => packed_tile::<T, 2, 5>(w, g, k, a, c0, &rows, out),
                (2, 6) => packed_tile::<T, 2, 6>(w, g, k, a, c0, &rows, out),
                (2, 7) => packed_tile::<T, 2, 7>(w, g, k, a, c0, &rows, out),
                (2, 8) => packed_tile::<T, 2, 8>(w, g, k, a, c0, &rows, out),
                (2, 9) => packed_tile::<T, 2, 9>(w, g, k, a, c0, &rows, out),
                (2, 10) => packed_tile::<T, 2, 10>(w, g, k, a, c0, &rows, out),
                (2, 11) => packed_tile::<T, 2, 11>(w, g, k, a, c0, &rows, out),
                (2, _) => packed_tile::<T, 2, 12>(w, g, k, a, c0, &rows, out),
                (_, 1) => packed_tile::<T, 1, 1>(w, g, k, a, c0, &rows, out),
                (_, 2) => packed_tile::<T, 1, 2>(w, g, k, a, c0, &rows, out),
                (_, 3) => packed_tile::<T, 1, 3>(w, g, k, a, c0, &rows, out),
                (_, 4) => packed_tile::<T, 1, 4>(w, g, k, a, c0, &rows, out),
                (_, 5) => packed_tile::<T, 1, 5>(w, g, k, a, c0, &rows, out),
                (_, 6) => packed_tile::<T, 1, 6>(w, g, k, a, c0, &rows, out),
                (_, 7) => packed_tile::<T, 1, 7>(w, g, k, a, c0, &rows, out),
                (_, 8) => packed_tile::<T, 1, 8>(w, g, k, a, c0, &rows, out),
                (_, 9) => packed_tile::<T, 1, 9>(w, g, k, a, c0, &rows, out),
                (_, 10) => packed_tile::<T, 1, 10>(w, g, k, a, c0, &rows, out),
                (_, 11) => packed_tile::<T, 1, 11>(w, g, k, a, c0, &rows, out),
                _ => packed_tile::<T, 1, 12>(w, g, k, a, c0, &rows, out),
            }
        }
    });
}

float_packed_gemm!(gemm_f32x16, "avx512f,avx2,fma,f16c", gemm_packed_float, F32);
float_packed_gemm!(gemm_f16x16, "avx512f,avx2,fma,f16c", gemm_packed_float, F16);
float_packed_gemm!(
    gemm_bf16x16,
    "avx512f,avx2,fma,f16c",
    gemm_packed_float,
    BF16
);
