//! Our quantized kernels against candle's `QMatMul::forward` on the same bytes, at SmolLM2-135M
//! shapes: the down projection (576 x 1536) and gate/up (1536 x 576) as decode matvecs, the
//! Q8_0 LM head (49152 x 576), and 512-token prefills through gate/up (Q4_1 and the float
//! types) and down (F32, and Q2_K and Q3_K, whose superblocks need its 1536-wide rows); the
//! SmolLM2-1.7B K-quant decode matvecs, and its down projection (2048 x 8192) in 512-token
//! prefills of F16, Q5_K and Q6_K, with Q8_0 there as the yardstick of the integer tiles. Both
//! sides take f32 activations and quantize them inside the timed call. Throughput is weight
//! bytes read per call; GFLOP/s is `2 * m * rows * cols / time`.
//!
//! `cargo bench -p smolgen-core --bench kernels -- --warm-up-time 1 --measurement-time 3`
//!
//! * `ours/<path>-x16/t<N>`: the same weights repacked 16 rows at a time (`PackedMatrix`), on
//!   paths with kernels for that layout.
//! * `ours/<path>/t<N>`: every instruction set this CPU has, for each thread count in
//!   `SMOLGEN_BENCH_THREADS` (default `1,2`). The scalar path is skipped for prefill (slow).
//! * `candle/t<N>`: candle's thread pool is process-wide and sized once from
//!   `CANDLE_NUM_THREADS`, so run the candle benchmarks once per thread count, in their own
//!   process (its workers spin between calls and would steal cores from ours), e.g.
//!   `CANDLE_NUM_THREADS=1 cargo bench ... -- candle`.

