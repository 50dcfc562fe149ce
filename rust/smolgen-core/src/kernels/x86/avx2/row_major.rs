//! Row-major tiles: rows of blocks as the file stores them, against up to 2 activation rows.

// Register tiles are indexed in lockstep (acc[r][c], wq[r], qa[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;

use super::super::walk::{prefetch_record, row_major_gemm, Prefetch};
use super::{bits_as_bytes, hsum, nibbles};
use crate::kernels::blocks::f16_to_f32;
use crate::kernels::prepared::{OutPtr, Prepared};
use crate::kernels::types::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0,
};

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
            pf: Prefetch,
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
                        if pf.is_on() {
                            pf.line(blk);
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
            pf: Prefetch,
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
                        if pf.is_on() {
                            pf.line($blk);
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

/// Defines a K-quant tile with offsets (Q4_K, Q5_K): rows `r0..r0+R` (`nb` superblocks per row,
/// first at `w`) against activation rows `c0..c0+C` in Q8_1. Each 32-weight sub-block is a
/// Q4_1 (Q5_1) block with `d' = d * sc` and `m' = -dmin * m`, its codes' products summed in
/// i16 and scaled in f32 per sub-block; the mins' terms `m' * s_a` are summed apart, in scalar
/// f32. `$fifth` (from the superblock `$blk`) gives, for sub-block `j`, the bytes to OR into its
/// nibbles (`0x10` where the code's fifth bit is set; zero for Q4_K); `$lines` is how many cache
/// lines a superblock spans, for the prefetch.
///
/// Each generated function's safety contract: AVX2/FMA/F16C present; the rows and activation
/// rows exist; `out` as in `GemmFn`.
macro_rules! k_offset_tile {
    ($name:ident, $block:ty, $lines:literal, |$blk:ident| $fifth:expr) => {
        /// # Safety
        /// See [`k_offset_tile`].
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn $name<const R: usize, const C: usize>(
            w: *const $block,
            nb: usize,
            a: &Prepared,
            c0: usize,
            r0: usize,
            out: OutPtr,
            pf: Prefetch,
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
                    prefetch_record((blk as *const $block).cast(), pf, $lines);
                    let $blk = blk;
                    let fifth = $fifth;
                    let subs: [(f32, f32); 8] = std::array::from_fn(|j| blk.sub_scales(j));
                    for p in 0..4 {
                        // SAFETY: `qs` holds 4 runs of 32 bytes.
                        let q = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * p).cast()) };
                        let lo = _mm256_or_si256(_mm256_and_si256(q, mask), fifth(2 * p));
                        let hi = _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask),
                            fifth(2 * p + 1),
                        );
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
                            acc[r][c] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(plo),
                                _mm256_set1_ps(slo),
                                acc[r][c],
                            );
                            acc[r][c] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(phi),
                                _mm256_set1_ps(shi),
                                acc[r][c],
                            );
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
    };
}

k_offset_tile!(tile_q4_k, BlockQ4K, 3, |_blk| |_j: usize| {
    _mm256_setzero_si256()
});
k_offset_tile!(tile_q5_k, BlockQ5K, 3, |blk| {
    // SAFETY: `qh` is 32 bytes: byte `l`'s bit `j` is the fifth bit of sub-block `j`'s code `l`.
    let qh = unsafe { _mm256_loadu_si256(blk.qh.as_ptr().cast()) };
    move |j: usize| {
        let bit = _mm256_set1_epi8(1 << j);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }
});

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
    pf: Prefetch,
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
                    let scales =
                        half_scales(blk.scales[2 * j] as i16, blk.scales[2 * j + 1] as i16);
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

