//! Tiles of the 16-row layout ([`crate::kernels::packed`]): each group as two halves of 8 rows,
//! one 256-bit register per 4 codes of 8 rows, against up to 4 activation rows.

// Register tiles are indexed in lockstep (acc[r][c], wq[r], qa[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use std::ops::Range;

use super::super::walk::{packed_gemm, prefetch_k_scales, prefetch_record, Prefetch};
use super::bits_as_bytes;
use crate::kernels::blocks::QK;
use crate::kernels::packed::{
    k_scales_at, scales_at, FIFTH_BITS_LINE, GROUP, Q2_K_RECORD_LINES, Q3_K_RECORD_LINES,
    Q4_0_RECORD_LINES, Q4_1_RECORD_LINES, Q4_K_RECORD_LINES, Q5_0_RECORD_LINES, Q5_1_RECORD_LINES,
    Q5_K_RECORD_LINES, Q6_K_RECORD_LINES, Q8_0_RECORD_LINES, THIRD_BITS_LINE,
};
use crate::kernels::prepared::{Line, OutPtr, Prepared};
use crate::kernels::types::SIXTH_BITS_LINE;

/// Rows per 256-bit register in the 16-row layout: a group is two halves.
const HALF: usize = 8;

/// Stores 8-row accumulators: activation row `c0 + c` gets `acc[c]`'s first `rows.len()` lanes
/// at weight rows `rows`.
///
/// # Safety
/// AVX2 is available; those outputs exist and are this call's to write.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn store_half<const C: usize>(
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

