//! aarch64 Advanced SIMD kernels: the integer block dot in NEON (`smull` to i16, pairwise
//! accumulate to i32), the float part exactly as the scalar reference, so results are
//! bit-identical to it. One weight row x one activation row at a time; no `sdot` yet. Float
//! weights (F32, F16, BF16): [`float`].

use std::arch::aarch64::*;

mod float;
pub(crate) use float::*;

use crate::kernels::blocks::f16_to_f32;
use crate::kernels::blocks::QK;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::types::sub_scales;
use crate::kernels::types::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, QK_K,
};

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

/// The dot of 16 codes with 16 activation codes.
///
/// # Safety
/// NEON present.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot16(w: int8x16_t, a: int8x16_t) -> i32 {
    let acc = vpaddlq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a)));
    vaddvq_s32(vpadalq_s16(acc, vmull_high_s8(w, a)))
}

/// One Q4_K or Q5_K superblock (`d`, `dmin`, `scales`, `qs` and, for Q5_K, `qh`) against its 8
/// activation blocks (codes at `qa`, scales `d`, `[0, s]` pairs `s`), in the scalar reference's
/// order: per sub-block `sumf += sumi * (d' * d_a) - m' * s_a`.
///
/// # Safety
/// NEON present; `qa` points at 256 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn superblock_k_offset(
    k: (&[u8; 2], &[u8; 2], &[u8; 12]),
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    qa: *const i8,
    d: &[f32],
    s: &[f32],
) -> f32 {
    let mut sumf = 0f32;
    // SAFETY: `qh` is 32 bytes.
    let high = qh.map(|h| unsafe { (vld1q_u8(h.as_ptr()), vld1q_u8(h.as_ptr().add(16))) });
    // The fifth bits of sub-block `j` as 0x10 bytes (zero for Q4_K).
    let fifth = |j: usize, half: usize| match high {
        Some((h0, h1)) => vandq_u8(
            vtstq_u8(if half == 0 { h0 } else { h1 }, vdupq_n_u8(1 << j)),
            vdupq_n_u8(0x10),
        ),
        None => vdupq_n_u8(0),
    };
    for p in 0..4 {
        // SAFETY: `qs` holds 4 runs of 32 bytes; the caller's contract on `qa`.
        let (even, odd) = unsafe {
            let raw0 = vld1q_u8(qs.as_ptr().add(32 * p));
            let raw1 = vld1q_u8(qs.as_ptr().add(32 * p + 16));
            let low = |r, half| {
                vreinterpretq_s8_u8(vorrq_u8(vandq_u8(r, vdupq_n_u8(0x0F)), fifth(2 * p, half)))
            };
            let high =
                |r, half| vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(r), fifth(2 * p + 1, half)));
            (
                sumi_codes(low(raw0, 0), low(raw1, 1), qa.add(64 * p)),
                sumi_codes(high(raw0, 0), high(raw1, 1), qa.add(64 * p + 32)),
            )
        };
        for (j, sumi) in [(2 * p, even), (2 * p + 1, odd)] {
            let (d1, m1) = sub_scales(*k.0, *k.1, k.2, j);
            sumf += sumi as f32 * (d1 * d[j]) - m1 * s[2 * j + 1];
        }
    }
    sumf
}

/// One Q6_K superblock against its 8 activation blocks (codes at `qa`, scales `d`), in the
/// scalar reference's order: per 32 weights the exact `sc * sum_16 + sc * sum_16`, then
/// `sumf += sumi * (d * d_a)`.
///
/// # Safety
/// NEON present; `qa` points at 256 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn superblock_q6_k(x: &BlockQ6K, qa: *const i8, d: &[f32]) -> f32 {
    let dw = f16_to_f32(x.d);
    let mut sumf = 0f32;
    for (j, &da) in d.iter().enumerate().take(8) {
        let (h, k) = (j / 4, j % 4);
        // SAFETY: each half of the block holds 64 bytes of `ql` and 32 of `qh`; the caller's
        // contract on `qa`.
        let sumi = unsafe {
            let ql = x.ql.as_ptr().add(64 * h + 32 * (k % 2));
            let qh = x.qh.as_ptr().add(32 * h);
            let shift = vdupq_n_s8(-2 * k as i8);
            let code = |at: usize| {
                let l = vld1q_u8(ql.add(at));
                let low = if k < 2 {
                    vandq_u8(l, vdupq_n_u8(0x0F))
                } else {
                    vshrq_n_u8::<4>(l)
                };
                let high = vandq_u8(vshlq_u8(vld1q_u8(qh.add(at)), shift), vdupq_n_u8(3));
                let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
                vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32))
            };
            let a = qa.add(32 * j);
            x.scales[2 * j] as i32 * dot16(code(0), vld1q_s8(a))
                + x.scales[2 * j + 1] as i32 * dot16(code(16), vld1q_s8(a.add(16)))
        };
        sumf += sumi as f32 * (dw * da);
    }
    sumf
}

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q4_k,
    BlockQ4K,
    |a, c| (qa, d, s) = (a.qs(c), a.d(c), a.s(c)),
    // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks of codes and scales.
    |x, b| unsafe {
        let k = (&x.d, &x.dmin, &x.scales);
        superblock_k_offset(k, &x.qs, None, qa.add(b * QK_K), &d[8 * b..], &s[16 * b..])
    }
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q5_k,
    BlockQ5K,
    |a, c| (qa, d, s) = (a.qs(c), a.d(c), a.s(c)),
    // SAFETY: as above.
    |x, b| unsafe {
        let k = (&x.d, &x.dmin, &x.scales);
        superblock_k_offset(
            k,
            &x.qs,
            Some(&x.qh),
            qa.add(b * QK_K),
            &d[8 * b..],
            &s[16 * b..],
        )
    }
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q6_k,
    BlockQ6K,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: as above.
    |x, b| unsafe { superblock_q6_k(x, qa.add(b * QK_K), &d[8 * b..]) }
);

