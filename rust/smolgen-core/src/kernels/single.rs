//! One product at a time, each with its own activation layout and its own pass of the pool:
//! what the tests and benchmarks compare against the references. The forward pass quantizes once
//! for several matrices and runs them in one pass instead ([`Kernels::matmul_many`]).

use std::ops::Range;

use super::blocks::{QMatrix, QK};
use super::dispatch::{Isa, Kernels};
use super::matmul::{activation_rows, ROW_GRAIN};
use super::pool::Pool;
use super::prepared::{Layout, OutPtr, Prepared};
use super::types::select::Quantize;
use super::types::{PackedWeight, WeightBlock};
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

/// Runs `gemm` over `w` (`n` rows; a row-major or a packed matrix) on the pool, each thread on
/// its share of the rows.
fn run_gemm<M: Sync>(
    pool: &Pool,
    gemm: unsafe fn(&M, &Prepared, Range<usize>, OutPtr),
    w: &M,
    n: usize,
    a: &Prepared,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), a.m * n);
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        ld: n,
    };
    for_each_share(pool, n, |rows| {
        // SAFETY: the table exists only on a CPU with its instruction set; shares are disjoint,
        // inside the matrix and start on multiples of 16 (so on packed groups); `out` holds
        // `a.m * n` floats (checked by callers) and outlives the run; `a` was prepared for the
        // kernel's layout with the matrix's blocks per row.
        unsafe { gemm(w, a, rows, out) };
    });
}

/// Checks a product's shapes for a `rows x cols` matrix; returns the activation rows.
fn check_matmul(rows: usize, cols: usize, a_len: usize, out_len: usize) -> Result<usize> {
    let m = activation_rows(cols / QK, a_len)?;
    if out_len != m * rows {
        return Err(Error::invalid(format!(
            "matmul: output has {out_len} values, expected {m} x {rows}"
        )));
    }
    Ok(m)
}

/// One product at a time, each with its own activation layout: what the tests and benchmarks
/// compare (the forward pass quantizes once for several matrices, [`Kernels::matmul_many`]).
impl Kernels {
    /// One dot product over equal-length block runs (for Q8_0 activations, codes in
    /// -127..=127, what the quantizer produces: the SIMD paths do not handle -128).
    pub fn vec_dot<W: WeightBlock>(&self, w: &[W], a: &[W::Activation]) -> Result<f32> {
        if w.len() != a.len() || w.is_empty() {
            return Err(Error::invalid(format!(
                "vec_dot: {} weight blocks against {} activation blocks",
                w.len(),
                a.len()
            )));
        }
        if self.isa() == Isa::Scalar {
            return Ok(W::reference_dot(w, a));
        }
        let mat = QMatrix::new(w, 1, w.len() * QK)?;
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
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let mut prepared = Prepared::empty();
        W::Activation::prepare(&mut prepared, a, w.row_blocks(), W::layout(self.table));
        run_gemm(pool, W::gemm(self.table), w, w.rows(), &prepared, out);
        Ok(())
    }

    /// [`Kernels::matmul`] for a repacked matrix, on a path that [`Kernels::packs_weights`].
    pub fn matmul_packed<P: PackedWeight>(
        &self,
        pool: &Pool,
        w: &P,
        a: &[<P::Block as WeightBlock>::Activation],
        out: &mut [f32],
    ) -> Result<()> {
        let gemm = P::gemm(self.packed_kernels()?);
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let mut prepared = Prepared::empty();
        <P::Block as WeightBlock>::Activation::prepare(
            &mut prepared,
            a,
            w.row_blocks(),
            Layout::Natural,
        );
        run_gemm(pool, gemm, w, w.rows(), &prepared, out);
        Ok(())
    }

    /// Quantizes `x` (`m x w.cols()` f32, row-major) and runs [`Kernels::matmul`].
    pub fn matmul_f32<W: WeightBlock>(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, W>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let mut a = vec![W::Activation::default(); x.len() / QK];
        self.quantize(x, &mut a)?;
        self.matmul(pool, w, &a, out)
    }
}
