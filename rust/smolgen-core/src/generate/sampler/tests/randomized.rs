//! The fast paths against a brute-force statement of the steps on random settings, and seeded
//! draws against the distribution they come from.

use super::*;

#[test]
fn select_top_k_matches_a_full_sort() {
    // Rounded logits make many ties; the vocabulary is large enough to compact many times.
    for (seed, k) in [(1, 1), (2, 5), (3, 40), (4, 333), (5, 2999), (6, 2500)] {
        let logits: Vec<f32> = normal_logits(3003, 2.0, seed)
            .iter()
            .map(|x| (x * 4.0).round() / 4.0)
            .collect();
        let mut expected: Vec<u32> = (0..3003).collect();
        expected.sort_by(|&a, &b| {
            logits[b as usize]
                .partial_cmp(&logits[a as usize])
                .unwrap_or(Ordering::Equal)
                .then(a.cmp(&b))
        });
        expected.truncate(k);
        let mut out = Vec::new();
        select_top_k(&logits, k, &mut out);
        out.sort_by(by_logit);
        let got: Vec<u32> = out.iter().map(|c| c.id).collect();
        assert_eq!(got, expected, "k = {k}");
    }
}

fn coin(rng: &mut Xoshiro256StarStar) -> bool {
    rng.next_f64() < 0.5
}

#[test]
fn fast_paths_match_the_brute_force_on_random_settings() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(2024);
    for case in 0..200u64 {
        let vocab_size = if case % 10 == 0 {
            49_152
        } else {
            1 + (case as usize * 37) % 300
        };
        let sigma = [0.5, 3.0, 10.0][case as usize % 3];
        let logits = normal_logits(vocab_size, sigma, case);

        let p = SamplingParams {
            temperature: if coin(&mut rng) {
                1.0
            } else {
                0.05 + 2.0 * rng.next_f64()
            } as f32,
            top_k: if rng.next_f64() < 0.5 {
                0
            } else {
                1 + (rng.next_u64() % 100) as usize
            },
            top_p: if coin(&mut rng) {
                1.0
            } else {
                0.05 + 0.95 * rng.next_f64()
            } as f32,
            min_p: if coin(&mut rng) {
                0.0
            } else {
                0.3 * rng.next_f64()
            } as f32,
            repetition_penalty: if coin(&mut rng) {
                1.0
            } else {
                0.5 + rng.next_f64()
            } as f32,
            frequency_penalty: if coin(&mut rng) {
                0.0
            } else {
                4.0 * rng.next_f64() - 2.0
            } as f32,
            presence_penalty: if coin(&mut rng) {
                0.0
            } else {
                4.0 * rng.next_f64() - 2.0
            } as f32,
            logit_bias: vec![((rng.next_u64() % vocab_size as u64) as u32, 3.0)],
            seed: Some(case),
        };
        let history: Vec<u32> = (0..20)
            .map(|_| (rng.next_u64() % vocab_size as u64) as u32)
            .collect();
        let (prompt, generated) = history.split_at(10);
        let mut s = sampler(p.clone(), vocab_size, prompt);
        for &id in generated {
            s.accept(id);
        }
        let d = s.distribution(&logits).unwrap();
        let expected = brute_force(&p, &logits, prompt, generated);
        eprintln!("case {case}: {p:?}");
        assert_close(&d, &expected, 1e-6);
        let total: f64 = d.iter().map(|&(_, p)| f64::from(p)).sum();
        assert!((total - 1.0).abs() < 1e-4, "case {case}: total {total}");
        let token = s.sample(&logits).unwrap();
        assert!(
            d.iter().any(|&(id, _)| id == token),
            "case {case}: drew {token}"
        );
    }
}

