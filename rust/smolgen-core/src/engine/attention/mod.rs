//! Causal attention over the CPU KV cache, a tile of keys at a time (FlashAttention's online
//! softmax), the query heads that share a KV head served by one read of each tile.
//!
//! The work is cut into units of (KV group, query rows): the queries of a unit are every query
//! head of the group for each of its rows. For each of the cache's tiles of [`KV_TILE`]
//! positions that a query sees, a *partial* is computed: the scores (each dot product one chain
//! of fused multiply-adds over the head dimension, in order), their maximum, the weights
//! `e^(score - max)`, their sum (eight lane sums added in a fixed order) and the weighted sum of
//! the tile's values (one chain per output over the keys in order). A query's partials are then
//! folded in tile order (`merge`) and the output divided by the final sum.
//!
//! Everything a query's result depends on is its own position and the tile grid, which is fixed
//! by absolute position: not the rows it shares a unit with, how the prompt was split between
//! passes, how many threads ran, or whether a decode step's tiles went to several threads (their
//! partials are folded afterwards in the same order). So a position gives the same bits every
//! time, which is what lets the prefix cache give the tokens of a full prefill.
//!
//! The scores and the weighted values run on AVX2 with FMA and F16C where the CPU has them
//! (`x86.rs`), on NEON on every AArch64 CPU (`neon.rs`), elsewhere on portable loops with the
//! same arithmetic (`portable.rs`).

use std::ops::Range;

use half::f16;

use crate::cache::kv::{HostKv, KvElement, KvTiles, KV_TILE};
use crate::fastmath::{exp, exp_shifted};

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod blocks;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

/// A cache element every path can read.
#[cfg(target_arch = "x86_64")]
trait Element: KvElement + x86::Lanes {}
#[cfg(target_arch = "x86_64")]
impl<E: KvElement + x86::Lanes> Element for E {}
#[cfg(target_arch = "aarch64")]
trait Element: KvElement + neon::Quads {}
#[cfg(target_arch = "aarch64")]
impl<E: KvElement + neon::Quads> Element for E {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
trait Element: KvElement {}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
impl<E: KvElement> Element for E {}

/// The head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub query: usize,
    pub kv: usize,
    pub dim: usize,
}

impl Heads {
    /// Query heads per KV head; they are consecutive.
    pub fn group(&self) -> usize {
        self.query / self.kv
    }
}

/// The softmax state of one query over some of its keys: their maximum score, the sum of
/// `e^(score - max)` and the values weighted by it (`dim` floats, not yet divided by the sum).
#[derive(Debug, Clone, Copy)]
struct Stats {
    max: f32,
    sum: f32,
}

/// Folds a partial (`part`, `part_acc`) into a running state, in place.
#[inline]
fn merge(state: &mut Stats, acc: &mut [f32], part: Stats, part_acc: &[f32]) {
    let max = state.max.max(part.max);
    let (a, b) = (exp(state.max - max), exp(part.max - max));
    state.sum = state.sum * a + part.sum * b;
    for (o, &x) in acc.iter_mut().zip(part_acc) {
        *o = *o * a + x * b;
    }
    state.max = max;
}

/// The sum of `weights` as eight lane sums (`j % 8`), added as `((l0 + l4) + (l2 + l6)) + ((l1
/// + l5) + (l3 + l7))`: one order on every path, and eight chains rather than one.
#[inline]
fn lane_sum(weights: &[f32]) -> f32 {
    let mut l = [0f32; 8];
    let mut chunks = weights.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            l[k] += c[k];
        }
    }
    for (k, &x) in chunks.remainder().iter().enumerate() {
        l[k] += x;
    }
    ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

/// The maximum of `scores` (NaN skipped, as `f32::max` skips it), in eight lanes: the order
/// does not change a maximum, and eight chains are faster than one.
#[inline]
fn lane_max(scores: &[f32]) -> f32 {
    let mut l = [f32::NEG_INFINITY; 8];
    let mut chunks = scores.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            l[k] = l[k].max(c[k]);
        }
    }
    for (k, &x) in chunks.remainder().iter().enumerate() {
        l[k] = l[k].max(x);
    }
    l.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Buffers for one unit of work, reused from unit to unit. Index `i` is a query of the unit:
