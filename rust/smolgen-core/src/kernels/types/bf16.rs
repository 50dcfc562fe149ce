//! BF16: bfloat16 values (the top half of an f32), 32 to a block (`GGML_TYPE_BF16`), the dtype
//! Hugging Face publishes SmolLM2 in; multiplied against f32 activations after an exact
//! widening (a 16-bit shift).

use super::float::{float_reference_dot, float_repack, gemm_float_scalar, FloatBlock};
use super::{BlockF32, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::prepared::Layout;

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

impl WeightBlock for BlockBF16 {
    type Activation = BlockF32;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 30;
    fn dequantize(&self, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate().take(QK) {
            *o = self.value(i);
        }
    }
    fn quantize(x: &[f32]) -> Self {
        let mut b = BlockBF16::default();
        for (v, &x) in b.v.iter_mut().zip(x) {
            *v = bf16_bits(x).to_le_bytes();
        }
        b
    }
    fn reference_dot(w: &[Self], a: &[BlockF32]) -> f32 {
        float_reference_dot(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::AvxVnni => {
                TypeKernels::row_major(crate::kernels::x86::avx2::gemm_bf16, Layout::Natural)
                    .with_packed(crate::kernels::x86::avx2::gemm_bf16x16)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                TypeKernels::row_major(crate::kernels::x86::avx512::gemm_bf16, Layout::Natural)
                    .with_packed(crate::kernels::x86::avx512::gemm_bf16x16)
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_bf16, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_float_scalar::<Self>, Layout::Natural),
        }
    }
}

float_repack!(BlockBF16);
