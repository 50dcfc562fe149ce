//! Q4_K: superblocks of 256 weights in 8 sub-blocks of 32, each `d * sc * q - dmin * m` with
//! 4-bit codes and 6-bit sub-block scales `sc` and mins `m`; multiplied against Q8_1
//! activations, one activation block per sub-block (each sub-block is a Q4_1 block with
//! `d' = d * sc`, `m' = -dmin * m`).

use half::f16;

use super::k_rounding::{groups, make_qkx2_quants, nearest_int, ScaleSearch};
use super::{BlockQ8_1, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, f16_bytes, f16_to_f32, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    get_nibbles, k_scales_at, put_nibbles, span_mut, Repack, K_SCALE_LINES, Q4_K_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// Values per K-quant superblock.
pub const QK_K: usize = 256;
/// 32-value sub-blocks (activation blocks) per superblock.
pub(crate) const SUBS: usize = QK_K / QK;

/// ggml's `block_q4_K`. Sub-block `2p` has its codes in the low nibbles of `qs[32p..32p+32]`,
/// sub-block `2p + 1` in their high nibbles; `scales` packs eight 6-bit scales and mins.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; QK_K / 2],
}

impl Default for BlockQ4K {
    fn default() -> Self {
        BlockQ4K {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qs: [0; QK_K / 2],
        }
    }
}

byte_block!(BlockQ4K, "q4_K", 144, QK_K);

impl BlockQ4K {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f16 {
        f16_bits(self.dmin)
    }
    /// Sub-block `j`'s 6-bit scale and min.
    #[inline(always)]
    pub fn scale_min(&self, j: usize) -> (u8, u8) {
        scale_min_k4(&self.scales, j)
    }
    /// Sub-block `j`'s `d * sc` and `dmin * m` in f32.
    #[inline(always)]
    pub(crate) fn sub_scales(&self, j: usize) -> (f32, f32) {
        sub_scales(self.d, self.dmin, &self.scales, j)
    }
    /// The 4-bit code of element `e` (0..256).
    #[inline(always)]
    pub fn q(&self, e: usize) -> u8 {
        let (j, l) = (e / QK, e % QK);
        let byte = self.qs[32 * (j / 2) + l];
        if j % 2 == 0 {
            byte & 0x0F
        } else {
            byte >> 4
        }
    }
    /// The 256 weights as f32, in ggml's arithmetic (`d * sc * q - dmin * m` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        dequantize_offset(self, out)
    }
}

/// Sub-block `j`'s 6-bit scale and min from the 12 bytes Q4_K and Q5_K pack them in (ggml's
/// `get_scale_min_k4`).
#[inline(always)]
pub(crate) fn scale_min_k4(q: &[u8; 12], j: usize) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 12 bytes [`scale_min_k4`] reads the eight 6-bit scales and mins back from.
pub(crate) fn pack_scale_min_k4(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
    }
    q
}

/// The scale search of ggml's `quantize_row_q4_K_ref`.
const Q4_K_SEARCH: ScaleSearch = ScaleSearch {
    first: -1.0,
    step: 0.1,
    steps: 20,
};

/// A Q4_K or Q5_K superblock before its codes are packed.
pub(super) struct OffsetQuantized {
    pub(super) d: [u8; 2],
    pub(super) dmin: [u8; 2],
    pub(super) scales: [u8; 12],
    /// Each sub-block's codes, `0..=nmax`.
    pub(super) codes: [[u8; QK]; SUBS],
}