/// Defines a tile of the 16-row layout for a 4- or 5-bit type: one half (8 rows, `rows`) of a
/// group x `C` activation rows, all blocks. The codes are a record's nibble lines (line `j`:
/// elements `4j..4j+4` in the low nibbles, `16+4j..` in the high ones), with `fifth: yes` the
/// fifth bits of [`FIFTH_BITS_LINE`] spread over them. `$dot(isum, w, x)` adds one 4-code
/// group's products (`w` unsigned codes, `x` activation codes broadcast) to the lanes of
/// `isum`, `$widen` turns them into i32 lanes, every `$period` nibble lines (so that
/// `vpmaddubsw`'s i16 sums stay exact: 4 lines of 4-bit codes, 2 of 5-bit).
///
/// `scales: offset($line)`: `d` and `m` in the record's line `$line`, Q8_1 activations,
/// `acc = fma(sumi, d_w * d_a, acc)` then `fma(m_w, s_a, acc)` (Q4_1, Q5_1).
/// `scales: symmetric($shift)`: `d` after the group's records, Q8_0 activations, each dot
/// started from the bias correction `-128 * sum(a)` shifted right by `$shift` (exact:
/// `-8 * sum(a)` for Q4_0, `-16 * sum(a)` for Q5_0), which turns the unsigned codes' products
/// into those of the centred codes; `acc = fma(sumi, d_w * d_a, acc)`.
///
/// Each generated function's safety contract: the CPU has `$features`; `rec` is the first
/// record of the group holding `rows` (1 to 8 rows of one half), of `$lines` lines per block;
/// activation rows `c0..c0 + C` exist in the natural layout; `out` as in `GemmFn`.
macro_rules! nibble_half_tile {
    (
        $(#[$doc:meta])* $name:ident, $features:literal,
        dot: $dot:expr, widen: $widen:expr, period: $period:literal,
        record: $lines:expr, fifth: $fifth:ident, scales: $kind:ident($arg:expr)
    ) => {
        $(#[$doc])*
        /// # Safety
        /// See [`nibble_half_tile`].
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: Prefetch,
        ) {
            let nibble = _mm256_set1_epi8(0x0F);
            let half = (rows.start % GROUP) / HALF;
            let mut acc = [_mm256_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            // Raw pointers: bounds checks in the column loop keep LLVM from unrolling it.
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let sa: [*const f32; C] = nibble_half_tile!(@per_row $kind, a, c0);
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `$lines` aligned lines (then, for
                // symmetric types, its scales, 32 bytes per block); a half is 32 aligned bytes
                // of a line, its scales 16 bytes.
                let r = unsafe { rec.add(b * $lines).cast::<u8>() };
                prefetch_record(r, pf, $lines);
                nibble_half_tile!(@prefetch_scales $kind, rec, $lines, nb, b, pf);
                let (dw, mw) =
                    unsafe { nibble_half_tile!(@scales $kind($arg), $lines, rec, r, nb, b, half) };
                let mut isum = [_mm256_setzero_si256(); C];
                let mut part = [_mm256_setzero_si256(); C];
                for j in 0..4 {
                    // SAFETY: as above.
                    let l = unsafe { _mm256_load_si256(r.add(64 * j + 32 * half).cast()) };
                    let (flo, fhi) = nibble_half_tile!(@fifth $fifth, r, j, half);
                    let lo = _mm256_or_si256(_mm256_and_si256(l, nibble), flo);
                    let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l), nibble), fhi);
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
                        part[c] = $dot(part[c], lo, x);
                        part[c] = $dot(part[c], hi, y);
                        if j % $period == $period - 1 {
                            isum[c] = _mm256_add_epi32(isum[c], $widen(part[c]));
                            part[c] = _mm256_setzero_si256();
                        }
                    }
                }
                for c in 0..C {
                    // SAFETY: a prepared row holds `nbp >= nb` scales `d` (and for offset types
                    // `2 * nbp` values `s`, for symmetric ones `nbp` bias corrections).
                    let d = unsafe { *da[c].add(b) };
                    let scale = _mm256_mul_ps(dw, _mm256_set1_ps(d));
                    acc[c] = unsafe {
                        nibble_half_tile!(@finish $kind($arg), acc[c], isum[c], scale, mw, sa[c], b)
                    };
                }
            }
            // SAFETY: the caller's contract.
            unsafe { store_half(&acc, c0, rows, out) };
        }
    };
    // Per activation row: `s` (Q8_1) or the bias corrections (Q8_0), as f32 or i32 pointers.
    (@per_row offset, $a:ident, $c0:ident) => {
        std::array::from_fn(|c| $a.s($c0 + c).as_ptr())
    };
    (@per_row ksuper, $a:ident, $c0:ident) => {
        nibble_half_tile!(@per_row offset, $a, $c0)
    };
    // (The i32 corrections' pointers typed as f32 ones, so both kinds fill one array; `@finish`
    // reads them back as i32.)
    (@per_row symmetric, $a:ident, $c0:ident) => {
        std::array::from_fn(|c| $a.bias_fix($c0 + c).as_ptr().cast::<f32>())
    };
    (@scales offset($line:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident, $half:ident) => {
        (
            _mm256_cvtph_ps(_mm_load_si128($r.add(64 * $line + 16 * $half).cast())),
            _mm256_cvtph_ps(_mm_load_si128($r.add(64 * $line + 32 + 16 * $half).cast())),
        )
    };
    (@scales symmetric($shift:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident, $half:ident) => {{
        let (line, at) = scales_at($lines, $nb, $b);
        (
            _mm256_cvtph_ps(_mm_load_si128(
                $rec.add(line).cast::<u8>().add(at + 16 * $half).cast(),
            )),
            _mm256_setzero_ps(),
        )
    }};
    (@prefetch_scales ksuper, $rec:ident, $lines:expr, $nb:ident, $b:ident, $pf:ident) => {
        prefetch_k_scales($rec, $lines, $nb, $b, $pf)
    };
    (@prefetch_scales $kind:ident, $rec:ident, $lines:expr, $nb:ident, $b:ident, $pf:ident) => {};
    // Q4_K, Q5_K: `d * sc` and `-(dmin * m)` of sub-block `b % 8` for this half's rows, from
    // the superblock's scale lines after the group's records (both products exact in f32; the
    // sign flipped as a bit).
    (@scales ksuper($unused:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident, $half:ident) => {{
        let k = $rec.add(k_scales_at($lines, $nb, $b)).cast::<u8>();
        let at = 16 * ($b % 8) + 8 * $half;
        let byte_lanes = |p: *const u8| {
            _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast())))
        };
        let d = _mm256_cvtph_ps(_mm_load_si128(k.add(16 * $half).cast()));
        let dmin = _mm256_cvtph_ps(_mm_load_si128(k.add(32 + 16 * $half).cast()));
        let mw = _mm256_mul_ps(dmin, byte_lanes(k.add(192 + at)));
        (
            _mm256_mul_ps(d, byte_lanes(k.add(64 + at))),
            _mm256_xor_ps(mw, _mm256_set1_ps(-0.0)),
        )
    }};
    (@fifth no, $r:ident, $j:ident, $half:ident) => {
        (_mm256_setzero_si256(), _mm256_setzero_si256())
    };
    (@fifth yes, $r:ident, $j:ident, $half:ident) => {{
        let bit = _mm256_set1_epi8(0x10);
        // SAFETY: the record's fifth-bits line holds 8 words; a half's bits are 4 bytes of one.
        unsafe {
            let words = $r.add(64 * FIFTH_BITS_LINE + 4 * $half);
            (
                _mm256_and_si256(bits_as_bytes(words.add(16 * $j)), bit),
                _mm256_and_si256(bits_as_bytes(words.add(16 * $j + 8)), bit),
            )
        }
    }};
    (@finish offset($line:expr), $acc:expr, $isum:expr, $scale:ident, $mw:ident, $s:expr, $b:ident) => {{
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps($isum), $scale, $acc);
        _mm256_fmadd_ps($mw, _mm256_set1_ps(*$s.add(2 * $b + 1)), acc)
    }};
    (@finish ksuper($unused:expr), $acc:expr, $isum:expr, $scale:ident, $mw:ident, $s:expr, $b:ident) => {
        nibble_half_tile!(@finish offset(0), $acc, $isum, $scale, $mw, $s, $b)
    };
    (@finish symmetric($shift:expr), $acc:expr, $isum:expr, $scale:ident, $mw:ident, $s:expr, $b:ident) => {{
        let _ = $mw; // no offset term
        let start = *$s.cast::<i32>().add($b) >> $shift;
        let sumi = _mm256_add_epi32($isum, _mm256_set1_epi32(start));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), $scale, $acc)
    }};
}

