//! F16: IEEE half-precision values, 32 to a block (`GGML_TYPE_F16`), multiplied against f32
//! activations after an exact widening (F16C on x86-64).

use half::f16;

use super::float::{float_weight, FloatBlock};
use crate::kernels::blocks::{byte_block, QK};

/// 32 little-endian f16 values.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockF16 {
    pub v: [[u8; 2]; QK],
}

byte_block!(BlockF16, "f16", 64);

impl FloatBlock for BlockF16 {
    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        f16::from_bits(u16::from_le_bytes(self.v[i])).to_f32()
    }
}

/// ggml's `ggml_fp32_to_fp16_row`: round to nearest, ties to even.
fn encode(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_bits().to_le_bytes()
}

float_weight!(BlockF16, ggml_type: 1, encode: encode, kernels: gemm_f16, gemm_f16x16);
