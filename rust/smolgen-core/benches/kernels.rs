//! Our quantized kernels against candle's `QMatMul::forward` on the same bytes, at SmolLM2-135M
//! shapes: the down projection (576 x 1536) and gate/up (1536 x 576) as decode matvecs, the
//! Q8_0 LM head (49152 x 576), and a 512-token prefill through gate/up. Both sides take f32
//! activations and quantize them inside the timed call. Throughput is weight bytes read per
//! call; GFLOP/s is `2 * m * rows * cols / time`.
//!
//! `cargo bench -p smolgen-core --bench kernels -- --warm-up-time 1 --measurement-time 3`
//!
//! * `ours/<path>-x16/t<N>`: the same weights repacked 16 rows at a time (`PackedQ4_1`,
//!   `PackedQ8_0`), on paths with kernels for that layout.
//! * `ours/<path>/t<N>`: every instruction set this CPU has, for each thread count in
//!   `SMOLGEN_BENCH_THREADS` (default `1,2`). The scalar path is skipped for prefill (slow).
//! * `candle/t<N>`: candle's thread pool is process-wide and sized once from
//!   `CANDLE_NUM_THREADS`, so run the candle benchmarks once per thread count, in their own
//!   process (its workers spin between calls and would steal cores from ours), e.g.
//!   `CANDLE_NUM_THREADS=1 cargo bench ... -- candle`.

use std::borrow::Cow;
use std::hint::black_box;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use smolgen_core::kernels::blocks::blocks_as_bytes;
use smolgen_core::kernels::{
    available_isas, BlockQ4_1, BlockQ8_0, BlockQ8_1, Isa, Kernels, PackedQ4_1, PackedQ8_0, Pool,
    QMatrix, QK,
};

/// splitmix64: the inputs never change between runs.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Q4_1,
    Q8_0,
}

struct Case {
    name: &'static str,
    kind: Kind,
    rows: usize,
    cols: usize,
    m: usize,
}

const CASES: [Case; 5] = [
    Case {
        name: "q4_1_matvec_576x1536",
        kind: Kind::Q4_1,
        rows: 576,
        cols: 1536,
        m: 1,
    },
    Case {
        name: "q4_1_matvec_1536x576",
        kind: Kind::Q4_1,
        rows: 1536,
        cols: 576,
        m: 1,
    },
    Case {
        name: "q8_0_lm_head_49152x576",
        kind: Kind::Q8_0,
        rows: 49152,
        cols: 576,
        m: 1,
    },
    Case {
        name: "q4_1_prompt_m16_1536x576",
        kind: Kind::Q4_1,
        rows: 1536,
        cols: 576,
        m: 16,
    },
    Case {
        name: "q4_1_prefill_m512_1536x576",
        kind: Kind::Q4_1,
        rows: 1536,
        cols: 576,
        m: 512,
    },
];

/// Weight bytes shaped like a real checkpoint's: small scales, offsets around -8 d.
fn weight_bytes(rng: &mut Rng, kind: Kind, n_blocks: usize) -> Vec<u8> {
    match kind {
        Kind::Q4_1 => {
            let blocks: Vec<BlockQ4_1> = (0..n_blocks)
                .map(|_| {
                    let d = 0.002 + 0.01 * rng.unit().abs();
                    let mut qs = [0u8; 16];
                    qs.iter_mut().for_each(|q| *q = rng.u64() as u8);
                    BlockQ4_1::new(f16::from_f32(d), f16::from_f32(-8.0 * d), qs)
                })
                .collect();
            blocks_as_bytes(&blocks).to_vec()
        }
        Kind::Q8_0 => {
            let blocks: Vec<BlockQ8_0> = (0..n_blocks)
                .map(|_| {
                    let mut qs = [0i8; 32];
                    qs.iter_mut().for_each(|q| *q = (rng.u64() % 255) as i8);
                    BlockQ8_0::new(f16::from_f32(0.0005 + 0.001 * rng.unit().abs()), qs)
                })
                .collect();
            blocks_as_bytes(&blocks).to_vec()
        }
    }
}

