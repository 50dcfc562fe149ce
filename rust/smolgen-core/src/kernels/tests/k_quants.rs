//! The K-quant reference quantizers against ggml's `quantize_row_q{2,3,4,5,6}_K_ref`: digests of
//! the bytes ggml's C gives on fixed inputs, candle's port where it runs the same algorithm, and
//! a bound on the round trip.

use half::f16;

use super::Rng;
use crate::kernels::blocks::blocks_as_bytes;
use crate::kernels::types::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, WeightBlock, QK_K};

/// The kinds of superblock the inputs mix, each `BLOCKS_PER_CASE` superblocks in a row.
const CASES: [&str; 13] = [
    "normal", "scaled", "outlier", "zero", "equal", "negative", "positive", "tiny", "near_eps",
    "sparse", "groups", "ties", "huge",
];
const BLOCKS_PER_CASE: usize = 64;

/// `2^k`, exactly (no libm: the inputs are the same bits on every platform).
fn pow2(k: i32) -> f32 {
    f32::from_bits(((127 + k) as u32) << 23)
}

/// A scale spread over `2^lo..2^hi`.
fn spread(rng: &mut Rng, lo: i32, hi: i32) -> f32 {
    (1.0 + 0.5 * (rng.unit() + 1.0)) * pow2(lo + rng.below((hi - lo) as u64) as i32)
}

/// Roughly normal values (the sum of four uniforms, exact in f32).
fn normal(rng: &mut Rng) -> f32 {
    (rng.unit() + rng.unit() + rng.unit() + rng.unit()) * 0.866
}

/// One superblock of case `case` (an index into [`CASES`]).
fn superblock(rng: &mut Rng, case: usize) -> [f32; QK_K] {
    let mut x: [f32; QK_K] = std::array::from_fn(|_| normal(rng));
    match CASES[case] {
        "normal" => {}
        // 1e-3 .. 1e4.
        "scaled" => {
            let s = spread(rng, -10, 13);
            x.iter_mut().for_each(|v| *v *= s);
        }
        "outlier" => {
            let i = rng.below(QK_K as u64) as usize;
            x[i] = spread(rng, 4, 14) * if rng.below(2) == 0 { 1.0 } else { -1.0 };
        }
        "zero" => x = [0.0; QK_K],
        "equal" => x = [normal(rng) * spread(rng, -10, 13); QK_K],
        "negative" | "positive" => {
            let s = spread(rng, -10, 13) * if CASES[case] == "negative" { -1.0 } else { 1.0 };
            x.iter_mut().for_each(|v| *v = v.abs() * s);
        }
        // About 1e-20, far below the all-zero threshold.
        "tiny" => x.iter_mut().for_each(|v| *v *= pow2(-66)),
        // Around the 1e-15 threshold, where the searches' sums of x^3 underflow.
        "near_eps" => {
            let s = spread(rng, -54, -44);
            x.iter_mut().for_each(|v| *v *= s);
        }
        // Mostly zero: whole groups of 16 or 32 are zero inside a nonzero superblock.
        "sparse" => x.iter_mut().for_each(|v| {
            if rng.below(24) != 0 {
                *v = 0.0
            }
        }),
        // Each group of 16 its own magnitude: scales that round to 0 in 6 bits.
        "groups" => {
            for g in x.chunks_mut(16) {
                let s = spread(rng, -20, 2);
                g.iter_mut().for_each(|v| *v *= s);
            }
        }
        // Quarter steps: many values fall halfway between codes.
        "ties" => x
            .iter_mut()
            .for_each(|v| *v = (rng.below(33) as f32 - 16.0) * 0.25),
        // 1e5 .. 1e7: the f16 scales overflow to infinity.
        "huge" => {
            let s = spread(rng, 17, 23);
            x.iter_mut().for_each(|v| *v *= s);
        }
        other => unreachable!("{other}"),
    }
    x
}

/// The inputs: `BLOCKS_PER_CASE` superblocks of each case in [`CASES`] order.
fn inputs() -> Vec<f32> {
    let mut rng = Rng(0x4B51);
    (0..CASES.len())
        .flat_map(|case| (0..BLOCKS_PER_CASE).map(move |_| case))
        .flat_map(|case| superblock(&mut rng, case))
        .collect()
}

