//! The definition of the two products attention spends its time in, as plain loops (written
//! so that a compiler can vectorize them across keys or across the head dimension without
//! changing the order of any sum). The SIMD paths give the same bits.

use crate::cache::kv::{KvElement, KV_TILE};

/// `out[i * KV_TILE + j] = scale * (query i . key j)` for the `n = queries.len() / dim` queries
/// and keys `j < width`, each dot product one chain of fused multiply-adds over `d` in order.
/// `keys` is a tile's block, `[dim][KV_TILE]`.
pub(super) fn scores<E: KvElement>(
    queries: &[f32],
    dim: usize,
    keys: &[E],
    width: usize,
    scale: f32,
    out: &mut [f32],
) {
    for (q, row) in queries.chunks_exact(dim).zip(out.chunks_exact_mut(KV_TILE)) {
        let mut acc = [0f32; KV_TILE];
        for (d, &x) in q.iter().enumerate() {
            let k = &keys[d * KV_TILE..][..KV_TILE];
            for (a, y) in acc[..width].iter_mut().zip(k) {
                *a = x.mul_add(y.to_f32(), *a);
            }
        }
        for (o, a) in row[..width].iter_mut().zip(acc) {
            *o = a * scale;
        }
    }
}

/// `out[i * dim + d] = sum over j < valid[i] of weights[i * KV_TILE + j] * value j [d]`, each
/// one chain of fused multiply-adds over `j` in order. `values` is a tile's block,
/// `[KV_TILE][dim]`.
pub(super) fn mix<E: KvElement>(
    weights: &[f32],
    valid: &[usize],
    values: &[E],
    dim: usize,
    out: &mut [f32],
) {
    for ((w, &n), acc) in weights
        .chunks(KV_TILE)
        .zip(valid)
        .zip(out.chunks_exact_mut(dim))
    {
        acc.fill(0.0);
        for (&p, v) in w[..n].iter().zip(values.chunks_exact(dim)) {
            for (a, y) in acc.iter_mut().zip(v) {
                *a = p.mul_add(y.to_f32(), *a);
            }
        }
    }
}