/// Defines a type's two half tiles: `$avx2` with `vpmaddubsw` summing in i16 and widened by
/// `vpmaddwd` every `$period` nibble lines, `$vnni` with `vpdpbusd` straight into i32 lanes.
macro_rules! nibble_half_tiles {
    ($avx2:ident, $vnni:ident, period: $period:literal, $($layout:tt)*) => {
        nibble_half_tile!(
            $avx2, "avx2,fma,f16c",
            dot: |isum, w, x| _mm256_add_epi16(isum, _mm256_maddubs_epi16(w, x)),
            widen: |isum| _mm256_madd_epi16(isum, _mm256_set1_epi16(1)), period: $period,
            $($layout)*
        );
        nibble_half_tile!(
            $vnni, "avx2,fma,f16c,avxvnni",
            dot: |isum, w, x| _mm256_dpbusd_avx_epi32(isum, w, x), widen: |isum| isum, period: 4,
            $($layout)*
        );
    };
}

// 4-bit codes: a block's sixteen `vpmaddubsw` products per i16 lane are at most 30480, so they
// sum in i16 for the whole block; 5-bit codes (at most 31496 for eight) widen every two lines.
nibble_half_tiles!(tile_q4_1x16, tile_q4_1x16_vnni, period: 4,
    record: Q4_1_RECORD_LINES, fifth: no, scales: offset(4));
nibble_half_tiles!(tile_q4_0x16, tile_q4_0x16_vnni, period: 4,
    record: Q4_0_RECORD_LINES, fifth: no, scales: symmetric(4));
nibble_half_tiles!(tile_q5_0x16, tile_q5_0x16_vnni, period: 2,
    record: Q5_0_RECORD_LINES, fifth: yes, scales: symmetric(3));
nibble_half_tiles!(tile_q5_1x16, tile_q5_1x16_vnni, period: 2,
    record: Q5_1_RECORD_LINES, fifth: yes, scales: offset(5));
nibble_half_tiles!(tile_q4_kx16, tile_q4_kx16_vnni, period: 4,
    record: Q4_K_RECORD_LINES, fifth: no, scales: ksuper(0));
nibble_half_tiles!(tile_q5_kx16, tile_q5_kx16_vnni, period: 2,
    record: Q5_K_RECORD_LINES, fifth: yes, scales: ksuper(0));

