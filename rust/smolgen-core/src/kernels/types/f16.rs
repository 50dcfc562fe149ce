//! F16: IEEE half-precision values, 32 to a block (`GGML_TYPE_F16`), multiplied against f32
//! activations after an exact widening (F16C on x86-64).

use half::f16;

use super::float::{float_reference_dot, float_repack, gemm_float_scalar, FloatBlock};
use super::{BlockF32, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::prepared::Layout;

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

impl WeightBlock for BlockF16 {
    type Activation = BlockF32;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 1;
    fn dequantize(&self, out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate().take(QK) {
            *o = self.value(i);
        }
    }
    /// ggml's `ggml_fp32_to_fp16_row`: round to nearest, ties to even.
    fn quantize(x: &[f32]) -> Self {
        let mut b = BlockF16::default();
        for (v, &x) in b.v.iter_mut().zip(x) {
            *v = f16::from_f32(x).to_bits().to_le_bytes();
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
                TypeKernels::row_major(crate::kernels::x86::avx2::gemm_f16, Layout::Natural)
                    .with_packed(crate::kernels::x86::avx2::gemm_f16x16)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                TypeKernels::row_major(crate::kernels::x86::avx512::gemm_f16, Layout::Natural)
                    .with_packed(crate::kernels::x86::avx512::gemm_f16x16)
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_f16, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_float_scalar::<Self>, Layout::Natural),
        }
    }
}

float_repack!(BlockF16);
