//! [`super::portable`]'s products in 128-bit NEON vectors: the same fused multiply-adds in the
//! same order, so the same bits. Scores go four keys to a vector (keys are columns of a tile's
//! block), up to six queries by sixteen keys at once; weighted values go four dims to a vector,
//! up to six queries by sixteen dims at once; a decode step's KV group (up to three queries)
//! goes together, 32 keys or dims at once, and a lone query a whole row of 64. Each block keeps
//! one broadcast per query and loads one vector at a time, which fits the 32 registers beside
//! the accumulators. f16 caches are widened by `fcvtl` (base AdvSIMD) on load, once for all the
//! queries of a block.

use std::arch::aarch64::*;

use half::f16;

use super::blocks::{Blocks, FEW};
use crate::cache::kv::{KvElement, KV_TILE};

/// A cache element that four of can be loaded as f32s.
pub(super) trait Quads: KvElement {
    /// # Safety
    /// Four elements are readable at `p`.
    unsafe fn load4(p: *const Self) -> float32x4_t;
}

impl Quads for f32 {
    #[inline(always)]
    unsafe fn load4(p: *const f32) -> float32x4_t {
        // SAFETY: the caller's contract.
        unsafe { vld1q_f32(p) }
    }
}

impl Quads for f16 {
    #[inline(always)]
    unsafe fn load4(p: *const f16) -> float32x4_t {
        // SAFETY: the caller's contract.
        let h = unsafe { vld1_u16(p.cast()) };
        let widened: float32x4_t;
        // SAFETY: `fcvtl` (half to single precision, exact) is in every AArch64 CPU's AdvSIMD;
        // it touches no memory. Rust has no stable intrinsic for it.
        unsafe {
            std::arch::asm!(
                "fcvtl {0:v}.4s, {1:v}.4h",
                out(vreg) widened,
                in(vreg) h,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        widened
    }
}

/// The NEON path. A block of six queries is 6 x 4 accumulators, 6 broadcasts and a loaded
/// vector: 31 of the 32 registers. It fetches nothing ahead (`next` is ignored).
pub(super) struct Neon;

impl<E: Quads> Blocks<E> for Neon {
    const LANES: usize = 4;

    unsafe fn score_block<const B: usize>(
        q: *const f32,
        dim: usize,
        keys: *const E,
        _next: *const E,
        width: usize,
        scale: f32,
        out: *mut f32,
    ) {
        // SAFETY: the trait's contract.
        unsafe { score_block::<E, B>(q, dim, keys, width, scale, out) }
    }

    unsafe fn mix_block<const B: usize>(
        w: *const f32,
        valid: &[usize],
        values: *const E,
        _next: *const E,
        dim: usize,
        out: *mut f32,
    ) {
        // SAFETY: the trait's contract.
        unsafe { mix_block::<E, B>(w, valid, values, dim, out) }
    }
}

/// # Safety
/// As [`Blocks::score_block`].
#[inline]
#[target_feature(enable = "neon")]
unsafe fn score_block<E: Quads, const B: usize>(
    q: *const f32,
    dim: usize,
    keys: *const E,
    width: usize,
    scale: f32,
    out: *mut f32,
) {
    let mut j = 0;
    // SAFETY (all four loops): the caller's contract; the keys `j..` named are inside the tile.
    while B == 1 && j + 64 <= width {
        unsafe { score_keys::<E, B, 16>(q, dim, keys.add(j), scale, out.add(j)) };
        j += 64;
    }
    while B <= FEW && j + 32 <= width {
        unsafe { score_keys::<E, B, 8>(q, dim, keys.add(j), scale, out.add(j)) };
        j += 32;
    }
    while j + 16 <= width {
        unsafe { score_keys::<E, B, 4>(q, dim, keys.add(j), scale, out.add(j)) };
        j += 16;
    }
    if j < width {
        unsafe { score_keys::<E, B, 2>(q, dim, keys.add(j), scale, out.add(j)) };
    }
}

/// Scores of `B` queries against `4 * V` keys starting at `keys` (a column of the tile).
///
/// # Safety
/// As [`score_block`], the `4 * V` keys inside the tile.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn score_keys<E: Quads, const B: usize, const V: usize>(
    q: *const f32,
    dim: usize,
    keys: *const E,
    scale: f32,
    out: *mut f32,
) {
    let mut acc = [[vdupq_n_f32(0.0); V]; B];
    for d in 0..dim {
        let mut x = [vdupq_n_f32(0.0); B];
        for (r, x) in x.iter_mut().enumerate() {
            // SAFETY: query `r` holds `dim` floats.
            *x = vdupq_n_f32(unsafe { *q.add(r * dim + d) });
        }
        for v in 0..V {
            // SAFETY: row `d` of the block holds these keys.
            let k = unsafe { E::load4(keys.add(d * KV_TILE + 4 * v)) };
            for (a, x) in acc.iter_mut().zip(x) {
                a[v] = vfmaq_f32(a[v], x, k);
            }
        }
    }
    let scale = vdupq_n_f32(scale);
    for (r, a) in acc.iter().enumerate() {
        for (v, a) in a.iter().enumerate() {
            // SAFETY: output row `r` holds these keys' slots.
            unsafe { vst1q_f32(out.add(r * KV_TILE + 4 * v), vmulq_f32(*a, scale)) };
        }
    }
}

/// # Safety
/// As [`Blocks::mix_block`].
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mix_block<E: Quads, const B: usize>(
    w: *const f32,
    valid: &[usize],
    values: *const E,
    dim: usize,
    out: *mut f32,
) {
    let mut c = 0;
    // SAFETY (all five loops): the caller's contract; the dims `c..` named are inside each row.
    while B == 1 && c + 64 <= dim {
        unsafe { mix_dims::<E, B, 16>(w, valid, values.add(c), dim, out.add(c)) };
        c += 64;
    }
    while B <= FEW && c + 32 <= dim {
        unsafe { mix_dims::<E, B, 8>(w, valid, values.add(c), dim, out.add(c)) };
        c += 32;
    }
    while c + 16 <= dim {
        unsafe { mix_dims::<E, B, 4>(w, valid, values.add(c), dim, out.add(c)) };
        c += 16;
    }
    while c + 8 <= dim {
        unsafe { mix_dims::<E, B, 2>(w, valid, values.add(c), dim, out.add(c)) };
        c += 8;
    }
    if c < dim {
        unsafe { mix_dims::<E, B, 1>(w, valid, values.add(c), dim, out.add(c)) };
    }
}

/// `4 * V` dims of the weighted values of `B` queries: the keys every query weighs go
/// together, then each query's last few alone, in the same order.
///
/// # Safety
/// As [`mix_block`], with `values` and `out` offset to the first of the dims.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn mix_dims<E: Quads, const B: usize, const V: usize>(
    w: *const f32,
    valid: &[usize],
    values: *const E,
    dim: usize,
    out: *mut f32,
) {
    let mut acc = [[vdupq_n_f32(0.0); V]; B];
    for j in 0..valid[0] {
        let mut p = [vdupq_n_f32(0.0); B];
        for (r, p) in p.iter_mut().enumerate() {
            // SAFETY: weight row `r` holds `KV_TILE` floats.
            *p = vdupq_n_f32(unsafe { *w.add(r * KV_TILE + j) });
        }
        for v in 0..V {
            // SAFETY: value row `j < KV_TILE` holds these dims.
            let x = unsafe { E::load4(values.add(j * dim + 4 * v)) };
            for (a, p) in acc.iter_mut().zip(p) {
                a[v] = vfmaq_f32(a[v], p, x);
            }
        }
    }
    for (r, a) in acc.iter_mut().enumerate() {
        for j in valid[0]..valid[r] {
            // SAFETY: as above.
            let p = vdupq_n_f32(unsafe { *w.add(r * KV_TILE + j) });
            for (v, a) in a.iter_mut().enumerate() {
                // SAFETY: as above.
                let x = unsafe { E::load4(values.add(j * dim + 4 * v)) };
                *a = vfmaq_f32(*a, p, x);
            }
        }
        for (v, a) in a.iter().enumerate() {
            // SAFETY: output row `r` holds `dim` floats from here.
            unsafe { vst1q_f32(out.add(r * dim + 4 * v), *a) };
        }
    }
}
