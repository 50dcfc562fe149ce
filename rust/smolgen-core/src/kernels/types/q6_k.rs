//! Q6_K: superblocks of 256 weights `d * sc * (q - 32)` with 6-bit codes and an i8 scale `sc`
//! per 16 weights; multiplied against Q8_0 activations, one activation block per 32 weights.

use half::f16;

use super::k_rounding::{groups, make_qx_quants, nearest_int, GROUP_MAX_EPS};
use super::q4_k::{QK_K, SUBS};
use super::{BlockQ8_0, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    get_fifth_bits, get_nibbles, k_scales_at, put_fifth_bits, put_nibbles, span, span_mut, Repack,
    FIFTH_BITS_LINE, K_SCALE_LINES, Q6_K_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q6_K`. In each half of 128 weights (`ql` 64 bytes, `qh` 32 bytes): weight
/// `32k + l` (`k` in 0..4, `l` in 0..32) has its low four bits in the low (`k` 0, 1) or high
/// (`k` 2, 3) nibble of `ql[l + 32 * (k % 2)]` and its top two at bits `2k` of `qh[l]`. Weight
/// `e` of the block is scaled by `scales[e / 16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: [u8; 2],
}

impl Default for BlockQ6K {
    fn default() -> Self {
        BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: [0; 2],
        }
    }
}

byte_block!(BlockQ6K, "q6_K", 210, QK_K);

impl BlockQ6K {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    /// The 6-bit code of element `e` (0..256).
    #[inline(always)]
    pub fn q(&self, e: usize) -> u8 {
        let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
        let low = self.ql[64 * half + l + 32 * (k % 2)];
        let low = if k < 2 { low & 0x0F } else { low >> 4 };
        let high = (self.qh[32 * half + l] >> (2 * k)) & 3;
        low | (high << 4)
    }
    /// The 256 weights as f32, in ggml's arithmetic (`d * sc * (q - 32)` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        let d = f16_to_f32(self.d);
        for (e, o) in out.iter_mut().enumerate() {
            *o = d * self.scales[e / 16] as f32 * (self.q(e) as i32 - 32) as f32;
        }
    }
}

/// ggml's `quantize_row_q6_K_ref` for one superblock. Each 16 values get a symmetric scale and
/// codes from [`make_qx_quants`]; the sixteen scales are rounded to i8 steps of the one of
/// largest magnitude (`d` is that scale over -128), and every code chosen again against its
/// rounded scale (a sub-block whose scale rounds to 0 keeps the search's codes). A superblock
/// whose scales are all below `GROUP_MAX_EPS` is all zero bytes.
fn quantize_reference(x: &[f32]) -> BlockQ6K {
    let groups: [[f32; 16]; QK_K / 16] = groups(x);
    let mut codes = [[0u8; 16]; QK_K / 16];
    let scales = make_qx_quants(&groups, 32, &mut codes);
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for &s in &scales {
        if s.abs() > amax {
            (amax, max_scale) = (s.abs(), s);
        }
    }
    let mut blk = BlockQ6K::default();
    if amax < GROUP_MAX_EPS {
        return blk;
    }
    let iscale = -128.0 / max_scale;
    blk.d = f16_bytes(f16::from_f32(1.0 / iscale));
    // Rounded to at most 127, then kept in an i8 as ggml keeps it.
    blk.scales = scales.map(|s| nearest_int(iscale * s).min(127) as i8);
    let d = f16_to_f32(blk.d);
    for ((xs, qs), &sc) in groups.iter().zip(&mut codes).zip(&blk.scales) {
        let d = d * sc as f32;
        if d == 0.0 {
            continue;
        }
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (nearest_int(v / d).clamp(-32, 31) + 32) as u8;
        }
    }
    // Element `128h + 32k + l`: see [`BlockQ6K`].
    for (e, &q) in codes.as_flattened().iter().enumerate() {
        let (half, k, l) = (e / 128, (e % 128) / 32, e % 32);
        blk.ql[64 * half + l + 32 * (k % 2)] |= (q & 0x0F) << (4 * (k / 2));
        blk.qh[32 * half + l] |= (q >> 4) << (2 * k);
    }
    blk
}

/// Activation block `j`'s exact integer dot: `sc[2j] * sum_16 + sc[2j + 1] * sum_16` over
/// `(q - 32) * a`.
#[inline(always)]
fn sumi_block(w: &BlockQ6K, j: usize, qa: &[i8]) -> i32 {
    (0..2)
        .map(|g| {
            let sum: i32 = (0..16)
                .map(|l| (w.q(j * QK + 16 * g + l) as i32 - 32) * qa[16 * g + l] as i32)
                .sum();
            w.scales[2 * j + g] as i32 * sum
        })
        .sum()
}

