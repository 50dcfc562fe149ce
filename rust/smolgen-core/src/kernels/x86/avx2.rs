//! x86-64 AVX2 + FMA + F16C micro-kernels, one 32-element block per step.
//!
//! Q4_1 x Q8_1: nibbles unpack to bytes 0..15, `vpmaddubsw` (u8 x i8 -> i16 pairs, at most
//! 2 * 15 * 127, no saturation) then `vpmaddwd` by 1 to i32, converted to f32 and scaled by
//! `d_w * d_a`; the offset term `m_w * s_a` rides in lane 1 of the same accumulator.
//! Q8_0 x Q8_0: the usual sign trick (`|w|` times `a` with `w`'s sign), which needs activation
//! codes in -127..=127.
//!
//! The same products on weights in the 16-row layout ([`crate::kernels::packed`]) take each group as
//! two halves of 8 rows, one 256-bit register per 4 codes of 8 rows.

// Register tiles are indexed in lockstep (acc[r][c], wq[r], qa[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use std::ops::Range;

use super::walk::{packed_gemm, prefetch_record, row_major_gemm};
use crate::kernels::blocks::f16_to_f32;
use crate::kernels::blocks::QK;
use crate::kernels::packed::{
    scales_at, GROUP, Q4_0_RECORD_LINES, Q4_1_RECORD_LINES, Q8_0_RECORD_LINES,
};
use crate::kernels::prepared::{Line, OutPtr, Prepared};
use crate::kernels::types::{
    BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0,
};

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Defines a row-major tile for a weight type whose block is 32 unsigned codes (`$load`, from
/// `$blk`, the block's first byte) times `d` plus `m`, the two f16 it starts with, against Q8_1
/// activations: rows `r0..r0+R` (first block at `w`, `nb` blocks per row) against activation
/// rows `c0..c0+C`. Codes up to 31 keep `vpmaddubsw`'s pairs (at most 2 * 31 * 127) inside i16.
///
/// Each generated function's safety contract: AVX2/FMA/F16C present; the rows and activation
/// rows exist; `out` as in `GemmFn`.
macro_rules! offset_tile {
    ($name:ident, $block:ty, |$blk:ident| $load:expr) => {
        /// # Safety
        /// See [`offset_tile`].
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const C: usize>(
            w: *const $block,
            nb: usize,
            a: &Prepared,
            c0: usize,
            r0: usize,
            out: OutPtr,
            pf: usize,
        ) {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let sa: [*const f32; C] = std::array::from_fn(|c| a.s(c0 + c).as_ptr());
            for b in 0..nb {
                let mut wq = [_mm256_setzero_si256(); R];
                let mut dm = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    // SAFETY: block `b` of row `r0 + r` exists; a block starts with its f16 `d` and `m`.
                    unsafe {
                        let blk = w.add(r * nb + b).cast::<u8>();
                        if pf != 0 {
                            _mm_prefetch::<_MM_HINT_T0>(blk.wrapping_add(pf).cast());
                        }
                        let $blk = blk;
                        wq[r] = $load;
                        // [d, m, 0, ...] as f32.
                        dm[r] =
                            _mm256_cvtph_ps(_mm_cvtsi32_si128(blk.cast::<i32>().read_unaligned()));
                    }
                }
                for c in 0..C {
                    // SAFETY: prepared rows hold `nbp >= nb` blocks; code lines are 64-byte aligned,
                    // so block `b` is 32-byte aligned; `s` holds `[0, s]` per block.
                    let (av, dav, sv) = unsafe {
                        (
                            _mm256_load_si256(qa[c].add(b * 32).cast()),
                            _mm256_broadcast_ss(&*da[c].add(b)),
                            _mm256_zextps128_ps256(_mm_castpd_ps(_mm_load_sd(
                                sa[c].add(2 * b).cast(),
                            ))),
                        )
                    };
                    for r in 0..R {
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wq[r], av), ones);
                        let dw = _mm256_broadcastss_ps(_mm256_castps256_ps128(dm[r]));
                        acc[r][c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_mul_ps(dw, dav),
                            acc[r][c],
                        );
                        acc[r][c] = _mm256_fmadd_ps(dm[r], sv, acc[r][c]);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    // SAFETY: the caller's contract.
                    unsafe { out.write(c0 + c, r0 + r, hsum(*v)) };
                }
            }
        }
    };
}

