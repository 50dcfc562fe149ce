//! Q4_1: 32 weights `d * q + m` with 4-bit codes, multiplied against Q8_1 activations.

use half::f16;

use super::{BlockQ8_1, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    f16_at, get_nibbles, put_nibbles, span_mut, Repack, Q4_1_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q4_1`: 32 weights `d * q + m`, `q` in 0..=15. Element `j < 16` is the low
/// nibble of `qs[j]`, element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; QK / 2],
}

byte_block!(BlockQ4_1, "q4_1", 20);

impl BlockQ4_1 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn m(&self) -> f16 {
        f16_bits(self.m)
    }
    pub fn new(d: f16, m: f16, qs: [u8; QK / 2]) -> Self {
        BlockQ4_1 {
            d: f16_bytes(d),
            m: f16_bytes(m),
            qs,
        }
    }
    /// The 4-bit code of element `j` (0..32).
    #[inline(always)]
    pub fn q(&self, j: usize) -> u8 {
        if j < QK / 2 {
            self.qs[j] & 0x0F
        } else {
            self.qs[j - QK / 2] >> 4
        }
    }
    /// The 32 weights as f32, in ggml's arithmetic (`q * d + m` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d().to_f32();
        let m = self.m().to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.q(j) as f32 * d + m;
        }
    }
}

#[inline(always)]
pub(crate) fn sumi_q4_1(w: &BlockQ4_1, qa: &[i8]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..QK / 2 {
        let lo = (w.qs[j] & 0x0F) as i32;
        let hi = (w.qs[j] >> 4) as i32;
        sumi += lo * qa[j] as i32 + hi * qa[j + QK / 2] as i32;
    }
    sumi
}

/// Q4_1 weights . Q8_1 activations, equal lengths.
pub fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = sumi_q4_1(x, &y.qs);
        sumf +=
            sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sumf
}

row_by_row_gemm!(
    gemm_q4_1_scalar,
    BlockQ4_1,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d, s) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c),
        a.s(c)
    ),
    |x, b| sumi_q4_1(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
        + f16_to_f32(x.m) * s[2 * b + 1]
);

/// ggml's `quantize_row_q4_1_ref` for one block: `d = (max - min) / 15`, `m = min`, codes
/// `min(15, trunc((x - min) / d + 0.5))`.
fn quantize_reference(x: &[f32]) -> BlockQ4_1 {
    let (min, max) = x
        .iter()
        .fold((f32::MAX, -f32::MAX), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let code = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
    }
    BlockQ4_1::new(f16::from_f32(d), f16::from_f32(min), qs)
}

impl WeightBlock for BlockQ4_1 {
    type Activation = BlockQ8_1;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 3;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ4_1::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        vec_dot_q4_1_q8_1(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::{avx2, avx512};
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q4_1, Layout::Natural)
                .with_packed(avx2::gemm_q4_1x16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q4_1, Layout::Natural)
                .with_packed(avx2::gemm_q4_1x16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx512::gemm_q4_1, Layout::PairsQ4)
                .with_packed(avx512::gemm_q4_1x16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q4_1, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q4_1_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ4_1 {
    fn group_lines(nb: usize) -> usize {
        nb * Q4_1_RECORD_LINES
    }
    fn put(group: &mut [u8], _nb: usize, b: usize, i: usize, blk: &Self) {
        let rec = b * Q4_1_RECORD_LINES;
        put_nibbles(group, rec, i, &blk.qs);
        span_mut(group, rec + 4, 2 * i, 2).copy_from_slice(&blk.d);
        span_mut(group, rec + 4, 32 + 2 * i, 2).copy_from_slice(&blk.m);
    }
    fn get(group: &[u8], _nb: usize, b: usize, i: usize) -> Self {
        let rec = b * Q4_1_RECORD_LINES;
        BlockQ4_1 {
            d: f16_at(group, rec + 4, 2 * i),
            m: f16_at(group, rec + 4, 32 + 2 * i),
            qs: get_nibbles(group, rec, i),
        }
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_1]) -> f32 {
        let y = &a[0];
        let sumi: i32 = (0..QK).map(|j| x.q(j) as i32 * y.qs[j] as i32).sum();
        let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
        let acc = (sumi as f32).mul_add(scale, acc);
        f16_to_f32(x.m).mul_add(f16_to_f32(y.s), acc)
    }
}
