//! Q8_0: 32 values `d * q` with 8-bit codes; a weight type multiplied against Q8_0 activations,
//! and the activation type of several weight types.

use half::f16;

use super::{ActivationBlock, ActivationKind, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{scales_at, span, span_mut, Repack, Q8_0_RECORD_LINES};
use crate::kernels::prepared::{Layout, Prepared};

/// ggml's `block_q8_0`: 32 values `d * q`, `q` an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK],
}

byte_block!(BlockQ8_0, "q8_0", 34);

impl BlockQ8_0 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    pub fn new(d: f16, qs: [i8; QK]) -> Self {
        BlockQ8_0 {
            d: f16_bytes(d),
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

#[inline(always)]
pub(crate) fn sumi_q8_0(w: &BlockQ8_0, qa: &[i8]) -> i32 {
    w.qs.iter()
        .zip(qa)
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}

/// Q8_0 weights . Q8_0 activations, equal lengths.
pub fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        sumf += sumi_q8_0(x, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sumf
}

row_by_row_gemm!(
    gemm_q8_0_scalar,
    BlockQ8_0,
    // SAFETY: as above.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| sumi_q8_0(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
);

/// ggml's `quantize_row_q8_0_ref` for one block: `d = amax / 127`, codes `round(x / d)` (half
/// away from zero, unlike the activation path's ties-to-even).
fn quantize_reference(x: &[f32]) -> BlockQ8_0 {
    let amax = x.iter().fold(0f32, |m, &v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    BlockQ8_0::new(f16::from_f32(d), qs)
}

impl ActivationBlock for BlockQ8_0 {
    const KIND: &'static ActivationKind = &ActivationKind::of::<Self>();
    unsafe fn quantize(isa: Isa, x: &[f32], out: &mut [Self]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Isa::Avx2 | Isa::AvxVnni | Isa::Avx512Vnni => unsafe {
                crate::kernels::quantize::x86::quantize_q8_0_avx2(x, out)
            },
            _ => crate::kernels::quantize::quantize_q8_0_scalar(x, out),
        }
    }
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout) {
        p.fill_q8_0(a, nb, layout)
    }
}

impl WeightBlock for BlockQ8_0 {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 8;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ8_0::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        vec_dot_q8_0_q8_0(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::{avx2, avx512};
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q8_0, Layout::Natural)
                .with_packed(avx2::gemm_q8_0x16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q8_0, Layout::Natural)
                .with_packed(avx2::gemm_q8_0x16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx512::gemm_q8_0, Layout::PairsQ8)
                .with_packed(avx512::gemm_q8_0x16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q8_0, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q8_0_scalar, Layout::Natural),
        }
    }
}

/// Q8_0 codes are stored plus 128, the unsigned operand of `vpdpbusd`.
impl Repack for BlockQ8_0 {
    fn group_lines(nb: usize) -> usize {
        nb * Q8_0_RECORD_LINES + nb.div_ceil(2)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for j in 0..Q8_0_RECORD_LINES {
            let dst = span_mut(group, b * Q8_0_RECORD_LINES + j, 4 * i, 4);
            for (dst, &q) in dst.iter_mut().zip(&blk.qs[4 * j..]) {
                *dst = (q as u8) ^ 0x80;
            }
        }
        let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
        span_mut(group, line, at + 2 * i, 2).copy_from_slice(&blk.d);
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let mut blk = BlockQ8_0::default();
        for j in 0..Q8_0_RECORD_LINES {
            let src = span(group, b * Q8_0_RECORD_LINES + j, 4 * i, 4);
            for (dst, &q) in blk.qs[4 * j..4 * j + 4].iter_mut().zip(src) {
                *dst = (q ^ 0x80) as i8;
            }
        }
        let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
        blk.d.copy_from_slice(span(group, line, at + 2 * i, 2));
        blk
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let y = &a[0];
        let sumi: i32 =
            x.qs.iter()
                .zip(&y.qs)
                .map(|(&p, &q)| p as i32 * q as i32)
                .sum();
        (sumi as f32).mul_add(f16_to_f32(x.d) * f16_to_f32(y.d), acc)
    }
}
