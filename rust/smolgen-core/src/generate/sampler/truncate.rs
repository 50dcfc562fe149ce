//! Steps 6 to 10 without sorting the vocabulary: top-k keeps a bounded buffer above a rising
//! threshold, top-p sums probabilities in buckets of their top bits and sorts only the bucket
//! where the sum crosses p, min-p is a threshold, and the draw walks token ids in order.

use std::cmp::Ordering;

use super::{any, Candidate, BLOCK, LANES};

/// Step 6: the k best `(logit, id)` pairs (higher logit first, then lower id), in no particular
/// order. Scans the vocabulary once, keeping at most 2k candidates above a threshold that rises
/// to the k-th best logit each time the buffer fills.
pub(super) fn select_top_k(logits: &[f32], k: usize, out: &mut Vec<Candidate>) {
    out.clear();
    let buffer = 2 * k;
    let mut threshold = f32::NEG_INFINITY;
    for (chunk_start, chunk) in (0u32..).step_by(LANES).zip(logits.chunks(LANES)) {
        // Strictly above: a later token with the threshold's logit has a higher id, so it
        // loses the tie against every kept one. -inf never enters.
        if !any(chunk, |x| x > threshold) {
            continue;
        }
        for (id, &logit) in (chunk_start..).zip(chunk) {
            if logit > threshold {
                out.push(Candidate {
                    id,
                    logit,
                    prob: 0.0,
                });
                if out.len() == buffer {
                    keep_best(out, k);
                    threshold = out[k - 1].logit;
                }
            }
        }
    }
    if out.len() > k {
        keep_best(out, k);
    }
}

/// Keeps the k best candidates, the k-th best last.
pub(super) fn keep_best(candidates: &mut Vec<Candidate>, k: usize) {
    candidates.select_nth_unstable_by(k - 1, by_logit);
    candidates.truncate(k);
}

