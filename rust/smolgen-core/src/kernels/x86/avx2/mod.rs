//! x86-64 AVX2 + FMA + F16C micro-kernels: row-major tiles, one 32-element block per step
//! ([`row_major`]), and the 16-row layout's, each group as two halves of 8 rows, one 256-bit
//! register per 4 codes of 8 rows ([`packed`]).
//!
//! Q4_1 x Q8_1: nibbles unpack to bytes 0..15, `vpmaddubsw` (u8 x i8 -> i16 pairs, at most
//! 2 * 15 * 127, no saturation) then `vpmaddwd` by 1 to i32, converted to f32 and scaled by
//! `d_w * d_a`; the offset term `m_w * s_a` rides in lane 1 of the same accumulator.
//! Q8_0 x Q8_0: the usual sign trick (`|w|` times `a` with `w`'s sign), which needs activation
//! codes in -127..=127.
//! Float weights (F32, F16, BF16) x f32 activations: [`float`].

use std::arch::x86_64::*;

mod float;
mod packed;
mod row_major;

pub(crate) use float::*;
pub(crate) use packed::*;
pub(crate) use row_major::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 32 codes of 16 bytes of nibbles at `p`: low nibbles (elements 0..16), then high ones.
///
/// # Safety
/// AVX2 present; 16 bytes readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    let raw = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw),
        _mm256_set1_epi8(0x0F),
    )
}

/// The 32 bits of the little-endian u32 at `p` as bytes: byte `j` is all ones where bit `j` is
/// set, else zero (each byte takes its bit's source byte, sets every other bit, and compares
/// with all ones).
///
/// # Safety
/// AVX2 present; 4 bytes readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bits_as_bytes(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    let word = unsafe { p.cast::<i32>().read_unaligned() };
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(word),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let others = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}
