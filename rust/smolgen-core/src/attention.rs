//! Causal attention over the KV cache on the CPU, one query row at a time.
//!
//! Every query row is computed the same way whatever else is in the pass: the same dot products
//! in the same order, no mask tensor (a row simply stops at its own position). So a position's
//! result does not depend on how the prompt was split between passes, which is what lets the
//! prefix cache give the same tokens as a full prefill. (A batched matmul picks its blocking,
//! hence its summation order, by shape; on this model a last-bit difference in one activation
//! can move a log-probability by a tenth after 8-bit activation rounding.)

use rayon::prelude::*;

/// The head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub query: usize,
    pub kv: usize,
    pub dim: usize,
}

/// A layer's cache buffers, read in place: `[kv heads, capacity, dim]` each.
#[derive(Debug, Clone, Copy)]
pub struct CachedKv<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub capacity: usize,
}

/// Attention for `t` queries at absolute positions `pos..pos + t`.
///
/// - `q`: `[query heads, t, dim]`, rotary embedding applied.
/// - `kv`: the cache, holding positions `0..pos + t`.
/// - Returns `[t, query heads * dim]` (the layout the output projection reads) and, when
///   `keep_probs`, the softmax weights `[query heads, t, pos + t]` (zero above the diagonal).
pub fn causal_attention(
    q: &[f32],
    kv: CachedKv<'_>,
    pos: usize,
    t: usize,
    heads: Heads,
    keep_probs: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let Heads {
        query,
        kv: kv_heads,
        dim,
    } = heads;
    let CachedKv {
        keys: k,
        values: v,
        capacity,
    } = kv;
    let total = pos + t;
    let group = query / kv_heads;
    let scale = 1.0 / (dim as f32).sqrt();
    let per_head: Vec<(Vec<f32>, Vec<f32>)> = (0..query)
        .into_par_iter()
        .map(|h| {
            let g = h / group; // query heads share KV heads in consecutive groups
            let keys = &k[g * capacity * dim..][..total * dim];
            let values = &v[g * capacity * dim..][..total * dim];
            let mut out = vec![0f32; t * dim];
            let mut probs = if keep_probs {
                vec![0f32; t * total]
            } else {
                Vec::new()
            };
            let mut scores = vec![0f32; total];
            for i in 0..t {
                let seen = pos + i + 1; // keys 0..=pos + i
                let qi = &q[(h * t + i) * dim..][..dim];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in scores[..seen].iter_mut().enumerate() {
                    *s = dot(qi, &keys[j * dim..][..dim]) * scale;
                    max = max.max(*s);
                }
                let mut sum = 0f32;
                for s in &mut scores[..seen] {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                let row = &mut out[i * dim..][..dim];
                for (j, s) in scores[..seen].iter().enumerate() {
                    let p = s * inv;
                    for (o, x) in row.iter_mut().zip(&values[j * dim..][..dim]) {
                        *o += p * x;
                    }
                }
                if keep_probs {
                    for (dst, s) in probs[i * total..][..seen].iter_mut().zip(&scores[..seen]) {
                        *dst = s * inv;
                    }
                }
            }
            (out, probs)
        })
        .collect();
    let mut y = vec![0f32; t * query * dim];
    for (h, (out, _)) in per_head.iter().enumerate() {
        for i in 0..t {
            y[(i * query + h) * dim..][..dim].copy_from_slice(&out[i * dim..][..dim]);
        }
    }
    let probs = keep_probs.then(|| per_head.into_iter().flat_map(|(_, p)| p).collect());
    (y, probs)
}

/// A dot product in a fixed order: eight running sums (so it vectorizes), added up the same
/// way every time.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in a_rest.iter().zip(b_rest) {
        sum += x * y;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }

    /// Straightforward f64 attention: the definition.
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        cap: usize,
        pos: usize,
        t: usize,
        h: Heads,
    ) -> Vec<f64> {
        let mut y = vec![0f64; t * h.query * h.dim];
        for head in 0..h.query {
            let g = head / (h.query / h.kv);
            for i in 0..t {
                let seen = pos + i + 1;
                let s: Vec<f64> = (0..seen)
                    .map(|j| {
                        (0..h.dim)
                            .map(|d| {
                                q[(head * t + i) * h.dim + d] as f64
                                    * k[(g * cap + j) * h.dim + d] as f64
                            })
                            .sum::<f64>()
                            / (h.dim as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for d in 0..h.dim {
                    y[(i * h.query + head) * h.dim + d] = (0..seen)
                        .map(|j| e[j] / z * v[(g * cap + j) * h.dim + d] as f64)
                        .sum();
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_and_does_not_depend_on_the_split() {
        let heads = Heads {
            query: 6,
            kv: 2,
            dim: 12,
        };
        let (cap, total) = (16, 11);
        let mut seed = 7;
        let k: Vec<f32> = (0..heads.kv * cap * heads.dim)
            .map(|_| lcg(&mut seed))
            .collect();
        let v: Vec<f32> = (0..heads.kv * cap * heads.dim)
            .map(|_| lcg(&mut seed))
            .collect();
        // Queries for all positions, [heads, total, dim].
        let q_all: Vec<f32> = (0..heads.query * total * heads.dim)
            .map(|_| 3.0 * lcg(&mut seed))
            .collect();
        let kv = CachedKv {
            keys: &k,
            values: &v,
            capacity: cap,
        };
        let (y_all, probs) = causal_attention(&q_all, kv, 0, total, heads, true);
        let want = reference(&q_all, &k, &v, cap, 0, total, heads);
        for (a, b) in y_all.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
        let probs = probs.expect("kept");
        for row in probs.chunks(total) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-5);
        }
        // The last 3 positions alone, after 8 cached ones: bit-identical rows.
        let (pos, t) = (8, 3);
        let q_tail: Vec<f32> = (0..heads.query)
            .flat_map(|h| {
                q_all[(h * total + pos) * heads.dim..(h * total + total) * heads.dim].to_vec()
            })
            .collect();
        let (y_tail, _) = causal_attention(&q_tail, kv, pos, t, heads, false);
        assert_eq!(y_tail[..], y_all[pos * heads.query * heads.dim..]);
    }
}
