//! The attention block: Q, K and V from one shared quantization, RoPE, the new keys and values
//! into the cache, attention row by row over it (threads split by (sequence, head) with about
//! equal work each), the output projection and the residual.

use super::norm::{add_in_place, rms_norm};
use super::scratch::{sized, Scratch};
use super::weights::LayerWeights;
use super::{CpuEngine, SeqStep};
use crate::cache::kv::HostKv;
use crate::engine::attention::{attend_head, causal_attention};
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
        let scores = sized(&mut s.scores, threads * longest);
        let out = sized(&mut s.attn, m * width);
        // Split the (sequence, head) pairs into `threads` runs of about equal work.
        let jobs = s.spans.len() * heads.query;
        let cost = |j: usize| {
            let (_, _, pos, t) = s.spans[j / heads.query];
            t * (pos + t)
        };
        let total: usize = (0..jobs).map(cost).sum();
        let mut bounds = [0usize; 65];
        let parts = threads.min(jobs).clamp(1, 64);
        let (mut part, mut acc) = (1, 0);
        for j in 0..jobs {
            acc += cost(j);
            if part < parts && acc * parts >= total * part {
                bounds[part] = j + 1;
                part += 1;
            }
        }
        for b in bounds.iter_mut().take(parts + 1).skip(part) {
            *b = jobs;
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        let scores_ptr = SharedOut(scores.as_mut_ptr());
        let spans = &s.spans;
        let q = &s.q[..m * width];
        self.pool.run(parts, |p| {
            // SAFETY: each part has its own `longest`-float slice of `scores`, which outlives
            // the run.
            let scratch =
                unsafe { std::slice::from_raw_parts_mut(scores_ptr.at(p * longest), longest) };
            for j in bounds[p]..bounds[p + 1] {
                let (seq, head) = (j / heads.query, j % heads.query);
                let (_, first, pos, t) = spans[seq];
                let rows = &q[first * width..][..t * width];
                attend_head(rows, views[seq], pos, t, heads, head, scratch, |i, y, _| {
                    // SAFETY: (row, head) pairs are disjoint between parts: each (sequence,
                    // head) job belongs to one part, and a job writes only its own head's
                    // `dim` floats of its own rows, inside `out`, which outlives the run.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.at((first + i) * width + head * heads.dim),
                            heads.dim,
                        )
                    };
                    dst.copy_from_slice(y);
                });
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
