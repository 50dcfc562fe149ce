//! The sampler against its definition: each step on small hand-made cases, the steps' order,
//! seeded draws, and the errors.

#![allow(clippy::unwrap_used)]

use std::cmp::Ordering;

use super::truncate::*;
use super::*;

fn params() -> SamplingParams {
    SamplingParams {
        seed: Some(7),
        ..SamplingParams::default()
    }
}

fn sampler(params: SamplingParams, vocab_size: usize, prompt: &[u32]) -> Sampler {
    Sampler::new(params, vocab_size, prompt).expect("valid parameters")
}

fn ids(distribution: &[(u32, f32)]) -> Vec<u32> {
    distribution.iter().map(|&(id, _)| id).collect()
}

/// Same surviving ids, probabilities within `tolerance`, and `actual` sorted by probability
/// then id. Survivors below 1e-38 need not be listed: f32 rounds the smallest to 0.
fn assert_close(actual: &[(u32, f32)], expected: &[(u32, f64)], tolerance: f64) {
    assert!(
        actual
            .windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 < w[1].0)),
        "not sorted by probability, then id"
    );
    let mut actual = actual.to_vec();
    let mut expected = expected.to_vec();
    actual.sort_by_key(|p| p.0);
    expected.sort_by_key(|p| p.0);
    let mut a = actual.iter().peekable();
    for &(id, q) in &expected {
        match a.peek() {
            Some(&&(got, p)) if got == id => {
                assert!(
                    (f64::from(p) - q).abs() <= tolerance,
                    "token {id}: {p} vs {q}"
                );
                a.next();
            }
            _ => assert!(q < 1e-38, "token {id} (p = {q}) is missing"),
        }
    }
    assert!(a.next().is_none(), "a token survives that should not");
}

/// Logits whose softmax is `probs`.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

/// Normal(0, sigma) logits from Box-Muller on the module's own generator.
fn normal_logits(n: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut rng = Xoshiro256StarStar::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let u1 = 1.0 - rng.next_f64();
            let u2 = rng.next_f64();
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (sigma * g) as f32
        })
        .collect()
}

/// Every step transcribed over the full vocabulary, sorting everything: the slow, obvious
/// version the fast paths must agree with.
fn brute_force(
    params: &SamplingParams,
    logits: &[f32],
    prompt: &[u32],
    generated: &[u32],
) -> Vec<(u32, f64)> {
    let mut x = logits.to_vec();
    for &(id, b) in &params.logit_bias {
        x[id as usize] += b;
    }
    let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        let v = x[id as usize];
        let r = params.repetition_penalty;
        x[id as usize] = if v > 0.0 { v / r } else { v * r };
    }
    let mut counts = vec![0u32; logits.len()];
    for &id in generated {
        counts[id as usize] += 1;
    }
    for (v, &c) in x.iter_mut().zip(&counts) {
        if c > 0 {
            let amount = f64::from(c) * f64::from(params.frequency_penalty)
                + f64::from(params.presence_penalty);
            *v -= amount as f32;
        }
    }
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| {
        x[b as usize]
            .partial_cmp(&x[a as usize])
            .unwrap_or(Ordering::Equal)
            .then(a.cmp(&b))
    });
    if params.temperature == 0.0 {
        return vec![(order[0], 1.0)];
    }
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let t = f64::from(params.temperature);
    let z_max = f64::from(x[order[0] as usize]) / t;
    let weights: Vec<f64> = order
        .iter()
        .map(|&id| (f64::from(x[id as usize]) / t - z_max).exp())
        .collect();
    let z: f64 = weights.iter().sum();
    let mut probs: Vec<(u32, f64)> = order
        .iter()
        .zip(&weights)
        .map(|(&id, &w)| (id, w / z))
        .collect();
    probs.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(Ordering::Equal)
            .then(a.0.cmp(&b.0))
    });
    probs.retain(|&(_, p)| p > 0.0);
    if params.top_p < 1.0 {
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|&(_, p)| {
                cumulative += p;
                cumulative >= f64::from(params.top_p)
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
    }
    let limit = f64::from(params.min_p) * probs[0].1;
    probs.retain(|&(_, p)| p >= limit);
    let total: f64 = probs.iter().map(|&(_, p)| p).sum();
    probs.iter().map(|&(id, p)| (id, p / total)).collect()
}

#[test]
fn greedy_is_the_argmax_with_ties_to_the_lowest_id() {
    let logits = [0.1, 2.0, -1.0, 2.0];
    let mut s = sampler(SamplingParams::greedy(), 4, &[]);
    assert_eq!(s.sample(&logits).unwrap(), 1);
    assert_eq!(s.distribution(&logits).unwrap(), vec![(1, 1.0)]);
}