offset_tile!(tile_q4_1, BlockQ4_1, |blk| nibbles(blk.add(4)));
offset_tile!(tile_q5_1, BlockQ5_1, |blk| _mm256_or_si256(
    nibbles(blk.add(8)),
    _mm256_and_si256(bits_as_bytes(blk.add(4)), _mm256_set1_epi8(0x10))
));

/// The 32 codes of 16 bytes of nibbles at `p`: low nibbles (elements 0..16), then high ones.
///
/// # Safety
/// AVX2 present; 16 bytes readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    let raw = unsafe { _mm_loadu_si128(p.cast()) };
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw),
        _mm256_set1_epi8(0x0F),
    )
}

/// The 32 bits of the little-endian u32 at `p` as bytes: byte `j` is all ones where bit `j` is
/// set, else zero (each byte takes its bit's source byte, sets every other bit, and compares
/// with all ones).
///
/// # Safety
/// AVX2 present; 4 bytes readable at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn bits_as_bytes(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    let word = unsafe { p.cast::<i32>().read_unaligned() };
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(word),
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    let others = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
}

/// Defines a row-major tile, as [`tile_q4_1`], for a weight type whose block loads as 32
/// signed codes (`$load`, from `$blk`, the block's first byte; its f16 `d` comes first) times
/// `d`: the sign trick, `|w|` times `a` with `w`'s sign.
///
/// Each generated function's safety contract: as [`tile_q4_1`]'s, and activation codes in
/// -127..=127.
macro_rules! signed_tile {
    ($name:ident, $block:ty, |$blk:ident| $load:expr) => {
        /// # Safety
        /// See [`signed_tile`].
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const C: usize>(
            w: *const $block,
            nb: usize,
            a: &Prepared,
            c0: usize,
            r0: usize,
            out: OutPtr,
            pf: usize,
        ) {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            for b in 0..nb {
                let mut wv = [_mm256_setzero_si256(); R];
                let mut wabs = [_mm256_setzero_si256(); R];
                let mut dw = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    // SAFETY: block `b` of row `r0 + r` exists; a block starts with its f16 `d`.
                    unsafe {
                        let $blk = w.add(r * nb + b).cast::<u8>();
                        if pf != 0 {
                            _mm_prefetch::<_MM_HINT_T0>($blk.wrapping_add(pf).cast());
                        }
                        wv[r] = $load;
                        let d = $blk.cast::<u16>().read_unaligned();
                        dw[r] = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(d as i32)));
                    }
                    wabs[r] = _mm256_abs_epi8(wv[r]);
                }
                for c in 0..C {
                    // SAFETY: as in `tile_q4_1`.
                    let (av, dav) = unsafe {
                        (
                            _mm256_load_si256(qa[c].add(b * 32).cast()),
                            _mm256_broadcast_ss(&*da[c].add(b)),
                        )
                    };
                    for r in 0..R {
                        let p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(av, wv[r])),
                            ones,
                        );
                        acc[r][c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_mul_ps(dw[r], dav),
                            acc[r][c],
                        );
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    // SAFETY: the caller's contract.
                    unsafe { out.write(c0 + c, r0 + r, hsum(*v)) };
                }
            }
        }
    };
}

signed_tile!(tile_q8_0, BlockQ8_0, |blk| _mm256_loadu_si256(
    blk.add(2).cast()
));
signed_tile!(tile_q4_0, BlockQ4_0, |blk| _mm256_sub_epi8(
    nibbles(blk.add(2)),
    _mm256_set1_epi8(8)
));
// `q - 16` is the code with 0xF0 set where its fifth bit is clear.
signed_tile!(tile_q5_0, BlockQ5_0, |blk| _mm256_or_si256(
    nibbles(blk.add(6)),
    _mm256_andnot_si256(bits_as_bytes(blk.add(2)), _mm256_set1_epi8(-16))
));

