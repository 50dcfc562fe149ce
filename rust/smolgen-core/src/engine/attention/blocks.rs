//! The two products on a SIMD path, cut into blocks of queries. What every path shares is
//! here: the checks, the block sizes and which block fetches the next tile; each path supplies
//! the block of a given size ([`Blocks`]) with its own loops over keys or dims.

use crate::cache::kv::{KvElement, KV_TILE};

/// Queries per block (six rows of accumulators fit either path's registers).
pub(super) const QUERIES: usize = 6;
/// Up to this many queries (a decode step's KV group) go in one block, which each path then
/// runs wider, so that one pass uses each line of the tile whole.
pub(super) const FEW: usize = 3;

/// One SIMD path's products for a block of `B` queries, `B` from 1 to [`QUERIES`].
pub(super) trait Blocks<E: KvElement> {
    /// The head dimension must be a multiple of this (the path's f32 lanes).
    const LANES: usize;

    /// [`super::portable::scores`] for `B` queries at `q` (`dim` apart) into rows at `out`
    /// (`KV_TILE` apart). `next`, when not null, is the next tile's key block, to fetch ahead.
    ///
    /// # Safety
    /// The path's CPU features are available; the arguments are as [`scores`] checks them.
    unsafe fn score_block<const B: usize>(
        q: *const f32,
        dim: usize,
        keys: *const E,
        next: *const E,
        width: usize,
        scale: f32,
        out: *mut f32,
    );

    /// [`super::portable::mix`] for the `B` entries of `valid`: weights at `w` (`KV_TILE`
    /// apart), outputs at `out` (`dim` apart). `next`, when not null, is the next tile's value
    /// block, to fetch ahead.
    ///
    /// # Safety
    /// The path's CPU features are available; the arguments are as [`mix`] checks them.
    unsafe fn mix_block<const B: usize>(
        w: *const f32,
        valid: &[usize],
        values: *const E,
        next: *const E,
        dim: usize,
        out: *mut f32,
    );
}

/// `$body` with the constant `$B` equal to `$b` (1 to [`QUERIES`]).
macro_rules! with_block_size {
    ($b:expr, $B:ident => $body:expr) => {
        match $b {
            6 => {
                const $B: usize = 6;
                $body
            }
            5 => {
                const $B: usize = 5;
                $body
            }
            4 => {
                const $B: usize = 4;
                $body
            }
            3 => {
                const $B: usize = 3;
                $body
            }
            2 => {
                const $B: usize = 2;
                $body
            }
            _ => {
                const $B: usize = 1;
                $body
            }
        }
    };
}

/// The first query and the size of each block of `n` queries.
fn blocks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    let per_block = if n <= FEW { n.max(1) } else { QUERIES };
    (0..n)
        .step_by(per_block)
        .map(move |i| (i, per_block.min(n - i)))
}

/// Only the first block fetches the next tile: the others find its lines already requested.
fn ahead<E>(next: Option<&[E]>, first_query: usize) -> *const E {
    match next {
        Some(block) if first_query == 0 => block.as_ptr(),
        _ => std::ptr::null(),
    }
}

/// [`super::portable::scores`] on path `P`; `next` is the next tile's key block, if any.
///
/// # Safety
/// `P`'s CPU features are available. The rest is checked: `dim` is a multiple of `P::LANES`;
/// `width` is a multiple of 8 and at most `KV_TILE`; `keys` (and `next`) hold `dim * KV_TILE`
/// elements; `out` holds a `KV_TILE` row per query.
pub(super) unsafe fn scores<E: KvElement, P: Blocks<E>>(
    queries: &[f32],
    dim: usize,
    keys: &[E],
    next: Option<&[E]>,
    width: usize,
    scale: f32,
    out: &mut [f32],
) {
    let n = queries.len() / dim;
    assert!(dim.is_multiple_of(P::LANES) && width.is_multiple_of(8) && width <= KV_TILE);
    assert!(keys.len() >= dim * KV_TILE && out.len() >= n * KV_TILE);
    assert!(next.is_none_or(|b| b.len() >= dim * KV_TILE));
    for (i, b) in blocks(n) {
        let (q, o) = (queries[i * dim..].as_ptr(), out[i * KV_TILE..].as_mut_ptr());
        let (k, next) = (keys.as_ptr(), ahead(next, i));
        // SAFETY: the caller's contract for the features; queries `i..i + b` and their output
        // rows are in bounds (checked above).
        unsafe { with_block_size!(b, B => P::score_block::<B>(q, dim, k, next, width, scale, o)) }
    }
}

/// [`super::portable::mix`] on path `P`; `next` is the next tile's value block, if any.
///
/// # Safety
/// `P`'s CPU features are available. The rest is checked: `dim` is a multiple of `P::LANES`;
/// `valid` is non-decreasing, each at most `KV_TILE`; `weights` holds a `KV_TILE` row per entry
/// of `valid`; `values` (and `next`) hold `KV_TILE * dim` elements; `out` holds `dim` floats
/// per entry of `valid`.
pub(super) unsafe fn mix<E: KvElement, P: Blocks<E>>(
    weights: &[f32],
    valid: &[usize],
    values: &[E],
    next: Option<&[E]>,
    dim: usize,
    out: &mut [f32],
) {
    let n = valid.len();
    assert!(
        n == 0 || weights.len() >= (n - 1) * KV_TILE + valid[n - 1],
        "weights shorter than their rows"
    );
    assert!(
        dim.is_multiple_of(P::LANES)
            && values.len() >= KV_TILE * dim
            && out.len() >= n * dim
            && valid.iter().all(|&v| v <= KV_TILE)
            && valid.windows(2).all(|w| w[0] <= w[1])
            && next.is_none_or(|b| b.len() >= KV_TILE * dim)
    );
    for (i, b) in blocks(n) {
        let (w, o, v) = (
            weights[i * KV_TILE..].as_ptr(),
            out[i * dim..].as_mut_ptr(),
            &valid[i..i + b],
        );
        let (x, next) = (values.as_ptr(), ahead(next, i));
        // SAFETY: the caller's contract for the features; entries `i..i + b` are in bounds
        // (checked above).
        unsafe { with_block_size!(b, B => P::mix_block::<B>(w, v, x, next, dim, o)) }
    }
}
