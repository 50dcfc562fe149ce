//! Every path against the scalar reference, the scalar reference against f64 arithmetic, and
//! our block decoding against candle's.

use std::borrow::Cow;

use half::f16;

use super::blocks::{blocks_as_bytes, cast_blocks, BlockQ4_1, BlockQ8_0, BlockQ8_1, QMatrix, QK};
use super::dispatch::{available_isas, kernel_path, Isa, Kernels};
use super::dot;
use super::matmul::{Activation, QWeight};
use super::packed::{reference_matmul_q4_1, reference_matmul_q8_0, PackedQ4_1, PackedQ8_0};
use super::pool::Pool;

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

#[test]
fn vec_dot_paths_match_scalar() {
    let mut rng = Rng(4);
    for &k in &[32usize, 64, 96, 576, 1536] {
        let nb = k / QK;
        for trial in 0..40 {
            let extreme = trial % 2 == 1;
            let w = q4_1_blocks(&mut rng, nb, extreme);
            let a = quantized_acts_q8_1(&mut rng, nb, extreme);
            let want = dot::vec_dot_q4_1_q8_1(&w, &a);
            let t = tol(nb, abs_sum_q4_1(&w, &a));
            let w8 = q8_0_blocks(&mut rng, nb, extreme);
            let a8 = quantized_acts_q8_0(&mut rng, nb, extreme);
            let want8 = dot::vec_dot_q8_0_q8_0(&w8, &a8);
            let t8 = tol(nb, abs_sum_q8_0(&w8, &a8));
            for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
                let got = kern.vec_dot(&w, &a).expect("lengths");
                assert!(
                    ((got - want) as f64).abs() <= t,
                    "{} q4_1 k={k}: {got} vs {want} (tol {t})",
                    kern.name()
                );
                let got8 = kern.vec_dot(&w8, &a8).expect("lengths");
                assert!(
                    ((got8 - want8) as f64).abs() <= t8,
                    "{} q8_0 k={k}: {got8} vs {want8} (tol {t8})",
                    kern.name()
                );
            }
        }
    }
    let w = q4_1_blocks(&mut rng, 2, false);
    let a = quantized_acts_q8_1(&mut rng, 3, false);
    assert!(Kernels::best().vec_dot(&w, &a).is_err());
    assert!(Kernels::best().vec_dot::<BlockQ4_1>(&[], &[]).is_err());
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
            let got = dot::vec_dot_q4_1_q8_1(&w, &a) as f64;
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
        let got = dot::vec_dot_q8_0_q8_0(&w, &a) as f64;
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

