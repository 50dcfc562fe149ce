//! Q4_0: 32 weights `d * (q - 8)` with 4-bit codes, multiplied against Q8_0 activations.

use half::f16;

use super::{BlockQ8_0, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    f16_at, get_nibbles, put_nibbles, scales_at, span_mut, Repack, Q4_0_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q4_0`: 32 weights `d * (q - 8)`, `q` in 0..=15. Element `j < 16` is the low
/// nibble of `qs[j]`, element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; QK / 2],
}

byte_block!(BlockQ4_0, "q4_0", 18);

impl BlockQ4_0 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    pub fn new(d: f16, qs: [u8; QK / 2]) -> Self {
        BlockQ4_0 {
            d: f16_bytes(d),
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
    /// The 32 weights as f32, in ggml's arithmetic (`(q - 8) * d` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = self.d().to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = (self.q(j) as i32 - 8) as f32 * d;
        }
    }
}

#[inline(always)]
fn sumi_q4_0(w: &BlockQ4_0, qa: &[i8]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..QK / 2 {
        let lo = (w.qs[j] & 0x0F) as i32 - 8;
        let hi = (w.qs[j] >> 4) as i32 - 8;
        sumi += lo * qa[j] as i32 + hi * qa[j + QK / 2] as i32;
    }
    sumi
}

/// Q4_0 weights . Q8_0 activations, equal lengths: per block the exact integer dot, then
/// `sumf += sumi * (d_w * d_a)` in f32.
pub fn vec_dot_q4_0_q8_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        sumf += sumi_q4_0(x, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sumf
}

row_by_row_gemm!(
    gemm_q4_0_scalar,
    BlockQ4_0,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| sumi_q4_0(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
);

/// ggml's `quantize_row_q4_0_ref` for one block: `d = max / -8` where `max` is the value of
/// largest magnitude, codes `min(15, trunc(x / d + 8.5))`.
fn quantize_reference(x: &[f32]) -> BlockQ4_0 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            (amax, max) = (v.abs(), v);
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let code = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        *q = code(x[j]) | (code(x[j + QK / 2]) << 4);
    }
    BlockQ4_0::new(f16::from_f32(d), qs)
}

impl WeightBlock for BlockQ4_0 {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 2;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ4_0::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        vec_dot_q4_0_q8_0(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::{avx2, avx512};
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q4_0, Layout::Natural)
                .with_packed(avx2::gemm_q4_0x16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q4_0, Layout::Natural)
                .with_packed(avx2::gemm_q4_0x16_vnni),
            // The AVX2 row-major kernel: the engine multiplies the 16-row layout on this path.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q4_0, Layout::Natural)
                .with_packed(avx512::gemm_q4_0x16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q4_0, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q4_0_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ4_0 {
    fn group_lines(nb: usize) -> usize {
        nb * Q4_0_RECORD_LINES + nb.div_ceil(2)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        let rec = b * Q4_0_RECORD_LINES;
        put_nibbles(group, rec, i, &blk.qs);
        let (line, at) = scales_at(Q4_0_RECORD_LINES, nb, b);
        span_mut(group, line, at + 2 * i, 2).copy_from_slice(&blk.d);
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let rec = b * Q4_0_RECORD_LINES;
        let (line, at) = scales_at(Q4_0_RECORD_LINES, nb, b);
        BlockQ4_0 {
            d: f16_at(group, line, at + 2 * i),
            qs: get_nibbles(group, rec, i),
        }
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let y = &a[0];
        (sumi_q4_0(x, &y.qs) as f32).mul_add(f16_to_f32(x.d) * f16_to_f32(y.d), acc)
    }
}
