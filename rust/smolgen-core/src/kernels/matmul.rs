//! `y = W x` for a batch of activation rows, split across threads.
//!
//! Weights are in ggml's layout, straight from the file, or repacked 16 rows at a time for the
//! kernels that have that layout ([`super::packed`]). Activations arrive as ggml Q8_1/Q8_0
//! blocks and are first copied into a `Prepared` layout: codes in 64-byte-aligned lines,
//! scales as f32, plus whatever per-block constants the instruction set's micro-kernel wants
//! (that copy is `m * k` bytes, small next to the `n * m * k` multiply-adds). Each thread gets a
//! contiguous run of weight rows; inside it, a micro-kernel computes a tile of up to 4 weight
//! rows x 4 activation rows, so every weight block loaded is used against several activation
//! rows (prefill) and every activation block against several weight rows (decode).
//!
//! Each output element is accumulated in the same order whatever the tile shape or thread
//! count, so results are bit-identical across 1..N threads and equal a one-row product on the
//! same path.

use std::ops::Range;

use super::blocks::{BlockQ4_1, BlockQ8_0, BlockQ8_1, QMatrix, QK};
use super::dispatch::{Kernels, PackedKernels};
use super::packed::{PackedQ4_1, PackedQ8_0};
use super::pool::Pool;
use super::prepared::{Layout, OutPtr, Prepared};
use super::types::ActivationBlock;
use crate::error::{Error, Result};

/// Weight rows per thread share are a multiple of this (a multiple of every tile height).
pub(crate) const ROW_GRAIN: usize = 16;
const _: () = assert!(ROW_GRAIN.is_multiple_of(super::packed::GROUP));

fn check_quantize(x_len: usize, blocks: usize) -> Result<()> {
    if x_len != blocks * QK {
        return Err(Error::invalid(format!(
            "quantize: {x_len} values do not fill {blocks} blocks of {QK}"
        )));
    }
    Ok(())
}

/// Activation rows in `a_len` blocks of rows of `nb` blocks (at least one whole row).
pub(crate) fn activation_rows(nb: usize, a_len: usize) -> Result<usize> {
    if a_len == 0 || !a_len.is_multiple_of(nb) {
        return Err(Error::invalid(format!(
            "matmul: {a_len} activation blocks are not whole rows of {nb}"
        )));
    }
    Ok(a_len / nb)
}

impl Kernels {
    /// Quantizes `x` (`32 * out.len()` values, any number of rows back to back) to `A`.
    pub fn quantize<A: ActivationBlock>(&self, x: &[f32], out: &mut [A]) -> Result<()> {
        check_quantize(x.len(), out.len())?;
        // SAFETY: the table exists only on a CPU with its instruction set; lengths checked.
        unsafe { <A as super::types::select::Quantize>::quantizer(self.table)(x, out) };
        Ok(())
    }

    /// Whether this path multiplies packed matrices ([`PackedQ4_1`], [`PackedQ8_0`]), and so
    /// wants its weights repacked.
    pub fn packs_weights(&self) -> bool {
        self.table.packed.is_some()
    }

    pub(super) fn packed_kernels(&self) -> Result<&'static PackedKernels> {
        self.table.packed.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "the {} kernels do not multiply 16-row packed matrices",
                self.name()
            ))
        })
    }
}

/// A quantized weight matrix of any type the kernels cover.
#[derive(Clone, Copy, Debug)]
pub enum QWeight<'a> {
    Q4_1(QMatrix<'a, BlockQ4_1>),
    Q8_0(QMatrix<'a, BlockQ8_0>),
    /// Q4_1 repacked, for paths that [`Kernels::packs_weights`].
    Q4_1x16(&'a PackedQ4_1),
    /// Q8_0 repacked, for paths that [`Kernels::packs_weights`].
    Q8_0x16(&'a PackedQ8_0),
}

impl QWeight<'_> {
    pub fn rows(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.rows(),
            QWeight::Q8_0(w) => w.rows(),
            QWeight::Q4_1x16(w) => w.rows(),
            QWeight::Q8_0x16(w) => w.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.cols(),
            QWeight::Q8_0(w) => w.cols(),
            QWeight::Q4_1x16(w) => w.cols(),
            QWeight::Q8_0x16(w) => w.cols(),
        }
    }
    pub fn size_in_bytes(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.size_in_bytes(),
            QWeight::Q8_0(w) => w.size_in_bytes(),
            QWeight::Q4_1x16(w) => w.size_in_bytes(),
            QWeight::Q8_0x16(w) => w.size_in_bytes(),
        }
    }
    /// Whether Q8_1 activations feed it (else Q8_0).
    pub fn reads_q8_1(&self) -> bool {
        matches!(self, QWeight::Q4_1(_) | QWeight::Q4_1x16(_))
    }
    fn is_packed(&self) -> bool {
        matches!(self, QWeight::Q4_1x16(_) | QWeight::Q8_0x16(_))
    }
}