/// All paths, several shapes: SIMD within tolerance of scalar; on each path the matmul is
/// bit-identical to its own vec_dot and across thread counts.
#[test]
fn matmul_paths_match_scalar() {
    let mut rng = Rng(6);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    for &k in &[32usize, 64, 576, 1056, 1536] {
        let nb = k / QK;
        for &rows in &[1usize, 3, 7, 33] {
            let extreme = (rows + k) % 2 == 1;
            let w = q4_1_blocks(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let w8 = q8_0_blocks(&mut rng, rows * nb, extreme);
            let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
            for m in 1..=9usize {
                let a = quantized_acts_q8_1(&mut rng, m * nb, !extreme);
                let a8 = quantized_acts_q8_0(&mut rng, m * nb, !extreme);
                let mut want = vec![0f32; m * rows];
                let mut want8 = vec![0f32; m * rows];
                scalar()
                    .matmul(&Pool::single(), &wm, &a, &mut want)
                    .expect("shapes");
                scalar()
                    .matmul(&Pool::single(), &wm8, &a8, &mut want8)
                    .expect("shapes");
                for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
                    let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        let mut got8 = vec![f32::NAN; m * rows];
                        kern.matmul(pool, &wm, &a, &mut got).expect("shapes");
                        kern.matmul(pool, &wm8, &a8, &mut got8).expect("shapes");
                        for c in 0..m {
                            let ac = &a[c * nb..(c + 1) * nb];
                            let ac8 = &a8[c * nb..(c + 1) * nb];
                            for r in 0..rows {
                                let (g, e) = (got[c * rows + r], want[c * rows + r]);
                                let t = tol(nb, abs_sum_q4_1(wm.row(r), ac));
                                assert!(
                                    ((g - e) as f64).abs() <= t,
                                    "{} q4_1 rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}",
                                    kern.name()
                                );
                                let vd = kern.vec_dot(wm.row(r), ac).expect("len");
                                assert_eq!(g.to_bits(), vd.to_bits(), "{}", kern.name());
                                let (g8, e8) = (got8[c * rows + r], want8[c * rows + r]);
                                let t8 = tol(nb, abs_sum_q8_0(wm8.row(r), ac8));
                                assert!(
                                    ((g8 - e8) as f64).abs() <= t8,
                                    "{} q8_0 rows={rows} k={k} m={m} ({c},{r}): {g8} vs {e8}",
                                    kern.name()
                                );
                                let vd8 = kern.vec_dot(wm8.row(r), ac8).expect("len");
                                assert_eq!(g8.to_bits(), vd8.to_bits(), "{}", kern.name());
                            }
                        }
                        match &first {
                            None => first = Some((got, got8)),
                            Some((f1, f8)) => {
                                let same = |x: &[f32], y: &[f32]| {
                                    x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
                                };
                                assert!(same(f1, &got), "{} thread counts differ", kern.name());
                                assert!(same(f8, &got8), "{} thread counts differ", kern.name());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packing_keeps_every_block() {
    let mut rng = Rng(11);
    for &(rows, k) in &[(1usize, 32usize), (16, 64), (20, 96), (37, 576)] {
        let nb = k / QK;
        let w = q4_1_blocks(&mut rng, rows * nb, true);
        let wm = QMatrix::new(&w, rows, k).expect("shape");
        let p = PackedQ4_1::pack(&wm);
        assert_eq!((p.rows(), p.cols(), p.row_blocks()), (rows, k, nb));
        assert_eq!(p.size_in_bytes(), rows.div_ceil(16) * 16 * nb * 20);
        for r in 0..rows {
            for b in 0..nb {
                assert_eq!(p.block(r, b).expect("inside"), wm.row(r)[b], "({r}, {b})");
            }
        }
        assert!(p.block(rows, 0).is_err());
        assert!(p.block(0, nb).is_err());
        let w8 = q8_0_blocks(&mut rng, rows * nb, true);
        let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
        let p8 = PackedQ8_0::pack(&wm8);
        assert_eq!((p8.rows(), p8.cols(), p8.row_blocks()), (rows, k, nb));
        assert_eq!(
            p8.size_in_bytes(),
            rows.div_ceil(16) * (nb * 8 + nb.div_ceil(2)) * 64
        );
        for r in 0..rows {
            for b in 0..nb {
                assert_eq!(p8.block(r, b).expect("inside"), wm8.row(r)[b], "({r}, {b})");
            }
        }
        assert!(p8.block(rows, 0).is_err());
    }
}

/// The 16-row kernels equal their scalar statements bit for bit, for every tile shape, group
/// remainder and thread count, and stays within rounding of the row-major scalar reference.
#[test]
fn packed_matmul_matches_its_reference() {
    let mut rng = Rng(12);
    let pools = [
        Pool::single(),
        Pool::new(2).expect("threads"),
        Pool::new(3).expect("threads"),
    ];
    let packers: Vec<Kernels> = available_isas()
        .into_iter()
        .filter_map(Kernels::for_isa)
        .filter(|k| k.packs_weights())
        .collect();
    for isa in [Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni] {
        if isa.is_available() {
            assert!(
                packers.iter().any(|k| k.isa() == isa),
                "{isa:?} multiplies packed matrices"
            );
        }
    }
    for &k in &[32usize, 96, 576, 1536] {
        let nb = k / QK;
        for &rows in &[5usize, 16, 40, 64] {
            let extreme = (rows + k) % 2 == 1;
            let w = q4_1_blocks(&mut rng, rows * nb, extreme);
            let wm = QMatrix::new(&w, rows, k).expect("shape");
            let packed = PackedQ4_1::pack(&wm);
            let w8 = q8_0_blocks(&mut rng, rows * nb, extreme);
            let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
            let packed8 = PackedQ8_0::pack(&wm8);
            for &m in &[1usize, 2, 3, 7, 8, 9, 16, 17, 26] {
                let a = quantized_acts_q8_1(&mut rng, m * nb, !extreme);
                let want = reference_matmul_q4_1(&packed, &a).expect("shapes");
                let a8 = quantized_acts_q8_0(&mut rng, m * nb, !extreme);
                let want8 = reference_matmul_q8_0(&packed8, &a8).expect("shapes");
                for c in 0..m {
                    let ac = &a[c * nb..(c + 1) * nb];
                    for r in 0..rows {
                        let e = dot::vec_dot_q4_1_q8_1(wm.row(r), ac);
                        let g = want[c * rows + r];
                        let t = tol(nb, abs_sum_q4_1(wm.row(r), ac));
                        assert!(
                            ((g - e) as f64).abs() <= t,
                            "reference rows={rows} k={k} m={m} ({c},{r}): {g} vs {e}"
                        );
                        let ac8 = &a8[c * nb..(c + 1) * nb];
                        let e8 = dot::vec_dot_q8_0_q8_0(wm8.row(r), ac8);
                        let g8 = want8[c * rows + r];
                        let t8 = tol(nb, abs_sum_q8_0(wm8.row(r), ac8));
                        assert!(
                            ((g8 - e8) as f64).abs() <= t8,
                            "q8_0 reference rows={rows} k={k} m={m} ({c},{r}): {g8} vs {e8}"
                        );
                    }
                }
                for kern in &packers {
                    for pool in &pools {
                        let mut got = vec![f32::NAN; m * rows];
                        kern.matmul_packed(pool, &packed, &a, &mut got)
                            .expect("shapes");
                        let mut got8 = vec![f32::NAN; m * rows];
                        kern.matmul_packed(pool, &packed8, &a8, &mut got8)
                            .expect("shapes");
                        for (kind, got, want) in [("q4_1", &got, &want), ("q8_0", &got8, &want8)] {
                            for (i, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                                assert_eq!(
                                    g.to_bits(),
                                    e.to_bits(),
                                    "{} {kind} rows={rows} k={k} m={m} threads={} at {i}: {g} vs {e}",
                                    kern.name(),
                                    pool.threads()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn packed_matmul_rejects_bad_shapes() {
    let mut rng = Rng(13);
    let w = q4_1_blocks(&mut rng, 20 * 2, false);
    let packed = PackedQ4_1::pack(&QMatrix::new(&w, 20, 64).expect("shape"));
    let a = quantized_acts_q8_1(&mut rng, 3, false);
    let mut out = vec![0f32; 40];
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let pool = Pool::single();
        if !kern.packs_weights() {
            assert!(kern
                .matmul_packed(&pool, &packed, &a[..2], &mut out[..20])
                .is_err());
            continue;
        }
        assert!(kern.matmul_packed(&pool, &packed, &a, &mut out).is_err());
        assert!(kern.matmul_packed(&pool, &packed, &[], &mut []).is_err());
        assert!(kern
            .matmul_packed(&pool, &packed, &a[..2], &mut out)
            .is_err());
        assert!(kern
            .matmul_packed(&pool, &packed, &a[..2], &mut out[..20])
            .is_ok());
    }
    let w8 = q8_0_blocks(&mut rng, 20 * 2, false);
    let packed8 = PackedQ8_0::pack(&QMatrix::new(&w8, 20, 64).expect("shape"));
    let a8 = quantized_acts_q8_0(&mut rng, 3, false);
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let pool = Pool::single();
        let ok = kern
            .matmul_packed(&pool, &packed8, &a8[..2], &mut out[..20])
            .is_ok();
        assert_eq!(ok, kern.packs_weights(), "{}", kern.name());
        assert!(kern.matmul_packed(&pool, &packed8, &a8, &mut out).is_err());
    }
}

/// One quantized activation feeds several matrices in one pool pass, laid out for the kernels
/// that read it: the same bits as the single products, and a typed error when it was prepared
/// for other readers.
#[test]
fn shared_activation_feeds_row_major_and_packed_matrices() {
    let mut rng = Rng(14);
    let (k, rows, m) = (96usize, 40usize, 3usize);
    let nb = k / QK;
    let w = q4_1_blocks(&mut rng, rows * nb, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let w8 = q8_0_blocks(&mut rng, rows * nb, false);
    let wm8 = QMatrix::new(&w8, rows, k).expect("shape");
    let (packed, packed8) = (PackedQ4_1::pack(&wm), PackedQ8_0::pack(&wm8));
    let x = activations(&mut rng, m * k, false);
    let pool = Pool::new(2).expect("threads");
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut want = vec![0f32; m * rows];
        let mut want8 = vec![0f32; m * rows];
        kern.matmul_f32(&pool, &wm, &x, &mut want).expect("product");
        kern.matmul_f32(&pool, &wm8, &x, &mut want8)
            .expect("product");
        let mut readers = vec![
            (QWeight::Q4_1(wm), want.clone()),
            (QWeight::Q8_0(wm8), want8),
        ];
        if kern.packs_weights() {
            let mut a = vec![BlockQ8_1::default(); m * nb];
            kern.quantize(&x, &mut a).expect("quantize");
            let mut want_packed = vec![0f32; m * rows];
            kern.matmul_packed(&pool, &packed, &a, &mut want_packed)
                .expect("product");
            readers.push((QWeight::Q4_1x16(&packed), want_packed));
            let mut a8 = vec![BlockQ8_0::default(); m * nb];
            kern.quantize(&x, &mut a8).expect("quantize");
            let mut want_packed8 = vec![0f32; m * rows];
            kern.matmul_packed(&pool, &packed8, &a8, &mut want_packed8)
                .expect("product");
            readers.push((QWeight::Q8_0x16(&packed8), want_packed8));
        }
        let mut act = Activation::default();
        for (w, want) in &readers {
            kern.quantize_activation(&x, k, &[*w], &mut act)
                .expect("quantize");
            let mut got = vec![f32::NAN; m * rows];
            kern.matmul_many(&pool, &act, &mut [(*w, &mut got[..])])
                .expect("product");
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(g, e)| g.to_bits() == e.to_bits()),
                "{}",
                kern.name()
            );
        }
        // Prepared for Q4_1 weights only: a Q8_0 matrix cannot use it.
        kern.quantize_activation(&x, k, &[QWeight::Q4_1(wm)], &mut act)
            .expect("quantize");
        let mut out = vec![0f32; m * rows];
        assert!(kern
            .matmul_many(&pool, &act, &mut [(QWeight::Q8_0(wm8), &mut out[..])])
            .is_err());
        if kern.packs_weights() {
            let (row_major, packed) = (QWeight::Q4_1(wm), QWeight::Q4_1x16(&packed));
            let same = kern.layout_for(&row_major) == kern.layout_for(&packed);
            let both = kern.quantize_activation(&x, k, &[row_major, packed], &mut act);
            assert_eq!(both.is_ok(), same, "{}", kern.name());
            if !same {
                kern.quantize_activation(&x, k, &[row_major], &mut act)
                    .expect("quantize");
                assert!(kern
                    .matmul_many(&pool, &act, &mut [(packed, &mut out[..])])
                    .is_err());
            }
        } else {
            let mut out = vec![0f32; m * rows];
            kern.quantize_activation(&x, k, &[QWeight::Q4_1x16(&packed)], &mut act)
                .expect("a layout, whoever multiplies it");
            assert!(kern
                .matmul_many(
                    &pool,
                    &act,
                    &mut [(QWeight::Q4_1x16(&packed), &mut out[..])]
                )
                .is_err());
        }
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let mut rng = Rng(7);
    let w = q4_1_blocks(&mut rng, 4 * 2, false);
    let wm = QMatrix::new(&w, 4, 64).expect("shape");
    let a = quantized_acts_q8_1(&mut rng, 3, false);
    let mut out = vec![0f32; 8];
    let k = Kernels::best();
    assert!(k.matmul(&Pool::single(), &wm, &a, &mut out).is_err());
    assert!(k.matmul(&Pool::single(), &wm, &a[..2], &mut out).is_err());
    assert!(k
        .matmul(&Pool::single(), &wm, &a[..2], &mut out[..4])
        .is_ok());
    assert!(k.matmul(&Pool::single(), &wm, &[], &mut []).is_err());
    assert!(k
        .matmul_f32(&Pool::single(), &wm, &[0.0; 65], &mut out[..4])
        .is_err());
}

#[test]
fn matmul_f32_quantizes_like_ggml() {
    // The f32 entry point equals quantize-then-matmul on every path.
    let mut rng = Rng(8);
    let (rows, k, m) = (37usize, 576usize, 5usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let x = activations(&mut rng, m * k, false);
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut a = vec![BlockQ8_1::default(); m * k / QK];
        kern.quantize(&x, &mut a).expect("lengths");
        let mut y1 = vec![0f32; m * rows];
        let mut y2 = vec![0f32; m * rows];
        kern.matmul(Pool::global(), &wm, &a, &mut y1)
            .expect("shapes");
        kern.matmul_f32(Pool::global(), &wm, &x, &mut y2)
            .expect("shapes");
        assert_eq!(y1, y2);
    }
}

#[test]
fn block_decoding_matches_candle() {
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    use candle_core::Device;

    let mut rng = Rng(9);
    let (rows, k) = (7usize, 96usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, true);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w)),
        &Device::Cpu,
        GgmlDType::Q4_1,
    )
    .expect("storage");
    let qt = QTensor::new(storage, (rows, k)).expect("tensor");
    let theirs: Vec<f32> = qt
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    let mut ours = vec![0f32; rows * k];
    for (blk, out) in w.iter().zip(ours.chunks_mut(QK)) {
        blk.dequantize(out.try_into().expect("32 values"));
    }
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "element {i}: {a} vs candle {b}");
    }

    let w8 = q8_0_blocks(&mut rng, rows * k / QK, true);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w8)),
        &Device::Cpu,
        GgmlDType::Q8_0,
    )
    .expect("storage");
    let qt = QTensor::new(storage, (rows, k)).expect("tensor");
    let theirs: Vec<f32> = qt
        .dequantize(&Device::Cpu)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("dequantize");
    let mut ours = vec![0f32; rows * k];
    for (blk, out) in w8.iter().zip(ours.chunks_mut(QK)) {
        blk.dequantize(out.try_into().expect("32 values"));
    }
    assert!(ours
        .iter()
        .zip(&theirs)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn matmul_agrees_with_candle_qmatmul() {
    use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
    use candle_core::{Device, Module, Tensor};

    let mut rng = Rng(10);
    let (rows, k, m) = (64usize, 576usize, 3usize);
    let w = q4_1_blocks(&mut rng, rows * k / QK, false);
    let wm = QMatrix::new(&w, rows, k).expect("shape");
    let x = activations(&mut rng, m * k, false);
    let storage = QStorage::from_data(
        Cow::Borrowed(blocks_as_bytes(&w)),
        &Device::Cpu,
        GgmlDType::Q4_1,
    )
    .expect("storage");
    let mm =
        QMatMul::from_qtensor(QTensor::new(storage, (rows, k)).expect("tensor")).expect("qmatmul");
    let xt = Tensor::from_slice(&x, (m, k), &Device::Cpu).expect("tensor");
    let theirs: Vec<f32> = mm
        .forward(&xt)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("forward");
    // The f32 truth for scale: dequantized weights times unquantized x.
    for kern in available_isas().into_iter().filter_map(Kernels::for_isa) {
        let mut ours = vec![0f32; m * rows];
        kern.matmul_f32(&Pool::single(), &wm, &x, &mut ours)
            .expect("shapes");
        for c in 0..m {
            let xc = &x[c * k..(c + 1) * k];
            for r in 0..rows {
                let mut wf = vec![0f32; k];
                for (blk, out) in wm.row(r).iter().zip(wf.chunks_mut(QK)) {
                    blk.dequantize(out.try_into().expect("32 values"));
                }
                let mag: f64 = wf.iter().zip(xc).map(|(a, b)| (a * b).abs() as f64).sum();
                let (o, t) = (ours[c * rows + r] as f64, theirs[c * rows + r] as f64);
                // Both quantize x to 8 bits (possibly with different tie rounding): agree to
                // well within the quantization noise, 1% of the magnitude.
                assert!(
                    (o - t).abs() <= 1e-2 * mag + 1e-6,
                    "{} ({c},{r}): ours {o} candle {t} (mag {mag})",
                    kern.name()
                );
            }
        }
    }
}

#[test]
fn pool_runs_every_share_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for threads in 1..=4 {
        let pool = Pool::new(threads).expect("threads");
        assert_eq!(pool.threads(), threads);
        let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
        for round in 0..2000 {
            let parts = 1 + round % threads;
            pool.run(parts, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        let counts: Vec<usize> = hits.iter().map(|h| h.load(Ordering::Relaxed)).collect();
        for (i, &n) in counts.iter().enumerate() {
            // share i runs in every round with parts > i
            let want = (0..2000).filter(|r| 1 + r % threads > i).count();
            assert_eq!(n, want, "threads={threads} share {i}");
        }
        // Idle long enough for the workers to park, then wake them.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let total = AtomicUsize::new(0);
        pool.run(threads, |i| {
            total.fetch_add(i + 1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), threads * (threads + 1) / 2);
    }
}

#[test]
fn pool_reports_worker_panics_and_survives() {
    let pool = Pool::new(2).expect("threads");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.run(2, |i| {
            if i == 1 {
                panic!("share 1 fails");
            }
        })
    }));
    assert!(r.is_err());
    let ran = std::sync::atomic::AtomicUsize::new(0);
    pool.run(2, |_| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(ran.load(std::sync::atomic::Ordering::Relaxed), 2);
}