/// ggml's bytes for each case of [`inputs`], as FNV-1a digests: `quantize_row_q*_K_ref` of the
/// C source, built without FMA contraction, run on the file [`write_known_answer_inputs`]
/// writes.
#[rustfmt::skip]
const GGML_DIGESTS: [(&str, [u64; CASES.len()]); 5] = [
    ("q2_K", [
        0x2c5e153f6e1c2ac0, 0x7a29324f8f533b03, 0x71d7b1b5bf7c528a, 0x437aec553acb4725,
        0x093e04b757cc1676, 0x888b2efa75be508f, 0x14320a45360dba32, 0x3b487bbe1976340a,
        0xb21e8e07cc5d7f49, 0x5760f5bc91e8e0d9, 0x356834a7b5b2c0c7, 0xc6517b6946385cc6,
        0x9416a96fd317a7a3,
    ]),
    ("q3_K", [
        0x04cd72c6bb0d8617, 0x325de1cffbc4fb9f, 0xd20899e435bccf64, 0x73bfa41308278925,
        0xe798309fc81f0f96, 0x1eb4a1798c7bf745, 0x1b273d300a679cdf, 0x73bfa41308278925,
        0x7cd36f493a9817e3, 0x335db533f9bd24e4, 0xfe7d86c02efe6356, 0x86fbc6936f85dd3f,
        0x284bc35f3d8a7447,
    ]),
    ("q4_K", [
        0x50c57e8383969bad, 0x9151a4087dbc4089, 0x4388ec78837adc96, 0xf3fb6a6deb5af325,
        0xc16c13ab373edc1c, 0xa887afcb7f987460, 0xc0441c57a6391e77, 0xad5be76761cec300,
        0x504860ec482d0524, 0xcf3b51d356a7029c, 0x8a4dfa3d87e354ee, 0xd324f4a355060484,
        0x858fa14a24dabf7a,
    ]),
    ("q5_K", [
        0xde6c87f36b492e2e, 0x68f0e6f38454129d, 0xa192140402d7892f, 0x431e45c7e0679325,
        0x44ef4bcf3c8a4cf0, 0x55539707836d8fc0, 0x90ba6611fc323923, 0xcb9e7ace658bcaf9,
        0x4ebb571b439e2db8, 0x3baf6da31d302a91, 0x29918d8e3b1a2a7d, 0xfa2a480a15ee0be4,
        0xee61521ad664a639,
    ]),
    ("q6_K", [
        0x5181df3a7ab9ae3b, 0xee91a9ada1ed026a, 0x0a4347b8f606b705, 0x5559316b9deefd25,
        0x6092d78ad09cf725, 0x35fa6caf22f8ae1b, 0x14336e88e5bdbdd7, 0x5559316b9deefd25,
        0xef88cacadca4f932, 0xb1bc8524ac97c824, 0xb945f6340dea07d6, 0x596f42fd484baf0d,
        0xb07ebf1755d4c025,
    ]),
];

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn quantize<W: WeightBlock>(x: &[f32]) -> Vec<W> {
    x.chunks_exact(QK_K).map(W::quantize).collect()
}

/// The digest of each case's bytes.
fn case_digests<W: WeightBlock>(x: &[f32]) -> Vec<u64> {
    let q = quantize::<W>(x);
    q.chunks(BLOCKS_PER_CASE)
        .map(|c| fnv1a(blocks_as_bytes(c)))
        .collect()
}

#[test]
fn k_quants_are_ggml_reference() {
    fn check<W: WeightBlock>(x: &[f32]) -> Vec<String> {
        let want = GGML_DIGESTS
            .iter()
            .find(|(name, _)| *name == W::NAME)
            .map(|(_, d)| d)
            .expect("a digest row");
        case_digests::<W>(x)
            .iter()
            .zip(want)
            .zip(CASES)
            .filter(|((got, want), _)| got != want)
            .map(|(_, case)| format!("{} {case}", W::NAME))
            .collect()
    }
    let x = inputs();
    let wrong: Vec<String> = [
        check::<BlockQ2K>(&x),
        check::<BlockQ3K>(&x),
        check::<BlockQ4K>(&x),
        check::<BlockQ5K>(&x),
        check::<BlockQ6K>(&x),
    ]
    .concat();
    assert!(wrong.is_empty(), "bytes differ from ggml's: {wrong:?}");
}

/// `blk` with the codes of sub-blocks whose scale `d * sc` is 0 cleared: they decode to 0
/// whatever they are.
fn mask_unscaled_codes(blk: &mut BlockQ3K) {
    let (d, scales) = (blk.d().to_f32(), blk.scales());
    for e in (0..QK_K).filter(|e| d * scales[e / 16] as f32 == 0.0) {
        let (half, j, l) = (e / 128, (e % 128) / 32, e % 32);
        blk.qs[32 * half + l] &= !(3 << (2 * j));
        blk.hmask[l] &= !(1 << (4 * half + j));
    }
}

