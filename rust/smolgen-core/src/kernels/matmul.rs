//! `y = W x` for a batch of activation rows, split across threads.
//!
//! Weights are in ggml's layout, straight from the file, or repacked 16 rows at a time for the
//! kernels that have that layout ([`super::packed`]); either way a [`QWeight`] carries them with
//! their type's record ([`WeightKind`]), which names the kernels. Activations are quantized to
//! the type the weights' products read (Q8_1, Q8_0) and copied into a `Prepared` layout: codes in 64-byte-aligned lines,
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

use super::blocks::{Block, QMatrix};
use super::dispatch::Kernels;
use super::pool::Pool;
use super::prepared::{GemmFn, Layout, OutPtr, Prepared};
use super::types::{ActivationBlock, ActivationKind, TypeKernels, WeightBlock, WeightKind};
use crate::error::{Error, Result};

/// Weight rows per thread share are a multiple of this (a multiple of every tile height).
pub(crate) const ROW_GRAIN: usize = 16;
const _: () = assert!(ROW_GRAIN.is_multiple_of(super::packed::GROUP));

/// Activation rows in `a_len` blocks of rows of `nb` blocks (at least one whole row).
pub(crate) fn activation_rows(nb: usize, a_len: usize) -> Result<usize> {
    if a_len == 0 || !a_len.is_multiple_of(nb) {
        return Err(Error::invalid(format!(
            "matmul: {a_len} activation blocks are not whole rows of {nb}"
        )));
    }
    Ok(a_len / nb)
}

/// A quantized weight matrix of any type the kernels cover, row-major as ggml stores it or
/// repacked ([`super::PackedMatrix::weight`]).
#[derive(Clone, Copy)]
pub struct QWeight<'a> {
    kind: &'static WeightKind,
    bytes: &'a [u8],
    rows: usize,
    cols: usize,
    packed: bool,
    /// Bytes per row, or per group of 16 rows when packed.
    stride: usize,
    /// Whether the model's weights exceed the last-level cache, so that each token reads them
    /// from memory (see [`QWeight::cold`]).
    cold: bool,
}

impl<'a, W: WeightBlock> From<QMatrix<'a, W>> for QWeight<'a> {
    fn from(m: QMatrix<'a, W>) -> Self {
        QWeight {
            kind: W::KIND,
            bytes: super::blocks::blocks_as_bytes(m.blocks()),
            rows: m.rows(),
            cols: m.cols(),
            packed: false,
            stride: m.row_blocks() * W::SIZE,
            cold: false,
        }
    }
}