fn thread_counts() -> Vec<usize> {
    std::env::var("SMOLGEN_BENCH_THREADS")
        .ok()
        .map(|s| s.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

fn bench_kernels(c: &mut Criterion) {
    let pools: Vec<Pool> = thread_counts()
        .into_iter()
        .map(|n| Pool::new(n).expect("kernel threads"))
        .collect();
    let candle_threads = std::env::var("CANDLE_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let mut rng = Rng(2024);
    for case in &CASES {
        let n_blocks = case.rows * case.cols / QK;
        let bytes = weight_bytes(&mut rng, case.kind, n_blocks);
        let x: Vec<f32> = (0..case.m * case.cols).map(|_| rng.unit() * 2.0).collect();
        let mut out = vec![0f32; case.m * case.rows];

        let mut group = c.benchmark_group(case.name);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        if case.m > 1 || case.rows > 10_000 {
            group.sample_size(20);
        }
        for isa in available_isas() {
            if isa == Isa::Scalar && case.m > 1 {
                continue;
            }
            let kern = Kernels::for_isa(isa).expect("available");
            for pool in &pools {
                let id = format!("ours/{}/t{}", isa.name(), pool.threads());
                match case.kind {
                    Kind::Q4_1 => {
                        let w = QMatrix::<BlockQ4_1>::from_bytes(&bytes, case.rows, case.cols)
                            .expect("shape");
                        group.bench_function(&id, |b| {
                            b.iter(|| {
                                kern.matmul_f32(pool, &w, black_box(&x), &mut out)
                                    .expect("matmul")
                            })
                        });
                        if kern.packs_weights() {
                            let packed = PackedQ4_1::pack(&w);
                            let mut a = vec![BlockQ8_1::default(); x.len() / QK];
                            let id = format!("ours/{}-x16/t{}", isa.name(), pool.threads());
                            group.bench_function(&id, |b| {
                                b.iter(|| {
                                    kern.quantize(black_box(&x), &mut a).expect("quantize");
                                    kern.matmul_packed(pool, &packed, &a, &mut out)
                                        .expect("matmul")
                                })
                            });
                        }
                    }
                    Kind::Q8_0 => {
                        let w = QMatrix::<BlockQ8_0>::from_bytes(&bytes, case.rows, case.cols)
                            .expect("shape");
                        group.bench_function(&id, |b| {
                            b.iter(|| {
                                kern.matmul_f32(pool, &w, black_box(&x), &mut out)
                                    .expect("matmul")
                            })
                        });
                        if kern.packs_weights() {
                            let packed = PackedQ8_0::pack(&w);
                            let mut a = vec![BlockQ8_0::default(); x.len() / QK];
                            let id = format!("ours/{}-x16/t{}", isa.name(), pool.threads());
                            group.bench_function(&id, |b| {
                                b.iter(|| {
                                    kern.quantize(black_box(&x), &mut a).expect("quantize");
                                    kern.matmul_packed(pool, &packed, &a, &mut out)
                                        .expect("matmul")
                                })
                            });
                        }
                    }
                }
            }
        }

        let dtype = match case.kind {
            Kind::Q4_1 => GgmlDType::Q4_1,
            Kind::Q8_0 => GgmlDType::Q8_0,
        };
        let storage =
            QStorage::from_data(Cow::Borrowed(&bytes), &Device::Cpu, dtype).expect("storage");
        let qt = QTensor::new(storage, (case.rows, case.cols)).expect("qtensor");
        let mm = QMatMul::from_qtensor(qt).expect("qmatmul");
        let xt = Tensor::from_slice(&x, (case.m, case.cols), &Device::Cpu).expect("tensor");
        group.bench_function(format!("candle/t{candle_threads}"), |b| {
            b.iter(|| mm.forward(black_box(&xt)).expect("forward"))
        });
        group.finish();
    }
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