#[test]
fn nucleus_boundary_matches_a_full_sort() {
    let mut rng = Xoshiro256StarStar::seed_from_u64(99);
    let mut selection = Vec::new();
    for n in [1, 2, 31, 33, 100, 5000] {
        // Probabilities on a coarse grid, so that many tie.
        let raw: Vec<f64> = (0..n)
            .map(|_| (rng.next_f64() * 50.0).floor() + 1.0)
            .collect();
        let sum: f64 = raw.iter().sum();
        let candidates: Vec<Candidate> = (0u32..)
            .zip(&raw)
            .map(|(id, &w)| Candidate {
                id,
                logit: 0.0,
                prob: w / sum,
            })
            .collect();
        let mut sorted = candidates.clone();
        sorted.sort_by(by_probability);
        for top_p in [0.01, 0.3, 0.5, 0.9, 0.999] {
            let mut cumulative = 0.0;
            let expected = sorted.iter().find(|c| {
                cumulative += c.prob;
                cumulative >= top_p
            });
            let got = nucleus_boundary(&candidates, top_p, &mut selection);
            assert_eq!(
                got.map(|c| c.id),
                expected.map(|c| c.id),
                "n = {n}, top_p = {top_p}"
            );
            let mut kept = candidates.clone();
            top_p_cut(&mut kept, top_p, &mut selection);
            assert!(kept.windows(2).all(|w| w[0].id < w[1].id), "id order");
        }
    }
}

#[test]
fn survivor_floor_keeps_the_whole_nucleus_and_little_else() {
    let logits = normal_logits(49_152, 3.0, 8);
    let (max, _) = max_and_check(&logits);
    let mut weights = vec![0.0; logits.len()];
    let mut block_sums = vec![0.0; logits.len().div_ceil(BLOCK)];
    for temperature in [0.3, 0.8, 1.5, 4.0] {
        let z_max = f64::from(max) / temperature;
        let z = weigh_all(&logits, temperature, z_max, &mut weights, &mut block_sums);
        let mut sorted = weights.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        for top_p in [0.1, 0.5, 0.9, 0.99] {
            let mut cumulative = 0.0;
            let nucleus = 1 + sorted
                .iter()
                .position(|w| {
                    cumulative += w / z;
                    cumulative >= top_p
                })
                .unwrap();
            let floor = survivor_floor(&weights, z, top_p, 0.0);
            let collected = weights.iter().filter(|&&w| w >= floor).count();
            assert!(
                sorted[nucleus - 1] >= floor,
                "t = {temperature}, p = {top_p}"
            );
            // One bucket past the nucleus at most: a bucket's values are within 12.5%.
            let limit = sorted[nucleus - 1] / 1.125 * 0.999;
            let at_most = sorted.iter().filter(|&&w| w >= limit).count();
            assert!(collected <= at_most, "t = {temperature}, p = {top_p}");
        }
    }
}

#[test]
fn blocked_draw_matches_a_plain_walk() {
    let logits = normal_logits(1000, 2.0, 4);
    let mut weights = vec![0.0; 1000];
    let mut block_sums = vec![0.0; 1000usize.div_ceil(BLOCK)];
    let total = weigh_all(&logits, 1.0, 8.0, &mut weights, &mut block_sums);
    let mut rng = Xoshiro256StarStar::seed_from_u64(5);
    for _ in 0..10_000 {
        let target = rng.next_f64() * total;
        let plain = draw(target, (0u32..).zip(weights.iter().copied()));
        assert_eq!(draw_blocked(target, &weights, &block_sums), plain);
    }
    let last = draw(f64::INFINITY, (0u32..).zip(weights.iter().copied()));
    assert_eq!(draw_blocked(total * 2.0, &weights, &block_sums), last);
}