/// The two i16 scales of a 32-weight run's 16-weight halves, as `vpmaddwd` pairs them: lanes
/// 0..4 (elements 0..16) take `lo`, lanes 4..8 take `hi`.
#[inline]
#[target_feature(enable = "avx2")]
fn half_scales(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

/// Q3_K rows `r0..r0+R` (`nb` superblocks per row, first at `w`) against activation rows
/// `c0..c0+C` in Q8_0: per 32 weights, the signed codes (two bits of `qs`, the third from
/// `hmask`, less 4) by the sign trick, each 16-weight half weighted by its scale in `vpmaddwd`
/// (an exact i32), scaled by `d * d_a`.
///
/// # Safety
/// As [`tile_q4_k`]; activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q3_k<const R: usize, const C: usize>(
    w: *const BlockQ3K,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: Prefetch,
) {
    let low2 = _mm256_set1_epi8(3);
    let one = _mm256_set1_epi8(1);
    let four = _mm256_set1_epi8(4);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    for b in 0..nb {
        for r in 0..R {
            // SAFETY: superblock `b` of row `r0 + r` exists.
            let blk = unsafe { &*w.add(r * nb + b) };
            prefetch_record((blk as *const BlockQ3K).cast(), pf, 2);
            let dw = f16_to_f32(blk.d);
            let scales = blk.scales();
            // SAFETY: `hmask` is 32 bytes, each half of `qs` 32.
            let hm = unsafe { _mm256_loadu_si256(blk.hmask.as_ptr().cast()) };
            for h in 0..2 {
                // SAFETY: as above.
                let qs = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * h).cast()) };
                for j in 0..4 {
                    let shift = _mm_cvtsi32_si128(2 * j as i32);
                    let low = _mm256_and_si256(_mm256_srl_epi16(qs, shift), low2);
                    let bit = _mm_cvtsi32_si128((4 * h + j) as i32);
                    let high = _mm256_and_si256(_mm256_srl_epi16(hm, bit), one);
                    let wv =
                        _mm256_sub_epi8(_mm256_or_si256(low, _mm256_slli_epi16::<2>(high)), four);
                    let magnitude = _mm256_abs_epi8(wv);
                    let run = 4 * h + j;
                    let sc = half_scales(scales[2 * run] as i16, scales[2 * run + 1] as i16);
                    for c in 0..C {
                        let at = b * 8 + run;
                        // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks, 32-byte aligned,
                        // and as many scales.
                        let (av, d) = unsafe {
                            (_mm256_load_si256(qa[c].add(at * 32).cast()), *da[c].add(at))
                        };
                        let p = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(magnitude, _mm256_sign_epi8(av, wv)),
                            sc,
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

/// Q2_K rows `r0..r0+R` (`nb` superblocks per row, first at `w`) against activation rows
/// `c0..c0+C` in Q8_0: per 32 weights, the unsigned codes times the activation codes
/// (`vpmaddubsw`, at most 2 * 3 * 127) weighted by each half's scale, and the half's min times
/// the sum of its activation codes (`vpmaddubsw` of the mins against the codes), both exact
/// i32 in `vpmaddwd`, scaled by `d * d_a` and `dmin * d_a`.
///
/// # Safety
/// As [`tile_q4_k`]; activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q2_k<const R: usize, const C: usize>(
    w: *const BlockQ2K,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: Prefetch,
) {
    let low2 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    for b in 0..nb {
        for r in 0..R {
            // SAFETY: superblock `b` of row `r0 + r` exists.
            let blk = unsafe { &*w.add(r * nb + b) };
            prefetch_record((blk as *const BlockQ2K).cast(), pf, 2);
            let (dw, dmin) = (f16_to_f32(blk.d), f16_to_f32(blk.dmin));
            for h in 0..2 {
                // SAFETY: each half of `qs` is 32 bytes.
                let qs = unsafe { _mm256_loadu_si256(blk.qs.as_ptr().add(32 * h).cast()) };
                for j in 0..4 {
                    let shift = _mm_cvtsi32_si128(2 * j as i32);
                    let codes = _mm256_and_si256(_mm256_srl_epi16(qs, shift), low2);
                    let run = 4 * h + j;
                    let (lo, hi) = (blk.scales[2 * run], blk.scales[2 * run + 1]);
                    let sc = half_scales((lo & 0xF) as i16, (hi & 0xF) as i16);
                    let mins = _mm256_set_m128i(
                        _mm_set1_epi8((hi >> 4) as i8),
                        _mm_set1_epi8((lo >> 4) as i8),
                    );
                    for c in 0..C {
                        let at = b * 8 + run;
                        // SAFETY: prepared rows hold `nbp >= 8 * nb` blocks, 32-byte aligned,
                        // and as many scales.
                        let (av, d) = unsafe {
                            (_mm256_load_si256(qa[c].add(at * 32).cast()), *da[c].add(at))
                        };
                        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, av), sc);
                        let m = _mm256_madd_epi16(_mm256_maddubs_epi16(mins, av), ones);
                        acc[r][c] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(p),
                            _mm256_set1_ps(dw * d),
                            acc[r][c],
                        );
                        acc[r][c] = _mm256_fnmadd_ps(
                            _mm256_cvtepi32_ps(m),
                            _mm256_set1_ps(dmin * d),
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
row_major_gemm!(gemm_q5_k, "avx2,fma,f16c", BlockQ5K, tile_q5_k, 4 x 2);
// Activation codes in -127..=127.
row_major_gemm!(gemm_q6_k, "avx2,fma,f16c", BlockQ6K, tile_q6_k, 4 x 2);
row_major_gemm!(gemm_q3_k, "avx2,fma,f16c", BlockQ3K, tile_q3_k, 4 x 2);
row_major_gemm!(gemm_q2_k, "avx2,fma,f16c", BlockQ2K, tile_q2_k, 4 x 2);
