//! [`super::portable`]'s products in 256-bit vectors: the same fused multiply-adds in the same
//! order, so the same bits. Scores go eight keys to a vector (keys are columns of a tile's
//! block), up to six queries by sixteen keys at once; weighted values go eight dims to a
//! vector, up to six queries by sixteen dims at once; a decode step's KV group (up to three
//! queries) goes together, 32 keys or dims at once, and a lone query a whole row of 64. f16
//! caches are widened by F16C on load, once for all the queries of a block. While a decode
//! step computes one tile, the next is fetched (`Ahead`).

use std::arch::x86_64::*;

use half::f16;

use super::blocks::{Blocks, FEW};
use crate::cache::kv::{KvElement, KV_TILE};

/// AVX2, FMA and F16C, checked once.
pub(super) fn available() -> bool {
    static FEATURES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FEATURES.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// A cache element that eight of can be loaded as f32s.
pub(super) trait Lanes: KvElement {
    /// # Safety
    /// AVX2 and F16C are available; eight elements are readable at `p`.
    unsafe fn load8(p: *const Self) -> __m256;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller's contract.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Lanes for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller's contract (F16C for the conversion).
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// The AVX2 path (AVX2, FMA and F16C). A block of six queries is 6 x 2 accumulators, 2
/// loaded vectors and a broadcast: 15 of the 16 registers.
pub(super) struct Avx2;

impl<E: Lanes> Blocks<E> for Avx2 {
    const LANES: usize = 8;

    unsafe fn score_block<const B: usize>(
        q: *const f32,
        dim: usize,
        keys: *const E,
        next: *const E,
        width: usize,
        scale: f32,
        out: *mut f32,
    ) {
        let next = Ahead::new(next);
        // SAFETY: the trait's contract.
        unsafe { score_block::<E, B>(q, dim, keys, next, width, scale, out) }
    }

    unsafe fn mix_block<const B: usize>(
        w: *const f32,
        valid: &[usize],
        values: *const E,
        next: *const E,
        dim: usize,
        out: *mut f32,
    ) {
        let next = Ahead::new(next);
        // SAFETY: the trait's contract.
        unsafe { mix_block::<E, B>(w, valid, values, next, dim, out) }
    }
}

/// The same slab of the next tile's block, or nothing: while one tile is computed, the lines
/// its loads touch are requested into L2 for the next, spread over the loop, so a history that
/// streams from memory arrives ahead of its use (the hardware's prefetchers stop at every 4 KiB
/// page boundary, two or four times per block).
#[derive(Clone, Copy)]
struct Ahead<E> {
    block: *const E,
    /// The slab's first column (of keys) or dim (of values) within its row.
    offset: usize,
}

impl<E: Lanes> Ahead<E> {
    /// The slab at the start of each row of `block` (null: nothing to fetch).
    fn new(block: *const E) -> Ahead<E> {
        Ahead { block, offset: 0 }
    }

    fn at(self, offset: usize) -> Ahead<E> {
        Ahead {
            block: self.block,
            offset: self.offset + offset,
        }
    }

    /// Requests the lines that begin among the slab's `8 * V` elements of the row at `row`.
    ///
    /// # Safety
    /// The block, when there is one, holds the row.
    #[inline(always)]
    unsafe fn fetch<const V: usize>(self, row: usize) {
        if self.block.is_null() {
            return;
        }
        let per_line = 64 / std::mem::size_of::<E>();
        for v in 0..V {
            let at = self.offset + 8 * v;
            if at.is_multiple_of(per_line) {
                // SAFETY: the caller's contract; a prefetch does not fault in any case.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(self.block.add(row + at).cast()) };
            }
        }
    }
}

/// Whether a block of `B` rows by `V` vectors keeps its `V` loaded vectors in registers (and
/// broadcasts one row's scalar at a time) rather than its `B` broadcasts (and loads one vector
/// at a time): whichever fits the 16 registers beside the `B * V` accumulators. A spilled
/// accumulator puts a store and a reload in its chain of multiply-adds.
const fn loaded_first<const B: usize, const V: usize>() -> bool {
    V + 1 + B * V <= 16 || V <= B
}

/// # Safety
/// AVX2, FMA and F16C are available; the rest as [`Blocks::score_block`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn score_block<E: Lanes, const B: usize>(
    q: *const f32,
    dim: usize,
    keys: *const E,
    next: Ahead<E>,
    width: usize,
    scale: f32,
    out: *mut f32,
) {
    let mut j = 0;
    // A lone query takes whole rows of the block, a decode step's group half rows (see
    // [`FEW`]), the others quarter rows.
    while B == 1 && j + 64 <= width {
        // SAFETY: the caller's contract; keys `j..j + 64` are inside the tile.
        unsafe { score_keys::<E, B, 8>(q, dim, keys.add(j), next.at(j), scale, out.add(j)) };
        j += 64;
    }
    while B <= FEW && j + 32 <= width {
        // SAFETY: as above, keys `j..j + 32`.
        unsafe { score_keys::<E, B, 4>(q, dim, keys.add(j), next.at(j), scale, out.add(j)) };
        j += 32;
    }
    while j + 16 <= width {
        // SAFETY: as above, keys `j..j + 16`.
        unsafe { score_keys::<E, B, 2>(q, dim, keys.add(j), next.at(j), scale, out.add(j)) };
        j += 16;
    }
    if j < width {
        // SAFETY: as above, keys `j..j + 8`.
        unsafe { score_keys::<E, B, 1>(q, dim, keys.add(j), next.at(j), scale, out.add(j)) };
    }
}

/// Scores of `B` queries against `8 * V` keys starting at `keys` (a column of the tile).
///
/// # Safety
/// As [`score_block`], the `8 * V` keys inside the tile.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn score_keys<E: Lanes, const B: usize, const V: usize>(
    q: *const f32,
    dim: usize,
    keys: *const E,
    next: Ahead<E>,
    scale: f32,
    out: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; B];
    for d in 0..dim {
        // SAFETY: the next block has the shape of this one.
        unsafe { next.fetch::<V>(d * KV_TILE) };
        if loaded_first::<B, V>() {
            let mut k = [_mm256_setzero_ps(); V];
            for (v, x) in k.iter_mut().enumerate() {
                // SAFETY: row `d` of the block holds these keys.
                *x = unsafe { E::load8(keys.add(d * KV_TILE + 8 * v)) };
            }
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: query `r` holds `dim` floats.
                let x = _mm256_set1_ps(unsafe { *q.add(r * dim + d) });
                for (a, k) in a.iter_mut().zip(k) {
                    *a = _mm256_fmadd_ps(x, k, *a);
                }
            }
        } else {
            let mut x = [_mm256_setzero_ps(); B];
            for (r, x) in x.iter_mut().enumerate() {
                // SAFETY: query `r` holds `dim` floats.
                *x = _mm256_set1_ps(unsafe { *q.add(r * dim + d) });
            }
            for v in 0..V {
                // SAFETY: row `d` of the block holds these keys.
                let k = unsafe { E::load8(keys.add(d * KV_TILE + 8 * v)) };
                for (a, x) in acc.iter_mut().zip(x) {
                    a[v] = _mm256_fmadd_ps(x, k, a[v]);
                }
            }
        }
    }
    let scale = _mm256_set1_ps(scale);
    for (r, a) in acc.iter().enumerate() {
        for (v, a) in a.iter().enumerate() {
            // SAFETY: output row `r` holds these keys' slots.
            unsafe { _mm256_storeu_ps(out.add(r * KV_TILE + 8 * v), _mm256_mul_ps(*a, scale)) };
        }
    }
}

