//! For every weight type (`for_each_weight_type!`): every path against the scalar reference, the
//! scalar reference against ggml's definition in f64, our block decoding and quantization against
//! candle's (the K-quants' quantization against ggml's, in [`k_quants`]), and the 16-row kernels
//! against their scalar statements.

use std::borrow::Cow;

use half::f16;

use super::blocks::{blocks_as_bytes, cast_blocks, Block, QMatrix, QK};
use super::dispatch::{available_isas, kernel_path, Isa, Kernels};
use super::matmul::{Activation, QWeight};
use super::packed::{reference_matmul_packed, PackedMatrix, Repack};
use super::pool::Pool;
use super::types::{
    ActivationBlock, BlockBF16, BlockF16, BlockF32, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_1, FloatBlock,
    OffsetSuperblock, WeightBlock, WEIGHT_KINDS,
};

/// Calls `$check::<W>()` for every weight type, into an array of the results. A new type adds
/// itself here and implements [`Sample`].
macro_rules! for_each_weight_type {
    ($check:ident) => {
        [
            $check::<BlockQ4_0>(),
            $check::<BlockQ4_1>(),
            $check::<BlockQ5_0>(),
            $check::<BlockQ5_1>(),
            $check::<BlockQ8_0>(),
            $check::<BlockQ4K>(),
            $check::<BlockQ5K>(),
            $check::<BlockQ6K>(),
            $check::<BlockF16>(),
            $check::<BlockBF16>(),
            $check::<BlockF32>(),
            $check::<BlockQ2K>(),
            $check::<BlockQ3K>(),
        ]
    };
}

/// As [`for_each_weight_type`], for the types whose reference quantization candle's port gives
/// byte for byte (for the float types it is ggml's rounding of each value). The K-quants are
/// held to ggml's own bytes in [`k_quants`]: candle quantizes most of them with an older
/// algorithm.
macro_rules! for_each_reference_quantized_type {
    ($check:ident) => {
        [
            $check::<BlockQ4_0>(),
            $check::<BlockQ4_1>(),
            $check::<BlockQ5_0>(),
            $check::<BlockQ5_1>(),
            $check::<BlockQ8_0>(),
            $check::<BlockF16>(),
            $check::<BlockBF16>(),
            $check::<BlockF32>(),
        ]
    };
}

/// As [`for_each_weight_type`], for the types with a 16-row layout.
macro_rules! for_each_packed_type {
    ($check:ident) => {
        [
            $check::<BlockQ4_0>(),
            $check::<BlockQ4_1>(),
            $check::<BlockQ5_0>(),
            $check::<BlockQ5_1>(),
            $check::<BlockQ8_0>(),
            $check::<BlockF16>(),
            $check::<BlockBF16>(),
            $check::<BlockF32>(),
            $check::<BlockQ4K>(),
            $check::<BlockQ5K>(),
            $check::<BlockQ6K>(),
            $check::<BlockQ2K>(),
            $check::<BlockQ3K>(),
        ]
    };
}

/// What the tests need of a weight type beyond its definition.
trait Sample: WeightBlock {
    /// `n` random blocks; `extreme` mixes in zero, subnormal, huge and saturated blocks.
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self>;
    /// The sum of the absolute values of the terms the dot product adds in f32: what its
    /// rounding error scales with.
    fn magnitude(w: &[Self], a: &[Self::Activation]) -> f64;
}

impl Sample for BlockQ4_1 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        q4_1_blocks(rng, n, extreme)
    }
    fn magnitude(w: &[Self], a: &[BlockQ8_1]) -> f64 {
        abs_sum_q4_1(w, a)
    }
}

impl Sample for BlockQ4_0 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                match kind {
                    5 => BlockQ4_0::default(),
                    6 => BlockQ4_0::new(scale(rng, 7), [0x00; 16]), // every code -8
                    _ => {
                        let mut qs = [0u8; 16];
                        qs.iter_mut().for_each(|q| *q = rng.byte());
                        BlockQ4_0::new(scale(rng, kind), qs)
                    }
                }
            })
            .collect()
    }
    /// `sum_b |d_w d_a| sum_j |(q_w - 8) q_a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(x, y)| {
                let s: f64 = (0..QK)
                    .map(|j| ((x.q(j) as f64 - 8.0) * y.qs[j] as f64).abs())
                    .sum();
                (f(x.d()) * f(y.d())).abs() * s
            })
            .sum()
    }
}