impl<'a> QWeight<'a> {
    /// A `rows x cols` matrix of `kind` in ggml's layout; checks that `bytes` are exactly its
    /// blocks.
    pub fn from_bytes(
        kind: &'static WeightKind,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
    ) -> Result<QWeight<'a>> {
        let el = kind.block_elements;
        if cols == 0 || !cols.is_multiple_of(el) {
            return Err(Error::invalid(format!(
                "{kind:?} matrix: {cols} columns is not a positive multiple of {el}"
            )));
        }
        let stride = cols / el * kind.block_bytes;
        if rows.checked_mul(stride) != Some(bytes.len()) {
            return Err(Error::invalid(format!(
                "{kind:?} matrix {rows} x {cols} needs {rows} x {stride} bytes, got {}",
                bytes.len()
            )));
        }
        Ok(QWeight {
            kind,
            bytes,
            rows,
            cols,
            packed: false,
            stride,
            cold: false,
        })
    }

    /// A repacked matrix's bytes, `group_bytes` per group of 16 rows.
    pub(crate) fn packed(
        kind: &'static WeightKind,
        bytes: &'a [u8],
        rows: usize,
        cols: usize,
        group_bytes: usize,
    ) -> QWeight<'a> {
        debug_assert_eq!(
            bytes.len(),
            rows.div_ceil(super::packed::GROUP) * group_bytes
        );
        QWeight {
            kind,
            bytes,
            rows,
            cols,
            packed: true,
            stride: group_bytes,
            cold: false,
        }
    }

    pub fn kind(&self) -> &'static WeightKind {
        self.kind
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row.
    pub fn row_blocks(&self) -> usize {
        self.cols / self.kind.block_elements
    }
    /// Bytes of weight data (what one pass over the matrix reads).
    pub fn size_in_bytes(&self) -> usize {
        self.bytes.len()
    }
    /// Whether the matrix is repacked 16 rows at a time.
    pub fn is_packed(&self) -> bool {
        self.packed
    }
    /// The matrix marked as cold or not: part of a model whose weights exceed the last-level
    /// cache (see [`exceeds_last_level_cache`](super::exceeds_last_level_cache)), so that each
    /// token reads it from memory. The kernels then prefetch it into L2 rather than L1. It
    /// changes speed only, never a result.
    pub fn cold(self, cold: bool) -> Self {
        QWeight { cold, ..self }
    }
    /// Whether the matrix is marked cold.
    pub fn is_cold(&self) -> bool {
        self.cold
    }

    /// The row-major matrix as blocks of `W`, its type.
    pub fn typed<W: WeightBlock>(&self) -> Result<QMatrix<'a, W>> {
        if *self.kind != *W::KIND || self.packed {
            return Err(Error::invalid(format!(
                "a {}{} matrix read as {}",
                if self.packed { "packed " } else { "" },
                self.kind.name,
                W::NAME
            )));
        }
        QMatrix::from_bytes(self.bytes, self.rows, self.cols)
    }

    /// The blocks of a row-major matrix, for its kernels (which know its type).
    #[inline(always)]
    pub(crate) fn blocks<B: Block>(&self) -> &'a [B] {
        debug_assert!(!self.packed && B::NAME == self.kind.name);
        // SAFETY: `B` has alignment 1 and no invalid bit patterns (the `Block` contract), and
        // the slice stays inside `bytes`.
        unsafe {
            std::slice::from_raw_parts(self.bytes.as_ptr().cast(), self.bytes.len() / B::SIZE)
        }
    }

    /// Group `g` of a packed matrix, 64-byte aligned.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn group(&self, g: usize) -> *const super::prepared::Line {
        self.bytes.as_ptr().wrapping_add(g * self.stride).cast()
    }

    /// The bytes of group `g` of a packed matrix (`g` inside it).
    pub(crate) fn group_bytes(&self, g: usize) -> &'a [u8] {
        &self.bytes[g * self.stride..(g + 1) * self.stride]
    }

    /// Row `r` in f32 (`out.len() == cols`), as ggml dequantizes it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        if r >= self.rows || out.len() != self.cols {
            return Err(Error::invalid(format!(
                "row {r} of a {} x {} matrix into {} values",
                self.rows,
                self.cols,
                out.len()
            )));
        }
        let (el, size) = (self.kind.block_elements, self.kind.block_bytes);
        for (b, dst) in out.chunks_exact_mut(el).enumerate() {
            match (self.packed, self.kind.repack) {
                (false, _) => {
                    let at = r * self.stride + b * size;
                    (self.kind.dequantize)(&self.bytes[at..at + size], dst)
                }
                (true, Some(repack)) => (repack.dequantize)(self, r, b, dst)?,
                (true, None) => return Err(Error::invalid("a packed matrix of no packed type")),
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for QWeight<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QWeight")
            .field("kind", &self.kind)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("packed", &self.packed)
            .finish()
    }
}

impl Kernels {
    /// Quantizes `x` (`A::ELEMENTS * out.len()` values, any number of rows back to back).
    pub fn quantize<A: ActivationBlock>(&self, x: &[f32], out: &mut [A]) -> Result<()> {
        if x.len() != out.len() * A::ELEMENTS {
            return Err(Error::invalid(format!(
                "quantize: {} values do not fill {} blocks of {}",
                x.len(),
                out.len(),
                A::ELEMENTS
            )));
        }
        // SAFETY: a `Kernels` exists only on a CPU with its instruction set; lengths checked.
        unsafe { A::quantize(self.isa(), x, out) };
        Ok(())
    }

    /// The kernels that multiply `kind` on this path.
    pub(crate) fn kernels_for(&self, kind: &WeightKind) -> TypeKernels {
        (kind.kernels)(self.isa())
    }

    /// Whether this path multiplies `kind` repacked 16 rows at a time, and so wants it repacked.
    pub fn packs(&self, kind: &WeightKind) -> bool {
        kind.repack.is_some() && self.kernels_for(kind).packed.is_some()
    }

    /// The kernel for `w` and the activation layout it reads.
    pub(crate) fn gemm_for(&self, w: &QWeight<'_>) -> Result<(GemmFn, Layout)> {
        let k = self.kernels_for(w.kind);
        match (w.packed, k.packed) {
            (false, _) => Ok((k.gemm, k.layout)),
            (true, Some(gemm)) => Ok((gemm, Layout::Natural)),
            (true, None) => Err(Error::invalid(format!(
                "the {} kernels do not multiply packed {} matrices",
                self.name(),
                w.kind.name
            ))),
        }
    }
}