#[test]
fn greedy_takes_the_first_of_equal_maxima_anywhere() {
    for (len, first, second) in [
        (1003, 0, 7),
        (1003, 500, 501),
        (1003, 1001, 1002),
        (5, 2, 4),
    ] {
        let mut logits = vec![0.0f32; len];
        logits[first] = 1.0;
        logits[second] = 1.0;
        let mut s = sampler(SamplingParams::greedy(), len, &[]);
        assert_eq!(s.sample(&logits).unwrap() as usize, first);
    }
}

#[test]
fn greedy_sees_bias_and_penalties() {
    let logits = [0.1, 2.0, -1.0, 1.9];
    let biased = SamplingParams {
        logit_bias: vec![(2, 5.0)],
        ..SamplingParams::greedy()
    };
    assert_eq!(sampler(biased, 4, &[]).sample(&logits).unwrap(), 2);
    let penalised = SamplingParams {
        repetition_penalty: 1.5,
        ..SamplingParams::greedy()
    };
    assert_eq!(sampler(penalised, 4, &[1]).sample(&logits).unwrap(), 3);
}

#[test]
fn logit_bias_adds_and_repeated_entries_add_up() {
    let mut x = vec![1.0, 2.0, 3.0];
    apply_logit_bias(&mut x, &[(0, 0.5), (2, -3.0), (0, 0.25)]);
    assert_eq!(x, vec![1.75, 2.0, 0.0]);
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_logits() {
    let mut x = vec![2.0, -2.0, 1.0, 0.0, 4.0];
    apply_repetition_penalty(&mut x, &[0, 1, 3], 2.0);
    assert_eq!(x, vec![1.0, -4.0, 1.0, 0.0, 4.0]);
    let mut y = vec![2.0, -2.0];
    apply_repetition_penalty(&mut y, &[0, 1], 0.5);
    assert_eq!(y, vec![4.0, -1.0]);
}

#[test]
fn frequency_and_presence_penalties_subtract_count_times_frequency_plus_presence() {
    let mut x = vec![1.0, 1.0, 1.0];
    let counts = [3, 0, 1];
    apply_frequency_presence_penalties(&mut x, &counts, &[0, 2], 0.5, 0.25);
    assert_eq!(x, vec![1.0 - 1.75, 1.0, 1.0 - 0.75]);
}

#[test]
fn prompt_tokens_get_the_repetition_penalty_only() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        frequency_penalty: 0.5,
        presence_penalty: 0.25,
        ..SamplingParams::greedy()
    };
    let mut s = sampler(p.clone(), 4, &[0]);
    s.accept(1);
    s.accept(1);
    s.accept(99); // outside the vocabulary: ignored
    let logits = [4.0, 4.0, -1.0, 0.5];
    // token 0: 4 / 2 = 2; token 1: 4 / 2 - (2 * 0.5 + 0.25) = 0.75.
    let expected = brute_force(&p, &logits, &[0], &[1, 1]);
    assert_eq!(expected, vec![(0, 1.0)]);
    assert_eq!(s.sample(&logits).unwrap(), 0);
    let mut x = logits.to_vec();
    apply_repetition_penalty(&mut x, &s.history.seen_ids, 2.0);
    apply_frequency_presence_penalties(
        &mut x,
        &s.history.counts,
        &s.history.generated_ids,
        0.5,
        0.25,
    );
    assert_eq!(x, vec![2.0, 0.75, -1.0, 0.5]);
}

#[test]
fn temperature_one_without_cuts_is_the_softmax() {
    let probs = [0.5, 0.3, 0.15, 0.05];
    let d = sampler(params(), 4, &[])
        .distribution(&logits_of(&probs))
        .unwrap();
    let expected: Vec<(u32, f64)> = (0..).zip(probs).collect();
    assert_close(&d, &expected, 1e-6);
}

#[test]
fn temperature_sharpens_and_flattens() {
    let logits = [1.0, 0.0];
    for t in [0.5f32, 2.0] {
        let p = SamplingParams {
            temperature: t,
            ..params()
        };
        let d = sampler(p, 2, &[]).distribution(&logits).unwrap();
        let a = (1.0 / f64::from(t)).exp();
        assert_close(&d, &[(0, a / (a + 1.0)), (1, 1.0 / (a + 1.0))], 1e-6);
    }
}

