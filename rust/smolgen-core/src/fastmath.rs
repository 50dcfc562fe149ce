//! `exp` and what the forward pass builds on it (softmax weights, SiLU), vectorized.
//!
//! libm's `expf` is a scalar call per element: in attention's softmax and in SiLU it cost more
//! than the arithmetic around it (and forced the running sum through memory around each call).
//! Here `exp` is Cephes' `expf` in plain f32 operations (range reduction by `ln 2` in two
//! parts, a degree-6 polynomial, the exponent put in by bits), written once for scalars and
//! once for AVX2 with the same operations in the same order, never fused, so both give the same
//! bits. Relative error is within 2 ulp of the exact value on `[-87, 88]`; below that the
//! result is 0, above it `exp(88)`; NaN stays NaN.

/// Below this `exp` returns 0 (`exp(-87.34)` is near the smallest normal f32).
const MIN_X: f32 = -87.336_55;
/// Inputs are clamped to this, keeping `2^n` finite.
const MAX_X: f32 = 88.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` as `C1 + C2`, `C1` with few mantissa bits so that `n * C1` is exact.
const C1: f32 = 0.693_359_4;
const C2: f32 = -2.121_944_4e-4;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x`, see the module documentation.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    if x < MIN_X {
        return 0.0;
    }
    // Not `f32::min`, which would turn NaN into `MAX_X`.
    let x = if x > MAX_X { MAX_X } else { x };
    let n = (x * LOG2E).round_ties_even();
    let r = x - n * C1;
    let r = r - n * C2;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// `xs[i] = e^(xs[i] - shift)`.
pub fn exp_shifted(xs: &mut [f32], shift: f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked once by `avx2`).
        return unsafe { x86::exp_shifted(xs, shift) };
    }
    for x in xs.iter_mut() {
        *x = exp(*x - shift);
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, `silu(g) = g / (1 + e^-g)`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: as above.
        return unsafe { x86::silu_mul(gate, up) };
    }
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// e^x for x <= 0 (and -inf), accurate to a couple of ulps; 0 below -708, where e^x leaves
/// the normal f64 range: the sampler's probabilities. Ours rather than the platform's libm so
/// that the probabilities, and hence the draws, are bit-identical everywhere; branch-free, so the
/// full-vocabulary loop vectorises.
///
/// Cody and Waite's reduction: x = n ln 2 + r with |r| <= ln(2) / 2, so e^x = 2^n e^r, with
/// e^r from its Taylor series to degree 13 (truncation error below 1e-17).
#[inline(always)]
pub fn exp_nonpositive(x: f64) -> f64 {
    const LOWEST: f64 = -708.0;
    // ln 2 split in two (fdlibm's constants) so that n * LN2_HI is exact.
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5 * 2^52 rounds to the nearest integer and leaves it in the low mantissa bits.
    const SHIFTER: f64 = 6_755_399_441_055_744.0;
    const INV_FACTORIAL: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5_040.0,
        1.0 / 40_320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];

    let clamped = if x < LOWEST { LOWEST } else { x };
    let shifted = clamped * std::f64::consts::LOG2_E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let mut poly = INV_FACTORIAL[13];
    for &c in INV_FACTORIAL[..13].iter().rev() {
        poly = poly * r + c;
    }
    // The low 12 bits of `shifted` hold n mod 4096; n + 1023 is 2^n's biased exponent.
    let two_to_n = f64::from_bits(shifted.to_bits().wrapping_add(1023) << 52);
    let y = poly * two_to_n;
    if x < LOWEST {
        0.0
    } else {
        y
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{exp, C1, C2, LOG2E, MAX_X, MIN_X, P};

    /// Eight [`exp`]s, operation for operation.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn exp8(x: __m256) -> __m256 {
        let zero = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_X));
        // `vminps` returns its second operand when either is NaN: NaN stays NaN, as in `exp`.
        let x = _mm256_min_ps(_mm256_set1_ps(MAX_X), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(C1)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(C2)));
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r),
            _mm256_set1_ps(1.0),
        );
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
        _mm256_andnot_ps(zero, e)
    }

    /// # Safety
    /// AVX2 is available.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn exp_shifted(xs: &mut [f32], shift: f32) {
        let s = _mm256_set1_ps(shift);
        let mut chunks = xs.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), exp8(_mm256_sub_ps(v, s)));
            }
        }
        for x in chunks.into_remainder() {
            *x = exp(*x - shift);
        }
    }

    /// # Safety
    /// AVX2 is available; `gate.len() == up.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
        let one = _mm256_set1_ps(1.0);
        let sign = _mm256_set1_ps(-0.0);
        let mut i = 0;
        while i + 8 <= gate.len() {
            // SAFETY: `i + 8 <= len` for both slices.
            unsafe {
                let g = _mm256_loadu_ps(gate.as_ptr().add(i));
                let u = _mm256_loadu_ps(up.as_ptr().add(i));
                let e = exp8(_mm256_xor_ps(g, sign));
                let y = _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), u);
                _mm256_storeu_ps(gate.as_mut_ptr().add(i), y);
            }
            i += 8;
        }
        for (g, u) in gate[i..].iter_mut().zip(&up[i..]) {
            *g = *g / (1.0 + exp(-*g)) * u;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0447).collect();
        xs.extend([
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            MIN_X,
            MIN_X + 1e-3,
            -87.0,
            88.0,
            88.5,
            1e6,
            -1e6,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
        ]);
        xs
    }

    #[test]
    fn exp_is_within_two_ulp() {
        for x in inputs() {
            let got = exp(x);
            if x.is_nan() {
                assert!(got.is_nan());
                continue;
            }
            if x < MIN_X {
                assert_eq!(got, 0.0, "{x}");
                continue;
            }
            let want = (x.min(MAX_X) as f64).exp();
            let ulp = (want as f32).abs() * f32::EPSILON;
            assert!(
                ((got as f64) - want).abs() <= 2.0 * ulp as f64,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn simd_and_scalar_give_the_same_bits() {
        let xs = inputs();
        for shift in [0.0, 3.5, -1.25] {
            let mut v = xs.clone();
            exp_shifted(&mut v, shift);
            for (x, y) in xs.iter().zip(&v) {
                let want = exp(x - shift);
                assert!(
                    y.to_bits() == want.to_bits() || y.is_nan() && want.is_nan(),
                    "exp({x} - {shift})"
                );
            }
        }
        let up: Vec<f32> = xs.iter().map(|x| 0.5 - x * 0.01).collect();
        let mut g = xs.clone();
        silu_mul(&mut g, &up);
        for ((x, u), y) in xs.iter().zip(&up).zip(&g) {
            let want = x / (1.0 + exp(-x)) * u;
            assert!(
                y.to_bits() == want.to_bits() || y.is_nan() && want.is_nan(),
                "silu({x}) * {u}"
            );
        }
    }

    #[test]
    fn exp_nonpositive_is_within_a_few_ulps_of_exp() {
        let mut x = 0.0f64;
        while x > -708.0 {
            let (got, want) = (exp_nonpositive(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 5e-16,
                "exp({x}) = {got}, want {want}"
            );
            x -= 0.0137;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-800.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
    }
}
