//! x86-64 AVX2 + FMA + F16C micro-kernels, one 32-element block per step.
//!
//! Q4_1 x Q8_1: nibbles unpack to bytes 0..15, `vpmaddubsw` (u8 x i8 -> i16 pairs, at most
//! 2 * 15 * 127, no saturation) then `vpmaddwd` by 1 to i32, converted to f32 and scaled by
//! `d_w * d_a`; the offset term `m_w * s_a` rides in lane 1 of the same accumulator.
//! Q8_0 x Q8_0: the usual sign trick (`|w|` times `a` with `w`'s sign), which needs activation
//! codes in -127..=127.

// Register tiles are indexed in lockstep (acc[r][c], wq[r], qa[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use std::ops::Range;

use super::blocks::{BlockQ4_1, BlockQ8_0, QMatrix};
use super::matmul::{for_each_weight_tile, OutPtr, Prepared};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Rows `r0..r0+R` (first block at `w`, `nb` blocks per row) against activation rows
/// `c0..c0+C`.
///
/// # Safety
/// AVX2/FMA/F16C present; the rows and activation rows exist; `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_1<const R: usize, const C: usize>(
    w: *const BlockQ4_1,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: usize,
) {
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    let sa: [*const f32; C] = std::array::from_fn(|c| a.s(c0 + c).as_ptr());
    for b in 0..nb {
        let mut wq = [_mm256_setzero_si256(); R];
        let mut dm = [_mm256_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: block `b` of row `r0 + r` exists; a block is 20 bytes: d, m, 16 of qs.
            unsafe {
                let blk = w.add(r * nb + b).cast::<u8>();
                if pf != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(pf).cast());
                }
                let raw = _mm_loadu_si128(blk.add(4).cast());
                wq[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), mask);
                // [d, m, 0, ...] as f32.
                dm[r] = _mm256_cvtph_ps(_mm_cvtsi32_si128(blk.cast::<i32>().read_unaligned()));
            }
        }
        for c in 0..C {
            // SAFETY: prepared rows hold `nbp >= nb` blocks; code lines are 64-byte aligned,
            // so block `b` is 32-byte aligned; `s` holds `[0, s]` per block.
            let (av, dav, sv) = unsafe {
                (
                    _mm256_load_si256(qa[c].add(b * 32).cast()),
                    _mm256_broadcast_ss(&*da[c].add(b)),
                    _mm256_zextps128_ps256(_mm_castpd_ps(_mm_load_sd(sa[c].add(2 * b).cast()))),
                )
            };
            for r in 0..R {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], av), ones);
                let dw = _mm256_broadcastss_ps(_mm256_castps256_ps128(dm[r]));
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw, dav), acc[r][c]);
                acc[r][c] = _mm256_fmadd_ps(dm[r], sv, acc[r][c]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, hsum(*v)) };
        }
    }
}

/// # Safety
/// As [`tile_q4_1`]; activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8_0<const R: usize, const C: usize>(
    w: *const BlockQ8_0,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: usize,
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        let mut wabs = [_mm256_setzero_si256(); R];
        let mut dw = [_mm256_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: block `b` of row `r0 + r` exists; a block is 34 bytes: d, 32 of qs.
            unsafe {
                let blk = w.add(r * nb + b).cast::<u8>();
                if pf != 0 {
                    _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(pf).cast());
                }
                wv[r] = _mm256_loadu_si256(blk.add(2).cast());
                let d = blk.cast::<u16>().read_unaligned();
                dw[r] = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d as i32)));
            }
            wabs[r] = _mm256_abs_epi8(wv[r]);
        }
        for c in 0..C {
            // SAFETY: as in `tile_q4_1`.
            let (av, dav) = unsafe {
                (
                    _mm256_load_si256(qa[c].add(b * 32).cast()),
                    _mm256_broadcast_ss(&*da[c].add(b)),
                )
            };
            for r in 0..R {
                let p = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(av, wv[r])),
                    ones,
                );
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[r], dav), acc[r][c]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, hsum(*v)) };
        }
    }
}

/// # Safety
/// See `GemmFn`; natural layout.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q4_1(
    w: &QMatrix<'_, BlockQ4_1>,
    a: &Prepared,
    rows: Range<usize>,
    out: OutPtr,
) {
    let nb = a.nb;
    let base = w.blocks().as_ptr();
    let row_bytes = nb * std::mem::size_of::<BlockQ4_1>();
    for_each_weight_tile::<4, 2>(rows, a.m, row_bytes, |r0, nr, c0, nc, pf| {
        // SAFETY: the walk stays inside `rows` x `0..m`; the caller's contract.
        unsafe {
            crate::dispatch_tile!(tile_q4_1, nr, nc, base.add(r0 * nb), nb, a, c0, r0, out, pf)
        }
    });
}

/// # Safety
/// See `GemmFn`; natural layout; activation codes in -127..=127.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_q8_0(
    w: &QMatrix<'_, BlockQ8_0>,
    a: &Prepared,
    rows: Range<usize>,
    out: OutPtr,
) {
    let nb = a.nb;
    let base = w.blocks().as_ptr();
    let row_bytes = nb * std::mem::size_of::<BlockQ8_0>();
    for_each_weight_tile::<4, 2>(rows, a.m, row_bytes, |r0, nr, c0, nc, pf| {
        // SAFETY: the walk stays inside `rows` x `0..m`; the caller's contract.
        unsafe {
            crate::dispatch_tile!(tile_q8_0, nr, nc, base.add(r0 * nb), nb, a, c0, r0, out, pf)
        }
    });
}