/// Q4_K rows `r0..r0+R` (`nb` superblocks per row, first at `w`) against activation rows
/// `c0..c0+C` in Q8_1: each 32-weight sub-block is a Q4_1 block with `d' = d * sc` and
/// `m' = -dmin * m`, its codes products summed in i16 and scaled in f32 per sub-block; the
/// mins' terms `m' * s_a` are summed apart, in scalar f32.
///
/// # Safety
/// AVX2/FMA/F16C present; the rows and activation rows exist; `out` as in `GemmFn`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q4_k<const R: usize, const C: usize>(
    w: *const BlockQ4K,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: usize,
) {
    let mask = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut mins = [[0f32; C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    let sa: [*const f32; C] = std::array::from_fn(|c| a.s(c0 + c).as_ptr());
    for b in 0..nb {
        for r in 0..R {
            // SAFETY: superblock `b` of row `r0 + r` exists.
            let blk = unsafe { &*w.add(r * nb + b) };
            prefetch_record((blk as *const BlockQ4K).cast(), pf, 3);
            let subs: [(f32, f32); 8] = std::array::from_fn(|j| blk.sub_scales(j));
            for p in 0..4 {
                // SAFETY: `qs` holds 4 runs of 32 bytes.
                let q = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * p).cast()) };
                let lo = _mm256_and_si256(q, mask);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
                for c in 0..C {
                    let j = b * 8 + 2 * p;
                    // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks, 32-byte aligned, and
                    // as many scales.
                    let (alo, ahi, dlo, dhi) = unsafe {
                        (
                            _mm256_load_si256(qa[c].add(j * 32).cast()),
                            _mm256_load_si256(qa[c].add(j * 32 + 32).cast()),
                            *da[c].add(j),
                            *da[c].add(j + 1),
                        )
                    };
                    let plo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, alo), ones);
                    let phi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ahi), ones);
                    let (slo, shi) = (subs[2 * p].0 * dlo, subs[2 * p + 1].0 * dhi);
                    acc[r][c] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(plo), _mm256_set1_ps(slo), acc[r][c]);
                    acc[r][c] =
                        _mm256_fmadd_ps(_mm256_cvtepi32_ps(phi), _mm256_set1_ps(shi), acc[r][c]);
                }
            }
            for c in 0..C {
                for (j, &(_, m)) in subs.iter().enumerate() {
                    // SAFETY: `s` holds `[0, s]` for each of the row's blocks.
                    mins[r][c] += m * unsafe { *sa[c].add(2 * (b * 8 + j) + 1) };
                }
            }
        }
    }
    for r in 0..R {
        for c in 0..C {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, hsum(acc[r][c]) - mins[r][c]) };
        }
    }
}

/// Q6_K rows `r0..r0+R` (`nb` superblocks per row, first at `w`) against activation rows
/// `c0..c0+C` in Q8_0: per 32 weights, the signed codes `q - 32` by the sign trick, each
/// 16-weight half weighted by its scale in `vpmaddwd` (an exact i32), scaled by `d * d_a`.
///
/// # Safety
/// As [`tile_q4_k`]; activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q6_k<const R: usize, const C: usize>(
    w: *const BlockQ6K,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: usize,
) {
    let low4 = _mm256_set1_epi8(0x0F);
    let bits45 = _mm256_set1_epi8(0x30);
    let bias = _mm256_set1_epi8(32);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    for b in 0..nb {
        for r in 0..R {
            // SAFETY: superblock `b` of row `r0 + r` exists.
            let blk = unsafe { &*w.add(r * nb + b) };
            prefetch_record((blk as *const BlockQ6K).cast(), pf, 4);
            let dw = f16_to_f32(blk.d);
            for h in 0..2 {
                // SAFETY: each half holds 64 bytes of `ql` and 32 of `qh`.
                let (ql0, ql1, qh) = unsafe {
                    (
                        _mm256_loadu_si256(blk.ql.as_ptr().add(64 * h).cast()),
                        _mm256_loadu_si256(blk.ql.as_ptr().add(64 * h + 32).cast()),
                        _mm256_loadu_si256(blk.qh.as_ptr().add(32 * h).cast()),
                    )
                };
                // The top two bits of run `k` are bits `2k` of `qh`, moved to bits 4..6.
                let codes = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, low4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, low4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), low4),
                        _mm256_and_si256(qh, bits45),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), low4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), bits45),
                    ),
                ];
                for (k, code) in codes.iter().enumerate() {
                    let wv = _mm256_sub_epi8(*code, bias);
                    let magnitude = _mm256_abs_epi8(wv);
                    let j = 4 * h + k;
                    let scales = _mm256_set_m128i(
                        _mm_set1_epi16(blk.scales[2 * j + 1] as i16),
                        _mm_set1_epi16(blk.scales[2 * j] as i16),
                    );
                    for c in 0..C {
                        let at = b * 8 + j;
                        // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks, 32-byte aligned,
                        // and as many scales.
                        let (av, d) = unsafe {
                            (_mm256_load_si256(qa[c].add(at * 32).cast()), *da[c].add(at))
                        };
                        let p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(av, wv)),
                            scales,
                        );
                        acc[r][c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(dw * d),
                            acc[r][c],
                        );
                    }
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, hsum(*v)) };
        }
    }
}