/// row `i / group`, head `i % group` of the KV group.
#[derive(Default)]
pub struct UnitScratch {
    queries: Vec<f32>,
    scores: Vec<f32>,
    valid: Vec<usize>,
    part: Vec<Stats>,
    part_acc: Vec<f32>,
    state: Vec<Stats>,
    acc: Vec<f32>,
}

impl UnitScratch {
    fn size(&mut self, n: usize, dim: usize) {
        let stats = Stats { max: 0.0, sum: 0.0 };
        self.queries.resize(n * dim, 0.0);
        self.scores.resize(n * KV_TILE, 0.0);
        self.valid.resize(n, 0);
        self.part.resize(n, stats);
        self.part_acc.resize(n * dim, 0.0);
        self.state.resize(n, stats);
        self.acc.resize(n * dim, 0.0);
    }
}

/// The queries of one unit: `rows` of the pass's `[t, query * dim]` queries `q`, whose row 0 is
/// at position `pos`, for KV group `group`.
#[derive(Clone, Copy)]
pub struct Unit<'a> {
    pub q: &'a [f32],
    pub pos: usize,
    pub rows: (usize, usize),
    pub group: usize,
    pub heads: Heads,
}

impl Unit<'_> {
    /// Every query head of the group for each row.
    pub fn queries(&self) -> usize {
        (self.rows.1 - self.rows.0) * self.heads.group()
    }

    /// The position of query `i`.
    fn position(&self, i: usize) -> usize {
        self.pos + self.rows.0 + i / self.heads.group()
    }

    /// Copies the unit's queries into `out`, `[n][dim]`.
    fn gather(&self, out: &mut [f32]) {
        let (dim, g) = (self.heads.dim, self.heads.group());
        let width = self.heads.query * dim;
        for (r, row) in (self.rows.0..self.rows.1).enumerate() {
            let src = &self.q[row * width + self.group * g * dim..][..g * dim];
            out[r * g * dim..][..g * dim].copy_from_slice(src);
        }
    }

    /// Tiles that some query of the unit sees.
    fn tiles(&self) -> usize {
        self.position(self.queries() - 1) / KV_TILE + 1
    }

    /// Divides each query's weighted values by its sum and hands them over through
    /// `emit(row, head, output)`, `row` within the pass and `head` the query head.
    fn emit(&self, s: &mut UnitScratch, mut emit: impl FnMut(usize, usize, &[f32])) {
        let (dim, g) = (self.heads.dim, self.heads.group());
        for i in 0..self.queries() {
            let inv = 1.0 / s.state[i].sum;
            let out = &mut s.acc[i * dim..][..dim];
            for o in out.iter_mut() {
                *o *= inv;
            }
            emit(self.rows.0 + i / g, self.group * g + i % g, out);
        }
    }
}

/// Where raw scores go when they are kept: `(query, first key, scores)`.
type ScoreSink<'a> = Option<&'a mut dyn FnMut(usize, usize, &[f32])>;

/// Which loops compute scores and weighted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Path {
    fn best(dim: usize) -> Path {
        #[cfg(target_arch = "x86_64")]
        if dim.is_multiple_of(8) && x86::available() {
            return Path::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if dim.is_multiple_of(4) {
            return Path::Neon;
        }
        let _ = dim;
        Path::Portable
    }
}

