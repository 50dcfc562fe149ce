//! Q5_1: 32 weights `d * q + m` with 5-bit codes, multiplied against Q8_1 activations.

use half::f16;

use super::q5_0::{five_bit_code, pack_five_bit_codes};
use super::{BlockQ8_1, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    f16_at, get_fifth_bits, get_nibbles, put_fifth_bits, put_nibbles, span, span_mut, Repack,
    FIFTH_BITS_LINE, Q5_1_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q5_1`: 32 weights `d * q + m`, `q` in 0..=31, the codes laid out as Q5_0's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

byte_block!(BlockQ5_1, "q5_1", 24);

impl BlockQ5_1 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn m(&self) -> f16 {
        f16_bits(self.m)
    }
    pub fn new(d: f16, m: f16, qh: u32, qs: [u8; QK / 2]) -> Self {
        BlockQ5_1 {
            d: f16_bytes(d),
            m: f16_bytes(m),
            qh: qh.to_le_bytes(),
            qs,
        }
    }
    /// The 5-bit code of element `j` (0..32).
    #[inline(always)]
    pub fn q(&self, j: usize) -> u8 {
        five_bit_code(&self.qs, self.qh, j)
    }
    /// The 32 weights as f32, in ggml's arithmetic (`q * d + m` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, m) = (self.d().to_f32(), self.m().to_f32());
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.q(j) as f32 * d + m;
        }
    }
}

#[inline(always)]
fn sumi_q5_1(w: &BlockQ5_1, qa: &[i8]) -> i32 {
    (0..QK).map(|j| w.q(j) as i32 * qa[j] as i32).sum()
}

/// Q5_1 weights . Q8_1 activations, equal lengths: per block
/// `sumf += sumi * (d_w * d_a) + m_w * s_a` in f32, as Q4_1.
pub fn vec_dot_q5_1_q8_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = sumi_q5_1(x, &y.qs);
        sumf +=
            sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sumf
}

row_by_row_gemm!(
    gemm_q5_1_scalar,
    BlockQ5_1,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d, s) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c),
        a.s(c)
    ),
    |x, b| sumi_q5_1(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
        + f16_to_f32(x.m) * s[2 * b + 1]
);

/// ggml's `quantize_row_q5_1_ref` for one block: `d = (max - min) / 31`, `m = min`, codes
/// `trunc((x - min) / d + 0.5)`.
fn quantize_reference(x: &[f32]) -> BlockQ5_1 {
    let (min, max) = x
        .iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let codes: [u8; QK] = std::array::from_fn(|j| ((x[j] - min) * id + 0.5) as u8);
    let (qs, qh) = pack_five_bit_codes(&codes);
    BlockQ5_1::new(f16::from_f32(d), f16::from_f32(min), qh, qs)
}

impl WeightBlock for BlockQ5_1 {
    type Activation = BlockQ8_1;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 7;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ5_1::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        vec_dot_q5_1_q8_1(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::{avx2, avx512};
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q5_1, Layout::Natural)
                .with_packed(avx2::gemm_q5_1x16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q5_1, Layout::Natural)
                .with_packed(avx2::gemm_q5_1x16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q5_1, Layout::Natural)
                .with_packed(avx512::gemm_q5_1x16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q5_1, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q5_1_scalar, Layout::Natural),
        }
    }
}

/// The line of a record holding the 16 rows' `d` (f16), then their `m` (f16).
const SCALES_LINE: usize = 5;

impl Repack for BlockQ5_1 {
    fn group_lines(nb: usize) -> usize {
        nb * Q5_1_RECORD_LINES
    }
    fn put(group: &mut [u8], _nb: usize, b: usize, i: usize, blk: &Self) {
        let rec = b * Q5_1_RECORD_LINES;
        put_nibbles(group, rec, i, &blk.qs);
        let qh = u32::from_le_bytes(blk.qh);
        put_fifth_bits(span_mut(group, rec + FIFTH_BITS_LINE, 0, 64), i, qh);
        span_mut(group, rec + SCALES_LINE, 2 * i, 2).copy_from_slice(&blk.d);
        span_mut(group, rec + SCALES_LINE, 32 + 2 * i, 2).copy_from_slice(&blk.m);
    }
    fn get(group: &[u8], _nb: usize, b: usize, i: usize) -> Self {
        let rec = b * Q5_1_RECORD_LINES;
        BlockQ5_1 {
            d: f16_at(group, rec + SCALES_LINE, 2 * i),
            m: f16_at(group, rec + SCALES_LINE, 32 + 2 * i),
            qh: get_fifth_bits(span(group, rec + FIFTH_BITS_LINE, 0, 64), i).to_le_bytes(),
            qs: get_nibbles(group, rec, i),
        }
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_1]) -> f32 {
        let y = &a[0];
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        let acc = (sumi_q5_1(x, &y.qs) as f32).mul_add(scale, acc);
        f16_to_f32(x.m).mul_add(f16_to_f32(y.s), acc)
    }
}