impl Sample for BlockQ5_0 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                match kind {
                    5 => BlockQ5_0::default(),
                    6 => BlockQ5_0::new(scale(rng, 7), 0, [0x00; 16]), // every code -16
                    _ => {
                        let mut qs = [0u8; 16];
                        qs.iter_mut().for_each(|q| *q = rng.byte());
                        BlockQ5_0::new(scale(rng, kind), rng.u64() as u32, qs)
                    }
                }
            })
            .collect()
    }
    /// `sum_b |d_w d_a| sum_j |(q_w - 16) q_a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(x, y)| {
                let s: f64 = (0..QK)
                    .map(|j| ((x.q(j) as f64 - 16.0) * y.qs[j] as f64).abs())
                    .sum();
                (f(x.d()) * f(y.d())).abs() * s
            })
            .sum()
    }
}

impl Sample for BlockQ5_1 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(8) } else { 7 };
                match kind {
                    5 => BlockQ5_1::default(),
                    6 => BlockQ5_1::new(scale(rng, 7), scale(rng, 7), !0, [0xFF; 16]), // all 31
                    _ => {
                        let mut qs = [0u8; 16];
                        qs.iter_mut().for_each(|q| *q = rng.byte());
                        let mk = rng.below(8);
                        BlockQ5_1::new(scale(rng, kind), scale(rng, mk), rng.u64() as u32, qs)
                    }
                }
            })
            .collect()
    }
    /// `sum_b |d_w d_a| sum_j |q_w q_a| + |m_w s_a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_1]) -> f64 {
        w.iter()
            .zip(a)
            .map(|(x, y)| {
                let s: f64 = (0..QK)
                    .map(|j| (x.q(j) as f64 * y.qs[j] as f64).abs())
                    .sum();
                (f(x.d()) * f(y.d())).abs() * s + (f(x.m()) * f(y.s())).abs()
            })
            .sum()
    }
}

/// A random superblock's bytes, its scale fields set apart.
fn random_bytes<const N: usize>(rng: &mut Rng) -> [u8; N] {
    std::array::from_fn(|_| rng.byte())
}

/// Per sub-block of a K-quant with offsets `|d' d_a| sum_j |q_w q_a| + |m' s_a|`.
fn offset_superblock_magnitude<K: OffsetSuperblock>(w: &[K], a: &[BlockQ8_1]) -> f64 {
    w.iter()
        .zip(a.chunks_exact(8))
        .map(|(x, ys)| {
            (0..8)
                .map(|j| {
                    let (d1, m1) = x.sub_scales(j);
                    let y = &ys[j];
                    let s: f64 = (0..QK)
                        .map(|l| (x.code(j * QK + l) as f64 * y.qs[l] as f64).abs())
                        .sum();
                    (d1 as f64 * f(y.d())).abs() * s + (m1 as f64 * f(y.s())).abs()
                })
                .sum::<f64>()
        })
        .sum()
}

impl Sample for BlockQ4K {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                let min_kind = rng.below(8);
                let mut b = BlockQ4K {
                    d: scale(rng, kind).to_bits().to_le_bytes(),
                    dmin: scale(rng, min_kind).to_bits().to_le_bytes(),
                    scales: random_bytes(rng),
                    qs: random_bytes(rng),
                };
                match kind {
                    5 => b = BlockQ4K::default(),
                    6 => (b.scales, b.qs) = ([0xFF; 12], [0xFF; 128]), // every scale, min, code at most
                    _ => {}
                }
                b
            })
            .collect()
    }
    fn magnitude(w: &[Self], a: &[BlockQ8_1]) -> f64 {
        offset_superblock_magnitude(w, a)
    }
}

impl Sample for BlockQ5K {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        BlockQ4K::random(rng, n, extreme)
            .into_iter()
            .map(|b| BlockQ5K {
                d: b.d,
                dmin: b.dmin,
                scales: b.scales,
                qh: if b.qs == [0xFF; 128] {
                    [0xFF; 32]
                } else {
                    random_bytes(rng)
                },
                qs: b.qs,
            })
            .collect()
    }
    fn magnitude(w: &[Self], a: &[BlockQ8_1]) -> f64 {
        offset_superblock_magnitude(w, a)
    }
}