#[test]
fn the_draw_is_the_inverse_cdf_in_id_order() {
    // Probabilities 0.25, 0.25, 0.5: u < 0.25 draws 0, u < 0.5 draws 1, otherwise 2.
    let logits = logits_of(&[0.25, 0.25, 0.5]);
    for seed in 0..50 {
        let u = Xoshiro256StarStar::seed_from_u64(seed).next_f64();
        let expected = if u < 0.25 {
            0
        } else if u < 0.5 {
            1
        } else {
            2
        };
        // The whole-vocabulary path, then two paths through the candidate list.
        for (min_p, top_p) in [(0.0, 1.0), (0.1, 1.0), (0.0, 0.99)] {
            let p = SamplingParams {
                min_p,
                top_p,
                seed: Some(seed),
                ..SamplingParams::default()
            };
            assert_eq!(sampler(p, 3, &[]).sample(&logits).unwrap(), expected);
        }
    }
}

const GOLDEN: [u32; 12] = [28, 822, 707, 859, 80, 904, 427, 175, 574, 635, 539, 188];

#[test]
fn a_seed_draws_the_same_tokens_as_when_this_test_was_written() {
    // Pins the whole pipeline (generator, exponential, sums, draw order) against change.
    // Uniform logits, from arithmetic alone: no libm function that could differ by platform.
    let mut rng = Xoshiro256StarStar::seed_from_u64(9);
    let logits: Vec<f32> = (0..1000)
        .map(|_| (rng.next_f64() * 12.0 - 6.0) as f32)
        .collect();
    let p = SamplingParams {
        temperature: 0.9,
        top_p: 0.95,
        repetition_penalty: 1.1,
        seed: Some(1234),
        ..SamplingParams::default()
    };
    let mut s = sampler(p, 1000, &[]);
    let tokens: Vec<u32> = (0..12)
        .map(|_| {
            let token = s.sample(&logits).unwrap();
            s.accept(token);
            token
        })
        .collect();
    assert_eq!(tokens, GOLDEN);
}

#[test]
fn draws_stay_inside_the_surviving_set() {
    let logits = normal_logits(1000, 3.0, 11);
    let p = SamplingParams {
        top_k: 5,
        ..params()
    };
    let mut s = sampler(p, 1000, &[]);
    let allowed = ids(&s.distribution(&logits).unwrap());
    for _ in 0..1000 {
        assert!(allowed.contains(&s.sample(&logits).unwrap()));
    }
}

