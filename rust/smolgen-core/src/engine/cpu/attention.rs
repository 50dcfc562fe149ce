//! The attention block: Q, K and V from one shared quantization, RoPE, the new keys and values
//! into the cache, attention over it (threads split by (sequence, KV group, rows), or along a
//! long history, with about equal work each), the output projection and the residual.

use std::ops::Range;
use std::sync::Mutex;

use super::norm::{add_in_place, rms_norm};
use super::scratch::{sized, Scratch};
use super::weights::LayerWeights;
use super::{CpuEngine, SeqStep};
use crate::cache::kv::HostKv;
use crate::cache::kv::KV_TILE;
use crate::engine::attention::{
    attend_unit, causal_attention, fold_partials, partial_len, unit_partials, Heads, Unit,
    UnitScratch,
};
use crate::error::{Error, Result};

impl CpuEngine {
    /// `x += o(attention(rope(q(norm(x))), rope(k(norm(x))), v(norm(x))))`, the new keys and
    /// values appended to each sequence's cache. With `keep`, this layer's softmax weights (one
    /// sequence only) are pushed to it.
    pub(super) fn attention_block(
        &self,
        seqs: &mut [SeqStep<'_>],
        s: &mut Scratch,
        layer: usize,
        lw: &LayerWeights,
        keep: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let (m, h, hd, nh, nkv) = (
            s.rows,
            cfg.hidden_size,
            cfg.head_dim,
            cfg.num_heads,
            cfg.num_kv_heads,
        );
        let (q_width, kv_width) = (nh * hd, nkv * hd);
        rms_norm(
            &s.x[..m * h],
            &lw.attn_norm,
            cfg.rms_norm_eps,
            sized(&mut s.normed, m * h),
        );
        let (q, k, v) = (
            self.weight(&lw.q)?,
            self.weight(&lw.k)?,
            self.weight(&lw.v)?,
        );
        self.kernels
            .quantize_activation(&s.normed[..m * h], h, &[q, k, v], &mut s.act)?;
        self.kernels.matmul_many(
            &self.pool,
            &s.act,
            &mut [
                (q, sized(&mut s.q, m * q_width)),
                (k, sized(&mut s.k, m * kv_width)),
                (v, sized(&mut s.v, m * kv_width)),
            ],
        )?;
        self.rope(&mut s.q[..m * q_width], nh, &s.cos, &s.sin);
        self.rope(&mut s.k[..m * kv_width], nkv, &s.cos, &s.sin);
        for &(i, first, _, t) in &s.spans {
            seqs[i].cache.write_host_rows(
                layer,
                (nkv, hd),
                &s.k[first * kv_width..][..t * kv_width],
                &s.v[first * kv_width..][..t * kv_width],
            )?;
        }
        self.attend(seqs, s, layer, keep)?;
        let o = self.weight(&lw.o)?;
        self.kernels
            .quantize_activation(&s.attn[..m * q_width], q_width, &[o], &mut s.act)?;
        let proj = sized(&mut s.proj, m * h);
        self.kernels
            .matmul_many(&self.pool, &s.act, &mut [(o, &mut *proj)])?;
        add_in_place(&mut s.x[..m * h], proj);

        Ok(())
    }

    /// Attention of every row against its own sequence's cache, written to `s.attn`.
    fn attend(
        &self,
        seqs: &[SeqStep<'_>],
        s: &mut Scratch,
        layer: usize,
        keep: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<()> {
        let m = s.rows;
        let heads = self.heads();
        let width = heads.query * heads.dim;
        let views: Vec<HostKv<'_>> = s
            .spans
            .iter()
            .map(|&(i, _, pos, t)| {
                seqs[i]
                    .cache
                    .host_layer(layer, pos + t)
                    .ok_or_else(|| Error::invalid("KV cache lost its CPU rows"))
            })
            .collect::<Result<_>>()?;
        if let Some(out) = keep {
            // Inspection: one sequence, weights kept; no need for the pool here.
            let &(_, first, pos, t) = &s.spans[0];
            let (y, probs) = causal_attention(
                &s.q[first * width..][..t * width],
                views[0],
                pos,
                t,
                heads,
                true,
            );
            sized(&mut s.attn, m * width)[first * width..][..t * width].copy_from_slice(&y);
            // `[heads, t, pos + t]`.
            out.extend(probs);
            return Ok(());
        }

        let threads = self.pool.threads();
        let plan = plan_work(&s.spans, heads, threads);
        let partials = sized(&mut s.partials, plan.partials);
        let out = sized(&mut s.attn, m * width);
        let parts = threads.min(plan.work.len()).clamp(1, 64);
        let bounds = split_by_cost(&plan.work, parts, |w| w.cost);
        while s.units.len() < parts {
            s.units.push(Mutex::new(UnitScratch::default()));
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        let partials_ptr = SharedOut(partials.as_mut_ptr());
        let spans = &s.spans;
        let q = &s.q[..m * width];
        let unit = |span: usize, group: usize, rows: (usize, usize)| {
            let (_, first, pos, _) = spans[span];
            Unit {
                q: &q[first * width..],
                pos,
                rows,
                group,
                heads,
            }
        };
        let emit = |span: usize| {
            let first = spans[span].1;
            move |row: usize, head: usize, y: &[f32]| {
                // SAFETY: (row, head) pairs are disjoint between pieces of work: each row of a
                // KV group belongs to one piece, which writes only its heads' `dim` floats of
                // its rows, inside `out`, which outlives the run.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.at((first + row) * width + head * heads.dim),
                        heads.dim,
                    )
                };
                dst.copy_from_slice(y);
            }
        };
        let units = &s.units;
        self.pool.run(parts, |p| {
            let mut scratch = units[p].lock().unwrap_or_else(|e| e.into_inner());
            for w in &plan.work[bounds[p]..bounds[p + 1]] {
                let u = unit(w.span, w.group, w.rows);
                match &w.tiles {
                    None => attend_unit(&u, views[w.span], &mut scratch, emit(w.span)),
                    Some((tiles, at)) => {
                        let len = tiles.len() * u.queries() * partial_len(heads.dim);
                        // SAFETY: each piece of split work owns `len` floats of `partials` from
                        // `at` (laid out by `plan_work`), which outlives the run.
                        let dst =
                            unsafe { std::slice::from_raw_parts_mut(partials_ptr.at(*at), len) };
                        unit_partials(&u, views[w.span], tiles.clone(), &mut scratch, dst);
                    }
                }
            }
        });
        let mut scratch = s.units[0].lock().unwrap_or_else(|e| e.into_inner());
        for &(span, group, rows, at) in &plan.folds {
            let u = unit(span, group, rows);
            fold_partials(&u, &partials[at..], &mut scratch, emit(span));
        }
        Ok(())
    }
}

/// Queries per unit of prompt work: enough to reuse each tile read many times, few enough
/// that a unit's scores and sums stay in the L1 and L2 caches.
const UNIT_QUERIES: usize = 48;
/// A decode step's history is split between threads only into pieces of at least this many
/// tiles: below that the fold costs more than it saves.
const MIN_SPLIT_TILES: usize = 4;

/// One piece of attention work: the queries of `rows` (of its span) for one KV group, over all
/// their keys, or with `tiles`, over those tiles only, their partials written from the given
/// offset of the partials buffer.
struct Work {
    span: usize,
    group: usize,
    rows: (usize, usize),
    tiles: Option<(Range<usize>, usize)>,
    /// Query-key products, to balance the threads.
    cost: usize,
}

struct Plan {
    work: Vec<Work>,
    /// (span, group, rows, offset) of each split unit, to fold once all its pieces are done.
    folds: Vec<(usize, usize, (usize, usize), usize)>,
    /// Floats of partials the split units need.
    partials: usize,
}

/// Cuts a pass's attention into work for `threads`: units of rows, small enough that every
/// thread has several; and when a pass has too few rows for that (a decode step), each long
/// history split into runs of tiles, so that both cores share even one sequence's step. Any
/// cut gives the same bits.
fn plan_work(spans: &[(usize, usize, usize, usize)], heads: Heads, threads: usize) -> Plan {
    let g = heads.group();
    let unit_count = |rows: usize| -> usize {
        spans
            .iter()
            .map(|&(_, _, _, t)| heads.kv * t.div_ceil(rows))
            .sum()
    };
    let mut rows_per_unit = (UNIT_QUERIES / g).max(1);
    while rows_per_unit > 1 && unit_count(rows_per_unit) < 4 * threads {
        rows_per_unit = rows_per_unit.div_ceil(2);
    }
    let split = threads > 1 && unit_count(rows_per_unit) < 2 * threads;
    let mut plan = Plan {
        work: Vec::new(),
        folds: Vec::new(),
        partials: 0,
    };
    for (span, &(_, _, pos, t)) in spans.iter().enumerate() {
        let tiles = (pos + t).div_ceil(KV_TILE);
        let pieces = (2 * threads)
            .div_ceil(spans.len() * heads.kv)
            .min(tiles / MIN_SPLIT_TILES);
        for group in 0..heads.kv {
            if split && t <= rows_per_unit && pieces > 1 {
                let n = t * g;
                let at = plan.partials;
                plan.partials += tiles * n * partial_len(heads.dim);
                let per = tiles.div_ceil(pieces);
                for c in (0..tiles).step_by(per) {
                    let range = c..(c + per).min(tiles);
                    plan.work.push(Work {
                        span,
                        group,
                        rows: (0, t),
                        cost: range.len() * KV_TILE * n,
                        tiles: Some((range, at + c * n * partial_len(heads.dim))),
                    });
                }
                plan.folds.push((span, group, (0, t), at));
            } else {
                for r in (0..t).step_by(rows_per_unit) {
                    let rows = (r, (r + rows_per_unit).min(t));
                    let keys: usize = (rows.0..rows.1).map(|i| pos + i + 1).sum();
                    plan.work.push(Work {
                        span,
                        group,
                        rows,
                        tiles: None,
                        cost: keys * g,
                    });
                }
            }
        }
    }
    plan
}

/// Boundaries cutting `items` into `parts` runs of about equal cost: run `p` is
/// `bounds[p]..bounds[p + 1]`.
fn split_by_cost<T>(items: &[T], parts: usize, cost: impl Fn(&T) -> usize) -> [usize; 65] {
    let total: usize = items.iter().map(&cost).sum();
    let mut bounds = [0usize; 65];
    let (mut part, mut acc) = (1, 0);
    for (j, item) in items.iter().enumerate() {
        acc += cost(item);
        if part < parts && acc * parts >= total * part {
            bounds[part] = j + 1;
            part += 1;
        }
    }
    for b in bounds.iter_mut().take(parts + 1).skip(part) {
        *b = items.len();
    }
    bounds
}

/// A raw output pointer shared by the parts of one pool run, each writing its own elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used inside `Pool::run`, where parts write disjoint elements (see the callers).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}
