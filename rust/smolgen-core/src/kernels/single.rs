//! One product at a time, each with its own activation layout and its own pass of the pool:
//! what the tests and benchmarks compare against the references. The forward pass quantizes once
//! for several matrices and runs them in one pass instead ([`Kernels::matmul_many`]).

use std::ops::Range;

use super::blocks::{Block, QMatrix};
use super::dispatch::{Isa, Kernels};
use super::matmul::{activation_rows, QWeight, ROW_GRAIN};
use super::packed::PackedMatrix;
use super::pool::Pool;
use super::prepared::{GemmFn, OutPtr, Prepared};
use super::types::{ActivationBlock, WeightBlock};
use crate::error::{Error, Result};

/// Runs `part(rows)` on the pool for each thread's share of `n` weight rows: contiguous runs
/// whose starts are multiples of [`ROW_GRAIN`].
fn for_each_share(pool: &Pool, n: usize, part: impl Fn(Range<usize>) + Sync) {
    let grains = n.div_ceil(ROW_GRAIN);
    let parts = pool.threads().min(grains).max(1);
    let per = grains.div_ceil(parts) * ROW_GRAIN;
    let parts = n.div_ceil(per).max(1);
    pool.run(parts, |i| part((i * per).min(n)..((i + 1) * per).min(n)));
}

/// Runs `gemm` over `w` on the pool, each thread on its share of the rows.
fn run_gemm(pool: &Pool, gemm: GemmFn, w: &QWeight<'_>, a: &Prepared, out: &mut [f32]) {
    let n = w.rows();
    debug_assert_eq!(out.len(), a.m * n);
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        ld: n,
    };
    for_each_share(pool, n, |rows| {
        // SAFETY: a `Kernels` exists only on a CPU with its instruction set, and `gemm_for`
        // chose the kernel registered for the matrix's type and storage; shares are disjoint,
        // inside the matrix and start on multiples of 16 (so on packed groups); `out` holds
        // `a.m * n` floats (checked by callers) and outlives the run; `a` was prepared for the
        // kernel's layout with the matrix's blocks per row.
        unsafe { gemm(w, a, rows, out) };
    });
}

/// Runs `w` (any storage) against activation blocks of its type.
pub(super) fn run_product<A: ActivationBlock>(
    kernels: &Kernels,
    pool: &Pool,
    w: &QWeight<'_>,
    a: &[A],
    out: &mut [f32],
) -> Result<()> {
    if *w.kind().activation != *A::KIND {
        return Err(Error::invalid(format!(
            "matmul: {} activations for a {} matrix",
            A::NAME,
            w.kind().name
        )));
    }
    let (gemm, layout) = kernels.gemm_for(w)?;
    let nb = w.cols() / A::ELEMENTS;
    let m = activation_rows(nb, a.len())?;
    if out.len() != m * w.rows() {
        return Err(Error::invalid(format!(
            "matmul: output has {} values, expected {m} x {}",
            out.len(),
            w.rows()
        )));
    }
    let mut prepared = Prepared::empty();
    A::prepare(&mut prepared, a, nb, layout);
    run_gemm(pool, gemm, w, &prepared, out);
    Ok(())
}

/// One product at a time, each with its own activation layout: what the tests and benchmarks
/// compare (the forward pass quantizes once for several matrices, [`Kernels::matmul_many`]).
impl Kernels {
    /// One dot product over equal-length block runs (for Q8_0 activations, codes in
    /// -127..=127, what the quantizer produces: the SIMD paths do not handle -128).
    pub fn vec_dot<W: WeightBlock>(&self, w: &[W], a: &[W::Activation]) -> Result<f32> {
        if w.len() * W::ELEMENTS != a.len() * W::Activation::ELEMENTS || w.is_empty() {
            return Err(Error::invalid(format!(
                "vec_dot: {} weight blocks against {} activation blocks",
                w.len(),
                a.len()
            )));
        }
        if self.isa() == Isa::Scalar {
            return Ok(W::reference_dot(w, a));
        }
        let mat = QMatrix::new(w, 1, w.len() * W::ELEMENTS)?;
        let mut out = [0f32];
        self.matmul(&Pool::single(), &mat, a, &mut out)?;
        Ok(out[0])
    }

    /// `out[c][r] = dot(w row r, a row c)`: `a` is `m` rows of `w.row_blocks()` activation
    /// blocks, `out` is `m x w.rows()` row-major.
    pub fn matmul<W: WeightBlock>(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, W>,
        a: &[W::Activation],
        out: &mut [f32],
    ) -> Result<()> {
        run_product(self, pool, &QWeight::from(*w), a, out)
    }

    /// [`Kernels::matmul`] for a repacked matrix of `W`, on a path that [`Kernels::packs`] it.
    pub fn matmul_packed<W: WeightBlock>(
        &self,
        pool: &Pool,
        w: &PackedMatrix,
        a: &[W::Activation],
        out: &mut [f32],
    ) -> Result<()> {
        run_product(self, pool, &w.weight(), a, out)
    }

    /// Quantizes `x` (`m x w.cols()` f32, row-major) and runs [`Kernels::matmul`].
    pub fn matmul_f32<W: WeightBlock>(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, W>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let mut a = vec![W::Activation::default(); x.len() / W::Activation::ELEMENTS];
        self.quantize(x, &mut a)?;
        self.matmul(pool, w, &a, out)
    }
}