/// Defines the tile of [`nibble_half_tile`]'s shape for a type scaled per 16 weights (Q6_K,
/// Q3_K, Q2_K): one half (8 rows, `rows`) of a group x `C` activation rows, all sub-blocks.
/// `codes:` names how a record's lines make the unsigned codes of elements `4j..` and
/// `16 + 4j..` (Q6_K: nibbles with bits 4 and 5 spread over them; Q3_K: two-bit codes with the
/// third bit spread over them; Q2_K: two-bit codes). Each 16-code half is dotted apart (`$dot`,
/// widened to i32 by `$widen` every `$period` lines), started from `-32 * sum(a)` of its half
/// shifted right by the type's shift (Q6_K 0, Q3_K 3; Q2_K from 0), and weighted by the rows'
/// scales in exact i32, then `acc = fma(sumi, d * d_a, acc)`; Q2_K then adds
/// `fma(summ, -dmin * d_a, acc)`, `summ` its rows' mins against the halves' activation sums.
///
/// The generated function's safety contract: the CPU has `$features`; `rec` is the first
/// record of the group holding `rows` (1 to 8 rows of one half); activation rows `c0..c0 + C`
/// exist in the natural Q8_0 layout; `out` as in `GemmFn`.
macro_rules! k_half_tile {
    (
        $name:ident, $features:literal, dot: $dot:expr, widen: $widen:expr, period: $period:literal,
        record: $lines:expr, codes: $codes:ident
    ) => {
        /// # Safety
        /// See [`k_half_tile`].
        #[inline]
        #[target_feature(enable = $features)]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: Prefetch,
        ) {
            let half = (rows.start % GROUP) / HALF;
            let mut acc = [_mm256_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let fix: [*const i32; C] = std::array::from_fn(|c| a.half_bias_fix(c0 + c).as_ptr());
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `$lines` aligned lines, then 5 scale
                // lines per superblock; a half is 32 aligned bytes of a line, 16 of `d` (and of
                // `dmin`), 8 of scales, and 4 bytes of each bit word.
                let r = unsafe { rec.add(b * $lines).cast::<u8>() };
                prefetch_record(r, pf, $lines);
                prefetch_k_scales(rec, $lines, nb, b, pf);
                let (dw, sc_lo, sc_hi, mins) = unsafe {
                    let k = rec.add(k_scales_at($lines, nb, b)).cast::<u8>();
                    let t = 2 * (b % 8);
                    let run = |t: usize| _mm_loadl_epi64(k.add(64 + 16 * t + 8 * half).cast());
                    let (sc_lo, sc_hi, mins) = k_half_tile!(@scales $codes, run(t), run(t + 1), k, half);
                    (_mm256_cvtph_ps(_mm_load_si128(k.add(16 * half).cast())), sc_lo, sc_hi, mins)
                };
                let mut lo = [_mm256_setzero_si256(); C];
                let mut hi = [_mm256_setzero_si256(); C];
                let mut part_lo = [_mm256_setzero_si256(); C];
                let mut part_hi = [_mm256_setzero_si256(); C];
                for j in 0..4 {
                    // SAFETY: as above.
                    let (lw, hw) = unsafe { k_half_tile!(@codes $codes, r, j, half) };
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
                        part_lo[c] = $dot(part_lo[c], lw, x);
                        part_hi[c] = $dot(part_hi[c], hw, y);
                        if (j + 1).is_multiple_of($period) {
                            lo[c] = _mm256_add_epi32(lo[c], $widen(part_lo[c]));
                            hi[c] = _mm256_add_epi32(hi[c], $widen(part_hi[c]));
                            part_lo[c] = _mm256_setzero_si256();
                            part_hi[c] = _mm256_setzero_si256();
                        }
                    }
                }
                for c in 0..C {
                    // SAFETY: a prepared row holds `nbp` scales and `2 * nbp` half-block
                    // corrections.
                    let (d, f0, f1) =
                        unsafe { (*da[c].add(b), *fix[c].add(2 * b), *fix[c].add(2 * b + 1)) };
                    let (l, h) = k_half_tile!(@start $codes, lo[c], hi[c], f0, f1);
                    let sumi = _mm256_add_epi32(
                        _mm256_mullo_epi32(l, sc_lo),
                        _mm256_mullo_epi32(h, sc_hi),
                    );
                    let d = _mm256_set1_ps(d);
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dw, d), acc[c]);
                    acc[c] = k_half_tile!(@mins $codes, acc[c], mins, f0, f1, d);
                }
            }
            // SAFETY: the caller's contract.
            unsafe { store_half(&acc, c0, rows, out) };
        }
    };
    // The rows' scales of the sub-block's two 16-weight runs as i32 lanes, and for Q2_K their
    // mins as i16 pairs (first run's low, second's high) with `-dmin`.
    (@scales q6_k, $run0:expr, $run1:expr, $k:ident, $half:ident) => {
        (_mm256_cvtepi8_epi32($run0), _mm256_cvtepi8_epi32($run1), ())
    };
    (@scales q3_k, $run0:expr, $run1:expr, $k:ident, $half:ident) => {
        k_half_tile!(@scales q6_k, $run0, $run1, $k, $half)
    };
    (@scales q2_k, $run0:expr, $run1:expr, $k:ident, $half:ident) => {{
        let nibble = _mm256_set1_epi32(0x0F);
        let (s0, s1) = (_mm256_cvtepu8_epi32($run0), _mm256_cvtepu8_epi32($run1));
        let mins = _mm256_or_si256(
            _mm256_srli_epi32::<4>(s0),
            _mm256_slli_epi32::<16>(_mm256_srli_epi32::<4>(s1)),
        );
        let dmin = _mm256_cvtph_ps(_mm_load_si128($k.add(32 + 16 * $half).cast()));
        (
            _mm256_and_si256(s0, nibble),
            _mm256_and_si256(s1, nibble),
            (mins, _mm256_xor_ps(dmin, _mm256_set1_ps(-0.0))),
        )
    }};
    (@codes q6_k, $r:ident, $j:ident, $half:ident) => {{
        let nibble = _mm256_set1_epi8(0x0F);
        let (bit4, bit5) = (_mm256_set1_epi8(0x10), _mm256_set1_epi8(0x20));
        let l = _mm256_load_si256($r.add(64 * $j + 32 * $half).cast());
        let w4 = $r.add(64 * FIFTH_BITS_LINE + 4 * $half + 16 * $j);
        let w5 = $r.add(64 * SIXTH_BITS_LINE + 4 * $half + 16 * $j);
        let high = |o: usize| {
            _mm256_or_si256(
                _mm256_and_si256(bits_as_bytes(w4.add(o)), bit4),
                _mm256_and_si256(bits_as_bytes(w5.add(o)), bit5),
            )
        };
        (
            _mm256_or_si256(_mm256_and_si256(l, nibble), high(0)),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l), nibble), high(8)),
        )
    }};
    (@codes q2_k, $r:ident, $j:ident, $half:ident) => {{
        let low = _mm256_set1_epi8(3);
        let shift = _mm_cvtsi32_si128(2 * $j as i32);
        let codes = |line: usize| {
            let l = _mm256_load_si256($r.add(64 * line + 32 * $half).cast());
            _mm256_and_si256(_mm256_srl_epi16(l, shift), low)
        };
        (codes(0), codes(1))
    }};
    (@codes q3_k, $r:ident, $j:ident, $half:ident) => {{
        let bit2 = _mm256_set1_epi8(0x04);
        let (lw, hw) = k_half_tile!(@codes q2_k, $r, $j, $half);
        let words = $r.add(64 * THIRD_BITS_LINE + 4 * $half + 16 * $j);
        (
            _mm256_or_si256(lw, _mm256_and_si256(bits_as_bytes(words), bit2)),
            _mm256_or_si256(hw, _mm256_and_si256(bits_as_bytes(words.add(8)), bit2)),
        )
    }};
    // Each half's dot from its start: `-32 * sum(a)` for Q6_K, `-4 * sum(a)` for Q3_K (the
    // correction shifted right by 3, exactly), 0 for Q2_K.
    (@start q6_k, $lo:expr, $hi:expr, $f0:ident, $f1:ident) => {
        (
            _mm256_add_epi32($lo, _mm256_set1_epi32($f0)),
            _mm256_add_epi32($hi, _mm256_set1_epi32($f1)),
        )
    };
    (@start q3_k, $lo:expr, $hi:expr, $f0:ident, $f1:ident) => {
        (
            _mm256_add_epi32($lo, _mm256_set1_epi32($f0 >> 3)),
            _mm256_add_epi32($hi, _mm256_set1_epi32($f1 >> 3)),
        )
    };
    (@start q2_k, $lo:expr, $hi:expr, $f0:ident, $f1:ident) => {
        ($lo, $hi)
    };
    (@mins q6_k, $acc:expr, $mins:ident, $f0:ident, $f1:ident, $d:ident) => {{
        let () = $mins;
        $acc
    }};
    (@mins q3_k, $acc:expr, $mins:ident, $f0:ident, $f1:ident, $d:ident) => {
        k_half_tile!(@mins q6_k, $acc, $mins, $f0, $f1, $d)
    };
    // A half's activation sum is its correction shifted right by 5, negated (an i16).
    (@mins q2_k, $acc:expr, $mins:ident, $f0:ident, $f1:ident, $d:ident) => {{
        let (mins, neg_dmin) = $mins;
        let sums = (-($f0 >> 5) & 0xFFFF) | (-($f1 >> 5) << 16);
        let summ = _mm256_madd_epi16(mins, _mm256_set1_epi32(sums));
        _mm256_fmadd_ps(_mm256_cvtepi32_ps(summ), _mm256_mul_ps(neg_dmin, $d), $acc)
    }};
}

