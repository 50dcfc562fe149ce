//! One decode step's attention for one query head over the KV cache, at SmolLM2-135M's shapes
//! (64-wide heads, 3 KV heads, 9 query heads), for several context lengths: the per-sequence
//! cost that batched decoding cannot share.
//!
//! `cargo bench -p smolgen-core --bench attention -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smolgen_core::cache::kv::HostKv;
use smolgen_core::engine::attention::{attend_head, Heads};

fn bench_attention(c: &mut Criterion) {
    let heads = Heads {
        query: 9,
        kv: 3,
        dim: 64,
    };
    let width = heads.kv * heads.dim;
    let mut seed = 1u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    for context in [80usize, 512, 2048] {
        let keys: Vec<f32> = (0..context * width).map(|_| next()).collect();
        let values: Vec<f32> = (0..context * width).map(|_| next()).collect();
        let q: Vec<f32> = (0..heads.query * heads.dim).map(|_| next()).collect();
        let kv = HostKv {
            keys: &keys,
            values: &values,
            width,
            stride: width,
        };
        let mut scratch = vec![0f32; context];
        let mut group = c.benchmark_group(format!("attend_head_{context}"));
        // Keys and values of one KV head, read once per query head.
        group.throughput(Throughput::Bytes((2 * context * heads.dim * 4) as u64));
        group.bench_function("all_query_heads", |b| {
            b.iter(|| {
                let mut sum = 0f32;
                for h in 0..heads.query {
                    attend_head(&q, kv, context - 1, 1, heads, h, &mut scratch, |_, y, _| {
                        sum += y[0];
                    });
                }
                black_box(sum)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
