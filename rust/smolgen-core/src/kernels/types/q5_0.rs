//! Q5_0: 32 weights `d * (q - 16)` with 5-bit codes, multiplied against Q8_0 activations.

use half::f16;

use super::{BlockQ8_0, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    f16_at, get_fifth_bits, get_nibbles, put_fifth_bits, put_nibbles, scales_at, span, span_mut,
    Repack, FIFTH_BITS_LINE, Q5_0_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q5_0`: 32 weights `d * (q - 16)`, `q` in 0..=31. Element `j < 16` has its low
/// four bits in the low nibble of `qs[j]`, element `j + 16` in the high nibble; bit `j` of `qh`
/// (little-endian) is element `j`'s fifth bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

byte_block!(BlockQ5_0, "q5_0", 22);

impl BlockQ5_0 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    pub fn new(d: f16, qh: u32, qs: [u8; QK / 2]) -> Self {
        BlockQ5_0 {
            d: f16_bytes(d),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
    /// The 5-bit code of element `j` (0..32).
    #[inline(always)]
    pub fn q(&self, j: usize) -> u8 {
        five_bit_code(&self.qs, self.qh, j)
    }
    /// The 32 weights as f32, in ggml's arithmetic (`(q - 16) * d` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d().to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = (self.q(j) as i32 - 16) as f32 * d;
        }
    }
}

/// Element `j`'s 5-bit code from a block's nibbles and high bits (Q5_0 and Q5_1).
#[inline(always)]
pub(crate) fn five_bit_code(qs: &[u8; QK / 2], qh: [u8; 4], j: usize) -> u8 {
    let low = if j < QK / 2 {
        qs[j] & 0x0F
    } else {
        qs[j - QK / 2] >> 4
    };
    let high = ((u32::from_le_bytes(qh) >> j) & 1) as u8;
    low | (high << 4)
}

/// ggml's 5-bit packing of 32 codes: nibbles as Q4's, fifth bits in `qh`.
pub(crate) fn pack_five_bit_codes(codes: &[u8; QK]) -> ([u8; QK / 2], u32) {
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let (lo, hi) = (codes[j], codes[j + QK / 2]);
        *q = (lo & 0x0F) | ((hi & 0x0F) << 4);
        qh |= (((lo >> 4) & 1) as u32) << j;
        qh |= (((hi >> 4) & 1) as u32) << (j + QK / 2);
    }
    (qs, qh)
}

#[inline(always)]
fn sumi_q5_0(w: &BlockQ5_0, qa: &[i8]) -> i32 {
    (0..QK).map(|j| (w.q(j) as i32 - 16) * qa[j] as i32).sum()
}

/// Q5_0 weights . Q8_0 activations, equal lengths: per block the exact integer dot, then
/// `sumf += sumi * (d_w * d_a)` in f32.
pub fn vec_dot_q5_0_q8_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        sumf += sumi_q5_0(x, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sumf
}

row_by_row_gemm!(
    gemm_q5_0_scalar,
    BlockQ5_0,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| sumi_q5_0(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
);

/// ggml's `quantize_row_q5_0_ref` for one block: `d = max / -16` where `max` is the value of
/// largest magnitude, codes `min(31, trunc(x / d + 16.5))`.
fn quantize_reference(x: &[f32]) -> BlockQ5_0 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            (amax, max) = (v.abs(), v);
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let codes: [u8; QK] = std::array::from_fn(|j| ((x[j] * id + 16.5) as i8).min(31) as u8);
    let (qs, qh) = pack_five_bit_codes(&codes);
    BlockQ5_0::new(f16::from_f32(d), qh, qs)
}

impl WeightBlock for BlockQ5_0 {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 6;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ5_0::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        vec_dot_q5_0_q8_0(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::{avx2, avx512};
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q5_0, Layout::Natural)
                .with_packed(avx2::gemm_q5_0x16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q5_0, Layout::Natural)
                .with_packed(avx2::gemm_q5_0x16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q5_0, Layout::Natural)
                .with_packed(avx512::gemm_q5_0x16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q5_0, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q5_0_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ5_0 {
    fn group_lines(nb: usize) -> usize {
        nb * Q5_0_RECORD_LINES + nb.div_ceil(2)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        let rec = b * Q5_0_RECORD_LINES;
        put_nibbles(group, rec, i, &blk.qs);
        let qh = u32::from_le_bytes(blk.qh);
        put_fifth_bits(span_mut(group, rec + FIFTH_BITS_LINE, 0, 64), i, qh);
        let (line, at) = scales_at(Q5_0_RECORD_LINES, nb, b);
        span_mut(group, line, at + 2 * i, 2).copy_from_slice(&blk.d);
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let rec = b * Q5_0_RECORD_LINES;
        let (line, at) = scales_at(Q5_0_RECORD_LINES, nb, b);
        BlockQ5_0 {
            d: f16_at(group, line, at + 2 * i),
            qh: get_fifth_bits(span(group, rec + FIFTH_BITS_LINE, 0, 64), i).to_le_bytes(),
            qs: get_nibbles(group, rec, i),
        }
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let y = &a[0];
        (sumi_q5_0(x, &y.qs) as f32).mul_add(f16_to_f32(x.d) * f16_to_f32(y.d), acc)
    }
}
