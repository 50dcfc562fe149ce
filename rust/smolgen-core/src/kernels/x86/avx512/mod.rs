//! x86-64 AVX-512 (F/BW/VL) + VNNI micro-kernels, two 32-element blocks per 512-bit step.
//!
//! Q4_1 x Q8_1: the nibbles of blocks b and b+1 (32 bytes) unpack in one go to
//! `[lo_b, lo_b1, hi_b, hi_b1]`; the activations were prepared in that order (`PairsQ4`), so one
//! `vpdpbusd` (u8 x i8, four products per i32 lane) dots both blocks. Each i32 lane belongs to
//! one block, so after `vcvtdq2ps` a per-lane scale `d_w * d_a` applies, and `m_w * s_a` is
//! added through lanes 1 and 3 of the same accumulator.
//! Q8_0 x Q8_0: `vpdpbusd` wants one unsigned operand, so the weights get +128 (`xor 0x80`) and
//! the accumulator starts from the prepared `-128 * sum(a)` per lane, which cancels the bias
//! exactly in integers.
//! Float weights (F32, F16, BF16) x f32 activations: [`float`].
//! Q3_K, Q5_K and Q6_K in long prefills: widened a group at a time into records of whole bytes
//! ([`widen`]).

// Register tiles are indexed in lockstep (acc[r][c], wq[r], qa[c]); index loops read best.
#![allow(clippy::needless_range_loop)]
use std::arch::x86_64::*;
use std::ops::Range;

mod float;
mod widen;
pub(crate) use float::*;
pub(crate) use widen::{gemm_q3_kx16, gemm_q5_kx16, gemm_q6_kx16};

use super::walk::{
    packed_gemm, prefetch_k_scales, prefetch_record, row_major_gemm, unrolled_cols, whole_group,
    Prefetch,
};
use crate::kernels::blocks::QK;
use crate::kernels::packed::{
    k_scales_at, scales_at, FIFTH_BITS_LINE, GROUP, Q2_K_RECORD_LINES, Q3_K_RECORD_LINES,
    Q4_0_RECORD_LINES, Q4_1_RECORD_LINES, Q4_K_RECORD_LINES, Q5_0_RECORD_LINES, Q5_1_RECORD_LINES,
    Q5_K_RECORD_LINES, Q6_K_RECORD_LINES, Q8_0_RECORD_LINES, THIRD_BITS_LINE,
};
use crate::kernels::prepared::{Line, OutPtr, Prepared};
use crate::kernels::types::{BlockQ4_1, BlockQ8_0, SIXTH_BITS_LINE};
use widen::BYTE_RECORD_LINES;

/// # Safety
/// AVX-512 F/BW/VL + VNNI present; the rows and activation rows exist; `out` as in `GemmFn`;
/// `a` has the `PairsQ4` layout.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_q4_1<const R: usize, const C: usize>(
    w: *const BlockQ4_1,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: Prefetch,
) {
    let mask = _mm512_set1_epi8(0x0F);
    let idx_d = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let dx: [*const f32; C] = std::array::from_fn(|c| a.dx(c0 + c));
    let sx: [*const f32; C] = std::array::from_fn(|c| a.sx(c0 + c));
    for p in 0..a.nbp / 2 {
        let b = 2 * p;
        for r in 0..R {
            // SAFETY: blocks `b` (and `b + 1` when it exists) of row `r0 + r` exist; a block is
            // 20 bytes: d, m, 16 of qs.
            let (t, dm) = unsafe {
                let blk0 = w.add(r * nb + b).cast::<u8>();
                if pf.is_on() {
                    pf.line(blk0);
                    pf.line(blk0.wrapping_add(64));
                }
                let q0 = _mm_loadu_si128(blk0.add(4).cast());
                let dm0 = blk0.cast::<i32>().read_unaligned();
                if b + 1 < nb {
                    let blk1 = blk0.add(20);
                    let q1 = _mm_loadu_si128(blk1.add(4).cast());
                    let dm1 = blk1.cast::<i32>().read_unaligned();
                    (_mm256_set_m128i(q1, q0), _mm_set_epi32(0, 0, dm1, dm0))
                } else {
                    (_mm256_zextsi128_si256(q0), _mm_cvtsi32_si128(dm0))
                }
            };
            let z = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(t), _mm256_srli_epi16::<4>(t));
            let wq = _mm512_and_si512(z, mask);
            // [d_b, m_b, d_b1, m_b1, 0, ...]
            let dmx = _mm512_zextps128_ps512(_mm_cvtph_ps(dm));
            let dwv = _mm512_permutexvar_ps(idx_d, dmx);
            for c in 0..C {
                // SAFETY: prepared rows hold `nbp / 2` aligned lines of codes, dx and sx.
                let (av, dav, sv) = unsafe {
                    (
                        _mm512_load_si512(qa[c].add(p * 64).cast()),
                        _mm512_load_ps(dx[c].add(p * 16)),
                        _mm512_load_ps(sx[c].add(p * 16)),
                    )
                };
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, av);
                acc[r][c] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dwv, dav), acc[r][c]);
                acc[r][c] = _mm512_fmadd_ps(dmx, sv, acc[r][c]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, _mm512_reduce_add_ps(*v)) };
        }
    }
}