/// ggml's reference quantization of a Q4_K (`nmax` 15) or Q5_K (`nmax` 31) superblock. Each 32
/// values get a scale and offset fit by [`make_qkx2_quants`] (weights `rms(x) + |x|`, least
/// squared error, steps `search`); the eight scales and the eight offsets are rounded to 6 bits
/// of the largest of each, and every code chosen again against the rounded scale and offset (a
/// sub-block whose scale rounds to 0 keeps the fit's codes).
pub(super) fn quantize_offset(x: &[f32], nmax: i32, search: ScaleSearch) -> OffsetQuantized {
    let groups: [[f32; QK]; SUBS] = groups(x);
    let weights = groups.map(|xs| {
        let sum_x2 = xs.iter().fold(0f32, |s, &v| s + v * v);
        let av_x = (sum_x2 / QK as f32).sqrt();
        xs.map(|v| av_x + v.abs())
    });
    let mut codes = [[0u8; QK]; SUBS];
    let fits = make_qkx2_quants(&groups, &weights, nmax, search, false, &mut codes);
    let (scales, mins) = (fits.map(|f| f.0), fits.map(|f| f.1));
    // Both are fits' largest values, never below 0.
    let max_scale = scales.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let max_min = mins.iter().fold(0f32, |m, &s| if s > m { s } else { m });
    let inverse = |max: f32| if max > 0.0 { 63.0 / max } else { 0.0 };
    // ggml keeps the rounded values in a u8 before capping them at 63.
    let six_bits = |inv: f32, v: [f32; SUBS]| v.map(|v| (nearest_int(inv * v) as u8).min(63));
    let scales = pack_scale_min_k4(
        six_bits(inverse(max_scale), scales),
        six_bits(inverse(max_min), mins),
    );
    let (d, dmin) = (
        f16_bytes(f16::from_f32(max_scale / 63.0)),
        f16_bytes(f16::from_f32(max_min / 63.0)),
    );
    for (j, (xs, qs)) in groups.iter().zip(&mut codes).enumerate() {
        let (sc, m) = scale_min_k4(&scales, j);
        let d = f16_to_f32(d) * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * m as f32;
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = nearest_int((v + dm) / d).clamp(0, nmax) as u8;
        }
    }
    OffsetQuantized {
        d,
        dmin,
        scales,
        codes,
    }
}

/// The low four bits of 256 codes as Q4_K and Q5_K store them: sub-block `2p + t` in nibble `t`
/// of `qs[32p..32p + 32]`.
pub(super) fn low_nibbles(codes: &[[u8; QK]; SUBS]) -> [u8; QK_K / 2] {
    std::array::from_fn(|i| {
        let (p, l) = (i / 32, i % 32);
        (codes[2 * p][l] & 0x0F) | ((codes[2 * p + 1][l] & 0x0F) << 4)
    })
}

/// Sub-block `j`'s `d * sc` and `dmin * m` in f32.
#[inline(always)]
pub(crate) fn sub_scales(d: [u8; 2], dmin: [u8; 2], scales: &[u8; 12], j: usize) -> (f32, f32) {
    let (sc, m) = scale_min_k4(scales, j);
    (f16_to_f32(d) * sc as f32, f16_to_f32(dmin) * m as f32)
}

/// What the scalar definitions of the K-quants with offsets (Q4_K, Q5_K) read of a superblock:
/// each sub-block `j` is `d' * q - m'`, whatever the codes' width.
pub(crate) trait OffsetSuperblock {
    /// Sub-block `j`'s `d' = d * sc` and `m' = dmin * m` in f32.
    fn sub_scales(&self, j: usize) -> (f32, f32);
    /// The code of element `e` (0..256).
    fn code(&self, e: usize) -> u8;
}

/// Sub-block `s`'s 32 codes as a Q4_0 block packs them: byte `j` holds code `j` in its low
/// nibble, code `16 + j` in its high one (fifth bits dropped). Q4_K and Q5_K keep sub-block
/// `2p + t`'s low four bits in nibble `t` of `qs[32p..32p + 32]`.
pub(crate) fn sub_block_nibbles(qs: &[u8; QK_K / 2], s: usize) -> [u8; 16] {
    let (run, shift) = (&qs[32 * (s / 2)..32 * (s / 2) + 32], 4 * (s % 2));
    std::array::from_fn(|j| ((run[j] >> shift) & 0x0F) | (((run[16 + j] >> shift) & 0x0F) << 4))
}