impl Sample for BlockQ6K {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                let mut b = BlockQ6K {
                    ql: random_bytes(rng),
                    qh: random_bytes(rng),
                    scales: random_bytes::<16>(rng).map(|v| v as i8),
                    d: scale(rng, kind).to_bits().to_le_bytes(),
                };
                match kind {
                    5 => b = BlockQ6K::default(),
                    6 => (b.ql, b.qh, b.scales) = ([0; 128], [0; 64], [i8::MIN; 16]), // every code -32
                    _ => {}
                }
                b
            })
            .collect()
    }
    /// Per activation block `|d d_a| sum_16 |sc| sum |(q - 32) q_a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(a.chunks_exact(8))
            .map(|(x, ys)| {
                (0..256)
                    .map(|e| {
                        let y = &ys[e / QK];
                        let t = (x.q(e) as f64 - 32.0) * y.qs[e % QK] as f64;
                        (f(x.d()) * f(y.d()) * x.scales[e / 16] as f64 * t).abs()
                    })
                    .sum::<f64>()
            })
            .sum()
    }
}

impl Sample for BlockQ3K {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                let mut b = BlockQ3K {
                    hmask: random_bytes(rng),
                    qs: random_bytes(rng),
                    scales: random_bytes(rng),
                    d: scale(rng, kind).to_bits().to_le_bytes(),
                };
                match kind {
                    5 => b = BlockQ3K::default(),
                    // Every code -4 and every scale -32: the largest products.
                    6 => (b.hmask, b.qs, b.scales) = ([0; 32], [0; 64], [0; 12]),
                    _ => {}
                }
                b
            })
            .collect()
    }
    /// Per element `|d sc q d_a a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(a.chunks_exact(8))
            .map(|(x, ys)| {
                let scales = x.scales();
                (0..256)
                    .map(|e| {
                        let y = &ys[e / QK];
                        let t = x.q(e) as f64 * y.qs[e % QK] as f64;
                        (f(x.d()) * f(y.d()) * scales[e / 16] as f64 * t).abs()
                    })
                    .sum::<f64>()
            })
            .sum()
    }
}

impl Sample for BlockQ2K {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        (0..n)
            .map(|_| {
                let kind = if extreme { rng.below(7) } else { 7 };
                let min_kind = rng.below(8);
                let mut b = BlockQ2K {
                    scales: random_bytes(rng),
                    qs: random_bytes(rng),
                    d: scale(rng, kind).to_bits().to_le_bytes(),
                    dmin: scale(rng, min_kind).to_bits().to_le_bytes(),
                };
                match kind {
                    5 => b = BlockQ2K::default(),
                    6 => (b.scales, b.qs) = ([0xFF; 16], [0xFF; 64]), // every scale, min, code at most
                    _ => {}
                }
                b
            })
            .collect()
    }
    /// Per element `|d sc q d_a a|`, plus per 16 `|dmin m d_a sum a|`.
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        w.iter()
            .zip(a.chunks_exact(8))
            .map(|(x, ys)| {
                (0..16)
                    .map(|s| {
                        let y = &ys[s / 2];
                        let codes = &y.qs[16 * (s % 2)..][..16];
                        let sc = x.scales[s];
                        let dot: f64 = (0..16)
                            .map(|l| (x.q(16 * s + l) as f64 * codes[l] as f64).abs())
                            .sum();
                        let sum: f64 = codes.iter().map(|&q| q as f64).sum();
                        (f(x.d()) * f(y.d()) * (sc & 0xF) as f64 * dot).abs()
                            + (f(x.dmin()) * f(y.d()) * (sc >> 4) as f64 * sum).abs()
                    })
                    .sum::<f64>()
            })
            .sum()
    }
}

impl Sample for BlockQ8_0 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        q8_0_blocks(rng, n, extreme)
    }
    fn magnitude(w: &[Self], a: &[BlockQ8_0]) -> f64 {
        abs_sum_q8_0(w, a)
    }
}

/// Float blocks: values around 0.05 or, with `extreme`, whole blocks of zeros, of subnormals
/// (`tiny`), of values near `huge`, and of every sign and magnitude at once, each rounded by
/// the type's own quantization.
fn float_blocks<W: WeightBlock>(
    rng: &mut Rng,
    n: usize,
    extreme: bool,
    tiny: f32,
    huge: f32,
) -> Vec<W> {
    (0..n)
        .map(|_| {
            let kind = if extreme { rng.below(5) } else { 4 };
            let x: Vec<f32> = (0..QK)
                .map(|j| match kind {
                    0 => 0.0,
                    1 => rng.unit() * tiny,
                    2 => rng.unit() * huge,
                    3 => [tiny, 1.0, huge, -0.0][j % 4] * rng.unit(),
                    _ => rng.unit() * 0.05,
                })
                .collect();
            W::quantize(&x)
        })
        .collect()
}