/// # Safety
/// As [`tile_q4_1`], with the `PairsQ8` layout.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_q8_0<const R: usize, const C: usize>(
    w: *const BlockQ8_0,
    nb: usize,
    a: &Prepared,
    c0: usize,
    r0: usize,
    out: OutPtr,
    pf: Prefetch,
) {
    let bias = _mm512_set1_epi8(i8::MIN);
    let idx_d = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let dx: [*const f32; C] = std::array::from_fn(|c| a.dx(c0 + c));
    let cx: [*const i32; C] = std::array::from_fn(|c| a.cx(c0 + c));
    for p in 0..a.nbp / 2 {
        let b = 2 * p;
        for r in 0..R {
            // SAFETY: blocks `b` (and `b + 1` when it exists) of row `r0 + r` exist; a block is
            // 34 bytes: d, 32 of qs.
            let (t, d) = unsafe {
                let blk0 = w.add(r * nb + b).cast::<u8>();
                if pf.is_on() {
                    pf.line(blk0);
                    pf.line(blk0.wrapping_add(64));
                }
                let q0 = _mm256_loadu_si256(blk0.add(2).cast());
                let d0 = blk0.cast::<u16>().read_unaligned() as i32;
                if b + 1 < nb {
                    let blk1 = blk0.add(34);
                    let q1 = _mm256_loadu_si256(blk1.add(2).cast());
                    let d1 = blk1.cast::<u16>().read_unaligned() as i32;
                    (
                        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(q0), q1),
                        d0 | (d1 << 16),
                    )
                } else {
                    (_mm512_zextsi256_si512(q0), d0)
                }
            };
            let wq = _mm512_xor_si512(t, bias);
            let dwv = _mm512_permutexvar_ps(
                idx_d,
                _mm512_zextps128_ps512(_mm_cvtph_ps(_mm_cvtsi32_si128(d))),
            );
            for c in 0..C {
                // SAFETY: prepared rows hold `nbp / 2` aligned lines of codes, dx and cx.
                let (av, dav, corr) = unsafe {
                    (
                        _mm512_load_si512(qa[c].add(p * 64).cast()),
                        _mm512_load_ps(dx[c].add(p * 16)),
                        _mm512_load_si512(cx[c].add(p * 16).cast()),
                    )
                };
                let dot = _mm512_dpbusd_epi32(corr, wq, av);
                acc[r][c] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dwv, dav), acc[r][c]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (c, v) in row.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { out.write(c0 + c, r0 + r, _mm512_reduce_add_ps(*v)) };
        }
    }
}

row_major_gemm!(gemm_q4_1, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", BlockQ4_1, tile_q4_1, 4 x 4);
row_major_gemm!(gemm_q8_0, "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c", BlockQ8_0, tile_q8_0, 4 x 4);

/// Writes 16-row accumulators: activation row `c0 + c` gets `acc[c]`'s first `rows.len()`
/// lanes at weight rows `rows`.
///
/// # Safety
/// Those outputs exist and are this call's to write.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_group<const C: usize>(
    acc: &[__m512; C],
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
) {
    let keep: __mmask16 = if rows.len() >= GROUP {
        !0
    } else {
        (1 << rows.len()) - 1
    };
    for (c, v) in acc.iter().enumerate() {
        // SAFETY: the caller's contract.
        unsafe { _mm512_mask_storeu_ps(out.at(c0 + c, rows.start), keep, *v) };
    }
}

/// The eight code registers of a record whose first four lines hold nibbles (line `j`: the low
/// nibbles for register `j`, the high ones for `4 + j`), with the bits above the nibbles put
/// over them: `$high(2j)` those of register `j`, `$high(2j + 1)` those of `4 + j`. (A macro: a
/// closure of intrinsics handed to a helper may not inline where the helper lacks the
/// features.)
///
/// Safety: `$r` is four aligned lines.
macro_rules! nibbles_under {
    ($r:expr, $high:expr) => {{
        let nibble = _mm512_set1_epi8(0x0F);
        let mut w = [_mm512_setzero_si512(); 8];
        for j in 0..4 {
            let l = _mm512_load_si512($r.add(64 * j).cast());
            w[j] = _mm512_or_si512(_mm512_and_si512(l, nibble), $high(2 * j));
            w[4 + j] = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(l), nibble),
                $high(2 * j + 1),
            );
        }
        w
    }};
}

/// The unsigned codes of a record of the nibble layout at `r`, in the registers of elements
/// `4j..4j + 4`, then of `16 + 4j..`: its nibble lines, with `FIFTH` the fifth bits of
/// [`FIFTH_BITS_LINE`] put over them by a mask move (bit `4i + k` of a word is byte `4i + k`'s).
///
/// # Safety
/// `r` is a record of the nibble layout (with `FIFTH`, of a Q5 type): aligned lines.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn nibble_codes<const FIFTH: bool>(r: *const u8) -> [__m512i; 8] {
    let bit = _mm512_set1_epi8(0x10);
    // SAFETY: the caller's contract: a Q5 record's fifth-bits line holds eight u64 words.
    let fifth = |h: usize| unsafe {
        if FIFTH {
            let words = r.add(64 * FIFTH_BITS_LINE).cast::<u64>();
            _mm512_maskz_mov_epi8(words.add(h).read(), bit)
        } else {
            _mm512_setzero_si512()
        }
    };
    // SAFETY: the caller's contract.
    unsafe { nibbles_under!(r, fifth) }
}

