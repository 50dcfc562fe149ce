//! Attention over the KV cache at SmolLM2-135M's shapes (64-wide heads, 3 KV heads, 9 query
//! heads), for several context lengths and both cache formats: one decode step (every query
//! head of one position) and one prompt unit (16 rows of one KV group at the end of the
//! context), on one thread.
//!
//! `cargo bench -p smolgen-core --bench attention -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smolgen_core::cache::kv::{HostKv, KvCache, KvFormat};
use smolgen_core::engine::attention::{attend_unit, Heads, Unit, UnitScratch};

/// One position's attention, every query head, after the `kv.len() - 1` before it.
fn decode_step(kv: HostKv<'_>, heads: Heads, q: &[f32], scratch: &mut UnitScratch) -> f32 {
    let mut sum = 0f32;
    for group in 0..heads.kv {
        let unit = Unit {
            q,
            pos: kv.len() - 1,
            rows: (0, 1),
            group,
            heads,
        };
        attend_unit(&unit, kv, scratch, |_, _, y| sum += y[0]);
    }
    sum
}

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
    for context in [512usize, 2048, 6000] {
        let keys: Vec<f32> = (0..context * width).map(|_| next()).collect();
        let values: Vec<f32> = (0..context * width).map(|_| next()).collect();
        let rows = 16;
        let q: Vec<f32> = (0..rows * heads.query * heads.dim)
            .map(|_| next())
            .collect();
        for format in [KvFormat::F16, KvFormat::F32] {
            let mut cache = KvCache::with_format(1, 8192, format);
            cache
                .write_host_rows(0, (heads.kv, heads.dim), &keys, &values)
                .expect("fits");
            cache.advance(context);
            let kv = cache.host_layer(0, context).expect("rows");
            let mut scratch = UnitScratch::default();
            let mut group = c.benchmark_group(format!("attention_{}_{context}", format.name()));
            // Keys and values of every KV head, read once per step.
            group.throughput(Throughput::Bytes(
                (2 * context * width * format.bytes()) as u64,
            ));
            group.bench_function("decode_step", |b| {
                b.iter(|| black_box(decode_step(kv, heads, &q, &mut scratch)))
            });
            // Query-key pairs of 16 rows x 3 query heads of one group.
            group.throughput(Throughput::Elements((rows * 3 * context) as u64));
            group.bench_function("prompt_unit", |b| {
                b.iter(|| {
                    let mut sum = 0f32;
                    let unit = Unit {
                        q: &q,
                        pos: context - rows,
                        rows: (0, rows),
                        group: 1,
                        heads,
                    };
                    attend_unit(&unit, kv, &mut scratch, |_, _, y| sum += y[0]);
                    black_box(sum)
                })
            });
            group.finish();
        }
    }
    // A decode step's attention over 30 layers' caches (SmolLM2-135M's), too many to stay in
    // the CPU's caches: what one token costs once the history streams from memory.
    for context in [2048usize, 6000] {
        let layers: Vec<KvCache> = (0..30)
            .map(|_| {
                let keys: Vec<f32> = (0..context * width).map(|_| next()).collect();
                let mut cache = KvCache::with_format(1, 8192, KvFormat::F16);
                cache
                    .write_host_rows(0, (heads.kv, heads.dim), &keys, &keys)
                    .expect("fits");
                cache.advance(context);
                cache
            })
            .collect();
        let q: Vec<f32> = (0..heads.query * heads.dim).map(|_| next()).collect();
        let mut scratch = UnitScratch::default();
        let mut group = c.benchmark_group(format!("attention_f16_{context}_30_layers"));
        group.throughput(Throughput::Bytes((30 * 2 * context * width * 2) as u64));
        group.bench_function("decode_step", |b| {
            b.iter(|| {
                let mut sum = 0f32;
                for cache in &layers {
                    let kv = cache.host_layer(0, context).expect("rows");
                    sum += decode_step(kv, heads, &q, &mut scratch);
                }
                black_box(sum)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_attention);
criterion_main!(benches);
