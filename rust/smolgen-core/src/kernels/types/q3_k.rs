//! Q3_K: superblocks of 256 weights `d * sc * q` with 3-bit codes `q` in -4..=3 (two low bits
//! in `qs`, the third in `hmask`) and a 6-bit scale `sc` (less 32) per 16 weights; multiplied
//! against Q8_0 activations, one activation block per 32 weights, like Q6_K.

use half::f16;

use super::k_rounding::{groups, make_q3_quants, nearest_int};
use super::q2_k::pack_2bit_codes;
use super::q4_k::{QK_K, SUBS};
use super::q6_k::vec_dot_superblocks;
use super::{BlockQ8_0, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    get_fifth_bits, get_two_bit_codes, k_scales_at, put_fifth_bits, put_two_bit_codes, span,
    span_mut, Repack, K_SCALE_LINES, Q3_K_RECORD_LINES, THIRD_BITS_LINE,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q3_K`. In each half of 128 weights (32 bytes of `qs`), weight `32j + l` (`j` in
/// 0..4, `l` in 0..32) has its low two bits at bits `2j` of `qs[l]`; its third bit is bit
/// `4 * half + j` of `hmask[l]`, and the code is those three bits less 4 (a clear third bit
/// subtracts 4). Weight `e` is scaled by the `e / 16`-th of the sixteen 6-bit `scales`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

impl Default for BlockQ3K {
    fn default() -> Self {
        BlockQ3K {
            hmask: [0; QK_K / 8],
            qs: [0; QK_K / 4],
            scales: [0; 12],
            d: [0; 2],
        }
    }
}

byte_block!(BlockQ3K, "q3_K", 110, QK_K);

impl BlockQ3K {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    /// The signed code of element `e` (0..256), in -4..=3.
    #[inline(always)]
    pub fn q(&self, e: usize) -> i8 {
        let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = (self.qs[32 * half + l] >> (2 * j)) & 3;
        let high = (self.hmask[l] >> (4 * half + j)) & 1;
        (low | (high << 2)) as i8 - 4
    }
    /// The sixteen scales, each its 6 bits less 32 (ggml's `kmask` unpacking: the low four bits
    /// of scale `s` are nibble `s / 8` of `scales[s % 8]`, its top two bits are bits
    /// `2 * (s / 4)` of `scales[8 + s % 4]`).
    pub fn scales(&self) -> [i8; 16] {
        std::array::from_fn(|s| {
            let low = (self.scales[s % 8] >> (4 * (s / 8))) & 0xF;
            let high = (self.scales[8 + s % 4] >> (2 * (s / 4))) & 3;
            (low | (high << 4)) as i8 - 32
        })
    }
    /// The inverse of [`BlockQ3K::scales`]: sixteen 6-bit scales (each `sc + 32`) packed.
    fn pack_scales(sc: &[u8; 16]) -> [u8; 12] {
        let mut q = [0u8; 12];
        for (s, &v) in sc.iter().enumerate() {
            q[s % 8] |= (v & 0xF) << (4 * (s / 8));
            q[8 + s % 4] |= (v >> 4) << (2 * (s / 4));
        }
        q
    }
    /// Stores 256 codes, each its signed value plus 4 (0..8): the low two bits in `qs`, the
    /// third bit of code `e` at bit `e / 32` of `hmask[e % 32]`.
    fn set_codes(&mut self, codes: &[u8]) {
        self.hmask = [0; QK_K / 8];
        for (e, &q) in codes.iter().enumerate() {
            self.hmask[e % 32] |= ((q >> 2) & 1) << (e / 32);
        }
        self.qs = pack_2bit_codes(codes);
    }
    /// The 256 weights as f32, in ggml's arithmetic (`d * (sc - 32)`, then times the code).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        let scales = self.scales();
        for (e, o) in out.iter_mut().enumerate() {
            *o = d * scales[e / 16] as f32 * self.q(e) as f32;
        }
    }
}

/// ggml's `quantize_row_q3_K_ref` for one superblock. Each 16 values get a symmetric scale and
/// codes from [`make_q3_quants`]; the sixteen scales are rounded to 6 bits of the one of largest
/// magnitude (`d` is that scale over -32), and every code chosen again against its rounded scale
/// (a sub-block whose scale rounds to 0 keeps the search's codes).
fn quantize_reference(x: &[f32]) -> BlockQ3K {
    let groups: [[f32; 16]; QK_K / 16] = groups(x);
    let mut codes = [[0u8; 16]; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    for ((xs, qs), s) in groups.iter().zip(&mut codes).zip(&mut scales) {
        *s = make_q3_quants(xs, 4, qs);
    }
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for &s in &scales {
        if s.abs() > amax {
            (amax, max_scale) = (s.abs(), s);
        }
    }
    let mut blk = BlockQ3K::default();
    if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        // ggml keeps the rounded scale in an i8 before clamping it.
        let sc = scales.map(|s| ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8);
        blk.scales = BlockQ3K::pack_scales(&sc);
        blk.d = f16_bytes(f16::from_f32(1.0 / iscale));
    }
    let d = f16_to_f32(blk.d);
    let sc = blk.scales();
    for ((xs, qs), &sc) in groups.iter().zip(&mut codes).zip(&sc) {
        let d = d * sc as f32;
        if d == 0.0 {
            continue;
        }
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-4, 3) + 4) as u8;
        }
    }
    blk.set_codes(codes.as_flattened());
    blk
}

/// Activation block `j`'s exact integer dot, `qa` its 32 codes:
/// `sc[2j] * sum_16 q a + sc[2j + 1] * sum_16 q a`.
#[inline(always)]
fn sumi_block(x: &BlockQ3K, scales: &[i8; 16], j: usize, qa: &[i8]) -> i32 {
    (0..2)
        .map(|g| {
            let s = 16 * (2 * j + g);
            let sum: i32 = (0..16)
                .map(|l| x.q(s + l) as i32 * qa[16 * g + l] as i32)
                .sum();
            scales[2 * j + g] as i32 * sum
        })
        .sum()
}

/// One superblock against its 8 activation blocks: per activation block `j` its exact `sumi`,
/// then `sumf += sumi * (d * d_a)`.
#[inline(always)]
fn superblock_dot(x: &BlockQ3K, qa: &[i8], d: &[f32]) -> f32 {
    let dw = f16_to_f32(x.d);
    let scales = x.scales();
    let mut sumf = 0f32;
    for j in 0..SUBS {
        sumf += sumi_block(x, &scales, j, &qa[j * QK..]) as f32 * (dw * d[j]);
    }
    sumf
}

row_by_row_gemm!(
    gemm_q3_k_scalar,
    BlockQ3K,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| superblock_dot(x, &qa[b * QK_K..], &d[b * SUBS..])
);

impl WeightBlock for BlockQ3K {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 11;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ3K::dequantize(self, out)
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
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q3_k, Layout::Natural)
                .with_packed(avx2::gemm_q3_kx16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q3_k, Layout::Natural)
                .with_packed(avx2::gemm_q3_kx16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q3_k, Layout::Natural)
                .with_packed(crate::kernels::x86::avx512::gemm_q3_kx16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q3_k, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q3_k_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ3K {
    fn group_lines(nb: usize) -> usize {
        nb * (SUBS * Q3_K_RECORD_LINES + K_SCALE_LINES)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q3_K_RECORD_LINES;
            // Each code plus 4, in 0..8: the unsigned operand of the kernels' products.
            let codes: [u8; QK] = std::array::from_fn(|l| (blk.q(QK * s + l) + 4) as u8);
            put_two_bit_codes(group, rec, i, &codes);
            let third = (0..QK).fold(0u32, |p, l| p | (((codes[l] >> 2) & 1) as u32) << l);
            put_fifth_bits(span_mut(group, rec + THIRD_BITS_LINE, 0, 64), i, third);
        }
        let line = k_scales_at(Q3_K_RECORD_LINES, nb * SUBS, b * SUBS);
        span_mut(group, line, 2 * i, 2).copy_from_slice(&blk.d);
        for (t, &sc) in blk.scales().iter().enumerate() {
            group[(line + 1) * 64 + 16 * t + i] = sc as u8;
        }
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let line = k_scales_at(Q3_K_RECORD_LINES, nb * SUBS, b * SUBS);
        let scales: [u8; 16] =
            std::array::from_fn(|t| (group[(line + 1) * 64 + 16 * t + i] as i8 + 32) as u8);
        let mut codes = [0u8; QK_K];
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q3_K_RECORD_LINES;
            let low = get_two_bit_codes(group, rec, i);
            let third = get_fifth_bits(span(group, rec + THIRD_BITS_LINE, 0, 64), i);
            for l in 0..QK {
                codes[QK * s + l] = low[l] | (((third >> l) & 1) as u8) << 2;
            }
        }
        let mut blk = BlockQ3K {
            d: [group[line * 64 + 2 * i], group[line * 64 + 2 * i + 1]],
            scales: BlockQ3K::pack_scales(&scales),
            ..BlockQ3K::default()
        };
        blk.set_codes(&codes);
        blk
    }
    /// Per activation block `j` its exact `sumi`, then `acc = fma(sumi, d * d_a, acc)`.
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let (dw, scales) = (f16_to_f32(x.d), x.scales());
        let mut acc = acc;
        for (j, y) in a.iter().enumerate().take(SUBS) {
            let sumi = sumi_block(x, &scales, j, &y.qs);
            acc = (sumi as f32).mul_add(dw * f16_to_f32(y.d), acc);
        }
        acc
    }
}