/// One superblock against its 8 activation blocks: `sumf += sumi_j * (d * d_a)` in f32.
#[inline(always)]
fn superblock_dot(x: &BlockQ6K, qa: &[i8], d: &[f32]) -> f32 {
    let dw = f16_to_f32(x.d);
    let mut sumf = 0f32;
    for j in 0..SUBS {
        sumf += sumi_block(x, j, &qa[j * QK..]) as f32 * (dw * d[j]);
    }
    sumf
}

/// Superblock weights . Q8_0 activations (8 activation blocks per weight block), each superblock
/// given to `dot` with its activation codes and scales: the scalar dot of Q2_K, Q3_K and Q6_K.
pub(crate) fn vec_dot_superblocks<W>(
    w: &[W],
    a: &[BlockQ8_0],
    dot: impl Fn(&W, &[i8], &[f32]) -> f32,
) -> f32 {
    let mut sumf = 0f32;
    for (x, ys) in w.iter().zip(a.chunks_exact(SUBS)) {
        let qa: Vec<i8> = ys.iter().flat_map(|y| y.qs).collect();
        let d: Vec<f32> = ys.iter().map(|y| f16_to_f32(y.d)).collect();
        sumf += dot(x, &qa, &d);
    }
    sumf
}

row_by_row_gemm!(
    gemm_q6_k_scalar,
    BlockQ6K,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| superblock_dot(x, &qa[b * QK_K..], &d[b * SUBS..])
);

impl WeightBlock for BlockQ6K {
    type Activation = BlockQ8_0;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 14;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ6K::dequantize(self, out)
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
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q6_k, Layout::Natural)
                .with_packed(avx2::gemm_q6_kx16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q6_k, Layout::Natural)
                .with_packed(avx2::gemm_q6_kx16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q6_k, Layout::Natural)
                .with_packed(crate::kernels::x86::avx512::gemm_q6_kx16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q6_k, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q6_k_scalar, Layout::Natural),
        }
    }
}

/// The line of a packed Q6_K record holding bit 5 of its codes (bit 4 is in
/// [`FIFTH_BITS_LINE`]).
pub(crate) const SIXTH_BITS_LINE: usize = FIFTH_BITS_LINE + 1;

impl Repack for BlockQ6K {
    fn group_lines(nb: usize) -> usize {
        nb * (SUBS * Q6_K_RECORD_LINES + K_SCALE_LINES)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q6_K_RECORD_LINES;
            let code = |l: usize| blk.q(QK * s + l);
            let nibbles: [u8; 16] = std::array::from_fn(|j| (code(j) & 0x0F) | (code(16 + j) << 4));
            put_nibbles(group, rec, i, &nibbles);
            for (line, bit) in [(FIFTH_BITS_LINE, 4), (SIXTH_BITS_LINE, 5)] {
                let plane = (0..QK).fold(0u32, |p, l| p | (((code(l) >> bit) & 1) as u32) << l);
                put_fifth_bits(span_mut(group, rec + line, 0, 64), i, plane);
            }
        }
        let line = k_scales_at(Q6_K_RECORD_LINES, nb * SUBS, b * SUBS);
        span_mut(group, line, 2 * i, 2).copy_from_slice(&blk.d);
        for (t, &sc) in blk.scales.iter().enumerate() {
            group[(line + 1) * 64 + 16 * t + i] = sc as u8;
        }
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let line = k_scales_at(Q6_K_RECORD_LINES, nb * SUBS, b * SUBS);
        let mut blk = BlockQ6K {
            d: [group[line * 64 + 2 * i], group[line * 64 + 2 * i + 1]],
            scales: std::array::from_fn(|t| group[(line + 1) * 64 + 16 * t + i] as i8),
            ..BlockQ6K::default()
        };
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q6_K_RECORD_LINES;
            let nibbles = get_nibbles(group, rec, i);
            let planes = [FIFTH_BITS_LINE, SIXTH_BITS_LINE]
                .map(|line| get_fifth_bits(span(group, rec + line, 0, 64), i));
            for l in 0..QK {
                let low = if l < 16 {
                    nibbles[l] & 0x0F
                } else {
                    nibbles[l - 16] >> 4
                };
                let high = ((planes[0] >> l) & 1) | (((planes[1] >> l) & 1) << 1);
                // Element `32s + l`: half `s / 4`, run `k = s % 4`, position `l` (see `q`).
                let (half, k) = (s / 4, s % 4);
                blk.ql[64 * half + l + 32 * (k % 2)] |= low << (4 * (k / 2));
                blk.qh[32 * half + l] |= (high as u8) << (2 * k);
            }
        }
        blk
    }
    /// Per sub-block `j`: each 16-code half's exact dot, weighted by its scale, then
    /// `acc = fma(sumi, d * d_a, acc)`.
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_0]) -> f32 {
        let dw = f16_to_f32(x.d);
        let mut acc = acc;
        for (j, y) in a.iter().enumerate().take(SUBS) {
            acc = (sumi_block(x, j, &y.qs) as f32).mul_add(dw * f16_to_f32(y.d), acc);
        }
        acc
    }
}