/// `sum |w_i x_i|` of a float dot.
fn float_magnitude<W: FloatBlock>(w: &[W], a: &[BlockF32]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            (0..QK)
                .map(|i| (x.value(i) as f64 * y.value(i) as f64).abs())
                .sum::<f64>()
        })
        .sum()
}

impl Sample for BlockF16 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        float_blocks(rng, n, extreme, 6e-8, 65504.0)
    }
    fn magnitude(w: &[Self], a: &[BlockF32]) -> f64 {
        float_magnitude(w, a)
    }
}

impl Sample for BlockBF16 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        float_blocks(rng, n, extreme, 1e-39, 1e20)
    }
    fn magnitude(w: &[Self], a: &[BlockF32]) -> f64 {
        float_magnitude(w, a)
    }
}

impl Sample for BlockF32 {
    fn random(rng: &mut Rng, n: usize, extreme: bool) -> Vec<Self> {
        float_blocks(rng, n, extreme, 1e-40, 1e20)
    }
    fn magnitude(w: &[Self], a: &[BlockF32]) -> f64 {
        float_magnitude(w, a)
    }
}

#[test]
fn every_weight_type_is_tested() {
    fn name<W: WeightBlock>() -> &'static str {
        W::NAME
    }
    let mut tested = for_each_weight_type!(name).to_vec();
    let mut registered: Vec<_> = WEIGHT_KINDS.iter().map(|k| k.name).collect();
    tested.sort();
    registered.sort();
    assert_eq!(tested, registered);
}

/// splitmix64: deterministic test data.
struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        ((self.u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn byte(&mut self) -> u8 {
        self.u64() as u8
    }
}

/// The scale regimes the brief asks for, one picked per block.
fn scale(rng: &mut Rng, kind: u64) -> f16 {
    match kind {
        0 => f16::ZERO,
        1 => f16::from_bits(1 + rng.below(0x3FF) as u16), // subnormal
        2 => f16::MAX,                                    // 65504
        3 => f16::from_f32(1e-7),                         // tiny (subnormal f16)
        _ => f16::from_f32(rng.unit() * 0.05),
    }
}

fn q4_1_blocks(rng: &mut Rng, n: usize, extreme: bool) -> Vec<BlockQ4_1> {
    (0..n)
        .map(|_| {
            let kind = if extreme { rng.below(8) } else { 7 };
            match kind {
                5 => BlockQ4_1::default(),                                     // all zero
                6 => BlockQ4_1::new(scale(rng, 7), scale(rng, 7), [0xFF; 16]), // all 15
                _ => {
                    let mut qs = [0u8; 16];
                    qs.iter_mut().for_each(|q| *q = rng.byte());
                    let mk = rng.below(8);
                    BlockQ4_1::new(scale(rng, kind), scale(rng, mk), qs)
                }
            }
        })
        .collect()
}

fn q8_0_blocks(rng: &mut Rng, n: usize, extreme: bool) -> Vec<BlockQ8_0> {
    (0..n)
        .map(|_| {
            let kind = if extreme { rng.below(7) } else { 7 };
            match kind {
                5 => BlockQ8_0::default(),
                6 => BlockQ8_0::new(scale(rng, 7), [i8::MIN; 32]),
                _ => {
                    let mut qs = [0i8; 32];
                    qs.iter_mut().for_each(|q| *q = rng.byte() as i8);
                    BlockQ8_0::new(scale(rng, kind), qs)
                }
            }
        })
        .collect()
}

/// Activation rows: normal-ish values, with some rows carrying one huge outlier, some all zero,
/// some tiny.
fn activations(rng: &mut Rng, n: usize, extreme: bool) -> Vec<f32> {
    let mut x: Vec<f32> = (0..n).map(|_| rng.unit() * 3.0).collect();
    if extreme {
        for blk in x.chunks_mut(QK) {
            match rng.below(6) {
                0 => blk[rng.below(QK as u64) as usize] = 3.0e4, // larger overflows the f16 s
                1 => blk.iter_mut().for_each(|v| *v = 0.0),
                2 => blk.iter_mut().for_each(|v| *v *= 1e-38), // subnormal f32 territory
                3 => blk.iter_mut().for_each(|v| *v *= 1e2),   // s = d * sum(q) stays a finite f16
                _ => {}
            }
        }
    }
    x
}

fn simd_isas() -> Vec<Kernels> {
    available_isas()
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .filter_map(Kernels::for_isa)
        .collect()
}

fn scalar() -> Kernels {
    Kernels::for_isa(Isa::Scalar).expect("scalar is always available")
}

fn f(b: f16) -> f64 {
    b.to_f64()
}

/// `sum_b |d_w d_a| sum_j |q_w q_a| + |m_w s_a|`: what the f32 rounding error scales with.
fn abs_sum_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            let s: f64 = (0..QK)
                .map(|j| (x.q(j) as f64 * y.qs[j] as f64).abs())
                .sum();
            (f(x.d()) * f(y.d())).abs() * s + (f(x.m()) * f(y.s())).abs()
        })
        .sum()
}