/// The codes of a record widened to whole bytes at `r`: one line per register.
///
/// # Safety
/// `r` is a widened record: `BYTE_RECORD_LINES` aligned lines.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn byte_codes(r: *const u8) -> [__m512i; 8] {
    let mut w = [_mm512_setzero_si512(); 8];
    for (j, wj) in w.iter_mut().enumerate() {
        // SAFETY: the caller's contract.
        *wj = unsafe { _mm512_load_si512(r.add(64 * j).cast()) };
    }
    w
}

/// Defines a tile of the 16-row layout for a 4- or 5-bit type: 16 weight rows (one group) x `C`
/// activation rows, all blocks, `vpdpbusd` on the unsigned codes ([`nibble_codes`]; with
/// `fifth: bytes`, a group widened to whole bytes, its scale lines as the type's).
/// `scales: offset($line)` and `symmetric($shift)` as in the AVX2 `nibble_half_tile`: `d` and
/// `m` in record line `$line` against Q8_1, or `d` after the records against Q8_0 with each dot
/// started from the bias correction shifted right.
///
/// Each generated function's safety contract: AVX-512 F/BW/VL + VNNI present; `rec` is the
/// first record of the group that starts at `rows.start`, of `$lines` lines per block; `rows`
/// (1 to 16 of them) are written; activation rows `c0..c0 + C` exist in the natural layout;
/// `out` as in `GemmFn`.
macro_rules! nibble_group_tile {
    (
        $(#[$doc:meta])* $name:ident,
        record: $lines:expr, fifth: $fifth:ident, scales: $kind:ident($arg:expr)
    ) => {
        $(#[$doc])*
        /// # Safety
        /// See [`nibble_group_tile`].
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: Prefetch,
        ) {
            let mut acc = [_mm512_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            // Raw pointers: bounds checks in the column loop keep LLVM from unrolling it, and
            // the accumulators then live on the stack.
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let sa: [*const f32; C] = nibble_group_tile!(@per_row $kind, a, c0);
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `$lines` aligned lines (then, for
                // symmetric types, its scales, 32 bytes per block).
                let (w, dw, mw) = unsafe {
                    let r = rec.add(b * $lines).cast::<u8>();
                    prefetch_record(r, pf, $lines);
                    nibble_group_tile!(@prefetch_scales $kind, rec, $lines, nb, b, pf);
                    let w = nibble_group_tile!(@codes $fifth, r);
                    let (dw, mw) = nibble_group_tile!(@scales $kind($arg), $lines, rec, r, nb, b);
                    (w, dw, mw)
                };
                for c in 0..C {
                    // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes in element order.
                    let bcast = |o: usize| unsafe {
                        _mm512_set1_epi32(qa[c].add(b * QK + o).cast::<i32>().read_unaligned())
                    };
                    // SAFETY: a prepared row holds `nbp >= nb` scales `d` (and for offset types
                    // `2 * nbp` values `s`, for symmetric ones `nbp` bias corrections).
                    let (d, start) = unsafe { (*da[c].add(b), nibble_group_tile!(@start $kind($arg), sa[c], b)) };
                    let mut lo = _mm512_dpbusd_epi32(_mm512_set1_epi32(start), w[0], bcast(0));
                    let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[4], bcast(16));
                    for j in 1..4 {
                        lo = _mm512_dpbusd_epi32(lo, w[j], bcast(4 * j));
                        hi = _mm512_dpbusd_epi32(hi, w[4 + j], bcast(16 + 4 * j));
                    }
                    let sumi = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(d));
                    acc[c] = _mm512_fmadd_ps(sumi, scale, acc[c]);
                    acc[c] = nibble_group_tile!(@offset $kind, acc[c], mw, sa[c], b);
                }
            }
            // SAFETY: the caller's contract.
            unsafe { store_group(&acc, c0, rows, out) };
        }
    };
    (@prefetch_scales ksuper, $rec:ident, $lines:expr, $nb:ident, $b:ident, $pf:ident) => {
        prefetch_k_scales($rec, $lines, $nb, $b, $pf)
    };
    (@prefetch_scales $kind:ident, $rec:ident, $lines:expr, $nb:ident, $b:ident, $pf:ident) => {};
    (@per_row offset, $a:ident, $c0:ident) => {
        std::array::from_fn(|c| $a.s($c0 + c).as_ptr())
    };
    (@per_row ksuper, $a:ident, $c0:ident) => {
        nibble_group_tile!(@per_row offset, $a, $c0)
    };
    // (The i32 corrections' pointers typed as f32 ones, so both kinds fill one array; `@start`
    // reads them back as i32.)
    (@per_row symmetric, $a:ident, $c0:ident) => {
        std::array::from_fn(|c| $a.bias_fix($c0 + c).as_ptr().cast::<f32>())
    };
    (@codes no, $r:ident) => {
        nibble_codes::<false>($r)
    };
    (@codes yes, $r:ident) => {
        nibble_codes::<true>($r)
    };
    (@codes bytes, $r:ident) => {
        byte_codes($r)
    };
    (@scales offset($line:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident) => {{
        let dm = _mm512_load_si512($r.add(64 * $line).cast());
        (
            _mm512_cvtph_ps(_mm512_castsi512_si256(dm)),
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dm)),
        )
    }};
    (@scales symmetric($shift:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident) => {{
        let (line, at) = scales_at($lines, $nb, $b);
        (
            _mm512_cvtph_ps(_mm256_load_si256($rec.add(line).cast::<u8>().add(at).cast())),
            _mm512_setzero_ps(),
        )
    }};
    // Q4_K, Q5_K: `d * sc` and `-(dmin * m)` of sub-block `b % 8`, from the superblock's scale
    // lines after the group's records (both products exact in f32; the sign flipped as a bit).
    (@scales ksuper($unused:expr), $lines:expr, $rec:ident, $r:ident, $nb:ident, $b:ident) => {{
        let k = $rec.add(k_scales_at($lines, $nb, $b)).cast::<u8>();
        let dm = _mm512_load_si512(k.cast());
        let at = 16 * ($b % 8);
        let byte_lanes = |p: *const u8| {
            _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_load_si128(p.cast())))
        };
        let dw = _mm512_mul_ps(_mm512_cvtph_ps(_mm512_castsi512_si256(dm)), byte_lanes(k.add(64 + at)));
        let mw = _mm512_mul_ps(
            _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dm)),
            byte_lanes(k.add(192 + at)),
        );
        let sign = _mm512_set1_epi32(i32::MIN);
        (dw, _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(mw), sign)))
    }};
    (@start offset($line:expr), $s:expr, $b:ident) => {
        0
    };
    (@start ksuper($unused:expr), $s:expr, $b:ident) => {
        0
    };
    (@start symmetric($shift:expr), $s:expr, $b:ident) => {
        *$s.cast::<i32>().add($b) >> $shift
    };
    // SAFETY (offset): a prepared row holds `2 * nbp` values `s`.
    (@offset offset, $acc:expr, $mw:ident, $s:expr, $b:ident) => {
        _mm512_fmadd_ps($mw, _mm512_set1_ps(unsafe { *$s.add(2 * $b + 1) }), $acc)
    };
    (@offset ksuper, $acc:expr, $mw:ident, $s:expr, $b:ident) => {
        nibble_group_tile!(@offset offset, $acc, $mw, $s, $b)
    };
    (@offset symmetric, $acc:expr, $mw:ident, $s:expr, $b:ident) => {{
        let _ = $mw; // no offset term
        $acc
    }};
}