/// # Safety
/// AVX2, FMA and F16C are available; the rest as [`Blocks::mix_block`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mix_block<E: Lanes, const B: usize>(
    w: *const f32,
    valid: &[usize],
    values: *const E,
    next: Ahead<E>,
    dim: usize,
    out: *mut f32,
) {
    let mut c = 0;
    while B == 1 && c + 64 <= dim {
        // SAFETY: the caller's contract; dims `c..c + 64` are inside each row.
        unsafe { mix_dims::<E, B, 8>(w, valid, values.add(c), next.at(c), dim, out.add(c)) };
        c += 64;
    }
    while B <= FEW && c + 32 <= dim {
        // SAFETY: as above, dims `c..c + 32`.
        unsafe { mix_dims::<E, B, 4>(w, valid, values.add(c), next.at(c), dim, out.add(c)) };
        c += 32;
    }
    while c + 16 <= dim {
        // SAFETY: as above, dims `c..c + 16`.
        unsafe { mix_dims::<E, B, 2>(w, valid, values.add(c), next.at(c), dim, out.add(c)) };
        c += 16;
    }
    if c < dim {
        // SAFETY: as above, dims `c..c + 8`.
        unsafe { mix_dims::<E, B, 1>(w, valid, values.add(c), next.at(c), dim, out.add(c)) };
    }
}

/// `8 * V` dims of the weighted values of `B` queries: the keys every query weighs go
/// together, then each query's last few alone, in the same order.
///
/// # Safety
/// As [`mix_block`], with `values` and `out` offset to the first of the dims.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mix_dims<E: Lanes, const B: usize, const V: usize>(
    w: *const f32,
    valid: &[usize],
    values: *const E,
    next: Ahead<E>,
    dim: usize,
    out: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); V]; B];
    let row = |j: usize| {
        let mut x = [_mm256_setzero_ps(); V];
        for (v, x) in x.iter_mut().enumerate() {
            // SAFETY: value row `j < KV_TILE` holds these dims.
            *x = unsafe { E::load8(values.add(j * dim + 8 * v)) };
        }
        x
    };
    for j in 0..valid[0] {
        // SAFETY: the next block has the shape of this one.
        unsafe { next.fetch::<V>(j * dim) };
        if loaded_first::<B, V>() {
            let x = row(j);
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: weight row `r` holds `KV_TILE` floats.
                let p = _mm256_set1_ps(unsafe { *w.add(r * KV_TILE + j) });
                for (a, x) in a.iter_mut().zip(x) {
                    *a = _mm256_fmadd_ps(p, x, *a);
                }
            }
        } else {
            let mut p = [_mm256_setzero_ps(); B];
            for (r, p) in p.iter_mut().enumerate() {
                // SAFETY: weight row `r` holds `KV_TILE` floats.
                *p = _mm256_set1_ps(unsafe { *w.add(r * KV_TILE + j) });
            }
            for v in 0..V {
                // SAFETY: value row `j < KV_TILE` holds these dims.
                let x = unsafe { E::load8(values.add(j * dim + 8 * v)) };
                for (a, p) in acc.iter_mut().zip(p) {
                    a[v] = _mm256_fmadd_ps(p, x, a[v]);
                }
            }
        }
    }
    for (r, a) in acc.iter_mut().enumerate() {
        for j in valid[0]..valid[r] {
            let x = row(j);
            // SAFETY: as above.
            let p = _mm256_set1_ps(unsafe { *w.add(r * KV_TILE + j) });
            for (a, x) in a.iter_mut().zip(x) {
                *a = _mm256_fmadd_ps(p, x, *a);
            }
        }
        for (v, a) in a.iter().enumerate() {
            // SAFETY: output row `r` holds `dim` floats from here.
            unsafe { _mm256_storeu_ps(out.add(r * dim + 8 * v), *a) };
        }
    }
}