fn abs_sum_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f64 {
    w.iter()
        .zip(a)
        .map(|(x, y)| {
            let s: f64 = (0..QK)
                .map(|j| (x.qs[j] as f64 * y.qs[j] as f64).abs())
                .sum();
            (f(x.d()) * f(y.d())).abs() * s
        })
        .sum()
}

/// Allowed difference between two f32 evaluations of a sum of `nb` block terms in different
/// orders (and with FMA): a few ulps of the absolute sum per block, plus denormal slack.
fn tol(nb: usize, abs_sum: f64) -> f64 {
    (nb as f64 + 16.0) * 2.0 * f32::EPSILON as f64 * abs_sum + 1e-37
}

#[test]
fn cpu_is_described() {
    let name = Kernels::best().name();
    assert!(["scalar", "avx2+fma", "avx2+vnni", "avx512vnni", "neon"].contains(&name));
    assert!(Kernels::for_isa(Isa::Scalar).is_some());
    assert_eq!(available_isas().last().map(|i| i.name()), Some(name));
    // The engine's path is the best one unless SMOLGEN_KERNELS forces another this CPU has.
    let engine_path = kernel_path().expect("the environment's settings parse");
    assert!(available_isas().iter().any(|i| i.name() == engine_path));
    #[cfg(target_arch = "x86_64")]
    {
        assert!(Kernels::for_isa(Isa::Neon).is_none());
        let avx2 = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        assert_eq!(Kernels::for_isa(Isa::Avx2).is_some(), avx2);
        let avx_vnni = avx2 && is_x86_feature_detected!("avxvnni");
        assert_eq!(Kernels::for_isa(Isa::AvxVnni).is_some(), avx_vnni);
        let vnni = avx2
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni");
        assert_eq!(Kernels::for_isa(Isa::Avx512Vnni).is_some(), vnni);
    }
}

#[test]
fn blocks_cast_from_any_alignment() {
    let mut rng = Rng(1);
    let blocks = q4_1_blocks(&mut rng, 5, true);
    let bytes = blocks_as_bytes(&blocks).to_vec();
    for offset in 0..4 {
        let mut buf = vec![0xAAu8; offset];
        buf.extend_from_slice(&bytes);
        let view = cast_blocks::<BlockQ4_1>(&buf[offset..]).expect("whole blocks");
        assert_eq!(view, &blocks[..]);
        for (v, b) in view.iter().zip(&blocks) {
            assert_eq!(v.d().to_bits(), u16::from_le_bytes([b.d[0], b.d[1]]));
        }
    }
    assert!(cast_blocks::<BlockQ4_1>(&bytes[..bytes.len() - 1]).is_err());
    assert!(cast_blocks::<BlockQ8_0>(&[0u8; 33]).is_err());
    assert_eq!(
        cast_blocks::<BlockQ8_0>(&[0u8; 68]).map(|b| b.len()).ok(),
        Some(2)
    );
    assert_eq!(cast_blocks::<BlockQ8_1>(&[]).map(|b| b.len()).ok(), Some(0));

    assert!(QMatrix::new(&blocks, 5, 32).is_ok());
    assert!(QMatrix::new(&blocks, 5, 64).is_err(), "wrong block count");
    assert!(QMatrix::new(&blocks, 1, 160).is_ok());
    assert!(
        QMatrix::new(&blocks, 1, 150).is_err(),
        "cols not a multiple of 32"
    );
    assert!(QMatrix::new(&blocks, usize::MAX, 64).is_err(), "overflow");
    assert!(QMatrix::<BlockQ4_1>::from_bytes(&bytes, 5, 32).is_ok());

    // Element order: j < 16 is the low nibble of qs[j], j + 16 its high nibble.
    let b = BlockQ4_1::new(f16::ONE, f16::from_f32(-8.0), {
        let mut qs = [0u8; 16];
        qs[3] = 0x5A;
        qs
    });
    let mut out = [0f32; QK];
    b.dequantize(&mut out);
    assert_eq!(out[3], 10.0 - 8.0);
    assert_eq!(out[19], 5.0 - 8.0);
    assert_eq!(out[0], -8.0);
}