/// Activation rows quantized once for every weight type that reads them, in each activation
/// layout those types' kernels want, in buffers that grow to the largest input and are reused.
#[derive(Default)]
pub struct Activation {
    m: usize,
    cols: usize,
    slots: Vec<Slot>,
}

/// One activation type in one layout.
struct Slot {
    kind: &'static ActivationKind,
    layout: Layout,
    /// Whether the last quantization filled it.
    ready: bool,
    prepared: Prepared,
    blocks: Vec<u8>,
}

impl Activation {
    /// Rows currently held.
    pub fn rows(&self) -> usize {
        self.m
    }

    fn ready(&self, kind: &ActivationKind, layout: Layout) -> Option<&Prepared> {
        self.slots
            .iter()
            .find(|s| s.ready && *s.kind == *kind && s.layout == layout)
            .map(|s| &s.prepared)
    }
}

/// At most this many matrices share one [`Kernels::matmul_many`] call.
pub const MAX_SHARED_MATMULS: usize = 4;

impl Kernels {
    /// Quantizes `x` (`m x cols` f32, row-major) for every matrix in `reads` (each activation
    /// type and layout once), ready for [`Kernels::matmul_many`] on any of them.
    pub fn quantize_activation(
        &self,
        x: &[f32],
        cols: usize,
        reads: &[QWeight<'_>],
        act: &mut Activation,
    ) -> Result<()> {
        if cols == 0 || !x.len().is_multiple_of(cols) || x.is_empty() {
            return Err(Error::invalid(format!(
                "activation: {} values are not whole rows of {cols}",
                x.len()
            )));
        }
        (act.m, act.cols) = (x.len() / cols, cols);
        act.slots.iter_mut().for_each(|s| s.ready = false);
        for w in reads {
            if w.cols != cols {
                return Err(Error::invalid(format!(
                    "activation: {cols} columns for a matrix of {}",
                    w.cols
                )));
            }
            let (kind, layout) = (w.kind.activation, self.gemm_for(w)?.1);
            let at = match act
                .slots
                .iter()
                .position(|s| *s.kind == *kind && s.layout == layout)
            {
                Some(i) if act.slots[i].ready => continue,
                Some(i) => i,
                None => {
                    act.slots.push(Slot {
                        kind,
                        layout,
                        ready: false,
                        prepared: Prepared::empty(),
                        blocks: Vec::new(),
                    });
                    act.slots.len() - 1
                }
            };
            let slot = &mut act.slots[at];
            (kind.prepare)(
                self.isa(),
                x,
                cols,
                layout,
                &mut slot.prepared,
                &mut slot.blocks,
            )?;
            slot.ready = true;
        }
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
        type Plan<'p> = (QWeight<'p>, GemmFn, &'p Prepared, OutPtr, usize);
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
            let (gemm, layout) = self.gemm_for(w)?;
            let prepared = act.ready(w.kind.activation, layout).ok_or_else(|| {
                Error::invalid("matmul_many: the activation was not quantized for this matrix")
            })?;
            let per = w.rows().div_ceil(ROW_GRAIN).div_ceil(parts) * ROW_GRAIN;
            let ptr = OutPtr {
                ptr: out.as_mut_ptr(),
                ld: w.rows(),
            };
            *slot = Some((*w, gemm, prepared, ptr, per));
        }
        let count = jobs.len();
        pool.run(parts, |i| {
            for (w, gemm, a, out, per) in plans.iter().flatten() {
                let n = w.rows();
                let rows = (i * per).min(n)..((i + 1) * per).min(n);
                if rows.is_empty() {
                    continue;
                }
                // SAFETY: a `Kernels` exists only on a CPU with its instruction set, and
                // `gemm_for` chose the kernel registered for the matrix's type and storage; each
                // part's row range is disjoint from the others', inside the matrix and starts on
                // a multiple of 16 (a group); every output holds `m * rows` floats (checked
                // above) and outlives `run`; the activation was prepared for this kernel's type
                // and layout with the matrix's blocks per row (same cols).
                unsafe { gemm(w, a, rows, *out) };
            }
            if let Some((w, _, _, _, per)) = &plans[0] {
                let n = w.rows();
                let outs = plans.map(|p| p.map_or(std::ptr::null_mut(), |(_, _, _, o, _)| o.ptr));
                then((i * per).min(n)..((i + 1) * per).min(n), &outs[..count]);
            }
        });
        Ok(())
    }
}