/// The partials of the unit's queries for tile `tile`, in `s.part` / `s.part_acc`; returns the
/// first query that sees the tile (every later one does too). With `scores`, each query's raw
/// scores over the tile's keys it sees are handed over before they become weights.
fn tile_partials<E: Element>(
    path: Path,
    unit: &Unit<'_>,
    kv: &KvTiles<'_, E>,
    tile: usize,
    s: &mut UnitScratch,
    scores: &mut ScoreSink<'_>,
) -> usize {
    let (dim, g, n) = (unit.heads.dim, unit.heads.group(), unit.queries());
    let start = tile * KV_TILE;
    let first = start.saturating_sub(unit.pos + unit.rows.0) * g;
    let seen = |i: usize| (unit.position(i) + 1 - start).min(KV_TILE);
    let width = seen(n - 1).next_multiple_of(8).min(KV_TILE);
    let scale = 1.0 / (dim as f32).sqrt();
    let (keys, values) = (kv.keys(tile, unit.group), kv.values(tile, unit.group));
    // The tile after this one, for a SIMD path to fetch ahead.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    let next = (tile + 1 < unit.tiles()).then_some(tile + 1);
    let queries = &s.queries[first * dim..n * dim];
    let out = &mut s.scores[first * KV_TILE..n * KV_TILE];
    match path {
        Path::Portable => portable::scores(queries, dim, keys, width, scale, out),
        // SAFETY: `x86::available()` was true (the path says so); `dim` is a multiple of 8.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe {
            let next = next.map(|t| kv.keys(t, unit.group));
            blocks::scores::<E, x86::Avx2>(queries, dim, keys, next, width, scale, out)
        },
        // SAFETY: every AArch64 CPU has NEON.
        #[cfg(target_arch = "aarch64")]
        Path::Neon => unsafe {
            let next = next.map(|t| kv.keys(t, unit.group));
            blocks::scores::<E, neon::Neon>(queries, dim, keys, next, width, scale, out)
        },
    }
    for i in first..n {
        let v = seen(i);
        s.valid[i] = v;
        let row = &mut s.scores[i * KV_TILE..][..v];
        if let Some(f) = scores.as_mut() {
            f(i, start, row);
        }
        let max = lane_max(row);
        exp_shifted(row, max);
        s.part[i] = Stats {
            max,
            sum: lane_sum(row),
        };
    }
    let (weights, valid) = (&s.scores[first * KV_TILE..], &s.valid[first..n]);
    let out = &mut s.part_acc[first * dim..n * dim];
    match path {
        Path::Portable => portable::mix(weights, valid, values, dim, out),
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Path::Avx2 => unsafe {
            let next = next.map(|t| kv.values(t, unit.group));
            blocks::mix::<E, x86::Avx2>(weights, valid, values, next, dim, out)
        },
        // SAFETY: as above.
        #[cfg(target_arch = "aarch64")]
        Path::Neon => unsafe {
            let next = next.map(|t| kv.values(t, unit.group));
            blocks::mix::<E, neon::Neon>(weights, valid, values, next, dim, out)
        },
    }
    first
}

/// Attention of a whole unit over every key its queries see, tiles folded as they come; the
/// result goes through `emit(row, head, output)`.
pub fn attend_unit(
    unit: &Unit<'_>,
    kv: HostKv<'_>,
    s: &mut UnitScratch,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    match kv {
        HostKv::F16(kv) => attend_unit_in::<f16>(unit, &kv, s, None, emit),
        HostKv::F32(kv) => attend_unit_in::<f32>(unit, &kv, s, None, emit),
    }
}

fn attend_unit_in<E: Element>(
    unit: &Unit<'_>,
    kv: &KvTiles<'_, E>,
    s: &mut UnitScratch,
    mut scores: ScoreSink<'_>,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    let (n, dim) = (unit.queries(), unit.heads.dim);
    if n == 0 {
        return;
    }
    let path = Path::best(dim);
    s.size(n, dim);
    unit.gather(&mut s.queries);
    for tile in 0..unit.tiles() {
        let first = tile_partials(path, unit, kv, tile, s, &mut scores);
        if tile == 0 {
            // Every query sees tile 0.
            s.state.copy_from_slice(&s.part[..n]);
            s.acc.copy_from_slice(&s.part_acc[..n * dim]);
            continue;
        }
        for i in first..n {
            merge(
                &mut s.state[i],
                &mut s.acc[i * dim..][..dim],
                s.part[i],
                &s.part_acc[i * dim..][..dim],
            );
        }
    }
    unit.emit(s, emit);
}

/// Floats per partial in [`unit_partials`]' output: the two statistics and the weighted values.
pub fn partial_len(dim: usize) -> usize {
    dim + 2
}

/// The partials of every query of `unit` for each tile in `tiles`, without folding them:
/// `out[((tile - tiles.start) * n + i) * partial_len(dim)..]` for query `i` (`n` the unit's
/// queries), left untouched where query `i` does not see the tile. Fold them with
/// [`fold_partials`]; together they give [`attend_unit`]'s bits, so a long history can be split
/// between threads.
pub fn unit_partials(
    unit: &Unit<'_>,
    kv: HostKv<'_>,
    tiles: Range<usize>,
    s: &mut UnitScratch,
    out: &mut [f32],
) {
    match kv {
        HostKv::F16(kv) => unit_partials_in::<f16>(unit, &kv, tiles, s, out),
        HostKv::F32(kv) => unit_partials_in::<f32>(unit, &kv, tiles, s, out),
    }
}