use std::borrow::Cow;
use std::hint::black_box;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{Device, Module, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use smolgen_core::kernels::{
    available_isas, Activation, BlockBF16, BlockF16, BlockF32, BlockQ2K, BlockQ3K, BlockQ4K,
    BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, Isa, Kernels,
    PackedMatrix, Pool, QWeight, WeightBlock, WeightKind,
};
use smolgen_core::load::gguf::ggml_dtype;

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

struct Case {
    name: &'static str,
    kind: &'static WeightKind,
    rows: usize,
    cols: usize,
    m: usize,
}

const CASES: [Case; 25] = [
    Case {
        name: "q4_1_matvec_576x1536",
        kind: <BlockQ4_1 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 1,
    },
    Case {
        name: "q4_1_matvec_1536x576",
        kind: <BlockQ4_1 as WeightBlock>::KIND,
        rows: 1536,
        cols: 576,
        m: 1,
    },
    Case {
        name: "q8_0_lm_head_49152x576",
        kind: <BlockQ8_0 as WeightBlock>::KIND,
        rows: 49152,
        cols: 576,
        m: 1,
    },
    Case {
        name: "q4_k_matvec_8192x2048",
        kind: <BlockQ4K as WeightBlock>::KIND,
        rows: 8192,
        cols: 2048,
        m: 1,
    },
    Case {
        name: "q2_k_matvec_8192x2048",
        kind: <BlockQ2K as WeightBlock>::KIND,
        rows: 8192,
        cols: 2048,
        m: 1,
    },
    Case {
        name: "q3_k_matvec_8192x2048",
        kind: <BlockQ3K as WeightBlock>::KIND,
        rows: 8192,
        cols: 2048,
        m: 1,
    },
    Case {
        name: "q6_k_matvec_2048x8192",
        kind: <BlockQ6K as WeightBlock>::KIND,
        rows: 2048,
        cols: 8192,
        m: 1,
    },
    Case {
        name: "q4_1_prompt_m16_1536x576",
        kind: <BlockQ4_1 as WeightBlock>::KIND,
        rows: 1536,
        cols: 576,
        m: 16,
    },
    Case {
        name: "q4_1_prefill_m512_1536x576",
        kind: <BlockQ4_1 as WeightBlock>::KIND,
        rows: 1536,
        cols: 576,
        m: 512,
    },
    Case {
        name: "f16_prefill_m512_1536x576",
        kind: <BlockF16 as WeightBlock>::KIND,
        rows: 1536,
        cols: 576,
        m: 512,
    },
    Case {
        name: "bf16_prefill_m512_1536x576",
        kind: <BlockBF16 as WeightBlock>::KIND,
        rows: 1536,
        cols: 576,
        m: 512,
    },
    Case {
        name: "f32_prefill_m512_576x1536",
        kind: <BlockF32 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "f16_prefill_m512_2048x8192",
        kind: <BlockF16 as WeightBlock>::KIND,
        rows: 2048,
        cols: 8192,
        m: 512,
    },
    Case {
        name: "q6_k_prefill_m512_2048x8192",
        kind: <BlockQ6K as WeightBlock>::KIND,
        rows: 2048,
        cols: 8192,
        m: 512,
    },
    Case {
        name: "q5_k_prefill_m512_2048x8192",
        kind: <BlockQ5K as WeightBlock>::KIND,
        rows: 2048,
        cols: 8192,
        m: 512,
    },
    Case {
        name: "q8_0_prefill_m512_2048x8192",
        kind: <BlockQ8_0 as WeightBlock>::KIND,
        rows: 2048,
        cols: 8192,
        m: 512,
    },
    Case {
        name: "q8_0_prefill_m512_576x1536",
        kind: <BlockQ8_0 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q4_0_prefill_m512_576x1536",
        kind: <BlockQ4_0 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q5_0_prefill_m512_576x1536",
        kind: <BlockQ5_0 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q5_1_prefill_m512_576x1536",
        kind: <BlockQ5_1 as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q4_k_prefill_m512_576x1536",
        kind: <BlockQ4K as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q5_k_prefill_m512_576x1536",
        kind: <BlockQ5K as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q6_k_prefill_m512_576x1536",
        kind: <BlockQ6K as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q2_k_prefill_m512_576x1536",
        kind: <BlockQ2K as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
    Case {
        name: "q3_k_prefill_m512_576x1536",
        kind: <BlockQ3K as WeightBlock>::KIND,
        rows: 576,
        cols: 1536,
        m: 512,
    },
];

/// Weights like a real checkpoint's (values of std ~0.02), quantized as ggml would.
fn weight_bytes(rng: &mut Rng, kind: &WeightKind, n: usize) -> Vec<u8> {
    let x: Vec<f32> = (0..n).map(|_| rng.unit() * 0.035).collect();
    kind.quantize(&x).expect("whole blocks")
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
        let bytes = weight_bytes(&mut rng, case.kind, case.rows * case.cols);
        let w = QWeight::from_bytes(case.kind, &bytes, case.rows, case.cols).expect("shape");
        let packed = PackedMatrix::repack(&w).expect("repack");
        let x: Vec<f32> = (0..case.m * case.cols).map(|_| rng.unit() * 2.0).collect();
        let mut out = vec![0f32; case.m * case.rows];
        let mut act = Activation::default();

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
            let mut weights = vec![(w, format!("ours/{}", isa.name()))];
            if let Some(p) = packed.as_ref().filter(|_| kern.packs(case.kind)) {
                weights.push((p.weight(), format!("ours/{}-x16", isa.name())));
            }
            for pool in &pools {
                for (w, name) in &weights {
                    group.bench_function(format!("{name}/t{}", pool.threads()), |b| {
                        b.iter(|| {
                            kern.quantize_activation(black_box(&x), case.cols, &[*w], &mut act)
                                .expect("quantize");
                            kern.matmul_many(pool, &act, &mut [(*w, &mut out[..])])
                                .expect("matmul")
                        })
                    });
                }
            }
        }

        // candle where it takes the type (not BF16).
        let candle = ggml_dtype(case.kind.ggml_type).and_then(|dtype| {
            QStorage::from_data(Cow::Borrowed(&bytes), &Device::Cpu, dtype)
                .and_then(|storage| QTensor::new(storage, (case.rows, case.cols)))
                .and_then(QMatMul::from_qtensor)
                .ok()
        });
        if let Some(mm) = candle {
            let xt = Tensor::from_slice(&x, (case.m, case.cols), &Device::Cpu).expect("tensor");
            group.bench_function(format!("candle/t{candle_threads}"), |b| {
                b.iter(|| mm.forward(black_box(&xt)).expect("forward"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_kernels);
criterion_main!(benches);