/// Activation rows quantized once for every weight type that reads them (Q8_1 for Q4_1
/// weights, Q8_0 for Q8_0 weights), in buffers that grow to the largest input and are reused.
#[derive(Default)]
pub struct Activation {
    m: usize,
    cols: usize,
    q8_1: Vec<BlockQ8_1>,
    q8_0: Vec<BlockQ8_0>,
    for_q4_1: Option<Prepared>,
    for_q8_0: Option<Prepared>,
    /// The layouts the last quantization prepared (`None`: that type was not prepared).
    ready_q4_1: Option<Layout>,
    ready_q8_0: Option<Layout>,
}

impl Activation {
    /// Rows currently held.
    pub fn rows(&self) -> usize {
        self.m
    }
}

/// At most this many matrices share one [`Kernels::matmul_many`] call.
pub const MAX_SHARED_MATMULS: usize = 4;

impl Kernels {
    /// The activation layout the kernel for `w` reads: the table's for row-major matrices, the
    /// natural one for packed matrices (every 16-row kernel reads it, needing only codes and
    /// per-block scales).
    pub(super) fn layout_for(&self, w: &QWeight<'_>) -> Layout {
        match w {
            QWeight::Q4_1(_) => self.table.layout_q4_1,
            QWeight::Q8_0(_) => self.table.layout_q8_0,
            QWeight::Q4_1x16(_) | QWeight::Q8_0x16(_) => Layout::Natural,
        }
    }

