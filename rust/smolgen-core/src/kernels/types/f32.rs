//! F32: plain f32 values, 32 to a block; a weight type (F32 GGUF tensors) and the activation
//! type of every float weight type (the activations stay unrounded).

use super::float::{float_weight, FloatBlock};
use super::{ActivationBlock, ActivationKind};
use crate::kernels::blocks::{byte_block, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::prepared::{Layout, Prepared};

/// 32 little-endian f32 values, ggml's `GGML_TYPE_F32` cut into blocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockF32 {
    pub v: [[u8; 4]; QK],
}

impl Default for BlockF32 {
    fn default() -> Self {
        BlockF32 { v: [[0; 4]; QK] }
    }
}

byte_block!(BlockF32, "f32", 128);

impl BlockF32 {
    pub fn new(x: &[f32]) -> Self {
        let mut b = BlockF32::default();
        for (v, &x) in b.v.iter_mut().zip(x) {
            *v = x.to_le_bytes();
        }
        b
    }
}

impl FloatBlock for BlockF32 {
    #[inline(always)]
    fn value(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.v[i])
    }
}

impl ActivationBlock for BlockF32 {
    const KIND: &'static ActivationKind = &ActivationKind::of::<Self>();
    unsafe fn quantize(_isa: Isa, x: &[f32], out: &mut [Self]) {
        for (blk, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
            *blk = BlockF32::new(xs);
        }
    }
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, _layout: Layout) {
        p.fill_f32(a, nb)
    }
}

float_weight!(BlockF32, ggml_type: 0, encode: f32::to_le_bytes, kernels: gemm_f32, gemm_f32x16);
