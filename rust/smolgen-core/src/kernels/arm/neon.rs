//! aarch64 Advanced SIMD kernels: the integer block dot in NEON (`smull` to i16, pairwise
//! accumulate to i32), the float part exactly as the scalar reference, so results are
//! bit-identical to it. One weight row x one activation row at a time; no `sdot` yet.

use std::arch::aarch64::*;

use crate::kernels::blocks::f16_to_f32;
use crate::kernels::blocks::QK;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::types::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};

/// The dot of a block's 32 codes, as two 16-byte vectors (elements 0..16 and 16..32, each
/// -128..=127), with the activation codes at `qa`.
///
/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_codes(lo: int8x16_t, hi: int8x16_t, qa: *const i8) -> i32 {
    // SAFETY: the caller's contract on `qa`.
    unsafe {
        let a0 = vld1q_s8(qa);
        let a1 = vld1q_s8(qa.add(16));
        let mut acc = vpaddlq_s16(vmull_s8(vget_low_s8(lo), vget_low_s8(a0)));
        acc = vpadalq_s16(acc, vmull_high_s8(lo, a0));
        acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(hi), vget_low_s8(a1)));
        acc = vpadalq_s16(acc, vmull_high_s8(hi, a1));
        vaddvq_s32(acc)
    }
}

/// A block's 16 bytes of nibbles as two 16-byte vectors of codes (elements 0..16, 16..32).
///
/// # Safety
/// NEON present.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles(qs: &[u8; 16]) -> (int8x16_t, int8x16_t) {
    // SAFETY: `qs` is 16 bytes.
    let raw = unsafe { vld1q_u8(qs.as_ptr()) };
    (
        vreinterpretq_s8_u8(vandq_u8(raw, vdupq_n_u8(0x0F))),
        vreinterpretq_s8_u8(vshrq_n_u8::<4>(raw)),
    )
}

/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_q4_1(w: &BlockQ4_1, qa: *const i8) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        let (lo, hi) = nibbles(&w.qs);
        sumi_codes(lo, hi, qa)
    }
}

/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_q4_0(w: &BlockQ4_0, qa: *const i8) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        let (lo, hi) = nibbles(&w.qs);
        let eight = vdupq_n_s8(8);
        sumi_codes(vsubq_s8(lo, eight), vsubq_s8(hi, eight), qa)
    }
}

/// A 5-bit block's codes (`qs` nibbles, `qh` fifth bits) as two 16-byte vectors.
///
/// # Safety
/// NEON present.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn five_bit_codes(qs: &[u8; 16], qh: [u8; 4]) -> (int8x16_t, int8x16_t) {
    let bits = u32::from_le_bytes(qh);
    let high: [u8; 32] = std::array::from_fn(|j| (((bits >> j) & 1) as u8) << 4);
    // SAFETY: `qs` is 16 bytes, `high` 32.
    unsafe {
        let raw = vld1q_u8(qs.as_ptr());
        let lo = vorrq_u8(vandq_u8(raw, vdupq_n_u8(0x0F)), vld1q_u8(high.as_ptr()));
        let hi = vorrq_u8(vshrq_n_u8::<4>(raw), vld1q_u8(high.as_ptr().add(16)));
        (vreinterpretq_s8_u8(lo), vreinterpretq_s8_u8(hi))
    }
}

/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_q5_0(w: &BlockQ5_0, qa: *const i8) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        let (lo, hi) = five_bit_codes(&w.qs, w.qh);
        let sixteen = vdupq_n_s8(16);
        sumi_codes(vsubq_s8(lo, sixteen), vsubq_s8(hi, sixteen), qa)
    }
}

/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_q5_1(w: &BlockQ5_1, qa: *const i8) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        let (lo, hi) = five_bit_codes(&w.qs, w.qh);
        sumi_codes(lo, hi, qa)
    }
}

/// # Safety
/// NEON present; `qa` points at 32 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn sumi_q8_0(w: &BlockQ8_0, qa: *const i8) -> i32 {
    // SAFETY: `w.qs` is 32 bytes; the caller's contract on `qa`.
    unsafe {
        let codes = w.qs.as_ptr();
        sumi_codes(vld1q_s8(codes), vld1q_s8(codes.add(16)), qa)
    }
}

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q4_1,
    BlockQ4_1,
    |a, c| (qa, d, s) = (a.qs(c), a.d(c), a.s(c)),
    // SAFETY: prepared rows hold `nbp >= nb` blocks of codes.
    |x, b| unsafe { sumi_q4_1(x, qa.add(b * QK)) } as f32 * (f16_to_f32(x.d) * d[b])
        + f16_to_f32(x.m) * s[2 * b + 1]
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q8_0,
    BlockQ8_0,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: as above.
    |x, b| unsafe { sumi_q8_0(x, qa.add(b * QK)) } as f32 * (f16_to_f32(x.d) * d[b])
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q4_0,
    BlockQ4_0,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: as above.
    |x, b| unsafe { sumi_q4_0(x, qa.add(b * QK)) } as f32 * (f16_to_f32(x.d) * d[b])
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q5_0,
    BlockQ5_0,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: as above.
    |x, b| unsafe { sumi_q5_0(x, qa.add(b * QK)) } as f32 * (f16_to_f32(x.d) * d[b])
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q5_1,
    BlockQ5_1,
    |a, c| (qa, d, s) = (a.qs(c), a.d(c), a.s(c)),
    // SAFETY: as above.
    |x, b| unsafe { sumi_q5_1(x, qa.add(b * QK)) } as f32 * (f16_to_f32(x.d) * d[b])
        + f16_to_f32(x.m) * s[2 * b + 1]
);