/// Defines a type's two [`k_half_tile`]s: `$avx2` with `vpmaddubsw` summing in i16 and widened
/// by `vpmaddwd` every `$period` lines, `$vnni` with `vpdpbusd` straight into i32 lanes.
macro_rules! k_half_tiles {
    ($avx2:ident, $vnni:ident, period: $period:literal, $($layout:tt)*) => {
        k_half_tile!(
            $avx2, "avx2,fma,f16c",
            dot: |isum, w, x| _mm256_add_epi16(isum, _mm256_maddubs_epi16(w, x)),
            widen: |isum| _mm256_madd_epi16(isum, _mm256_set1_epi16(1)), period: $period,
            $($layout)*
        );
        k_half_tile!(
            $vnni, "avx2,fma,f16c,avxvnni",
            dot: |isum, w, x| _mm256_dpbusd_avx_epi32(isum, w, x), widen: |isum| isum, period: 4,
            $($layout)*
        );
    };
}

// `vpmaddubsw`'s pairs of 6-bit codes reach 2 * 63 * 127, so Q6_K widens every line; four
// lines of 3-bit codes reach 4 * 2 * 7 * 127 and sum in i16.
k_half_tiles!(tile_q6_kx16, tile_q6_kx16_vnni, period: 1,
    record: Q6_K_RECORD_LINES, codes: q6_k);
