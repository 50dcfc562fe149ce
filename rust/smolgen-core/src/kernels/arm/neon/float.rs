//! Float weights (F32, F16, BF16) x f32 activations, 4 values per 128-bit register: each dot
//! keeps four registers of lane sums, the canonical sixteen lanes of
//! [`crate::kernels::types`]' float order, folded the same way, so the bits equal the scalar
//! reference's.

use std::arch::aarch64::*;

use crate::kernels::blocks::{Block, QK};
use crate::kernels::matmul::QWeight;
use crate::kernels::prepared::{OutPtr, Prepared};
use crate::kernels::types::{BlockBF16, BlockF16, BlockF32};

const F32: u8 = 0;
const F16: u8 = 1;
const BF16: u8 = 2;

/// Four f16 values at `p` widened exactly to f32 with integer and f32 arithmetic (no `fp16`
/// extension needed): the exponent and mantissa shifted into place and scaled by 2^112 (which
/// also normalises subnormals), infinities and NaNs given the all-ones exponent, the sign put
/// back.
///
/// # Safety
/// NEON present; 8 bytes readable at `p`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen4_f16(p: *const u8) -> float32x4_t {
    // SAFETY: the caller's contract.
    let h = vmovl_u16(unsafe { vld1_u16(p.cast()) });
    let magnitude = vshlq_n_u32::<13>(vandq_u32(h, vdupq_n_u32(0x7FFF)));
    let scaled = vmulq_f32(
        vreinterpretq_f32_u32(magnitude),
        vdupq_n_f32(f32::from_bits(0x7780_0000)), // 2^112
    );
    let inf_or_nan = vcgeq_f32(scaled, vdupq_n_f32(65536.0));
    let bits = vorrq_u32(
        vreinterpretq_u32_f32(scaled),
        vandq_u32(inf_or_nan, vdupq_n_u32(0x7F80_0000)),
    );
    let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
    vreinterpretq_f32_u32(vorrq_u32(bits, sign))
}

/// Four values of type `T` at `p`, widened exactly to f32.
///
/// # Safety
/// NEON present; 4 values readable at `p`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn widen4<const T: u8>(p: *const u8) -> float32x4_t {
    // SAFETY: the caller's contract.
    unsafe {
        match T {
            F32 => vld1q_f32(p.cast()),
            F16 => widen4_f16(p),
            _ => vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p.cast()))),
        }
    }
}

/// One weight row of `k` values of type `T` at `w` dotted with `k` f32 at `x`.
///
/// # Safety
/// NEON present; `k` values readable at each; `k` a multiple of 16.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn dot_float<const T: u8>(w: *const u8, x: *const f32, k: usize) -> f32 {
    let vb = if T == F32 { 4 } else { 2 };
    let mut acc = [vdupq_n_f32(0.0); 4];
    for e in (0..k).step_by(16) {
        for (q, lane) in acc.iter_mut().enumerate() {
            let at = e + 4 * q;
            // SAFETY: values `at..at + 4` exist on both sides.
            unsafe { *lane = vfmaq_f32(*lane, widen4::<T>(w.add(at * vb)), vld1q_f32(x.add(at))) };
        }
    }
    // Lanes l + 8, then l + 4, l + 2, l + 1.
    let t = vaddq_f32(vaddq_f32(acc[0], acc[2]), vaddq_f32(acc[1], acc[3]));
    let t = vaddq_f32(t, vextq_f32::<2>(t, t));
    vgetq_lane_f32::<0>(t) + vgetq_lane_f32::<1>(t)
}

/// # Safety
/// See `GemmFn`: `w` is a row-major matrix of float type `T`, `a` holds f32 activations.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn gemm_float<const T: u8, B: Block>(
    w: &QWeight<'_>,
    a: &Prepared,
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    let k = w.row_blocks() * QK;
    let row_bytes = k * if T == F32 { 4 } else { 2 };
    let base = w.blocks::<B>().as_ptr().cast::<u8>();
    for c in 0..a.m {
        let x = a.floats(c).as_ptr();
        for r in rows.clone() {
            // SAFETY: row `r` exists; the activation row holds `k` values.
            let v = unsafe { dot_float::<T>(base.add(r * row_bytes), x, k) };
            // SAFETY: the caller's contract on `rows` and `out`.
            unsafe { out.write(c, r, v) };
        }
    }
}

/// Defines the `GemmFn` `$name` for the block type `$block` (float type `$t`).
macro_rules! float_gemm {
    ($name:ident, $block:ty, $t:expr) => {
        /// # Safety
        /// See `GemmFn`: `w` is a row-major matrix of this type, `a` holds f32 activations.
        #[target_feature(enable = "neon")]
        pub(crate) unsafe fn $name(
            w: &QWeight<'_>,
            a: &Prepared,
            rows: std::ops::Range<usize>,
            out: OutPtr,
        ) {
            // SAFETY: the caller's contract.
            unsafe { gemm_float::<{ $t }, $block>(w, a, rows, out) }
        }
    };
}

float_gemm!(gemm_f32, BlockF32, F32);
float_gemm!(gemm_f16, BlockF16, F16);
float_gemm!(gemm_bf16, BlockBF16, BF16);