#[test]
fn quantize_known_answers() {
    // amax = 127 -> d = 1, id = 1: codes are x rounded half to even.
    let mut x = [0f32; QK];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = -0.5;
    x[5] = 1.49;
    let mut b1 = [BlockQ8_1::default()];
    let mut b0 = [BlockQ8_0::default()];
    for k in available_isas().into_iter().filter_map(Kernels::for_isa) {
        k.quantize(&x, &mut b1).expect("lengths");
        k.quantize(&x, &mut b0).expect("lengths");
        assert_eq!(&b1[0].qs[..6], &[127, 2, -2, 4, 0, 1], "{}", k.name());
        assert_eq!(b1[0].d(), f16::ONE);
        assert_eq!(b1[0].s(), f16::from_f32(132.0));
        assert_eq!(b0[0].qs, b1[0].qs);
        assert_eq!(b0[0].d, b1[0].d);
    }
    // All zero: d = 0, codes 0, s = 0.
    scalar().quantize(&[0.0; QK], &mut b1).expect("lengths");
    assert_eq!(b1[0], BlockQ8_1::default());
    // Length mismatches are errors, not panics.
    assert!(scalar().quantize(&x[..31], &mut b1).is_err());
    assert!(scalar().quantize(&[0.0; 64], &mut b0).is_err());
}

#[test]
fn quantize_simd_is_bit_exact_with_scalar() {
    let mut rng = Rng(2);
    let x = activations(&mut rng, 4096 * QK, true);
    let n = x.len() / QK;
    let mut r1 = vec![BlockQ8_1::default(); n];
    let mut r0 = vec![BlockQ8_0::default(); n];
    scalar().quantize(&x, &mut r1).expect("lengths");
    scalar().quantize(&x, &mut r0).expect("lengths");
    // Ties after scaling: 0.5 steps at d = 1.
    let mut ties: Vec<f32> = (0..QK).map(|j| j as f32 - 15.5).collect();
    ties[0] = 127.0;
    let mut t1 = [BlockQ8_1::default()];
    scalar().quantize(&ties, &mut t1).expect("lengths");
    for k in simd_isas() {
        let mut s1 = vec![BlockQ8_1::default(); n];
        let mut s0 = vec![BlockQ8_0::default(); n];
        k.quantize(&x, &mut s1).expect("lengths");
        k.quantize(&x, &mut s0).expect("lengths");
        assert!(s1 == r1, "{}: q8_1 differs from scalar", k.name());
        assert!(s0 == r0, "{}: q8_0 differs from scalar", k.name());
        let mut u1 = [BlockQ8_1::default()];
        k.quantize(&ties, &mut u1).expect("lengths");
        assert_eq!(u1, t1, "{}", k.name());
    }
}

#[test]
fn quantize_error_is_bounded() {
    // |x - q * d| <= d_f32 / 2 + 127 * |d_f16 - d_f32|, and s is d * sum(q) rounded to f16.
    let mut rng = Rng(3);
    let x = activations(&mut rng, 512 * QK, false);
    let mut b = vec![BlockQ8_1::default(); x.len() / QK];
    Kernels::best().quantize(&x, &mut b).expect("lengths");
    for (blk, xs) in b.iter().zip(x.chunks(QK)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
        let d32 = amax / 127.0;
        let d16 = f(blk.d());
        let bound = d32 / 2.0 + 127.0 * (d16 - d32).abs() + 1e-12;
        for (&q, &v) in blk.qs.iter().zip(xs) {
            assert!((v as f64 - q as f64 * d16).abs() <= bound * 1.0001);
        }
        let sum: i32 = blk.qs.iter().map(|&q| q as i32).sum();
        let s = (d32 * sum as f64) as f32;
        assert_eq!(blk.s(), f16::from_f32(s));
    }
}

/// `n_blocks` activation blocks of `A`, quantized on the scalar path.
fn quantized_acts<A: ActivationBlock>(rng: &mut Rng, n_blocks: usize, extreme: bool) -> Vec<A> {
    let x = activations(rng, n_blocks * A::ELEMENTS, extreme);
    let mut a = vec![A::default(); n_blocks];
    scalar().quantize(&x, &mut a).expect("lengths");
    a
}

fn quantized_acts_q8_1(rng: &mut Rng, n_blocks: usize, extreme: bool) -> Vec<BlockQ8_1> {
    let x = activations(rng, n_blocks * QK, extreme);
    let mut a = vec![BlockQ8_1::default(); n_blocks];
    scalar().quantize(&x, &mut a).expect("lengths");
    a
}