row_major_gemm!(gemm_q4_1, "avx2,fma,f16c", BlockQ4_1, tile_q4_1, 4 x 2);
// Activation codes in -127..=127.
row_major_gemm!(gemm_q8_0, "avx2,fma,f16c", BlockQ8_0, tile_q8_0, 4 x 2);
row_major_gemm!(gemm_q4_0, "avx2,fma,f16c", BlockQ4_0, tile_q4_0, 4 x 2);
row_major_gemm!(gemm_q5_0, "avx2,fma,f16c", BlockQ5_0, tile_q5_0, 4 x 2);
row_major_gemm!(gemm_q5_1, "avx2,fma,f16c", BlockQ5_1, tile_q5_1, 4 x 2);
row_major_gemm!(gemm_q4_k, "avx2,fma,f16c", BlockQ4K, tile_q4_k, 4 x 2);
// Activation codes in -127..=127.
row_major_gemm!(gemm_q6_k, "avx2,fma,f16c", BlockQ6K, tile_q6_k, 4 x 2);

/// Rows per 256-bit register in the 16-row layout: a group is two halves.
const HALF: usize = 8;

/// Stores 8-row accumulators: activation row `c0 + c` gets `acc[c]`'s first `rows.len()` lanes
/// at weight rows `rows`.
///
/// # Safety
/// AVX2 is available; those outputs exist and are this call's to write.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_half<const C: usize>(
    acc: &[__m256; C],
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
) {
    let n = rows.len() as i32;
    let keep = _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    );
    for (c, v) in acc.iter().enumerate() {
        // SAFETY: the caller's contract; masked-off lanes are not touched.
        unsafe { _mm256_maskstore_ps(out.at(c0 + c, rows.start), keep, *v) };
    }
}

