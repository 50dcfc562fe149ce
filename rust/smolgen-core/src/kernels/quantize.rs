//! Activation quantization: f32 rows to Q8_1 (the partner of weight types with an offset: Q4_1,
//! Q5_1, Q4_K, Q5_K) and Q8_0 (the partner of the symmetric ones: Q4_0, Q5_0, Q8_0, Q6_K). (Weights are quantized by each type's reference, in
//! [`super::types`].)
//!
//! The arithmetic is ggml's x86 SIMD path (`quantize_row_q8_1` / `quantize_row_q8_0` under
//! AVX2), reproduced bit for bit, and the scalar code here follows the same steps so that every
//! path gives identical bytes:
//!
//! * `amax = max |x|` over the 32 values;
//! * `d = amax / 127` (f32 division), stored as f16 with round-to-nearest-even;
//! * `id = 127 / amax`, or 0 when `amax == 0`;
//! * `q = round_half_to_even(x * id)` (the SIMD path's `_MM_ROUND_NEAREST`; ggml's *scalar*
//!   reference uses `roundf`, half away from zero, so it can differ from this on exact ties),
//!   converted to i32 with x86 `cvtps2dq` semantics (NaN or out of range gives `i32::MIN`) and
//!   narrowed to i8 with saturation;
//! * Q8_1 only: `s = f16(d * (sum of the i32 q, as f32))`, using the unrounded f32 `d`.
//!
//! For finite inputs `|q| <= 127`. NaN or infinite inputs give unspecified (but memory-safe)
//! blocks.

use half::f16;

use super::blocks::QK;
use super::types::{BlockQ8_0, BlockQ8_1};

/// x86 `cvtps2dq` on an already-rounded value: NaN and out-of-range become `i32::MIN`.
#[inline(always)]
fn cvt_i32(v: f32) -> i32 {
    if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    }
}

#[inline(always)]
fn sat_i8(v: i32) -> i8 {
    v.clamp(i8::MIN as i32, i8::MAX as i32) as i8
}

/// Scale and codes of one block; `sum` is the wrapping i32 sum of the codes before narrowing.
#[inline(always)]
fn quantize_block(x: &[f32]) -> (f32, [i8; QK], i32) {
    let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        let i = cvt_i32((v * id).round_ties_even());
        sum = sum.wrapping_add(i);
        *q = sat_i8(i);
    }
    (d, qs, sum)
}

/// Scalar Q8_1 quantization. `x.len() == out.len() * 32` (checked by the caller).
pub(crate) fn quantize_q8_1_scalar(x: &[f32], out: &mut [BlockQ8_1]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs, sum) = quantize_block(xs);
        *blk = BlockQ8_1::new(f16::from_f32(d), f16::from_f32(d * sum as f32), qs);
    }
}

/// Scalar Q8_0 quantization. `x.len() == out.len() * 32` (checked by the caller).
pub(crate) fn quantize_q8_0_scalar(x: &[f32], out: &mut [BlockQ8_0]) {
    for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let (d, qs, _) = quantize_block(xs);
        *blk = BlockQ8_0::new(f16::from_f32(d), qs);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::blocks::QK;
    use super::super::types::{BlockQ8_0, BlockQ8_1};

    /// One block: f32 `d`, the 32 codes as i8 (stored to `qs`) and the i32 sum of the codes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const f32, qs: *mut i8) -> (f32, i32) {
        // SAFETY (whole body): the caller guarantees 32 readable f32 at `x` and 32 writable
        // bytes at `qs`; every load and store here is unaligned.
        let (v0, v1, v2, v3) = unsafe {
            (
                _mm256_loadu_ps(x),
                _mm256_loadu_ps(x.add(8)),
                _mm256_loadu_ps(x.add(16)),
                _mm256_loadu_ps(x.add(24)),
            )
        };
        let sign = _mm256_set1_ps(-0.0);
        let mut amax = _mm256_andnot_ps(sign, v0);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v1));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v2));
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v3));
        let mut m4 = _mm_max_ps(
            _mm256_extractf128_ps::<1>(amax),
            _mm256_castps256_ps128(amax),
        );
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v0, mul)));
        let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v1, mul)));
        let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v2, mul)));
        let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v3, mul)));
        let s8 = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(s8),
            _mm256_extracti128_si256::<1>(s8),
        );
        let s2 = _mm_add_epi32(s4, _mm_unpackhi_epi64(s4, s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
        let sum = _mm_cvtsi128_si32(s1);
        // Saturating narrows work within 128-bit lanes; the permute restores element order.
        let p01 = _mm256_packs_epi32(i0, i1);
        let p23 = _mm256_packs_epi32(i2, i3);
        let p = _mm256_packs_epi16(p01, p23);
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: see above.
        unsafe { _mm256_storeu_si256(qs.cast(), p) };
        (d, sum)
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x.len() == out.len() * 32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn quantize_q8_1_avx2(x: &[f32], out: &mut [BlockQ8_1]) {
        for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
            // SAFETY: `xs` has 32 values, `blk.qs` 32 bytes.
            let (d, sum) = unsafe { block(xs.as_ptr(), blk.qs.as_mut_ptr()) };
            blk.d = f16::from_f32(d).to_bits().to_le_bytes();
            blk.s = f16::from_f32(d * sum as f32).to_bits().to_le_bytes();
        }
    }

    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `x.len() == out.len() * 32`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn quantize_q8_0_avx2(x: &[f32], out: &mut [BlockQ8_0]) {
        for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
            // SAFETY: `xs` has 32 values, `blk.qs` 32 bytes.
            let (d, _) = unsafe { block(xs.as_ptr(), blk.qs.as_mut_ptr()) };
            blk.d = f16::from_f32(d).to_bits().to_le_bytes();
        }
    }
}