    /// The one layout of the `reads` of one activation type (`q8_1`: the Q4_1 weights, else the
    /// Q8_0 ones), or `None` when none reads it.
    fn layout_of(&self, reads: &[QWeight<'_>], q8_1: bool) -> Result<Option<Layout>> {
        let mut layouts = reads
            .iter()
            .filter(|w| w.reads_q8_1() == q8_1)
            .map(|w| self.layout_for(w));
        let first = layouts.next();
        if layouts.any(|l| Some(l) != first) {
            return Err(Error::invalid(
                "activation: its readers want different layouts (packed and row-major matrices)",
            ));
        }
        Ok(first)
    }

    /// Quantizes `x` (`rows x cols` f32, row-major) for the matrices in `reads`: once per
    /// activation type (Q8_1 for Q4_1 weights, Q8_0 for Q8_0 weights), laid out as their
    /// kernels read it.
    pub fn quantize_activation(
        &self,
        x: &[f32],
        cols: usize,
        reads: &[QWeight<'_>],
        act: &mut Activation,
    ) -> Result<()> {
        if cols == 0 || !cols.is_multiple_of(QK) || !x.len().is_multiple_of(cols) || x.is_empty() {
            return Err(Error::invalid(format!(
                "activation: {} values are not whole rows of {cols} (a positive multiple of {QK})",
                x.len()
            )));
        }
        let (for_q4_1, for_q8_0) = (self.layout_of(reads, true)?, self.layout_of(reads, false)?);
        let (m, nb) = (x.len() / cols, cols / QK);
        (act.m, act.cols) = (m, cols);
        (act.ready_q4_1, act.ready_q8_0) = (None, None);
        if let Some(layout) = for_q4_1 {
            act.q8_1.resize(m * nb, BlockQ8_1::default());
            self.quantize(x, &mut act.q8_1)?;
            act.for_q4_1
                .get_or_insert_with(Prepared::empty)
                .fill_q8_1(&act.q8_1, nb, layout);
        }
        if let Some(layout) = for_q8_0 {
            act.q8_0.resize(m * nb, BlockQ8_0::default());
            self.quantize(x, &mut act.q8_0)?;
            act.for_q8_0
                .get_or_insert_with(Prepared::empty)
                .fill_q8_0(&act.q8_0, nb, layout);
        }
        (act.ready_q4_1, act.ready_q8_0) = (for_q4_1, for_q8_0);
        Ok(())
    }

    /// `out_j = act x W_j^T` for up to [`MAX_SHARED_MATMULS`] matrices with the activation's
    /// column count, in one pass of the pool: each thread takes its share of every matrix's
    /// rows, so the matrices cost one synchronisation instead of one each.
    pub fn matmul_many(
        &self,
        pool: &Pool,
        act: &Activation,
        jobs: &mut [(QWeight<'_>, &mut [f32])],
    ) -> Result<()> {
        self.matmul_many_then(pool, act, jobs, |_, _| {})
    }

    /// [`Kernels::matmul_many`], then each thread calls `then(rows, outputs)` once its own
    /// products are done, with its share of the first matrix's rows (the same share of every
    /// matrix with as many rows) and the outputs' base pointers (`out_j[c * rows_j + r]`):
    /// elementwise work on those columns needs no extra round trip through the pool. `then`
    /// may touch only the columns in `rows` of each output.
    pub(crate) fn matmul_many_then(
        &self,
        pool: &Pool,
        act: &Activation,
        jobs: &mut [(QWeight<'_>, &mut [f32])],
        then: impl Fn(Range<usize>, &[*mut f32]) + Sync,
    ) -> Result<()> {
        if jobs.len() > MAX_SHARED_MATMULS {
            return Err(Error::invalid(format!(
                "matmul_many: {} matrices, at most {MAX_SHARED_MATMULS}",
                jobs.len()
            )));
        }
        type Plan<'p> = (QWeight<'p>, OutPtr, usize);
        let mut plans: [Option<Plan<'_>>; MAX_SHARED_MATMULS] = [None; MAX_SHARED_MATMULS];
        let parts = pool.threads().max(1);
        for (slot, (w, out)) in plans.iter_mut().zip(jobs.iter_mut()) {
            if w.cols() != act.cols || out.len() != act.m * w.rows() {
                return Err(Error::invalid(format!(
                    "matmul_many: a {} x {} matrix against {} rows of {} into {} outputs",
                    w.rows(),
                    w.cols(),
                    act.m,
                    act.cols,
                    out.len()
                )));
            }
            let ready = if w.reads_q8_1() {
                act.ready_q4_1
            } else {
                act.ready_q8_0
            };
            if ready != Some(self.layout_for(w)) {
                return Err(Error::invalid(
                    "matmul_many: the activation was not quantized for this matrix",
                ));
            }
            if w.is_packed() {
                self.packed_kernels()?;
            }
            let per = w.rows().div_ceil(ROW_GRAIN).div_ceil(parts) * ROW_GRAIN;
            let ptr = OutPtr {
                ptr: out.as_mut_ptr(),
                ld: w.rows(),
            };
            *slot = Some((*w, ptr, per));
        }
        let count = jobs.len();
        let (q4, q8) = (act.for_q4_1.as_ref(), act.for_q8_0.as_ref());
        pool.run(parts, |i| {
            for (w, out, per) in plans.iter().flatten() {
                let n = w.rows();
                let rows = (i * per).min(n)..((i + 1) * per).min(n);
                if rows.is_empty() {
                    continue;
                }
                // SAFETY: the table exists only on a CPU with its instruction set; each part's
                // row range is disjoint from the others' and inside the matrix; every output
                // holds `m * rows` floats (checked above) and outlives `run`; the activation was
                // prepared for this table's layouts with the matrix's blocks per row (same cols).
                unsafe {
                    match (w, q4, q8) {
                        (QWeight::Q4_1(w), Some(a), _) => (self.table.gemm_q4_1)(w, a, rows, *out),
                        (QWeight::Q8_0(w), _, Some(a)) => (self.table.gemm_q8_0)(w, a, rows, *out),
                        (QWeight::Q4_1x16(w), Some(a), _) => {
                            if let Some(k) = &self.table.packed {
                                (k.q4_1)(w, a, rows, *out)
                            }
                        }
                        (QWeight::Q8_0x16(w), _, Some(a)) => {
                            if let Some(k) = &self.table.packed {
                                (k.q8_0)(w, a, rows, *out)
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some((w, _, per)) = &plans[0] {
                let n = w.rows();
                let outs = plans.map(|p| p.map_or(std::ptr::null_mut(), |(_, o, _)| o.ptr));
                then((i * per).min(n)..((i + 1) * per).min(n), &outs[..count]);
            }
        });
        Ok(())
    }
}
