//! Q5_K: Q4_K with a fifth bit per code: superblocks of 256 weights in 8 sub-blocks of 32, each
//! `d * sc * q - dmin * m` with 5-bit codes; multiplied against Q8_1 activations as Q4_K is.

use half::f16;

use super::k_rounding::ScaleSearch;
use super::q4_k::{
    dequantize_offset, get_k_scales, low_nibbles, offset_packed_step, put_k_scales,
    quantize_offset, set_sub_block_nibbles, sub_block_nibbles, sub_scales, superblock_dot,
    vec_dot_offset, OffsetSuperblock, QK_K, SUBS,
};
use super::{BlockQ8_1, TypeKernels, WeightBlock, WeightKind};
use crate::kernels::blocks::{byte_block, f16_bits, QK};
use crate::kernels::dispatch::Isa;
use crate::kernels::dot::row_by_row_gemm;
use crate::kernels::packed::{
    get_fifth_bits, get_nibbles, put_fifth_bits, put_nibbles, span, span_mut, Repack,
    FIFTH_BITS_LINE, K_SCALE_LINES, Q5_K_RECORD_LINES,
};
use crate::kernels::prepared::Layout;

/// ggml's `block_q5_K`: Q4_K's fields, plus `qh`, whose byte `l` holds in bit `j` the fifth
/// bit of sub-block `j`'s code `l`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

impl Default for BlockQ5K {
    fn default() -> Self {
        BlockQ5K {
            d: [0; 2],
            dmin: [0; 2],
            scales: [0; 12],
            qh: [0; QK_K / 8],
            qs: [0; QK_K / 2],
        }
    }
}

byte_block!(BlockQ5K, "q5_K", 176, QK_K);

impl BlockQ5K {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn dmin(&self) -> f16 {
        f16_bits(self.dmin)
    }
    /// Sub-block `j`'s `d * sc` and `dmin * m` in f32.
    #[inline(always)]
    pub(crate) fn sub_scales(&self, j: usize) -> (f32, f32) {
        sub_scales(self.d, self.dmin, &self.scales, j)
    }
    /// The 5-bit code of element `e` (0..256).
    #[inline(always)]
    pub fn q(&self, e: usize) -> u8 {
        let (j, l) = (e / QK, e % QK);
        let byte = self.qs[32 * (j / 2) + l];
        let low = if j % 2 == 0 { byte & 0x0F } else { byte >> 4 };
        low | (((self.qh[l] >> j) & 1) << 4)
    }
    /// The 256 weights as f32, in ggml's arithmetic (`d * sc * q - dmin * m` in f32).
    pub fn dequantize(&self, out: &mut [f32]) {
        dequantize_offset(self, out)
    }
}

/// Q5_K weights . Q8_1 activations (8 activation blocks per weight block).
pub fn vec_dot_q5_k_q8_1(w: &[BlockQ5K], a: &[BlockQ8_1]) -> f32 {
    vec_dot_offset(w, a)
}

impl OffsetSuperblock for BlockQ5K {
    fn sub_scales(&self, j: usize) -> (f32, f32) {
        BlockQ5K::sub_scales(self, j)
    }
    fn code(&self, e: usize) -> u8 {
        self.q(e)
    }
}

row_by_row_gemm!(
    gemm_q5_k_scalar,
    BlockQ5K,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d, s) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c),
        a.s(c)
    ),
    |x, b| superblock_dot(x, &qa[b * QK_K..], &d[b * SUBS..], |j| s
        [2 * (b * SUBS + j) + 1])
);

impl WeightBlock for BlockQ5K {
    type Activation = BlockQ8_1;
    const KIND: &'static WeightKind = &WeightKind::repacked::<Self>();
    const GGML_TYPE: u32 = 13;
    fn dequantize(&self, out: &mut [f32]) {
        BlockQ5K::dequantize(self, out)
    }
    /// ggml's `quantize_row_q5_K_ref`: Q4_K's choice with 31 code steps and a shorter search.
    fn quantize(x: &[f32]) -> Self {
        const SEARCH: ScaleSearch = ScaleSearch {
            first: -0.5,
            step: 0.1,
            steps: 15,
        };
        let q = quantize_offset(x, 31, SEARCH);
        let mut qh = [0u8; QK_K / 8];
        for (s, codes) in q.codes.iter().enumerate() {
            for (h, &code) in qh.iter_mut().zip(codes) {
                *h |= (code >> 4) << s;
            }
        }
        BlockQ5K {
            d: q.d,
            dmin: q.dmin,
            scales: q.scales,
            qh,
            qs: low_nibbles(&q.codes),
        }
    }
    fn reference_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        vec_dot_q5_k_q8_1(w, a)
    }
    fn kernels(isa: Isa) -> TypeKernels {
        #[cfg(target_arch = "x86_64")]
        use crate::kernels::x86::avx2;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => TypeKernels::row_major(avx2::gemm_q5_k, Layout::Natural)
                .with_packed(avx2::gemm_q5_kx16),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => TypeKernels::row_major(avx2::gemm_q5_k, Layout::Natural)
                .with_packed(avx2::gemm_q5_kx16_vnni),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => TypeKernels::row_major(avx2::gemm_q5_k, Layout::Natural)
                .with_packed(crate::kernels::x86::avx512::gemm_q5_kx16),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => {
                TypeKernels::row_major(crate::kernels::arm::neon::gemm_q5_k, Layout::Natural)
            }
            _ => TypeKernels::row_major(gemm_q5_k_scalar, Layout::Natural),
        }
    }
}

/// Each sub-block a Q5_0 record: nibble lines, then its fifth bits.
impl Repack for BlockQ5K {
    fn group_lines(nb: usize) -> usize {
        nb * (SUBS * Q5_K_RECORD_LINES + K_SCALE_LINES)
    }
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self) {
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q5_K_RECORD_LINES;
            put_nibbles(group, rec, i, &sub_block_nibbles(&blk.qs, s));
            let qh = (0..QK).fold(0u32, |qh, l| qh | (((blk.qh[l] >> s) & 1) as u32) << l);
            put_fifth_bits(span_mut(group, rec + FIFTH_BITS_LINE, 0, 64), i, qh);
        }
        put_k_scales(
            group,
            Q5_K_RECORD_LINES,
            nb,
            b,
            i,
            (blk.d, blk.dmin, &blk.scales),
        );
    }
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self {
        let (d, dmin, scales) = get_k_scales(group, Q5_K_RECORD_LINES, nb, b, i);
        let mut blk = BlockQ5K {
            d,
            dmin,
            scales,
            ..BlockQ5K::default()
        };
        for s in 0..SUBS {
            let rec = (b * SUBS + s) * Q5_K_RECORD_LINES;
            set_sub_block_nibbles(&mut blk.qs, s, &get_nibbles(group, rec, i));
            let qh = get_fifth_bits(span(group, rec + FIFTH_BITS_LINE, 0, 64), i);
            for (l, byte) in blk.qh.iter_mut().enumerate() {
                *byte |= (((qh >> l) & 1) as u8) << s;
            }
        }
        blk
    }
    fn packed_step(acc: f32, x: &Self, a: &[BlockQ8_1]) -> f32 {
        offset_packed_step(acc, x, a)
    }
}