nibble_group_tile!(
    /// Q4_1: `d` and `m` in the record's line 4.
    tile_q4_1x16, record: Q4_1_RECORD_LINES, fifth: no, scales: offset(4)
);
nibble_group_tile!(
    /// Q4_0: each dot starts from `-8 * sum(a)`.
    tile_q4_0x16, record: Q4_0_RECORD_LINES, fifth: no, scales: symmetric(4)
);
nibble_group_tile!(
    /// Q5_0: each dot starts from `-16 * sum(a)`.
    tile_q5_0x16, record: Q5_0_RECORD_LINES, fifth: yes, scales: symmetric(3)
);
nibble_group_tile!(
    /// Q5_1: `d` and `m` in the record's line 5.
    tile_q5_1x16, record: Q5_1_RECORD_LINES, fifth: yes, scales: offset(5)
);
nibble_group_tile!(
    /// Q4_K: each sub-block a Q4_1 block with `d * sc` and `-(dmin * m)`.
    tile_q4_kx16, record: Q4_K_RECORD_LINES, fifth: no, scales: ksuper(0)
);
nibble_group_tile!(
    /// Q5_K: each sub-block a Q5_1 block with `d * sc` and `-(dmin * m)`.
    tile_q5_kx16, record: Q5_K_RECORD_LINES, fifth: yes, scales: ksuper(0)
);
nibble_group_tile!(
    /// Q5_K widened to whole bytes.
    tile_q5_k_bytes_x16, record: BYTE_RECORD_LINES, fifth: bytes, scales: ksuper(0)
);

/// 16 weight rows (one group) x `C` activation rows, all blocks; Q8_0 (codes stored +128).
///
/// # Safety
/// As [`nibble_group_tile`]'s tiles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_q8_0x16<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: Prefetch,
) {
    let mut acc = [_mm512_setzero_ps(); C];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    // Raw pointers, as in `tile_q4_1x16`.
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    let fix: [*const i32; C] = std::array::from_fn(|c| a.bias_fix(c0 + c).as_ptr());
    for b in 0..nb {
        // SAFETY: the group has `nb` records of `Q8_0_RECORD_LINES` aligned lines, then its
        // scales, 32 bytes per block.
        let (w, dw) = unsafe {
            let r = rec.add(b * Q8_0_RECORD_LINES).cast::<u8>();
            prefetch_record(r, pf, Q8_0_RECORD_LINES);
            let mut w = [_mm512_setzero_si512(); 8];
            for (j, wj) in w.iter_mut().enumerate() {
                *wj = _mm512_load_si512(r.add(64 * j).cast());
            }
            let (line, at) = scales_at(Q8_0_RECORD_LINES, nb, b);
            let dw = _mm512_cvtph_ps(_mm256_load_si256(rec.add(line).cast::<u8>().add(at).cast()));
            (w, dw)
        };
        for c in 0..C {
            // SAFETY: prepared rows hold `nbp * 32` codes in element order.
            let bcast = |o: usize| unsafe {
                _mm512_set1_epi32(qa[c].add(b * QK + o).cast::<i32>().read_unaligned())
            };
            // SAFETY: a prepared row holds `nbp >= nb` scales and bias corrections.
            let (d, start) = unsafe { (*da[c].add(b), *fix[c].add(b)) };
            let mut lo = _mm512_dpbusd_epi32(_mm512_set1_epi32(start), w[0], bcast(0));
            let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[4], bcast(16));
            for j in 1..4 {
                lo = _mm512_dpbusd_epi32(lo, w[j], bcast(4 * j));
                hi = _mm512_dpbusd_epi32(hi, w[4 + j], bcast(16 + 4 * j));
            }
            let sumi = _mm512_cvtepi32_ps(_mm512_add_epi32(lo, hi));
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(d));
            acc[c] = _mm512_fmadd_ps(sumi, scale, acc[c]);
        }
    }
    // SAFETY: the caller's contract.
    unsafe { store_group(&acc, c0, rows, out) };
}