/// The inverse of [`sub_block_nibbles`]: sub-block `s`'s Q4_0-packed nibbles put back into the
/// superblock's `qs` (zeroed there before).
pub(crate) fn set_sub_block_nibbles(qs: &mut [u8; QK_K / 2], s: usize, nibbles: &[u8; 16]) {
    let (run, shift) = (&mut qs[32 * (s / 2)..32 * (s / 2) + 32], 4 * (s % 2));
    for (j, &byte) in nibbles.iter().enumerate() {
        run[j] |= (byte & 0x0F) << shift;
        run[16 + j] |= (byte >> 4) << shift;
    }
}

/// Stores superblock `b`'s `d`, `dmin` and unpacked scales and mins for row `i` of a group of
/// `nb` superblocks whose sub-block records are `record_lines` lines.
pub(crate) fn put_k_scales(
    group: &mut [u8],
    record_lines: usize,
    nb: usize,
    b: usize,
    i: usize,
    (d, dmin, scales): ([u8; 2], [u8; 2], &[u8; 12]),
) {
    let line = k_scales_at(record_lines, nb * SUBS, b * SUBS);
    span_mut(group, line, 2 * i, 2).copy_from_slice(&d);
    span_mut(group, line, 32 + 2 * i, 2).copy_from_slice(&dmin);
    for j in 0..SUBS {
        let (sc, m) = scale_min_k4(scales, j);
        group[(line + 1) * 64 + 16 * j + i] = sc;
        group[(line + 3) * 64 + 16 * j + i] = m;
    }
}

/// Row `i`'s `d`, `dmin` and packed scales of superblock `b`, back from [`put_k_scales`].
pub(crate) fn get_k_scales(
    group: &[u8],
    record_lines: usize,
    nb: usize,
    b: usize,
    i: usize,
) -> ([u8; 2], [u8; 2], [u8; 12]) {
    let line = k_scales_at(record_lines, nb * SUBS, b * SUBS);
    let f16 = |at: usize| [group[line * 64 + at], group[line * 64 + at + 1]];
    let sc = std::array::from_fn(|j| group[(line + 1) * 64 + 16 * j + i]);
    let m = std::array::from_fn(|j| group[(line + 3) * 64 + 16 * j + i]);
    (f16(2 * i), f16(32 + 2 * i), pack_scale_min_k4(sc, m))
}

/// The packed kernels' arithmetic for one superblock: per sub-block `j`,
/// `acc = fma(sumi, d' * d_a, acc)` then `acc = fma(-m', s_a, acc)`.
pub(crate) fn offset_packed_step<K: OffsetSuperblock>(acc: f32, x: &K, a: &[BlockQ8_1]) -> f32 {
    let mut acc = acc;
    for (j, y) in a.iter().enumerate().take(SUBS) {
        let (d1, m1) = x.sub_scales(j);
        let sumi: i32 = (0..QK)
            .map(|l| x.code(j * QK + l) as i32 * y.qs[l] as i32)
            .sum();
        acc = (sumi as f32).mul_add(d1 * f16_to_f32(y.d), acc);
        acc = (-m1).mul_add(f16_to_f32(y.s), acc);
    }
    acc
}

/// The 256 weights as f32, in ggml's arithmetic (`d' * q - m'` in f32).
pub(crate) fn dequantize_offset<K: OffsetSuperblock>(x: &K, out: &mut [f32]) {
    for (j, sub) in out.chunks_exact_mut(QK).enumerate() {
        let (d1, m1) = x.sub_scales(j);
        for (l, o) in sub.iter_mut().enumerate() {
            *o = d1 * x.code(j * QK + l) as f32 - m1;
        }
    }
}

