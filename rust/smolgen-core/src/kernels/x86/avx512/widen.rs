//! Long prefills through groups widened into records of whole bytes.
//!
//! A packed record keeps its codes in as few bits as the type needs, and the tiles rebuild the
//! bytes `vpdpbusd` takes for every tile of activation rows: masks, shifts and mask moves that
//! cost as much as the dot products themselves. A long prefill widens each group once per chunk
//! of activation rows (`CHUNK_BYTES` of codes, kept in L2), into a thread-local group that the
//! chunk's tiles then read as plain bytes.
//!
//! * Q3_K: a weight is `d * s * q`, a 6-bit signed scale `s` per 16 weights, a code `q` in
//!   `-4..=3`. Their product `s * q` lies in `-124..=128`, so its negation fits an i8, and a
//!   group's sub-block of products, stored +128, is a Q8_0 record whose scale is `-d`: the Q8_0
//!   tile sweeps it. The bits are the Q3_K tile's: both sums are exact in i32 (this one is the
//!   negation of the other), and `cvt(-x) * (-d * d_a)` is `cvt(x) * (d * d_a)` exactly.
//! * Q5_K, Q6_K: the codes as bytes, one line per register of the type's tile, the group's
//!   scale lines copied after them: the same tile reads them, so the bits are the same.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use super::super::walk::{dispatch_cols, Prefetch};
use super::{
    gemm_q3_kx16_tiles, gemm_q5_kx16_tiles, gemm_q6_kx16_tiles, nibble_codes, q3_k_codes,
    q6_k_codes, run_scales, tile_q5_k_bytes_x16, tile_q6_k_bytes_x16, tile_q8_0x16,
};
use crate::kernels::blocks::QK;
use crate::kernels::matmul::QWeight;
use crate::kernels::packed::{
    k_scales_at, scales_at, Repack, GROUP, K_SCALE_LINES, Q3_K_RECORD_LINES, Q5_K_RECORD_LINES,
    Q6_K_RECORD_LINES, Q8_0_RECORD_LINES,
};
use crate::kernels::prepared::{Line, OutPtr, Prepared, ZERO_LINE};
use crate::kernels::types::{BlockQ8_0, QK_K};

/// Lines per record of a group widened to whole bytes: 16 rows x 32 codes.
pub(crate) const BYTE_RECORD_LINES: usize = 8;

/// Activation rows from which a gemm widens its groups: below it, widening a group would cost
/// more than its tiles save.
const WIDEN_FROM_ROWS: usize = 64;
/// Bytes of activation codes swept per widened group: they stay in L2 between groups. (Tests
/// take a small chunk, so that their short batches span several.)
const CHUNK_BYTES: usize = if cfg!(test) { 4 << 10 } else { 512 << 10 };
/// Activation rows per tile, as the 16-row gemms take them.
const COLS: usize = 8;