/// The 16 rows' sub-block of 32 codes (`w`: the registers of elements `4j..4j + 4`, then of
/// `16 + 4j..`) against one activation row's (`qa`): each 16-code half dotted apart by
/// `vpdpbusd` from its `start`. The inner product of Q2_K, Q3_K and Q6_K, before their scales.
///
/// # Safety
/// 32 codes readable at `qa`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn half_dots(w: &[__m512i; 8], qa: *const i8, start: [i32; 2]) -> [__m512i; 2] {
    // SAFETY: the caller's contract.
    let bcast = |o: usize| unsafe { _mm512_set1_epi32(qa.add(o).cast::<i32>().read_unaligned()) };
    let mut lo = _mm512_dpbusd_epi32(_mm512_set1_epi32(start[0]), w[0], bcast(0));
    let mut hi = _mm512_dpbusd_epi32(_mm512_set1_epi32(start[1]), w[4], bcast(16));
    for j in 1..4 {
        lo = _mm512_dpbusd_epi32(lo, w[j], bcast(4 * j));
        hi = _mm512_dpbusd_epi32(hi, w[4 + j], bcast(16 + 4 * j));
    }
    [lo, hi]
}

/// [`half_dots`] weighted by the rows' scales of each half (`sc`) in exact i32.
///
/// # Safety
/// As [`half_dots`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scaled_half_dots(
    w: &[__m512i; 8],
    qa: *const i8,
    start: [i32; 2],
    sc: [__m512i; 2],
) -> __m512i {
    // SAFETY: the caller's contract.
    let [lo, hi] = unsafe { half_dots(w, qa, start) };
    _mm512_add_epi32(_mm512_mullo_epi32(lo, sc[0]), _mm512_mullo_epi32(hi, sc[1]))
}

/// Each row's scale `s` (an i8 in an i32 lane) as the i16 pair `(s, 256 * s)`, against which
/// `vpdpwssd` weights a lane split by [`byte_split`].
#[inline]
#[target_feature(enable = "avx512f")]
fn byte_split_scale(s: __m512i) -> __m512i {
    _mm512_or_si512(
        _mm512_and_si512(s, _mm512_set1_epi32(0xFFFF)),
        _mm512_slli_epi32::<24>(s),
    )
}

/// Each i32 lane `x` (`|x| < 2^23`) as the i16 pair `(x & 0xFF, x >> 8)`, by one byte shuffle:
/// `x = (x & 0xFF) + 256 * (x >> 8)`, so `vpdpwssd` against [`byte_split_scale`] adds `s * x`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn byte_split(x: __m512i) -> __m512i {
    // Dword `k` of each 128-bit lane takes bytes `4k`, none, `4k + 1`, `4k + 2`.
    let from = _mm512_set4_epi32(0x0E0D_800C, 0x0A09_8008, 0x0605_8004, 0x0201_8000);
    _mm512_shuffle_epi8(x, from)
}

/// The scaled half dots of six-bit codes, in a tile of `C` activation rows: with one by
/// `vpmulld` (decode, where the chain's latency counts); with more by byte-split `vpdpwssd`,
/// which spends one shuffle and one multiplier uop per half where `vpmulld` spends two
/// multiplier uops (`split_sc`: the scales by [`byte_split_scale`]). Both are exact (a half dot
/// is at most 16 * 32 * 128 in magnitude), so their bits are the same.
///
/// # Safety
/// As [`half_dots`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn wide_half_dots<const C: usize>(
    w: &[__m512i; 8],
    qa: *const i8,
    start: [i32; 2],
    sc: [__m512i; 2],
    split_sc: [__m512i; 2],
) -> __m512i {
    // SAFETY: the caller's contract.
    unsafe {
        if C == 1 {
            scaled_half_dots(w, qa, start, sc)
        } else {
            let [lo, hi] = half_dots(w, qa, start);
            let lo = _mm512_dpwssd_epi32(_mm512_setzero_si512(), byte_split(lo), split_sc[0]);
            _mm512_dpwssd_epi32(lo, byte_split(hi), split_sc[1])
        }
    }
}

