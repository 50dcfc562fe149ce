//! The scalar reference: ggml's generic `vec_dot_q4_1_q8_1` / `vec_dot_q8_0_q8_0` arithmetic,
//! and the scalar matmul built from it. Every SIMD path is tested against these.
//!
//! Per block the integer dot `sumi` is exact; the float part is
//! `sumf += sumi * (d_w * d_a) + m_w * s_a` (Q4_1) or `sumf += sumi * (d_w * d_a)` (Q8_0) in f32,
//! blocks in order, no fused multiply-add.

use super::blocks::f16_to_f32;
use super::blocks::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};

#[inline(always)]
fn sumi_q4_1(w: &BlockQ4_1, qa: &[i8]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..QK / 2 {
        let lo = (w.qs[j] & 0x0F) as i32;
        let hi = (w.qs[j] >> 4) as i32;
        sumi += lo * qa[j] as i32 + hi * qa[j + QK / 2] as i32;
    }
    sumi
}

#[inline(always)]
fn sumi_q8_0(w: &BlockQ8_0, qa: &[i8]) -> i32 {
    w.qs.iter()
        .zip(qa)
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum()
}

/// Q4_1 weights . Q8_1 activations, equal lengths.
pub fn vec_dot_q4_1_q8_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = sumi_q4_1(x, &y.qs);
        sumf +=
            sumi as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d)) + f16_to_f32(x.m) * f16_to_f32(y.s);
    }
    sumf
}

/// Q8_0 weights . Q8_0 activations, equal lengths.
pub fn vec_dot_q8_0_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.iter().zip(a) {
        sumf += sumi_q8_0(x, &y.qs) as f32 * (f16_to_f32(x.d) * f16_to_f32(y.d));
    }
    sumf
}

/// Defines a gemm entry point (see `GemmFn`) for `$block` weights that takes one weight row x
/// one activation row at a time, block after block in order: `$row` sets up activation row `$c`
/// of `$a` (bound to `$row_pat`), `$term` is block `$b` (`$x`)'s share of the sum. The scalar
/// and NEON paths share this walk; a new weight type costs its two expressions.
macro_rules! row_by_row_gemm {
    (
        $(#[$attr:meta])* $name:ident, $block:ty,
        |$a:ident, $c:ident| $row_pat:pat = $row:expr,
        |$x:ident, $b:ident| $term:expr
    ) => {
        /// # Safety
        /// See `GemmFn`; `a` has the natural layout.
        $(#[$attr])*
        pub(crate) unsafe fn $name(
            w: &$crate::kernels::blocks::QMatrix<'_, $block>,
            $a: &$crate::kernels::prepared::Prepared,
            rows: std::ops::Range<usize>,
            out: $crate::kernels::prepared::OutPtr,
        ) {
            for $c in 0..$a.m {
                let $row_pat = $row;
                for r in rows.clone() {
                    let mut sumf = 0f32;
                    for ($b, $x) in w.row(r).iter().enumerate() {
                        sumf += $term;
                    }
                    // SAFETY: the caller's contract on `rows` and `out`.
                    unsafe { out.write($c, r, sumf) };
                }
            }
        }
    };
}
#[cfg(target_arch = "aarch64")]
pub(crate) use row_by_row_gemm;

row_by_row_gemm!(
    gemm_q4_1_scalar,
    BlockQ4_1,
    // SAFETY: row `c` of the prepared codes holds `nbp * 32 >= nb * 32` bytes.
    |a, c| (qa, d, s) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c),
        a.s(c)
    ),
    |x, b| sumi_q4_1(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
        + f16_to_f32(x.m) * s[2 * b + 1]
);

row_by_row_gemm!(
    gemm_q8_0_scalar,
    BlockQ8_0,
    // SAFETY: as above.
    |a, c| (qa, d) = (
        unsafe { std::slice::from_raw_parts(a.qs(c), a.nb * QK) },
        a.d(c)
    ),
    |x, b| sumi_q8_0(x, &qa[b * QK..]) as f32 * (f16_to_f32(x.d) * d[b])
);
