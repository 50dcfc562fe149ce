//! Q2_K: superblocks of 256 weights `d * sc * q - dmin * m` with 2-bit codes `q` and a 4-bit
//! scale `sc` and min `m` per 16 weights; multiplied against Q8_0 activations, one activation
//! block per 32 weights (the mins need the sum of each 16 activation codes, which the kernels
//! take from the codes themselves).

use half::f16;

use super::k_rounding::{groups, make_qkx2_quants, nearest_int, ScaleSearch};
use super::q4_k::{QK_K, SUBS};
use super::q6_k::vec_dot_superblocks;
use super::{BlockQ8_0, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    get_two_bit_codes, k_scales_at, put_two_bit_codes, span_mut, Repack, K_SCALE_LINES,
    Q2_K_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q2_K`. In each half of 128 weights (32 bytes of `qs`), weight `32j + l` (`j` in
/// 0..4, `l` in 0..32) is bits `2j` of `qs[l]`. Weight `e` takes the scale (low nibble) and min
/// (high nibble) of `scales[e / 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

impl Default for BlockQ2K {
    fn default() -> Self {
        BlockQ2K {
            scales: [0; QK_K / 16],
            qs: [0; QK_K / 4],
            d: [0; 2],
            dmin: [0; 2],
        }
    }
}

byte_block!(BlockQ2K, "q2_K", 84, QK_K);

impl BlockQ2K {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f16 {
        f16_bits(self.dmin)
    }
    /// The 2-bit code of element `e` (0..256).
    #[inline(always)]
    pub fn q(&self, e: usize) -> u8 {
        let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
        (self.qs[32 * half + l] >> (2 * j)) & 3
    }
    /// The 256 weights as f32, in ggml's arithmetic (`d * sc * q - dmin * m`).
    pub fn dequantize(&self, out: &mut [f32]) {
        let (d, dmin) = (f16_to_f32(self.d), f16_to_f32(self.dmin));
        for (e, o) in out.iter_mut().enumerate() {
            let sc = self.scales[e / 16];
            *o = d * (sc & 0xF) as f32 * self.q(e) as f32 - dmin * (sc >> 4) as f32;
        }
    }
}

/// ggml's `quantize_row_q2_K_ref` for one superblock. Each 16 values get a scale and offset
/// fit by [`make_qkx2_quants`] (weights `|x|`, least absolute error); the sixteen scales and
/// the sixteen offsets are then rounded to 4 bits of the largest of each, and every code chosen
/// again against the rounded scale and offset (a sub-block whose scale rounds to 0 keeps the
/// fit's codes).
fn quantize_reference(x: &[f32]) -> BlockQ2K {
    const SEARCH: ScaleSearch = ScaleSearch {
        first: -0.5,
        step: 0.1,
        steps: 15,
    };
    let groups: [[f32; 16]; QK_K / 16] = groups(x);
    let weights = groups.map(|xs| xs.map(f32::abs));
    let mut codes = [[0u8; 16]; QK_K / 16];
    let fits = make_qkx2_quants(&groups, &weights, 3, SEARCH, true, &mut codes);
    let (scales, mins) = (fits.map(|f| f.0), fits.map(|f| f.1));
    // Both are fits' largest values, never below 0.
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let mut blk = BlockQ2K::default();
    if max_scale > 0.0 {
        let iscale = 15.0 / max_scale;
        for (sc, &s) in blk.scales.iter_mut().zip(&scales) {
            *sc = nearest_int(iscale * s) as u8;
        }
        blk.d = f16_bytes(f16::from_f32(max_scale / 15.0));
    }
    if max_min > 0.0 {
        let iscale = 15.0 / max_min;
        for (sc, &m) in blk.scales.iter_mut().zip(&mins) {
            *sc |= (nearest_int(iscale * m) << 4) as u8;
        }
        blk.dmin = f16_bytes(f16::from_f32(max_min / 15.0));
    }
    let (d, dmin) = (f16_to_f32(blk.d), f16_to_f32(blk.dmin));
    for ((xs, qs), &sc) in groups.iter().zip(&mut codes).zip(&blk.scales) {
        let d = d * (sc & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * (sc >> 4) as f32;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, 3) as u8;
        }
    }
    blk.qs = pack_2bit_codes(codes.as_flattened());
    blk
}

/// 256 codes of two bits as Q2_K and Q3_K store them (see [`BlockQ2K`]).
pub(super) fn pack_2bit_codes(codes: &[u8]) -> [u8; QK_K / 4] {
    std::array::from_fn(|i| {
        let (half, l) = (i / 32, i % 32);
        (0..4).fold(0, |b, j| {
            b | (codes[128 * half + 32 * j + l] & 3) << (2 * j)
        })
    })
}

/// One superblock against its 8 activation blocks: per activation block `j` the exact
/// `sumi = sum over its two 16s of sc * sum q a` and `summ = sum of m * sum a`, then
/// `sumf += sumi * (d * d_a) - summ * (dmin * d_a)`.
#[inline(always)]
fn superblock_dot(x: &BlockQ2K, qa: &[i8], d: &[f32]) -> f32 {
    let (dw, dmin) = (f16_to_f32(x.d), f16_to_f32(x.dmin));
    let mut sumf = 0f32;
    for j in 0..SUBS {
        let (sumi, summ) = block_sums(x, j, &qa[j * QK..]);
        sumf += sumi as f32 * (dw * d[j]) - summ as f32 * (dmin * d[j]);
    }
    sumf
}

/// Activation block `j`'s exact integer sums, `qa` its 32 codes: `sumi`, the scaled dots of
/// its two 16s, and `summ`, their mins times the sums of their activation codes.
#[inline(always)]
fn block_sums(x: &BlockQ2K, j: usize, qa: &[i8]) -> (i32, i32) {
    let (mut sumi, mut summ) = (0i32, 0i32);
    for g in 0..2 {
        let s = 2 * j + g;
        let a = &qa[16 * g..][..16];
        let dot: i32 = (0..16).map(|l| x.q(16 * s + l) as i32 * a[l] as i32).sum();
        let sum: i32 = a.iter().map(|&v| v as i32).sum();
        sumi += (x.scales[s] & 0xF) as i32 * dot;
        summ += (x.scales[s] >> 4) as i32 * sum;
    }
    (sumi, summ)
}

row_by_row_gemm!(
    gemm_q2_k_scalar,
    BlockQ2K,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| superblock_dot(x, &qa[b * QK_K..], &d[b * SUBS..])
);

impl WeightBlock for BlockQ2K {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 10;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ2K::dequantize(self, out)
    }
    fn quantize(x: &[f32]) -> Self {
        quantize_reference(x)
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        vec_dot_superblocks(w, a, superblock_dot)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::avx2;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q2_k, Layout::Natural)
                .with_packed(avx2::gemm_q2_kx16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q2_k, Layout::Natural)
                .with_packed(avx2::gemm_q2_kx16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q2_k, Layout::Natural)
                .with_packed(crate::kernels::x86::avx512::gemm_q2_kx16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q2_k, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q2_k_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ2K {
    fn group_lines(nb: usize) -> usize {
        nb * (SUBS * Q2_K_RECORD_LINES + K_SCALE_LINES)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for s in 0..SUBS {
            let codes: [u8; QK] = std::array::from_fn(|l| blk.q(QK * s + l));
            put_two_bit_codes(group, (b * SUBS + s) * Q2_K_RECORD_LINES, i, &codes);
        }
        let line = k_scales_at(Q2_K_RECORD_LINES, nb * SUBS, b * SUBS);
        span_mut(group, line, 2 * i, 2).copy_from_slice(&blk.d);
        span_mut(group, line, 32 + 2 * i, 2).copy_from_slice(&blk.dmin);
        for (t, &sc) in blk.scales.iter().enumerate() {
            group[(line + 1) * 64 + 16 * t + i] = sc;
        }
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let line = k_scales_at(Q2_K_RECORD_LINES, nb * SUBS, b * SUBS);
        let mut codes = [0u8; QK_K];
        for (s, sub) in codes.chunks_exact_mut(QK).enumerate() {
            sub.copy_from_slice(&get_two_bit_codes(
                group,
                (b * SUBS + s) * Q2_K_RECORD_LINES,
                i,
            ));
        }
        let at = line * 64 + 2 * i;
        BlockQ2K {
            scales: std::array::from_fn(|t| group[(line + 1) * 64 + 16 * t + i]),
            qs: pack_2bit_codes(&codes),
            d: [group[at], group[at + 1]],
            dmin: [group[at + 32], group[at + 33]],
        }
    }
    /// Per activation block `j` its exact `sumi` and `summ`, then
    /// `acc = fma(sumi, d * d_a, acc)` and `acc = fma(summ, -dmin * d_a, acc)`.
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let (dw, dmin) = (f16_to_f32(x.d), f16_to_f32(x.dmin));
        let mut acc = acc;
        for (j, y) in a.iter().enumerate().take(SUBS) {
            let (sumi, summ) = block_sums(x, j, &y.qs);
            let da = f16_to_f32(y.d);
            acc = (sumi as f32).mul_add(dw * da, acc);
            acc = (summ as f32).mul_add(-dmin * da, acc);
        }
        acc
    }
}