/// Defines a Q4_1 tile of the 16-row layout for one instruction set: one half (8 rows, `rows`)
/// of a group x `C` activation rows, all blocks. `$dot(isum, w, x)` adds one 4-code group's
/// products (`w` unsigned codes, `x` activation codes broadcast) to the lanes of `isum`;
/// `$widen(isum)` gives a block's dots as i32 lanes.
///
/// Each generated function's safety contract: the CPU has `$features`; `rec` is the first
/// record of the group holding `rows` (1 to 8 rows of one half); activation rows
/// `c0..c0 + C` exist in the natural layout; `out` as in `GemmFn`.
macro_rules! q4_1_half_tile {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dot:expr, $widen:expr) => {
        $(#[$doc])*
        /// # Safety
        /// See [`q4_1_half_tile`].
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: usize,
        ) {
            let nibble = _mm256_set1_epi8(0x0F);
            let half = (rows.start % GROUP) / HALF;
            let mut acc = [_mm256_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            // Raw pointers: bounds checks in the column loop keep LLVM from unrolling it.
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let sa: [*const f32; C] = std::array::from_fn(|c| a.s(c0 + c).as_ptr());
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `Q4_1_RECORD_LINES` aligned lines; a
                // half is 32 aligned bytes of a line, its scales 16 bytes of line 4.
                let r = unsafe { rec.add(b * Q4_1_RECORD_LINES).cast::<u8>() };
                prefetch_record(r, pf, Q4_1_RECORD_LINES);
                let (dw, mw) = unsafe {
                    (
                        _mm256_cvtph_ps(_mm_load_si128(r.add(256 + 16 * half).cast())),
                        _mm256_cvtph_ps(_mm_load_si128(r.add(288 + 16 * half).cast())),
                    )
                };
                let mut isum = [_mm256_setzero_si256(); C];
                for j in 0..4 {
                    // SAFETY: as above.
                    let l = unsafe { _mm256_load_si256(r.add(64 * j + 32 * half).cast()) };
                    let lo = _mm256_and_si256(l, nibble);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(l), nibble);
                    for c in 0..C {
                        // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes in element
                        // order.
                        let (x, y) = unsafe {
                            let q = qa[c].add(b * QK + 4 * j);
                            (
                                _mm256_set1_epi32(q.cast::<i32>().read_unaligned()),
                                _mm256_set1_epi32(q.add(16).cast::<i32>().read_unaligned()),
                            )
                        };
                        isum[c] = $dot(isum[c], lo, x);
                        isum[c] = $dot(isum[c], hi, y);
                    }
                }
                for c in 0..C {
                    let sumi = _mm256_cvtepi32_ps($widen(isum[c]));
                    // SAFETY: a prepared row holds `nbp >= nb` scales `d` and `2 * nbp` values
                    // `s`.
                    let (d, s) = unsafe { (*da[c].add(b), *sa[c].add(2 * b + 1)) };
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d));
                    acc[c] = _mm256_fmadd_ps(sumi, scale, acc[c]);
                    acc[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(s), acc[c]);
                }
            }
            // SAFETY: the caller's contract.
            unsafe { store_half(&acc, c0, rows, out) };
        }
    };
}

q4_1_half_tile!(
    /// AVX2: `vpmaddubsw` pairs are at most 2 * 15 * 127 and a block's sixteen products per
    /// i16 lane at most 30480, so a block's dot sums in i16 before one `vpmaddwd` widens it.
    tile_q4_1x16,
    "avx2,fma,f16c",
    |isum, w, x| _mm256_add_epi16(isum, _mm256_maddubs_epi16(w, x)),
    |isum| _mm256_madd_epi16(isum, _mm256_set1_epi16(1))
);

q4_1_half_tile!(
    /// AVX-VNNI: `vpdpbusd` adds each 4-code group's products straight into i32 lanes.
    tile_q4_1x16_vnni,
    "avx2,fma,f16c,avxvnni",
    |isum, w, x| _mm256_dpbusd_avx_epi32(isum, w, x),
    |isum| isum
);