#[test]
fn top_k_keeps_the_k_highest_with_ties_to_the_lower_id() {
    let p = SamplingParams {
        top_k: 2,
        ..params()
    };
    let d = sampler(p.clone(), 4, &[])
        .distribution(&[1.0, 2.0, 3.0, 0.0])
        .unwrap();
    let e = 1f64.exp();
    assert_close(&d, &[(2, e / (e + 1.0)), (1, 1.0 / (e + 1.0))], 1e-6);
    let d = sampler(p, 4, &[])
        .distribution(&[0.0, 1.0, 1.0, 1.0])
        .unwrap();
    assert_eq!(ids(&d), vec![1, 2]);
}

#[test]
fn top_k_of_the_vocabulary_size_or_more_is_off() {
    let logits = [0.3, 0.1, -2.0];
    let all = sampler(params(), 3, &[]).distribution(&logits).unwrap();
    for k in [3, 4, 1000] {
        let p = SamplingParams {
            top_k: k,
            ..params()
        };
        assert_eq!(sampler(p, 3, &[]).distribution(&logits).unwrap(), all);
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    for (top_p, expected) in [
        (0.4, vec![(0, 1.0)]),
        (0.75, vec![(0, 0.625), (1, 0.375)]),
        (
            0.85,
            vec![(0, 0.5 / 0.95), (1, 0.3 / 0.95), (2, 0.15 / 0.95)],
        ),
    ] {
        let p = SamplingParams { top_p, ..params() };
        let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
        assert_close(&d, &expected, 1e-6);
    }
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let p = SamplingParams {
        min_p: 0.35,
        ..params()
    };
    let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
    assert_close(&d, &[(0, 0.625), (1, 0.375)], 1e-6);
}

#[test]
fn top_p_and_min_p_combine() {
    // top_p 0.9 keeps {0, 1, 2} (0.5 + 0.3 < 0.9); min_p 0.4 then drops 2 (0.15 < 0.4 * 0.5).
    let logits = logits_of(&[0.5, 0.3, 0.15, 0.05]);
    let p = SamplingParams {
        top_p: 0.9,
        min_p: 0.4,
        ..params()
    };
    let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
    assert_close(&d, &[(0, 0.625), (1, 0.375)], 1e-6);
}

#[test]
fn minus_infinity_logits_never_survive() {
    let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 1.0];
    for top_k in [0, 3] {
        let p = SamplingParams {
            top_k,
            min_p: 0.01,
            ..params()
        };
        let d = sampler(p, 4, &[]).distribution(&logits).unwrap();
        assert_eq!(ids(&d), vec![3, 1]);
    }
}

/// A bit set over `vocab_size` tokens with the given ids allowed.
fn allowed_set(vocab_size: usize, ids: &[u32]) -> Vec<u32> {
    let mut bits = vec![0u32; vocab_size.div_ceil(32)];
    for &id in ids {
        bits[id as usize / 32] |= 1 << (id % 32);
    }
    bits
}

#[test]
fn a_constraint_is_the_same_as_minus_infinity_on_what_it_rules_out() {
    // 70 tokens: two full words of bits and a partial one.
    let logits = normal_logits(70, 2.0, 11);
    let allowed: Vec<u32> = (0..70).filter(|id| id % 3 == 0 || *id > 64).collect();
    let bits = allowed_set(70, &allowed);
    let mut masked = logits.clone();
    for (id, x) in masked.iter_mut().enumerate() {
        if !allowed.contains(&(id as u32)) {
            *x = f32::NEG_INFINITY;
        }
    }
    for p in [
        SamplingParams::greedy(),
        params(),
        SamplingParams {
            top_k: 5,
            ..params()
        },
        SamplingParams {
            top_p: 0.8,
            min_p: 0.05,
            repetition_penalty: 1.3,
            ..params()
        },
    ] {
        let mut constrained = sampler(p.clone(), 70, &[3, 6]);
        let mut reference = sampler(p, 70, &[3, 6]);
        for _ in 0..200 {
            let a = constrained.sample_allowed(&logits, Some(&bits)).unwrap();
            let b = reference.sample(&masked).unwrap();
            assert_eq!(a, b);
            assert!(allowed.contains(&a));
            constrained.accept(a);
            reference.accept(b);
        }
    }
}

#[test]
fn a_constraint_that_allows_nothing_is_an_error() {
    let logits = [1.0, 2.0, 3.0];
    let err = sampler(params(), 3, &[])
        .sample_allowed(&logits, Some(&[0]))
        .unwrap_err();
    assert!(err.to_string().contains("grammar allows"), "{err}");
    // A short bit set allows nothing past its end.
    let logits = normal_logits(40, 1.0, 1);
    let mut s = sampler(SamplingParams::greedy(), 40, &[]);
    assert_eq!(s.sample_allowed(&logits, Some(&[1 << 5])).unwrap(), 5);
}

mod randomized;