/// Q3_K against candle's port, the one K-quant candle still quantizes with ggml's algorithm (its
/// Q2_K, Q4_K and Q5_K run the older `make_qkx1_quants` fit, its Q6_K the older
/// `make_qx_quants` refinement, so their bytes differ from ggml's almost everywhere). Where the
/// port itself departs from ggml, the comparison leaves the difference out:
/// - candle rounds halves away from zero, ggml to even: the "ties" case is skipped;
/// - candle treats a group as zero only when its largest magnitude is exactly 0, ggml below
///   1e-15: superblocks with a group in between are skipped;
/// - where a sub-block's scale `d * sc` is 0, ggml keeps the search's codes and candle writes
///   zeros: both decode to 0, so those codes are masked out on both sides.
#[test]
fn q3_k_matches_candle() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    let x = inputs();
    let ours = quantize::<BlockQ3K>(&x);
    let t = Tensor::from_slice(&x, (x.len() / QK_K, QK_K), &Device::Cpu).expect("tensor");
    let theirs = QTensor::quantize(&t, GgmlDType::Q3K)
        .and_then(|q| q.data().map(|d| d.to_vec()))
        .expect("candle quantizes");
    let theirs = crate::kernels::blocks::cast_blocks::<BlockQ3K>(&theirs).expect("blocks");
    for (b, (a, c)) in ours.iter().zip(theirs).enumerate() {
        let case = CASES[b / BLOCKS_PER_CASE];
        let below_eps = x[b * QK_K..(b + 1) * QK_K].chunks(16).any(|g| {
            let amax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            amax > 0.0 && amax < 1e-15
        });
        if case == "ties" || below_eps {
            continue;
        }
        let (mut a, mut c) = (*a, *c);
        mask_unscaled_codes(&mut a);
        mask_unscaled_codes(&mut c);
        assert_eq!(a, c, "block {b} ({case})");
    }
}

/// Writes [`inputs`] as raw little-endian f32 to the file named by `SMOLGEN_KQUANT_INPUTS`, for
/// regenerating the digests of [`GGML_DIGESTS`] with ggml's C.
#[test]
#[ignore = "writes the known-answer inputs to a file"]
fn write_known_answer_inputs() {
    let path = std::env::var("SMOLGEN_KQUANT_INPUTS").expect("SMOLGEN_KQUANT_INPUTS");
    let bytes: Vec<u8> = inputs().iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).expect("written");
}

/// Our digests of [`inputs`], for [`GGML_DIGESTS`] once [`matches_blocks_from_file`] has shown
/// the bytes equal to ggml's.
#[test]
#[ignore = "prints digests"]
fn print_digests() {
    let x = inputs();
    println!("q2_K {:#018x?}", case_digests::<BlockQ2K>(&x));
    println!("q3_K {:#018x?}", case_digests::<BlockQ3K>(&x));
    println!("q4_K {:#018x?}", case_digests::<BlockQ4K>(&x));
    println!("q5_K {:#018x?}", case_digests::<BlockQ5K>(&x));
    println!("q6_K {:#018x?}", case_digests::<BlockQ6K>(&x));
}

/// Quantizes the raw f32 in `SMOLGEN_KQUANT_F32` to `SMOLGEN_KQUANT_TYPE` and compares each
/// block with the raw blocks in `SMOLGEN_KQUANT_BLOCKS` (e.g. ggml's C on the same values, or a
/// tensor of a file `llama-quantize` wrote).
#[test]
#[ignore = "compares with blocks from a file"]
fn matches_blocks_from_file() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name}"));
    let raw = std::fs::read(var("SMOLGEN_KQUANT_F32")).expect("f32 file");
    let x: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let theirs = std::fs::read(var("SMOLGEN_KQUANT_BLOCKS")).expect("blocks file");
    let kind =
        crate::kernels::types::WeightKind::by_name(&var("SMOLGEN_KQUANT_TYPE")).expect("a type");
    let ours = kind.quantize(&x).expect("whole blocks");
    assert_eq!(ours.len(), theirs.len(), "block counts differ");
    let n = ours.len() / kind.block_bytes;
    let differ: Vec<usize> = (0..n)
        .filter(|&b| {
            let r = b * kind.block_bytes..(b + 1) * kind.block_bytes;
            ours[r.clone()] != theirs[r]
        })
        .collect();
    println!(
        "{}: {} of {n} blocks equal; first differing: {:?}",
        kind.name,
        n - differ.len(),
        &differ[..differ.len().min(10)]
    );
    assert!(differ.is_empty());
}