/// Defines a Q4_0 tile of [`q4_1_half_tile`]'s shape: the same nibble products, the scales
/// after the group's records, and each block's dot started from `-8 * sum(activation codes)`
/// (the activation's Q8_0 bias correction, `-128 * sum`, shifted right by 4: exact), which
/// turns the unsigned codes' products into those of `q - 8`.
///
/// Each generated function's safety contract: as [`q4_1_half_tile`]'s, with Q8_0 activations.
macro_rules! q4_0_half_tile {
    ($(#[$doc:meta])* $name:ident, $features:literal, $dot:expr, $widen:expr) => {
        $(#[$doc])*
        /// # Safety
        /// See [`q4_0_half_tile`].
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: usize,
        ) {
            let nibble = _mm256_set1_epi8(0x0F);
            let half = (rows.start % GROUP) / HALF;
            let mut acc = [_mm256_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let fix: [*const i32; C] = std::array::from_fn(|c| a.bias_fix(c0 + c).as_ptr());
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `Q4_0_RECORD_LINES` aligned lines, then
                // its scales, 32 bytes per block (16 of them for a half).
                let r = unsafe { rec.add(b * Q4_0_RECORD_LINES).cast::<u8>() };
                prefetch_record(r, pf, Q4_0_RECORD_LINES);
                let (line, at) = scales_at(Q4_0_RECORD_LINES, nb, b);
                let dw = unsafe {
                    _mm256_cvtph_ps(_mm_load_si128(
                        rec.add(line).cast::<u8>().add(at + 16 * half).cast(),
                    ))
                };
                let mut isum = [_mm256_setzero_si256(); C];
                for j in 0..Q4_0_RECORD_LINES {
                    // SAFETY: as above.
                    let l = unsafe { _mm256_load_si256(r.add(64 * j + 32 * half).cast()) };
                    let lo = _mm256_and_si256(l, nibble);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(l), nibble);
                    for c in 0..C {
                        // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes in element
                        // order.
                        let (x, y) = unsafe {
                            let q = qa[c].add(b * QK + 4 * j);
                            (
                                _mm256_set1_epi32(q.cast::<i32>().read_unaligned()),
                                _mm256_set1_epi32(q.add(16).cast::<i32>().read_unaligned()),
                            )
                        };
                        isum[c] = $dot(isum[c], lo, x);
                        isum[c] = $dot(isum[c], hi, y);
                    }
                }
                for c in 0..C {
                    // SAFETY: a prepared row holds `nbp >= nb` scales and bias corrections.
                    let (d, start) = unsafe { (*da[c].add(b), *fix[c].add(b) >> 4) };
                    let sumi = _mm256_add_epi32($widen(isum[c]), _mm256_set1_epi32(start));
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d));
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), scale, acc[c]);
                }
            }
            // SAFETY: the caller's contract.
            unsafe { store_half(&acc, c0, rows, out) };
        }
    };
}

q4_0_half_tile!(
    /// AVX2: the nibble products sum in i16 as in [`tile_q4_1x16`].
    tile_q4_0x16,
    "avx2,fma,f16c",
    |isum, w, x| _mm256_add_epi16(isum, _mm256_maddubs_epi16(w, x)),
    |isum| _mm256_madd_epi16(isum, _mm256_set1_epi16(1))
);

q4_0_half_tile!(
    /// AVX-VNNI, as [`tile_q4_1x16_vnni`].
    tile_q4_0x16_vnni,
    "avx2,fma,f16c,avxvnni",
    |isum, w, x| _mm256_dpbusd_avx_epi32(isum, w, x),
    |isum| isum
);

/// The Q8_0 tile (codes stored +128) of [`q4_1_half_tile`]'s shape, for AVX2: the sign trick
/// on the unbiased codes, `|w|` times `a` with `w`'s sign, widened to i32 per group of four.
///
/// # Safety
/// As for [`q4_1_half_tile`]'s tiles, and activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8_0x16<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: usize,
) {
    let bias = _mm256_set1_epi8(i8::MIN);
    let ones = _mm256_set1_epi16(1);
    let half = (rows.start % GROUP) / HALF;
    let mut acc = [_mm256_setzero_ps(); C];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    for b in 0..nb {
        // SAFETY: the group has `nb` records of `Q8_0_RECORD_LINES` aligned lines, then its
        // scales, 32 bytes per block (16 of them for a half).
        let r = unsafe { rec.add(b * Q8_0_RECORD_LINES).cast::<u8>() };
        prefetch_record(r, pf, Q8_0_RECORD_LINES);
        let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
        let dw = unsafe {
            _mm256_cvtph_ps(_mm_load_si128(
                rec.add(line).cast::<u8>().add(at + 16 * half).cast(),
            ))
        };
        let mut isum = [_mm256_setzero_si256(); C];
        for j in 0..Q8_0_RECORD_LINES {
            // SAFETY: as above.
            let w = unsafe {
                _mm256_xor_si256(_mm256_load_si256(r.add(64 * j + 32 * half).cast()), bias)
            };
            let magnitude = _mm256_abs_epi8(w);
            for c in 0..C {
                // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes.
                let x = unsafe {
                    _mm256_set1_epi32(qa[c].add(b * QK + 4 * j).cast::<i32>().read_unaligned())
                };
                let p = _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(x, w));
                isum[c] = _mm256_add_epi32(isum[c], _mm256_madd_epi16(p, ones));
            }
        }
        for c in 0..C {
            // SAFETY: a prepared row holds `nbp >= nb` scales.
            let d = unsafe { *da[c].add(b) };
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), scale, acc[c]);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store_half(&acc, c0, rows, out) };
}