fn quantized_acts_q8_0(rng: &mut Rng, n_blocks: usize, extreme: bool) -> Vec<BlockQ8_0> {
    let x = activations(rng, n_blocks * QK, extreme);
    let mut a = vec![BlockQ8_0::default(); n_blocks];
    scalar().quantize(&x, &mut a).expect("lengths");
    a
}

fn vec_dot_paths_match<W: Sample>() {
    let mut rng = Rng(4);
    for nb in [1usize, 2, 3, 18, 48] {
        let k = nb * W::ELEMENTS;
        for trial in 0..40 {
            let extreme = trial % 2 == 1;
            let w = W::random(&mut rng, nb, extreme);
            let a = quantized_acts::<W::Activation>(&mut rng, k / QK, extreme);
            let want = W::reference_dot(&w, &a);
            let t = tol(a.len(), W::magnitude(&w, &a));
            for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
                let got = kern.vec_dot(&w, &a).expect("lengths");
                assert!(
                    ((got - want) as f64).abs() <= t,
                    "{} {} k={k}: {got} vs {want} (tol {t})",
                    kern.name(),
                    W::NAME
                );
            }
        }
    }
    let w = W::random(&mut rng, 2, false);
    let a = quantized_acts::<W::Activation>(&mut rng, 2 * W::ELEMENTS / QK + 1, false);
    assert!(Kernels::best().vec_dot(&w, &a).is_err());
    assert!(Kernels::best().vec_dot::<W>(&[], &[]).is_err());
}

#[test]
fn vec_dot_paths_match_scalar() {
    for_each_weight_type!(vec_dot_paths_match);
}

/// ggml's definition of a product: both sides dequantized, the dot in f64. The reference may
/// differ from it by f32 rounding, and by what a type's activation rounds (Q8_1's `s` is
/// `d * sum(q)` in f16: at most 2^-10 of the offset term), both bounded by the magnitude.
fn reference_dot_is_ggml_definition<W: Sample>() {
    let mut rng = Rng(15);
    for nb in [1usize, 18, 48] {
        let k = nb * W::ELEMENTS;
        for trial in 0..30 {
            let w = W::random(&mut rng, nb, trial % 2 == 1);
            let a = quantized_acts::<W::Activation>(&mut rng, k / QK, trial % 3 == 1);
            let got = W::reference_dot(&w, &a) as f64;
            let (mut wf, mut af) = (vec![0f32; k], vec![0f32; k]);
            for (blk, out) in w.iter().zip(wf.chunks_exact_mut(W::ELEMENTS)) {
                blk.dequantize(out);
            }
            for (blk, out) in a.iter().zip(af.chunks_exact_mut(W::Activation::ELEMENTS)) {
                activation_values(blk, out);
            }
            let want: f64 = wf.iter().zip(&af).map(|(&x, &y)| x as f64 * y as f64).sum();
            let abs: f64 = wf
                .iter()
                .zip(&af)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let m = W::magnitude(&w, &a);
            let t = tol(a.len(), m) + 2f64.powi(-9) * m + 4.0 * f32::EPSILON as f64 * abs;
            assert!(
                (got - want).abs() <= t,
                "{} k={k}: {got} vs {want}",
                W::NAME
            );
        }
    }
}

#[test]
fn reference_dots_are_ggml_definitions() {
    for_each_weight_type!(reference_dot_is_ggml_definition);
}

/// An activation block's values `d * q` (the partner types have no offset).
fn activation_values<A: ActivationBlock>(blk: &A, out: &mut [f32]) {
    let bytes = blocks_as_bytes(std::slice::from_ref(blk));
    if let Ok([b]) = cast_blocks::<BlockQ8_1>(bytes) {
        b.dequantize(out)
    } else if let Ok([b]) = cast_blocks::<BlockQ8_0>(bytes) {
        b.dequantize(out)
    } else if let Ok([b]) = cast_blocks::<BlockF32>(bytes) {
        out.iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = b.value(i))
    } else {
        panic!("no values for {} activations", A::NAME)
    }
}

