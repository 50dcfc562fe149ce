//! BF16: bfloat16 values (the top half of an f32), 32 to a block (`GGML_TYPE_BF16`), the dtype
//! Hugging Face publishes SmolLM2 in; multiplied against f32 activations after an exact
//! widening (a 16-bit shift).

use super::float::{float_weight, FloatBlock};
use crate::kernels::blocks::{byte_block, QK};

/// 32 little-endian bf16 values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockBF16 {
    pub v: [[u8; 2]; QK],
}

byte_block!(BlockBF16, "bf16", 64);

/// ggml's `ggml_compute_fp32_to_bf16`: a NaN stays a (quiet) NaN, everything else rounds to
/// nearest, ties to even (overflowing to infinity).
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

impl FloatBlock for BlockBF16 {
    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes(self.v[i]) as u32) << 16)
    }
}

fn encode(x: f32) -> [u8; 2] {
    bf16_bits(x).to_le_bytes()
}

float_weight!(BlockBF16, ggml_type: 30, encode: encode, kernels: gemm_bf16, gemm_bf16x16);