/// One superblock against its 8 activation blocks: per sub-block `j`,
/// `sumf += sumi * (d' * d_a) - m' * s_a` in f32.
#[inline(always)]
pub(crate) fn superblock_dot<K: OffsetSuperblock>(
    x: &K,
    qa: &[i8],
    d: &[f32],
    s: impl Fn(usize) -> f32,
) -> f32 {
    let mut sumf = 0f32;
    for j in 0..SUBS {
        let (d1, m1) = x.sub_scales(j);
        let sumi: i32 = (0..QK)
            .map(|l| x.code(j * QK + l) as i32 * qa[j * QK + l] as i32)
            .sum();
        sumf += sumi as f32 * (d1 * d[j]) - m1 * s(j);
    }
    sumf
}

/// K-quant weights with offsets . Q8_1 activations (8 activation blocks per weight block).
pub(crate) fn vec_dot_offset<K: OffsetSuperblock>(w: &[K], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, ys) in w.iter().zip(a.chunks_exact(SUBS)) {
        let qa: Vec<i8> = ys.iter().flat_map(|y| y.qs).collect();
        let d: Vec<f32> = ys.iter().map(|y| f16_to_f32(y.d)).collect();
        sumf += superblock_dot(x, &qa, &d, |j| f16_to_f32(ys[j].s));
    }
    sumf
}

/// Q4_K weights . Q8_1 activations (8 activation blocks per weight block).
pub fn vec_dot_q4_k_q8_1(w: &[BlockQ4K], a: &[BlockQ8_1]) -> f32 {
    vec_dot_offset(w, a)
}

impl OffsetSuperblock for BlockQ4K {
    fn sub_scales(&self, j: usize) -> (f32, f32) {
        BlockQ4K::sub_scales(self, j)
    }
    fn code(&self, e: usize) -> u8 {
        self.q(e)
    }
}

row_by_row_gemm!(
    gemm_q4_k_scalar,
    BlockQ4K,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d, s) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c),
        a.s(c)
    ),
    |x, b| superblock_dot(x, &qa[b * QK_K..], &d[b * SUBS..], |j| s
        [2 * (b * SUBS + j) + 1])
);

impl WeightBlock for BlockQ4K {
    type Activation = BlockQ8_1;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 12;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ4K::dequantize(self, out)
    }
    /// ggml's `quantize_row_q4_K_ref` (`quantize_offset` with 15 code steps).
    fn quantize(x: &[f32]) -> Self {
        let q = quantize_offset(x, 15, Q4_K_SEARCH);
        BlockQ4K {
            d: q.d,
            dmin: q.dmin,
            scales: q.scales,
            qs: low_nibbles(&q.codes),
        }
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        vec_dot_q4_k_q8_1(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::avx2;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q4_k, Layout::Natural)
                .with_packed(avx2::gemm_q4_kx16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q4_k, Layout::Natural)
                .with_packed(avx2::gemm_q4_kx16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q4_k, Layout::Natural)
                .with_packed(crate::kernels::x86::avx512::gemm_q4_kx16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q4_k, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q4_k_scalar, Layout::Natural),
        }
    }
}

impl Repack for BlockQ4K {
    fn group_lines(nb: usize) -> usize {
        nb * (SUBS * Q4_K_RECORD_LINES + K_SCALE_LINES)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q4_K_RECORD_LINES;
            put_nibbles(group, rec, i, &sub_block_nibbles(&blk.qs, s));
        }
        put_k_scales(
            group,
            Q4_K_RECORD_LINES,
            nb,
            b,
            i,
            (blk.d, blk.dmin, &blk.scales),
        );
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let (d, dmin, scales) = get_k_scales(group, Q4_K_RECORD_LINES, nb, b, i);
        let mut blk = BlockQ4K {
            d,
            dmin,
            scales,
            ..BlockQ4K::default()
        };
        for s in 0..SUBS {
            let nibbles = get_nibbles(group, (b * SUBS + s) * Q4_K_RECORD_LINES, i);
            set_sub_block_nibbles(&mut blk.qs, s, &nibbles);
        }
        blk
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_1]) -> f32 {
        offset_packed_step(acc, x, a)
    }
}