/// Our reference quantization gives the bytes candle's (ggml's `quantize_row_*_ref`) gives.
fn quantization_is_ggml_reference<W: Sample>() {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let mut rng = Rng(16);
    let (rows, k) = (9usize, 256usize);
    let mut x = activations(&mut rng, rows * k, true);
    // Ties and constant blocks.
    x[..32]
        .iter_mut()
        .enumerate()
        .for_each(|(j, v)| *v = j as f32 * 0.5);
    x[32..64].iter_mut().for_each(|v| *v = 0.25);
    let dtype = crate::load::gguf::ggml_dtype(W::GGML_TYPE).expect("a ggml type");
    let t = Tensor::from_slice(&x, (rows, k), &Device::Cpu).expect("tensor");
    let theirs = QTensor::quantize(&t, dtype)
        .and_then(|q| q.data().map(|d| d.to_vec()))
        .expect("candle quantizes");
    let ours: Vec<W> = x.chunks_exact(W::ELEMENTS).map(W::quantize).collect();
    assert_eq!(blocks_as_bytes(&ours), &theirs[..], "{}", W::NAME);
}

#[test]
fn quantization_matches_ggml_reference() {
    for_each_reference_quantized_type!(quantization_is_ggml_reference);
}

#[test]
fn scalar_matches_f64_reference() {
    // Two references:
    // (1) the same formula in f64, sum_b d_w d_a sumi + m_w s_a: only f32 rounding differs;
    // (2) dequantize both sides and dot in f64. That also differs by m_w * (s_a - d_a sum(q_a)),
    //     because s is d * sum(q) rounded to f16 from the f32 d: at most 2^-10 relative plus the
    //     f16 subnormal step 2^-24, times |m_w|.
    let mut rng = Rng(5);
    for &k in &[32usize, 576, 1536] {
        let nb = k / QK;
        for trial in 0..30 {
            let w = q4_1_blocks(&mut rng, nb, trial % 2 == 1);
            let a = quantized_acts_q8_1(&mut rng, nb, trial % 3 == 1);
            let got = BlockQ4_1::reference_dot(&w, &a) as f64;
            let abs = abs_sum_q4_1(&w, &a);
            let formula: f64 = w
                .iter()
                .zip(&a)
                .map(|(x, y)| {
                    let sumi: f64 = (0..QK).map(|j| x.q(j) as f64 * y.qs[j] as f64).sum();
                    f(x.d()) * f(y.d()) * sumi + f(x.m()) * f(y.s())
                })
                .sum();
            assert!(
                (got - formula).abs() <= tol(nb, abs),
                "k={k}: {got} vs {formula}"
            );
            let mut dq = 0f64;
            let mut slack = 0f64;
            for (x, y) in w.iter().zip(&a) {
                let mut wf = [0f32; QK];
                x.dequantize(&mut wf);
                let sum_q: f64 = y.qs.iter().map(|&q| q as f64).sum();
                for (&wj, &qj) in wf.iter().zip(&y.qs) {
                    dq += wj as f64 * (qj as f64 * f(y.d()));
                }
                let exact_s = f(y.d()) * sum_q;
                slack += f(x.m()).abs()
                    * ((f(y.s()).abs() + exact_s.abs()) * 2f64.powi(-10) + 2f64.powi(-24));
                // The dequantized weight itself is q * d + m rounded to f32.
                slack += (0..QK)
                    .map(|j| (wf[j] as f64 * y.qs[j] as f64 * f(y.d())).abs())
                    .sum::<f64>()
                    * f32::EPSILON as f64;
            }
            assert!(
                (got - dq).abs() <= tol(nb, abs) + slack,
                "k={k}: {got} vs dequantized {dq} (slack {slack})"
            );
        }
    }
    // Q8_0: the formula is exact up to f32 rounding.
    for &k in &[32usize, 576] {
        let nb = k / QK;
        let w = q8_0_blocks(&mut rng, nb, true);
        let a = quantized_acts_q8_0(&mut rng, nb, true);
        let got = BlockQ8_0::reference_dot(&w, &a) as f64;
        let mut want = 0f64;
        for (x, y) in w.iter().zip(&a) {
            let mut wf = [0f32; QK];
            let mut af = [0f32; QK];
            x.dequantize(&mut wf);
            y.dequantize(&mut af);
            want += (0..QK).map(|j| wf[j] as f64 * af[j] as f64).sum::<f64>();
        }
        // Dequantizing rounds q * d to f32 on each side.
        let abs = abs_sum_q8_0(&w, &a);
        assert!((got - want).abs() <= tol(nb, abs) + 4.0 * f32::EPSILON as f64 * abs);
    }
}

/// The K-quant reference quantizers against ggml's.
mod k_quants;
/// All paths, several shapes: SIMD within tolerance of scalar; on each path the matmul is
/// bit-identical to its own vec_dot and across thread counts.
mod products;