/// Splits a group's `rows` into its 8-row halves.
#[inline(always)]
fn halves(rows: Range<usize>) -> impl Iterator<Item = Range<usize>> {
    let start = rows.start;
    (0..2)
        .map(move |h| start + h * HALF..(start + (h + 1) * HALF).min(rows.end))
        .filter(|r| !r.is_empty())
}

/// [`tile_q8_0x16`] with AVX-VNNI: the codes stay biased (+128, the unsigned operand) and each
/// dot starts from `-128 * sum(activation codes)`, as in the AVX-512 kernel.
///
/// # Safety
/// As for [`q4_1_half_tile`]'s tiles, and the CPU has AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_q8_0x16_vnni<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: usize,
) {
    let half = (rows.start % GROUP) / HALF;
    let mut acc = [_mm256_setzero_ps(); C];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    let fix: [*const i32; C] = std::array::from_fn(|c| a.bias_fix(c0 + c).as_ptr());
    for b in 0..nb {
        // SAFETY: as in `tile_q8_0x16`.
        let r = unsafe { rec.add(b * Q8_0_RECORD_LINES).cast::<u8>() };
        prefetch_record(r, pf, Q8_0_RECORD_LINES);
        let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
        let dw = unsafe {
            _mm256_cvtph_ps(_mm_load_si128(
                rec.add(line).cast::<u8>().add(at + 16 * half).cast(),
            ))
        };
        let mut isum = [_mm256_setzero_si256(); C];
        for c in 0..C {
            // SAFETY: a prepared row holds `nbp >= nb` bias corrections.
            isum[c] = _mm256_set1_epi32(unsafe { *fix[c].add(b) });
        }
        for j in 0..Q8_0_RECORD_LINES {
            // SAFETY: as above.
            let w = unsafe { _mm256_load_si256(r.add(64 * j + 32 * half).cast()) };
            for c in 0..C {
                // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes.
                let x = unsafe {
                    _mm256_set1_epi32(qa[c].add(b * QK + 4 * j).cast::<i32>().read_unaligned())
                };
                isum[c] = _mm256_dpbusd_avx_epi32(isum[c], w, x);
            }
        }
        for c in 0..C {
            // SAFETY: a prepared row holds `nbp >= nb` scales.
            let d = unsafe { *da[c].add(b) };
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[c]), scale, acc[c]);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store_half(&acc, c0, rows, out) };
}

// The 16-row kernels take 4 activation rows per tile (AVX2 has 16 vector registers).
packed_gemm!(
    gemm_q4_1x16,
    "avx2,fma,f16c",
    Q4_1_RECORD_LINES,
    tile_q4_1x16,
    4,
    halves
);
packed_gemm!(
    gemm_q8_0x16,
    "avx2,fma,f16c",
    Q8_0_RECORD_LINES,
    tile_q8_0x16,
    4,
    halves
);
packed_gemm!(
    gemm_q4_1x16_vnni,
    "avx2,fma,f16c,avxvnni",
    Q4_1_RECORD_LINES,
    tile_q4_1x16_vnni,
    4,
    halves
);
packed_gemm!(
    gemm_q8_0x16_vnni,
    "avx2,fma,f16c,avxvnni",
    Q8_0_RECORD_LINES,
    tile_q8_0x16_vnni,
    4,
    halves
);
packed_gemm!(
    gemm_q4_0x16,
    "avx2,fma,f16c",
    Q4_0_RECORD_LINES,
    tile_q4_0x16,
    4,
    halves
);
packed_gemm!(
    gemm_q4_0x16_vnni,
    "avx2,fma,f16c,avxvnni",
    Q4_0_RECORD_LINES,
    tile_q4_0x16_vnni,
    4,
    halves
);