/// One Q3_K superblock against its 8 activation blocks (codes at `qa`, scales `d`), in the
/// scalar reference's order: per activation block `sumf += sumi * (d * d_a)`.
///
/// # Safety
/// NEON present; `qa` points at 256 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn superblock_q3_k(x: &BlockQ3K, qa: *const i8, d: &[f32]) -> f32 {
    let dw = f16_to_f32(x.d);
    let scales = x.scales();
    let mut sumf = 0f32;
    for (j, &da) in d.iter().enumerate().take(8) {
        let (h, k) = (j / 4, j % 4);
        // SAFETY: each half of `qs` is 32 bytes, `hmask` 32; the caller's contract on `qa`.
        let sumi = unsafe {
            let code = |at: usize| {
                let q = vld1q_u8(x.qs.as_ptr().add(32 * h + at));
                let low = vandq_u8(vshlq_u8(q, vdupq_n_s8(-2 * k as i8)), vdupq_n_u8(3));
                let hm = vld1q_u8(x.hmask.as_ptr().add(at));
                let high = vandq_u8(
                    vshlq_u8(hm, vdupq_n_s8(-((4 * h + k) as i8))),
                    vdupq_n_u8(1),
                );
                let q = vorrq_u8(low, vshlq_n_u8::<2>(high));
                vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(4))
            };
            let a = qa.add(32 * j);
            scales[2 * j] as i32 * dot16(code(0), vld1q_s8(a))
                + scales[2 * j + 1] as i32 * dot16(code(16), vld1q_s8(a.add(16)))
        };
        sumf += sumi as f32 * (dw * da);
    }
    sumf
}

/// One Q2_K superblock against its 8 activation blocks (codes at `qa`, scales `d`), in the
/// scalar reference's order: per activation block `sumf += sumi * (d * d_a) - summ * (dmin *
/// d_a)`.
///
/// # Safety
/// NEON present; `qa` points at 256 readable bytes.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn superblock_q2_k(x: &BlockQ2K, qa: *const i8, d: &[f32]) -> f32 {
    let (dw, dmin) = (f16_to_f32(x.d), f16_to_f32(x.dmin));
    let mut sumf = 0f32;
    for (j, &da) in d.iter().enumerate().take(8) {
        let (h, k) = (j / 4, j % 4);
        let (lo, hi) = (x.scales[2 * j], x.scales[2 * j + 1]);
        // SAFETY: each half of `qs` is 32 bytes; the caller's contract on `qa`.
        let (sumi, summ) = unsafe {
            let code = |at: usize| {
                let q = vld1q_u8(x.qs.as_ptr().add(32 * h + at));
                vreinterpretq_s8_u8(vandq_u8(
                    vshlq_u8(q, vdupq_n_s8(-2 * k as i8)),
                    vdupq_n_u8(3),
                ))
            };
            let a = qa.add(32 * j);
            let (a0, a1) = (vld1q_s8(a), vld1q_s8(a.add(16)));
            (
                (lo & 0xF) as i32 * dot16(code(0), a0) + (hi & 0xF) as i32 * dot16(code(16), a1),
                (lo >> 4) as i32 * vaddlvq_s8(a0) as i32 + (hi >> 4) as i32 * vaddlvq_s8(a1) as i32,
            )
        };
        sumf += sumi as f32 * (dw * da) - summ as f32 * (dmin * da);
    }
    sumf
}

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q3_k,
    BlockQ3K,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks of codes and scales.
    |x, b| unsafe { superblock_q3_k(x, qa.add(b * QK_K), &d[8 * b..]) }
);

row_by_row_gemm!(
    #[target_feature(enable = "neon")]
    gemm_q2_k,
    BlockQ2K,
    |a, c| (qa, d) = (a.qs(c), a.d(c)),
    // SAFETY: as above.
    |x, b| unsafe { superblock_q2_k(x, qa.add(b * QK_K), &d[8 * b..]) }
);
