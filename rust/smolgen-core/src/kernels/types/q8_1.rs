//! Q8_1: Q8_0 plus `s = d * sum(q)`, the activation type of weight types with an offset.

use half::f16;

use super::{ActivationBlock, ActivationKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::prepared::{Layout, Prepared};

/// ggml's `block_q8_1`: like q8_0 plus `s = d * sum(qs)` (as f16), which folds a Q4_1 block's
/// offset `m` into one multiply per block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK],
}

byte_block!(BlockQ8_1, "q8_1", 36);

impl BlockQ8_1 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn s(&self) -> f16 {
        f16_bits(self.s)
    }
    pub fn new(d: f16, s: f16, qs: [i8; QK]) -> Self {
        BlockQ8_1 {
            d: f16_bytes(d),
            s: f16_bytes(s),
            qs,
        }
    }
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d().to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl ActivationBlock for BlockQ8_1 {
    const KIND: &'static ActivationKind = &ActivationKind::of::<Self>();
    unsafe fn quantize(isa: Isa, x: &[f32], out: &mut [Self]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's contract; every x86 path has AVX2.
            Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => unsafe {
                crate::kernels::quantize::x86::quantize_q8_1_avx2(x, out)
            },
            _ => crate::kernels::quantize::quantize_q8_1_scalar(x, out),
        }
    }
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout) {
        p.fill_q8_1(a, nb, layout)
    }
}