/// [`scaled_half_dots`] for codes of at most 3 bits, whose half dots fit in an i16 (at most
/// 16 * 4 * 127 in magnitude): the two dots as i16 pairs against the rows' scales as pairs
/// ([`i16_pairs`]), one `vpdpwssd`.
///
/// # Safety
/// As [`half_dots`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn paired_half_dots(
    w: &[__m512i; 8],
    qa: *const i8,
    start: [i32; 2],
    sc_pairs: __m512i,
) -> __m512i {
    // SAFETY: the caller's contract.
    let [lo, hi] = unsafe { half_dots(w, qa, start) };
    _mm512_dpwssd_epi32(_mm512_setzero_si512(), i16_pairs(lo, hi), sc_pairs)
}

/// The scaled half dots of a code type of at most 3 bits, in a tile of `C` activation rows:
/// with one (decode, where the chain's latency counts) by `vpmulld`, with more (where
/// instructions count) as i16 pairs. Both are exact, so their bits are the same.
///
/// # Safety
/// As [`half_dots`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k_half_dots<const C: usize>(
    w: &[__m512i; 8],
    qa: *const i8,
    start: [i32; 2],
    sc: [__m512i; 2],
    sc_pairs: __m512i,
) -> __m512i {
    // SAFETY: the caller's contract.
    unsafe {
        if C == 1 {
            scaled_half_dots(w, qa, start, sc)
        } else {
            paired_half_dots(w, qa, start, sc_pairs)
        }
    }
}

/// Lane `i` of `first` in the low i16 of lane `i`, of `second` in its high one (both i16
/// values held in i32 lanes).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn i16_pairs(first: __m512i, second: __m512i) -> __m512i {
    _mm512_mask_blend_epi16(0xAAAA_AAAA, first, _mm512_slli_epi32::<16>(second))
}

/// The 16 rows' scale bytes of 16-weight run `t` of a superblock whose `K_SCALE_LINES` start at
/// `k`, as i32 lanes (sign-extended, or with `unsigned` zero-extended).
///
/// # Safety
/// `k` is a superblock's first scale line.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn run_scales<const UNSIGNED: bool>(k: *const u8, t: usize) -> __m512i {
    // SAFETY: the caller's contract: the scale lines hold 16 bytes per run.
    let bytes = unsafe { _mm_load_si128(k.add(64 + 16 * t).cast()) };
    if UNSIGNED {
        _mm512_cvtepu8_epi32(bytes)
    } else {
        _mm512_cvtepi8_epi32(bytes)
    }
}

/// The four registers of a line of 2-bit codes (`TWO_BIT_LINES`' layout): register `j` holds
/// bits `2j..2j + 2` of each byte.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn two_bit_codes(l: __m512i) -> [__m512i; 4] {
    let low = _mm512_set1_epi8(3);
    [
        _mm512_and_si512(l, low),
        _mm512_and_si512(_mm512_srli_epi16::<2>(l), low),
        _mm512_and_si512(_mm512_srli_epi16::<4>(l), low),
        _mm512_and_si512(_mm512_srli_epi16::<6>(l), low),
    ]
}

/// The unsigned codes (the signed ones plus 4) of a packed Q3_K record at `r`, in the registers
/// of elements `4j..4j + 4`, then of `16 + 4j..`: the two-bit codes with their third bits put
/// over them by mask moves.
///
/// # Safety
/// `r` is a Q3_K record: `Q3_K_RECORD_LINES` aligned lines.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q3_k_codes(r: *const u8) -> [__m512i; 8] {
    let bit2 = _mm512_set1_epi8(0x04);
    // SAFETY: the caller's contract.
    let (third, low, high) = unsafe {
        (
            r.add(64 * THIRD_BITS_LINE).cast::<u64>(),
            two_bit_codes(_mm512_load_si512(r.cast())),
            two_bit_codes(_mm512_load_si512(r.add(64).cast())),
        )
    };
    // SAFETY: the third-bits line holds eight u64 words.
    let bits = |word: usize| unsafe { _mm512_maskz_mov_epi8(third.add(word).read(), bit2) };
    let mut w = [_mm512_setzero_si512(); 8];
    for j in 0..4 {
        w[j] = _mm512_or_si512(low[j], bits(2 * j));
        w[4 + j] = _mm512_or_si512(high[j], bits(2 * j + 1));
    }
    w
}

/// The unsigned codes of a packed Q6_K record at `r`, in the registers of elements `4j..4j + 4`,
/// then of `16 + 4j..`: nibbles with bits 4 and 5 put over them by mask moves.
///
/// # Safety
/// `r` is a Q6_K record: `Q6_K_RECORD_LINES` aligned lines.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn q6_k_codes(r: *const u8) -> [__m512i; 8] {
    let (bit4, bit5) = (_mm512_set1_epi8(0x10), _mm512_set1_epi8(0x20));
    // SAFETY: the caller's contract: the fifth- and sixth-bits lines hold eight u64 words.
    let high = |h: usize| unsafe {
        let (p4, p5) = (
            r.add(64 * FIFTH_BITS_LINE).cast::<u64>(),
            r.add(64 * SIXTH_BITS_LINE).cast::<u64>(),
        );
        _mm512_or_si512(
            _mm512_maskz_mov_epi8(p4.add(h).read(), bit4),
            _mm512_maskz_mov_epi8(p5.add(h).read(), bit5),
        )
    };
    // SAFETY: the caller's contract.
    unsafe { nibbles_under!(r, high) }
}