k_half_tiles!(tile_q3_kx16, tile_q3_kx16_vnni, period: 4,
    record: Q3_K_RECORD_LINES, codes: q3_k);
k_half_tiles!(tile_q2_kx16, tile_q2_kx16_vnni, period: 4,
    record: Q2_K_RECORD_LINES, codes: q2_k);

/// The Q8_0 tile (codes stored +128) of [`nibble_half_tile`]'s shape, for AVX2: the sign trick
/// on the unbiased codes, `|w|` times `a` with `w`'s sign, widened to i32 per group of four.
///
/// # Safety
/// As for [`nibble_half_tile`]'s tiles, and activation codes in -127..=127.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_q8_0x16<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: Prefetch,
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
/// As for [`nibble_half_tile`]'s tiles, and the CPU has AVX-VNNI.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn tile_q8_0x16_vnni<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: Prefetch,
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
macro_rules! half_gemms {
    ($($avx2:ident, $vnni:ident: $tile:ident, $tile_vnni:ident, $lines:expr;)*) => {$(
        packed_gemm!($avx2, "avx2,fma,f16c", $lines, $tile, 4, halves);
        packed_gemm!($vnni, "avx2,fma,f16c,avxvnni", $lines, $tile_vnni, 4, halves);
    )*};
}

half_gemms! {
    gemm_q4_1x16, gemm_q4_1x16_vnni: tile_q4_1x16, tile_q4_1x16_vnni, Q4_1_RECORD_LINES;
    gemm_q8_0x16, gemm_q8_0x16_vnni: tile_q8_0x16, tile_q8_0x16_vnni, Q8_0_RECORD_LINES;
    gemm_q4_0x16, gemm_q4_0x16_vnni: tile_q4_0x16, tile_q4_0x16_vnni, Q4_0_RECORD_LINES;
    gemm_q5_0x16, gemm_q5_0x16_vnni: tile_q5_0x16, tile_q5_0x16_vnni, Q5_0_RECORD_LINES;
    gemm_q5_1x16, gemm_q5_1x16_vnni: tile_q5_1x16, tile_q5_1x16_vnni, Q5_1_RECORD_LINES;
    gemm_q4_kx16, gemm_q4_kx16_vnni: tile_q4_kx16, tile_q4_kx16_vnni, Q4_K_RECORD_LINES;
    gemm_q5_kx16, gemm_q5_kx16_vnni: tile_q5_kx16, tile_q5_kx16_vnni, Q5_K_RECORD_LINES;
    gemm_q6_kx16, gemm_q6_kx16_vnni: tile_q6_kx16, tile_q6_kx16_vnni, Q6_K_RECORD_LINES;
    gemm_q3_kx16, gemm_q3_kx16_vnni: tile_q3_kx16, tile_q3_kx16_vnni, Q3_K_RECORD_LINES;
    gemm_q2_kx16, gemm_q2_kx16_vnni: tile_q2_kx16, tile_q2_kx16_vnni, Q2_K_RECORD_LINES;
}