thread_local! {
    /// One widened group, reused across calls on this thread.
    static WIDENED: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// Defines a 16-row gemm entry point (see `GemmFn`) that takes batches of fewer than
/// [`WIDEN_FROM_ROWS`] activation rows on `$tiles` and longer ones chunk by chunk: each group
/// widened by `$widen` into `$lines(nb)` thread-local lines, then swept by `$tile`.
macro_rules! widened_gemm {
    ($name:ident, $type:literal, $tiles:ident, $widen:ident, $lines:expr, $tile:ident) => {
        #[doc = concat!(
            "The ", $type, " 16-row gemm (see `GemmFn`): short batches on its tiles, long ",
            "ones widened."
        )]
        ///
        /// # Safety
        #[doc = concat!(
            "See `GemmFn`: `w` is a packed ", $type, " matrix; `a` holds Q8_0 activations in ",
            "the natural layout."
        )]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub(crate) unsafe fn $name(w: &QWeight<'_>, a: &Prepared, rows: Range<usize>, out: OutPtr) {
            if a.m < WIDEN_FROM_ROWS {
                // SAFETY: the caller's contract.
                return unsafe { $tiles(w, a, rows, out) };
            }
            let nb = a.nb;
            let chunk_rows = (CHUNK_BYTES / (nb * QK)).max(WIDEN_FROM_ROWS);
            WIDENED.with_borrow_mut(|widened| {
                let lines = $lines(nb);
                if widened.len() < lines {
                    widened.resize(lines, ZERO_LINE);
                }
                let mut chunk = 0;
                while chunk < a.m {
                    let chunk_end = (chunk + chunk_rows).min(a.m);
                    for g in rows.start / GROUP..rows.end.div_ceil(GROUP) {
                        let r0 = g * GROUP;
                        let group_rows = r0..rows.end.min(r0 + GROUP);
                        // SAFETY: `g` is a group of the matrix (the caller's contract);
                        // `widened` holds `$lines(nb)` lines.
                        unsafe { $widen(w.group(g), nb, widened.as_mut_ptr()) };
                        let mut c0 = chunk;
                        while c0 < chunk_end {
                            let nc = COLS.min(chunk_end - c0);
                            // SAFETY: `widened` is the group as `$tile` reads it; the
                            // activation rows exist; the caller's contract for `out`.
                            unsafe {
                                dispatch_cols!(
                                    8,
                                    $tile,
                                    nc,
                                    widened.as_ptr(),
                                    nb,
                                    a,
                                    c0,
                                    group_rows.clone(),
                                    out,
                                    Prefetch::NONE
                                )
                            };
                            c0 += nc;
                        }
                    }
                    chunk = chunk_end;
                }
            });
        }
    };
}

widened_gemm!(
    gemm_q3_kx16,
    "Q3_K",
    gemm_q3_kx16_tiles,
    widen_q3_k_group,
    BlockQ8_0::group_lines,
    tile_q8_0x16
);
widened_gemm!(
    gemm_q5_kx16,
    "Q5_K",
    gemm_q5_kx16_tiles,
    widen_q5_k_group,
    byte_group_lines,
    tile_q5_k_bytes_x16
);
widened_gemm!(
    gemm_q6_kx16,
    "Q6_K",
    gemm_q6_kx16_tiles,
    widen_q6_k_group,
    byte_group_lines,
    tile_q6_k_bytes_x16
);

/// Lines of a K-quant group of `nb` sub-blocks per row widened to whole bytes: its records,
/// then its scale lines.
fn byte_group_lines(nb: usize) -> usize {
    k_scales_at(BYTE_RECORD_LINES, nb, nb)
}

/// Writes the Q6_K group at `rec` (`nb` sub-blocks per row) as whole bytes at `dst`.
///
/// # Safety
/// As [`widen_k_group`], for Q6_K.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen_q6_k_group(rec: *const Line, nb: usize, dst: *mut Line) {
    // SAFETY: the caller's contract; `q6_k_codes` reads one Q6_K record.
    unsafe { widen_k_group(rec, Q6_K_RECORD_LINES, nb, dst, |r| q6_k_codes(r)) }
}

/// Writes the Q5_K group at `rec` (`nb` sub-blocks per row) as whole bytes at `dst`.
///
/// # Safety
/// As [`widen_k_group`], for Q5_K.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen_q5_k_group(rec: *const Line, nb: usize, dst: *mut Line) {
    // SAFETY: the caller's contract; `nibble_codes` reads one Q5 record.
    unsafe { widen_k_group(rec, Q5_K_RECORD_LINES, nb, dst, |r| nibble_codes::<true>(r)) }
}