/// Defines the 16-row tile of a type with a signed scale per 16 weights and a `d` per
/// superblock (Q6_K, Q3_K): 16 rows x `C` activation rows, all sub-blocks. `codes:` names how
/// a record's lines make the unsigned codes of elements `4j..` and `16 + 4j..` (Q6_K: nibbles
/// with bits 4 and 5 put over them by mask moves; Q3_K: two-bit codes, plus 4, with their
/// third bits put over them; `bytes`: a Q6_K group widened to whole bytes, one line per
/// register, its scale lines as Q6_K's). Each 16-code half is dotted apart by `vpdpbusd`,
/// started from `-32 * sum(a)` of its half shifted right by `$shift` (exact: `-4 * sum(a)` for
/// Q3_K), and weighted by the rows' scales in exact i32, then `acc = fma(sumi, d * d_a, acc)`.
///
/// Each generated function's safety contract: AVX-512 F/BW/VL + VNNI present; `rec` is the
/// first record of the group that starts at `rows.start`; `rows` (1 to 16 of them) are
/// written; activation rows `c0..c0 + C` exist in the natural Q8_0 layout; `out` as in
/// `GemmFn`.
macro_rules! signed_k_group_tile {
    ($name:ident, record: $lines:expr, codes: $codes:ident, shift: $shift:literal) => {
        /// # Safety
        /// See [`signed_k_group_tile`].
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $name<const C: usize>(
            rec: *const Line,
            nb: usize,
            a: &Prepared,
            c0: usize,
            rows: Range<usize>,
            out: OutPtr,
            pf: Prefetch,
        ) {
            let mut acc = [_mm512_setzero_ps(); C];
            let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
            let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
            let fix: [*const i32; C] =
                std::array::from_fn(|c| a.half_bias_fix(c0 + c).as_ptr());
            for b in 0..nb {
                // SAFETY: the group has `nb` records of `$lines` aligned lines, then 5 scale
                // lines per superblock (`d`, then 16 bytes of scales per 16 weights).
                let (w, dw, sc) = unsafe {
                    let r = rec.add(b * $lines).cast::<u8>();
                    prefetch_record(r, pf, $lines);
                    prefetch_k_scales(rec, $lines, nb, b, pf);
                    let w = signed_k_group_tile!(@codes $codes, r);
                    let k = rec.add(k_scales_at($lines, nb, b)).cast::<u8>();
                    let t = 2 * (b % 8);
                    (
                        w,
                        _mm512_cvtph_ps(_mm256_load_si256(k.cast())),
                        [run_scales::<false>(k, t), run_scales::<false>(k, t + 1)],
                    )
                };
                let sc_wide = signed_k_group_tile!(@wide_scales $codes, sc);
                unrolled_cols!(c in C => {
                    // SAFETY: a prepared row holds `nbp * 32 >= nb * 32` codes in element
                    // order, `nbp` scales and `2 * nbp` half-block corrections.
                    let (sumi, d) = unsafe {
                        let start = [*fix[c].add(2 * b) >> $shift, *fix[c].add(2 * b + 1) >> $shift];
                        let q = qa[c].add(b * QK);
                        (signed_k_group_tile!(@dots $codes, C, w, q, start, sc, sc_wide), *da[c].add(b))
                    };
                    let scale = _mm512_mul_ps(dw, _mm512_set1_ps(d));
                    acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), scale, acc[c]);
                });
            }
            // SAFETY: the caller's contract.
            unsafe { store_group(&acc, c0, rows, out) };
        }
    };
    (@codes q6_k, $r:ident) => {
        q6_k_codes($r)
    };
    (@codes bytes, $r:ident) => {
        byte_codes($r)
    };
    (@codes q3_k, $r:ident) => {
        q3_k_codes($r)
    };
    // The record's scales as the dots of many activation rows take them, once per record.
    // Six-bit codes' half dots can pass an i16 (see `wide_half_dots`), 3-bit ones cannot
    // (see `k_half_dots`).
    (@wide_scales q6_k, $sc:ident) => {
        [byte_split_scale($sc[0]), byte_split_scale($sc[1])]
    };
    (@wide_scales bytes, $sc:ident) => {
        signed_k_group_tile!(@wide_scales q6_k, $sc)
    };
    (@wide_scales q3_k, $sc:ident) => {
        i16_pairs($sc[0], $sc[1])
    };
    (@dots q6_k, $c:ident, $w:ident, $q:ident, $start:ident, $sc:ident, $wide:ident) => {
        wide_half_dots::<$c>(&$w, $q, $start, $sc, $wide)
    };
    (@dots bytes, $c:ident, $w:ident, $q:ident, $start:ident, $sc:ident, $wide:ident) => {
        signed_k_group_tile!(@dots q6_k, $c, $w, $q, $start, $sc, $wide)
    };
    (@dots q3_k, $c:ident, $w:ident, $q:ident, $start:ident, $sc:ident, $wide:ident) => {
        k_half_dots::<$c>(&$w, $q, $start, $sc, $wide)
    };
}

