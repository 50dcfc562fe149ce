//! Cost of one `Sampler::sample` call on a SmolLM2-sized logit vector (49,152 entries, drawn
//! from normal(0, 3)), for the configurations a chat request typically uses.
//!
//! `cargo bench -p smolgen-core --bench sampler -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use smolgen_core::{Sampler, SamplingParams};

const VOCAB_SIZE: usize = 49_152;

/// splitmix64: a self-contained source of bench data, so the inputs never change.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Box-Muller.
    fn normal(&mut self, sigma: f64) -> f64 {
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn bench_sample(c: &mut Criterion) {
    let mut rng = SplitMix64(2024);
    let logits: Vec<f32> = (0..VOCAB_SIZE).map(|_| rng.normal(3.0) as f32).collect();
    let history: Vec<u32> = (0..512)
        .map(|_| (rng.next_u64() % VOCAB_SIZE as u64) as u32)
        .collect();
    let (prompt, generated) = history.split_at(384);

    let seeded = SamplingParams {
        seed: Some(1),
        ..SamplingParams::default()
    };
    let configurations = [
        ("greedy", SamplingParams::greedy(), &[][..], &[][..]),
        ("temperature_1", seeded.clone(), &[][..], &[][..]),
        (
            "temperature_0.8_top_p_0.9",
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                ..seeded.clone()
            },
            &[][..],
            &[][..],
        ),
        (
            // A flat distribution: the nucleus holds about 18,000 tokens.
            "temperature_1.5_top_p_0.95",
            SamplingParams {
                temperature: 1.5,
                top_p: 0.95,
                ..seeded.clone()
            },
            &[][..],
            &[][..],
        ),
        (
            "top_k_40",
            SamplingParams {
                top_k: 40,
                ..seeded.clone()
            },
            &[][..],
            &[][..],
        ),
        (
            "all_knobs_512_history",
            SamplingParams {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.95,
                min_p: 0.05,
                repetition_penalty: 1.1,
                frequency_penalty: 0.5,
                presence_penalty: 0.3,
                logit_bias: vec![(11, 5.0), (198, -100.0), (2, 1.5)],
                ..seeded.clone()
            },
            prompt,
            generated,
        ),
        (
            "all_knobs_but_top_k_512_history",
            SamplingParams {
                temperature: 0.7,
                top_p: 0.95,
                min_p: 0.05,
                repetition_penalty: 1.1,
                frequency_penalty: 0.5,
                presence_penalty: 0.3,
                logit_bias: vec![(11, 5.0), (198, -100.0), (2, 1.5)],
                ..seeded.clone()
            },
            prompt,
            generated,
        ),
    ];

    let mut group = c.benchmark_group("sample_49152");
    for (name, params, prompt, generated) in configurations {
        let mut sampler = Sampler::new(params, VOCAB_SIZE, prompt).expect("valid parameters");
        for &token in generated {
            sampler.accept(token);
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                sampler
                    .sample(black_box(&logits))
                    .expect("logits are finite")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sample);
criterion_main!(benches);
