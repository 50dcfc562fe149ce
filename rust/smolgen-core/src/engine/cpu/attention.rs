//! The attention block: Q, K and V from one shared quantization, RoPE, the new keys and values
//! into the cache, attention row by row over it (threads split by (sequence, head, rows) with
//! about equal work each), the output projection and the residual.

use std::ops::Range;

use super::norm::{add_in_place, rms_norm};
use super::scratch::{sized, Scratch};
use super::weights::LayerWeights;
use super::{CpuEngine, SeqStep};
use crate::cache::kv::HostKv;
use crate::engine::attention::{attend_head, causal_attention};
use crate::error::{Error, Result};

/// Query rows per unit of attention work: enough to split a 16-token prompt's 9 heads evenly
/// between two threads, and even, so that rows go in pairs where they can.
const UNIT_ROWS: usize = 8;

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
                kv_width,
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
        let longest = s.spans.iter().map(|&(_, _, p, t)| p + t).max().unwrap_or(0);
        // Two rows of scores per part (`attend_head` may take rows in pairs).
        let per_part = 2 * longest;
        let scores = sized(&mut s.scores, threads * per_part);
        let out = sized(&mut s.attn, m * width);
        // Units of work: (sequence, head, up to `UNIT_ROWS` query rows), split into `threads`
        // runs of about equal work. A head's rows may go to two threads: rows are independent.
        let units: Vec<(usize, usize, Range<usize>)> = s
            .spans
            .iter()
            .enumerate()
            .flat_map(|(seq, &(_, _, _, t))| {
                (0..heads.query).flat_map(move |head| {
                    (0..t)
                        .step_by(UNIT_ROWS)
                        .map(move |r| (seq, head, r..(r + UNIT_ROWS).min(t)))
                })
            })
            .collect();
        // A row's cost: the keys it sees.
        let cost = |(seq, _, rows): &(usize, usize, Range<usize>)| {
            let pos = s.spans[*seq].2;
            rows.clone().map(|i| pos + i + 1).sum::<usize>()
        };
        let total: usize = units.iter().map(cost).sum();
        let mut bounds = [0usize; 65];
        let parts = threads.min(units.len()).clamp(1, 64);
        let (mut part, mut acc) = (1, 0);
        for (j, unit) in units.iter().enumerate() {
            acc += cost(unit);
            if part < parts && acc * parts >= total * part {
                bounds[part] = j + 1;
                part += 1;
            }
        }
        for b in bounds.iter_mut().take(parts + 1).skip(part) {
            *b = units.len();
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        let scores_ptr = SharedOut(scores.as_mut_ptr());
        let spans = &s.spans;
        let q = &s.q[..m * width];
        self.pool.run(parts, |p| {
            // SAFETY: each part has its own `per_part`-float slice of `scores`, which outlives
            // the run.
            let scratch =
                unsafe { std::slice::from_raw_parts_mut(scores_ptr.at(p * per_part), per_part) };
            for (seq, head, rows) in &units[bounds[p]..bounds[p + 1]] {
                let (_, first, pos, _) = spans[*seq];
                let (head, r0) = (*head, rows.start);
                let qs = &q[(first + r0) * width..][..rows.len() * width];
                attend_head(
                    qs,
                    views[*seq],
                    pos + r0,
                    rows.len(),
                    heads,
                    head,
                    scratch,
                    |i, y, _| {
                        // SAFETY: (row, head) pairs are disjoint between parts: each unit belongs
                        // to one part, and it writes only its own head's `dim` floats of its own
                        // rows, inside `out`, which outlives the run.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_ptr.at((first + r0 + i) * width + head * heads.dim),
                                heads.dim,
                            )
                        };
                        dst.copy_from_slice(y);
                    },
                );
            }
        });
        Ok(())
    }
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