fn unit_partials_in<E: Element>(
    unit: &Unit<'_>,
    kv: &KvTiles<'_, E>,
    tiles: Range<usize>,
    s: &mut UnitScratch,
    out: &mut [f32],
) {
    let (n, dim) = (unit.queries(), unit.heads.dim);
    let len = partial_len(dim);
    let path = Path::best(dim);
    s.size(n, dim);
    unit.gather(&mut s.queries);
    let start = tiles.start;
    for tile in tiles.filter(|&t| t < unit.tiles()) {
        let first = tile_partials(path, unit, kv, tile, s, &mut None);
        for i in first..n {
            let dst = &mut out[((tile - start) * n + i) * len..][..len];
            dst[0] = s.part[i].max;
            dst[1] = s.part[i].sum;
            dst[2..].copy_from_slice(&s.part_acc[i * dim..][..dim]);
        }
    }
}

/// Folds the partials of all of `unit`'s tiles (`partials` laid out as [`unit_partials`] writes
/// them for tiles `0..`) and emits the outputs as [`attend_unit`] does.
pub fn fold_partials(
    unit: &Unit<'_>,
    partials: &[f32],
    s: &mut UnitScratch,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    let (n, dim) = (unit.queries(), unit.heads.dim);
    let len = partial_len(dim);
    s.size(n, dim);
    let part = |tile: usize, i: usize| {
        let p = &partials[(tile * n + i) * len..][..len];
        (
            Stats {
                max: p[0],
                sum: p[1],
            },
            &p[2..],
        )
    };
    for i in 0..n {
        let (stats, acc) = part(0, i);
        s.state[i] = stats;
        s.acc[i * dim..][..dim].copy_from_slice(acc);
        for tile in 1..=unit.position(i) / KV_TILE {
            let (stats, acc) = part(tile, i);
            merge(&mut s.state[i], &mut s.acc[i * dim..][..dim], stats, acc);
        }
    }
    unit.emit(s, emit);
}

/// Attention for `t` queries at absolute positions `pos..pos + t`, on the calling thread.
///
/// - `q`: `[t, query heads * dim]`, rotary embedding applied.
/// - `kv`: the layer's cache, holding positions `0..pos + t`.
/// - Returns `[t, query heads * dim]` (the layout the output projection reads) and, when
///   `keep_probs`, the softmax weights `[query heads, t, pos + t]` (zero above the diagonal),
///   computed from the scores and the final maximum and sum of the same pass.
pub fn causal_attention(
    q: &[f32],
    kv: HostKv<'_>,
    pos: usize,
    t: usize,
    heads: Heads,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (query, dim, g) = (heads.query, heads.dim, heads.group());
    let total = pos + t;
    let mut y = vec![0f32; t * query * dim];
    let mut probs = if keep_probs {
        vec![0f32; query * t * total]
    } else {
        Vec::new()
    };
    let mut s = UnitScratch::default();
    for group in 0..heads.kv {
        let unit = Unit {
            q,
            pos,
            rows: (0, t),
            group,
            heads,
        };
        let at = |i: usize, key: usize| ((group * g + i % g) * t + i / g) * total + key;
        let mut keep = |i: usize, start: usize, row: &[f32]| {
            probs[at(i, start)..][..row.len()].copy_from_slice(row);
        };
        let scores: ScoreSink<'_> = keep_probs.then_some(&mut keep as _);
        let emit = |row: usize, head: usize, out: &[f32]| {
            y[(row * query + head) * dim..][..dim].copy_from_slice(out);
        };
        match kv {
            HostKv::F16(kv) => attend_unit_in::<f16>(&unit, &kv, &mut s, scores, emit),
            HostKv::F32(kv) => attend_unit_in::<f32>(&unit, &kv, &mut s, scores, emit),
        }
        if keep_probs {
            for (i, st) in s.state[..unit.queries()].iter().enumerate() {
                let seen = unit.position(i) + 1;
                let row = &mut probs[at(i, 0)..][..seen];
                exp_shifted(row, st.max);
                let inv = 1.0 / st.sum;
                for p in row.iter_mut() {
                    *p *= inv;
                }
            }
        }
    }
    (y, keep_probs.then_some(probs))
}

#[cfg(test)]
mod tests;