pub(super) fn by_logit(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit
        .partial_cmp(&a.logit)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

pub(super) fn by_probability(a: &Candidate, b: &Candidate) -> Ordering {
    b.prob
        .partial_cmp(&a.prob)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// Before steps 8 and 9 without top-k: a weight below which no token survives top-p or
/// min-p, so that one pass can collect the few that might without sorting the vocabulary.
/// The most probable token weighs 1 and the weights sum to `z`.
pub(super) fn survivor_floor(weights: &[f64], z: f64, top_p: f64, min_p: f64) -> f64 {
    // A margin below min-p's own limit: the exact cut, on probabilities, comes later.
    let mut floor = min_p * (1.0 - 1e-9);
    if top_p < 1.0 {
        let top_key = bucket_key(1.0);
        if let Some((bucket, _)) = crossing_bucket(weights.iter().copied(), top_key, top_p * z) {
            floor = floor.max(bucket_floor(bucket, top_key));
        }
    }
    floor
}

/// The tokens weighing at least `floor` (and more than 0: weights are 0 or normal floats), in
/// id order, with their probabilities `weight / z`.
pub(super) fn collect_probabilities(weights: &[f64], floor: f64, z: f64, out: &mut Vec<Candidate>) {
    out.clear();
    let floor = floor.max(f64::MIN_POSITIVE);
    for (chunk_start, chunk) in (0u32..).step_by(LANES).zip(weights.chunks(LANES)) {
        if !any(chunk, |w| w >= floor) {
            continue;
        }
        for (id, &w) in (chunk_start..).zip(chunk) {
            if w >= floor {
                out.push(Candidate {
                    id,
                    logit: 0.0,
                    prob: w / z,
                });
            }
        }
    }
}

/// Step 8: keeps the nucleus, the smallest set of most probable candidates (ties: lower id
/// first) whose probability reaches `top_p`, or all of them if rounding leaves the total just
/// short. `candidates` stay in id order.
pub(super) fn top_p_cut(
    candidates: &mut Vec<Candidate>,
    top_p: f64,
    selection: &mut Vec<Candidate>,
) {
    if top_p >= 1.0 {
        return;
    }
    if let Some(last) = nucleus_boundary(candidates, top_p, selection) {
        candidates.retain(|c| by_probability(c, &last) != Ordering::Greater);
    }
}

/// Buckets of the nucleus search: 64 powers of two, each split in 8 by mantissa.
const NUCLEUS_BUCKETS: usize = 512;

/// The top bits of a positive float, its exponent and three mantissa bits: they grow with
/// it, and the values that share them are within 12.5% of each other.
pub(super) fn bucket_key(x: f64) -> u64 {
    x.to_bits() >> 49
}

/// The bucket of `x` > 0, counted down from the one whose key is `top_key`; everything more
/// than 64 powers of two down shares the last.
pub(super) fn bucket_of(x: f64, top_key: u64) -> usize {
    (top_key.saturating_sub(bucket_key(x)) as usize).min(NUCLEUS_BUCKETS - 1)
}

/// The smallest value in `bucket` or any bucket above it.
pub(super) fn bucket_floor(bucket: usize, top_key: u64) -> f64 {
    if bucket + 1 >= NUCLEUS_BUCKETS {
        0.0
    } else {
        f64::from_bits(top_key.saturating_sub(bucket as u64) << 49)
    }
}

/// Where the nucleus ends, to within a bucket: adds up `weights` by bucket (in the order
/// given), then walks the buckets from the top. Returns the first bucket at which the running
/// total reaches `needed`, with the total of the buckets above it; `None` if it never does.
pub(super) fn crossing_bucket(
    weights: impl Iterator<Item = f64>,
    top_key: u64,
    needed: f64,
) -> Option<(usize, f64)> {
    let mut mass = [0.0f64; NUCLEUS_BUCKETS];
    for w in weights {
        mass[bucket_of(w, top_key)] += w;
    }
    let mut before = 0.0;
    for (bucket, &m) in mass.iter().enumerate() {
        if before + m >= needed {
            return Some((bucket, before));
        }
        before += m;
    }
    None
}

/// The least probable token of the nucleus, sorting only the candidates in the bucket where
/// the cumulative probability reaches `top_p`. `None` when rounding keeps the total just short
/// of `top_p`: everything stays.
pub(super) fn nucleus_boundary(
    candidates: &[Candidate],
    top_p: f64,
    selection: &mut Vec<Candidate>,
) -> Option<Candidate> {
    let top_key = bucket_key(candidates.iter().fold(0.0, |m: f64, c| m.max(c.prob)));
    let probs = candidates.iter().map(|c| c.prob);
    let (bucket, mut before) = crossing_bucket(probs, top_key, top_p)?;
    selection.clear();
    selection.extend(
        candidates
            .iter()
            .filter(|c| bucket_of(c.prob, top_key) == bucket),
    );
    selection.sort_unstable_by(by_probability);
    for c in selection.iter() {
        before += c.prob;
        if before >= top_p {
            return Some(*c);
        }
    }
    // Only rounding gets here: the bucket was chosen because its total reached top_p.
    selection.last().copied()
}

/// Step 9: drop the candidates below `min_p` times the largest probability.
pub(super) fn min_p_cut(candidates: &mut Vec<Candidate>, min_p: f64) {
    if min_p == 0.0 {
        return;
    }
    let max = candidates.iter().fold(0.0, |m: f64, c| m.max(c.prob));
    let limit = min_p * max;
    candidates.retain(|c| c.prob >= limit);
}

/// Step 10: inverse-CDF draw over `(id, weight)` pairs in id order: the first token at which
/// the running sum of the weights exceeds `target` (`u * total`, u uniform in [0, 1)). When
/// rounding leaves the sum just short, the last token with a non-zero weight.
///
/// The order is the token ids', which no sorting algorithm can change, so the tokens a seed
/// draws never depend on the standard library's version.
pub(super) fn draw(target: f64, weights: impl Iterator<Item = (u32, f64)>) -> Option<u32> {
    let mut cumulative = 0.0;
    let mut last = None;
    for (id, w) in weights {
        if w > 0.0 {
            cumulative += w;
            last = Some(id);
            if target < cumulative {
                break;
            }
        }
    }
    last
}

/// [`draw`] over the whole vocabulary, a block at a time: finds the block whose partial sum
/// crosses `target`, then the token inside it.
pub(super) fn draw_blocked(target: f64, weights: &[f64], block_sums: &[f64]) -> Option<u32> {
    let mut cumulative = 0.0;
    let mut last_nonzero = None;
    for (b, &block_sum) in block_sums.iter().enumerate() {
        if block_sum > 0.0 {
            last_nonzero = Some(b);
        }
        if target < cumulative + block_sum {
            return draw_in_block(target - cumulative, weights, b);
        }
        cumulative += block_sum;
    }
    last_nonzero.and_then(|b| draw_in_block(f64::INFINITY, weights, b))
}

pub(super) fn draw_in_block(target: f64, weights: &[f64], block: usize) -> Option<u32> {
    let start = block * BLOCK;
    let end = weights.len().min(start + BLOCK);
    let ids = (start as u32)..;
    draw(target, ids.zip(weights[start..end].iter().copied()))
}