#[test]
fn a_seed_fixes_the_tokens_and_different_seeds_differ() {
    let logits = normal_logits(49_152, 3.0, 5);
    let run = |seed: u64| {
        let p = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            repetition_penalty: 1.2,
            frequency_penalty: 0.3,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        let mut s = sampler(p, 49_152, &[1, 2, 3]);
        (0..50)
            .map(|_| {
                let token = s.sample(&logits).unwrap();
                s.accept(token);
                token
            })
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[test]
fn without_a_seed_two_samplers_differ() {
    let logits = vec![0.0f32; 1000];
    let draws = |_: u32| {
        let mut s = sampler(SamplingParams::default(), 1000, &[]);
        (0..20)
            .map(|_| s.sample(&logits).unwrap())
            .collect::<Vec<u32>>()
    };
    assert_ne!(draws(0), draws(1));
}

#[test]
fn draw_frequencies_fit_the_distribution() {
    // Pearson's chi-square with a fixed seed: deterministic, far from the 0.1% critical value.
    let logits = normal_logits(12, 1.0, 3);
    let p = SamplingParams {
        temperature: 0.8,
        top_p: 0.97,
        seed: Some(12345),
        ..SamplingParams::default()
    };
    let mut s = sampler(p, 12, &[]);
    let d = s.distribution(&logits).unwrap();
    let n = 50_000;
    let mut counts = [0u32; 12];
    for _ in 0..n {
        counts[s.sample(&logits).unwrap() as usize] += 1;
    }
    let mut chi2 = 0.0;
    for &(id, prob) in &d {
        let expected = f64::from(prob) * f64::from(n);
        assert!(expected >= 5.0, "pick logits without tiny cells");
        chi2 += (f64::from(counts[id as usize]) - expected).powi(2) / expected;
    }
    let drawn: u32 = d.iter().map(|&(id, _)| counts[id as usize]).sum();
    assert_eq!(drawn, n, "every draw is a survivor");
    // Critical values at p = 0.001 for 1..=11 degrees of freedom.
    const CRITICAL: [f64; 11] = [
        10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26,
    ];
    let dof = d.len() - 1;
    assert!(dof >= 3, "{d:?}");
    assert!(chi2 < CRITICAL[dof - 1], "chi2 {chi2} with {dof} dof");
}

#[test]
fn bad_parameters_are_invalid_argument_errors() {
    let bad = [
        SamplingParams {
            temperature: -0.1,
            ..params()
        },
        SamplingParams {
            temperature: f32::NAN,
            ..params()
        },
        SamplingParams {
            temperature: f32::INFINITY,
            ..params()
        },
        SamplingParams {
            top_p: 0.0,
            ..params()
        },
        SamplingParams {
            top_p: 1.01,
            ..params()
        },
        SamplingParams {
            top_p: f32::NAN,
            ..params()
        },
        SamplingParams {
            min_p: -0.01,
            ..params()
        },
        SamplingParams {
            min_p: 1.5,
            ..params()
        },
        SamplingParams {
            min_p: f32::NAN,
            ..params()
        },
        SamplingParams {
            repetition_penalty: 0.0,
            ..params()
        },
        SamplingParams {
            repetition_penalty: -1.0,
            ..params()
        },
        SamplingParams {
            repetition_penalty: f32::NAN,
            ..params()
        },
        SamplingParams {
            frequency_penalty: 2.5,
            ..params()
        },
        SamplingParams {
            frequency_penalty: f32::NAN,
            ..params()
        },
        SamplingParams {
            presence_penalty: -2.01,
            ..params()
        },
        SamplingParams {
            logit_bias: vec![(10, 1.0)],
            ..params()
        },
        SamplingParams {
            logit_bias: vec![(1, f32::INFINITY)],
            ..params()
        },
        SamplingParams {
            logit_bias: vec![(1, f32::NAN)],
            ..params()
        },
    ];
    for p in bad {
        let err = Sampler::new(p.clone(), 10, &[]).err();
        assert!(
            matches!(err, Some(Error::InvalidArgument(_))),
            "{p:?} gave {err:?}"
        );
    }
    assert!(matches!(
        Sampler::new(params(), 10, &[3, 10]).err(),
        Some(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Sampler::new(params(), 0, &[]).err(),
        Some(Error::InvalidArgument(_))
    ));
    let edges = [
        SamplingParams {
            top_p: 1.0,
            min_p: 1.0,
            ..params()
        },
        SamplingParams {
            frequency_penalty: -2.0,
            presence_penalty: 2.0,
            ..params()
        },
        SamplingParams {
            logit_bias: vec![(9, -1e30)],
            ..params()
        },
    ];
    for p in edges {
        assert!(Sampler::new(p, 10, &[9]).is_ok());
    }
}

#[test]
fn nan_and_infinite_logits_are_rejected_not_sampled() {
    for temperature in [0.0, 1.0] {
        let p = SamplingParams {
            temperature,
            ..params()
        };
        let mut s = sampler(p, 3, &[]);
        for bad in [[0.0, f32::NAN, 1.0], [0.0, f32::INFINITY, 1.0]] {
            assert!(matches!(s.sample(&bad), Err(Error::InvalidArgument(_))));
            assert!(matches!(
                s.distribution(&bad),
                Err(Error::InvalidArgument(_))
            ));
        }
        let masked = [f32::NEG_INFINITY; 3];
        assert!(matches!(s.sample(&masked), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            s.sample(&[0.0, 1.0]),
            Err(Error::InvalidArgument(_))
        ));
    }
    // A penalty below 1 can push a huge logit over the top.
    let p = SamplingParams {
        repetition_penalty: 0.5,
        ..params()
    };
    let mut s = sampler(p, 2, &[0]);
    assert!(matches!(
        s.sample(&[f32::MAX, 0.0]),
        Err(Error::InvalidArgument(_))
    ));
}