/// The f16 scales of a superblock: `d`, and `dmin` for the types with offsets.
trait Scales: WeightBlock {
    fn scales(&self) -> Vec<f16>;
}
impl Scales for BlockQ2K {
    fn scales(&self) -> Vec<f16> {
        vec![self.d(), self.dmin()]
    }
}
impl Scales for BlockQ3K {
    fn scales(&self) -> Vec<f16> {
        vec![self.d()]
    }
}
impl Scales for BlockQ4K {
    fn scales(&self) -> Vec<f16> {
        vec![self.d(), self.dmin()]
    }
}
impl Scales for BlockQ5K {
    fn scales(&self) -> Vec<f16> {
        vec![self.d(), self.dmin()]
    }
}
impl Scales for BlockQ6K {
    fn scales(&self) -> Vec<f16> {
        vec![self.d()]
    }
}

/// The round trip of every superblock whose `d` is a normal f16 (and `dmin` normal or 0): each
/// value within `max_err` of the block's largest magnitude, and the whole error, in root mean
/// square, within `rms_err` of the values'. A subnormal (or infinite) scale is ggml's own loss
/// of range; all-zero blocks come back as zeros.
fn round_trip_is_bounded<W: Scales>(x: &[f32], max_err: f64, rms_err: f64) {
    let q = quantize::<W>(x);
    let (mut checked, mut err2, mut x2) = (0, 0f64, 0f64);
    for (blk, xs) in q.iter().zip(x.chunks_exact(QK_K)) {
        let mut out = [0f32; QK_K];
        blk.dequantize(&mut out);
        if xs.iter().all(|&v| v == 0.0) {
            assert!(out.iter().all(|&v| v == 0.0), "{}: zeros", W::NAME);
        }
        let s = blk.scales();
        if !s[0].is_normal() || s[1..].iter().any(|m| !m.is_normal() && *m != f16::ZERO) {
            continue;
        }
        checked += 1;
        let amax = xs.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        for (&v, &o) in xs.iter().zip(&out) {
            let e = (v as f64 - o as f64).abs();
            assert!(
                e <= max_err * amax,
                "{}: {v} came back {o} (largest {amax})",
                W::NAME
            );
            err2 += e * e;
            x2 += v as f64 * v as f64;
        }
    }
    let rms = (err2 / x2).sqrt();
    println!(
        "{}: {checked} blocks, error {rms:.4} of the values (rms)",
        W::NAME
    );
    assert!(rms <= rms_err, "{}: rms error {rms}", W::NAME);
    // The cases with normal scales make up most of the inputs.
    assert!(
        checked * 2 > q.len(),
        "{}: only {checked} blocks checked",
        W::NAME
    );
}

#[test]
fn k_quant_round_trip_is_bounded() {
    // Bounds a little above the worst seen (the rms about 15% above): roughly a code step of the block's largest group
    // (codes clamp at the range's ends), plus the rounding of the scales.
    let x = inputs();
    round_trip_is_bounded::<BlockQ2K>(&x, 0.6, 0.32);
    round_trip_is_bounded::<BlockQ3K>(&x, 0.35, 0.17);
    round_trip_is_bounded::<BlockQ4K>(&x, 0.11, 0.08);
    round_trip_is_bounded::<BlockQ5K>(&x, 0.08, 0.04);
    round_trip_is_bounded::<BlockQ6K>(&x, 0.035, 0.021);
}

/// Quantizing 10M values to Q4_K: ours, candle a superblock at a time (what the K-quants used
/// before), and candle on the whole tensor (its older, cheaper algorithm).
#[test]
#[ignore = "times quantization"]
fn q4_k_quantize_speed() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use std::time::Instant;
    let mut rng = Rng(99);
    let blocks = 10_000_000usize.div_ceil(QK_K);
    let x: Vec<f32> = (0..blocks * QK_K).map(|_| normal(&mut rng)).collect();
    let t = Instant::now();
    let ours = quantize::<BlockQ4K>(&x);
    println!("ours: {:?}", t.elapsed());
    let t = Instant::now();
    for xs in x.chunks_exact(QK_K) {
        let one = Tensor::from_slice(xs, (1, QK_K), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&one, GgmlDType::Q4K).expect("quantized");
        std::hint::black_box(q);
    }
    println!("candle, a superblock at a time: {:?}", t.elapsed());
    let t = Instant::now();
    let whole = Tensor::from_slice(&x, (blocks, QK_K), &Device::Cpu).expect("tensor");
    std::hint::black_box(QTensor::quantize(&whole, GgmlDType::Q4K).expect("quantized"));
    println!("candle, the whole tensor: {:?}", t.elapsed());
    assert_eq!(ours.len(), blocks);
}