/// Writes the K-quant group at `rec` (records of `record_lines` lines, `nb` sub-blocks per row)
/// as whole bytes at `dst`: each record's eight registers of codes (`codes` of the record),
/// then the group's scale lines as they are.
///
/// # Safety
/// AVX-512 F/BW present; `rec` is a packed group of the type `codes` reads, of `nb` sub-blocks
/// per row (a whole number of superblocks); `dst` holds [`byte_group_lines`]`(nb)` lines.
#[inline(always)]
unsafe fn widen_k_group(
    rec: *const Line,
    record_lines: usize,
    nb: usize,
    dst: *mut Line,
    codes: impl Fn(*const u8) -> [__m512i; 8],
) {
    for b in 0..nb {
        // SAFETY: the caller's contract: record `b` exists in `rec` and in `dst`.
        unsafe {
            let r = dst.add(b * BYTE_RECORD_LINES).cast::<__m512i>();
            for (j, c) in codes(rec.add(b * record_lines).cast())
                .into_iter()
                .enumerate()
            {
                _mm512_store_si512(r.add(j), c);
            }
        }
    }
    let scale_lines = nb / (QK_K / QK) * K_SCALE_LINES;
    // SAFETY: the caller's contract: both groups end in the same scale lines.
    unsafe {
        std::ptr::copy_nonoverlapping(
            rec.add(k_scales_at(record_lines, nb, 0)),
            dst.add(k_scales_at(BYTE_RECORD_LINES, nb, 0)),
            scale_lines,
        )
    };
}

/// Writes the Q3_K group at `rec` (`nb` sub-blocks per row) as a Q8_0 group at `dst`: each
/// sub-block's `-s * q + 128` in the Q8_0 record, its superblock's `-d` as the block scale.
///
/// # Safety
/// AVX-512 F/BW present; `rec` is a packed Q3_K group of `nb` sub-blocks per row; `dst` holds
/// a Q8_0 group's lines (`Repack::group_lines`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn widen_q3_k_group(rec: *const Line, nb: usize, dst: *mut Line) {
    let sign = _mm256_set1_epi16(i16::MIN);
    for b in 0..nb {
        // SAFETY: the caller's contract: record `b` and its superblock's scale lines exist in
        // `rec`; record `b` and its scale slot exist in `dst`.
        unsafe {
            let codes = q3_k_codes(rec.add(b * Q3_K_RECORD_LINES).cast());
            let k = rec.add(k_scales_at(Q3_K_RECORD_LINES, nb, b)).cast::<u8>();
            let t = 2 * (b % 8);
            let scales = [run_scales::<false>(k, t), run_scales::<false>(k, t + 1)];
            let r = dst.add(b * Q8_0_RECORD_LINES).cast::<__m512i>();
            for (j, &c) in codes.iter().enumerate() {
                _mm512_store_si512(r.add(j), widen_codes(c, scales[j / 4]));
            }
            let d = _mm256_load_si256(k.cast());
            let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
            let slot = dst.add(line).cast::<u8>().add(at).cast();
            _mm256_store_si256(slot, _mm256_xor_si256(d, sign));
        }
    }
}

/// `-s * (c - 4) + 128` per byte, for unsigned Q3_K codes `c` (byte `4i + k` of row `i`) and
/// the rows' scales `s` in `-32..=31` (lane `i` for row `i`), as the unsigned Q8_0 operand.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn widen_codes(c: __m512i, s: __m512i) -> __m512i {
    // `4 - c`, the negated code, in -3..=4; each row's scale in both i16 halves of its lane.
    let neg = _mm512_sub_epi8(_mm512_set1_epi8(4), c);
    let s = _mm512_or_si512(
        _mm512_and_si512(s, _mm512_set1_epi32(0xFFFF)),
        _mm512_slli_epi32::<16>(s),
    );
    let even = _mm512_mullo_epi16(_mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(neg)), s);
    let odd = _mm512_mullo_epi16(_mm512_srai_epi16::<8>(neg), s);
    let bytes = _mm512_mask_blend_epi8(0xAAAA_AAAA_AAAA_AAAA, even, _mm512_slli_epi16::<8>(odd));
    _mm512_xor_si512(bytes, _mm512_set1_epi8(i8::MIN))
}