signed_k_group_tile!(tile_q6_kx16, record: Q6_K_RECORD_LINES, codes: q6_k, shift: 0);
signed_k_group_tile!(tile_q3_kx16, record: Q3_K_RECORD_LINES, codes: q3_k, shift: 3);
signed_k_group_tile!(tile_q6_k_bytes_x16, record: BYTE_RECORD_LINES, codes: bytes, shift: 0);

/// Q2_K in the 16-row layout: the record's two-bit codes, each 16-code half dotted apart from 0
/// and weighted by the rows' 4-bit scales in exact i32; the rows' mins of the two halves, as
/// i16 pairs, against the halves' activation sums (from the `-32 * sum(a)` corrections) in one
/// `vpmaddwd`. Then `acc = fma(sumi, d * d_a, acc)` and `acc = fma(summ, -dmin * d_a, acc)`.
///
/// # Safety
/// As the tiles of [`signed_k_group_tile`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_q2_kx16<const C: usize>(
    rec: *const Line,
    nb: usize,
    a: &Prepared,
    c0: usize,
    rows: Range<usize>,
    out: OutPtr,
    pf: Prefetch,
) {
    let nibble = _mm512_set1_epi32(0x0F);
    let sign = _mm512_set1_epi32(i32::MIN);
    let mut acc = [_mm512_setzero_ps(); C];
    let qa: [*const i8; C] = std::array::from_fn(|c| a.qs(c0 + c));
    let da: [*const f32; C] = std::array::from_fn(|c| a.d(c0 + c).as_ptr());
    let fix: [*const i32; C] = std::array::from_fn(|c| a.half_bias_fix(c0 + c).as_ptr());
    for b in 0..nb {
        // SAFETY: the group has `nb` records of 2 aligned lines, then 5 scale lines per
        // superblock (`d` and `dmin`, then 16 bytes of scales and mins per 16 weights).
        let (w, dw, neg_dmin, sc, mins) = unsafe {
            let r = rec.add(b * Q2_K_RECORD_LINES).cast::<u8>();
            prefetch_record(r, pf, Q2_K_RECORD_LINES);
            prefetch_k_scales(rec, Q2_K_RECORD_LINES, nb, b, pf);
            let low = two_bit_codes(_mm512_load_si512(r.cast()));
            let high = two_bit_codes(_mm512_load_si512(r.add(64).cast()));
            let w = [
                low[0], low[1], low[2], low[3], high[0], high[1], high[2], high[3],
            ];
            let k = rec.add(k_scales_at(Q2_K_RECORD_LINES, nb, b)).cast::<u8>();
            let dm = _mm512_load_si512(k.cast());
            let dmin = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(dm));
            let t = 2 * (b % 8);
            let (s0, s1) = (run_scales::<true>(k, t), run_scales::<true>(k, t + 1));
            // Lane `i`: row `i`'s min of the first half in its low i16, of the second in its
            // high one.
            let mins = _mm512_or_si512(
                _mm512_srli_epi32::<4>(s0),
                _mm512_slli_epi32::<16>(_mm512_srli_epi32::<4>(s1)),
            );
            (
                w,
                _mm512_cvtph_ps(_mm512_castsi512_si256(dm)),
                _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(dmin), sign)),
                [_mm512_and_si512(s0, nibble), _mm512_and_si512(s1, nibble)],
                mins,
            )
        };
        let sc_pairs = i16_pairs(sc[0], sc[1]);
        unrolled_cols!(c in C => {
            // SAFETY: as in `signed_k_group_tile`. A half's correction is `-32 * sum(a)` exactly, so
            // its sum is the correction shifted right by 5, negated (at most 16 * 127: an i16).
            let (sumi, sums, d) = unsafe {
                let sum = |h: usize| -(*fix[c].add(2 * b + h) >> 5);
                (
                    k_half_dots::<C>(&w, qa[c].add(b * QK), [0, 0], sc, sc_pairs),
                    (sum(0) & 0xFFFF) | (sum(1) << 16),
                    *da[c].add(b),
                )
            };
            let summ = _mm512_madd_epi16(mins, _mm512_set1_epi32(sums));
            let d = _mm512_set1_ps(d);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dw, d), acc[c]);
            acc[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(summ), _mm512_mul_ps(neg_dmin, d), acc[c]);
        });
    }
    // SAFETY: the caller's contract.
    unsafe { store_group(&acc, c0, rows, out) };
}

// The 16-row kernels take 8 activation rows per tile (16 spill).
packed_gemm!(
    gemm_q6_kx16_tiles,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q6_K_RECORD_LINES,
    tile_q6_kx16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q3_kx16_tiles,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q3_K_RECORD_LINES,
    tile_q3_kx16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q2_kx16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q2_K_RECORD_LINES,
    tile_q2_kx16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q4_kx16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q4_K_RECORD_LINES,
    tile_q4_kx16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q5_kx16_tiles,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q5_K_RECORD_LINES,
    tile_q5_kx16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q4_1x16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q4_1_RECORD_LINES,
    tile_q4_1x16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q8_0x16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q8_0_RECORD_LINES,
    tile_q8_0x16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q4_0x16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q4_0_RECORD_LINES,
    tile_q4_0x16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q5_0x16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q5_0_RECORD_LINES,
    tile_q5_0x16,
    8,
    whole_group
);
packed_gemm!(
    gemm_q5_1x16,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    Q5_1_RECORD_LINES,
    tile_q5_1x16,
    8,
    whole_group
);
