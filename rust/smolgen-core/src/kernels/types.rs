//! What the kernels know of each block type, stated once per type: the activation type a weight
//! type's products read, where an instruction set's `Table` keeps its kernels, and its scalar
//! reference dot product. The generic drivers ([`Kernels::quantize`], `Kernels::matmul`, ...)
//! read it, so a new type costs its block, its kernels and one impl here, not another copy of
//! every driver (candle's `GgmlType` trait plays the same part).
//!
//! [`Kernels::quantize`]: super::Kernels::quantize

// The `select` traits are sealed (public in a module the crate does not export), so the
// crate-private tables and layouts their methods name are unreachable from outside all the same.
#![allow(private_interfaces)]

use super::blocks::{Block, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use super::dispatch::{PackedKernels, Table};
use super::dot;
use super::packed::{PackedQ4_1, PackedQ8_0};
use super::prepared::{GemmFn, Layout, PackedGemmFn, Prepared};

/// An activation block type: what f32 activations are quantized to before a product.
pub trait ActivationBlock: Block + Default + select::Quantize {}

/// A weight block type the kernels multiply in ggml's row-major layout.
pub trait WeightBlock: Block + select::Multiply {
    /// The activation blocks its products read.
    type Activation: ActivationBlock;
    /// The scalar statement of one dot product over equal-length block runs.
    fn reference_dot(w: &[Self], a: &[Self::Activation]) -> f32;
}

/// A weight type repacked 16 rows at a time (see [`super::packed`]).
pub trait PackedWeight: Sync + select::MultiplyPacked {
    /// The block type it was packed from.
    type Block: WeightBlock;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// Blocks per row.
    fn row_blocks(&self) -> usize;
}

/// Where a table keeps a type's kernels. Public in a private module: callers outside the
/// crate name the traits above, never these.
pub(crate) mod select {
    use super::*;

    pub trait Quantize: Block {
        /// # Safety
        /// The table's CPU supports its instruction set; `x.len() == out.len() * 32`.
        fn quantizer(t: &Table) -> unsafe fn(&[f32], &mut [Self]);
        /// Copies whole rows of `nb` blocks into `p` in `layout`.
        fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout);
    }

    pub trait Multiply: Block {
        fn gemm(t: &Table) -> GemmFn<Self>;
        /// The activation layout the table's row-major kernel reads.
        fn layout(t: &Table) -> Layout;
    }

    pub trait MultiplyPacked: Sized {
        fn gemm(k: &PackedKernels) -> PackedGemmFn<Self>;
    }
}

impl select::Quantize for BlockQ8_1 {
    fn quantizer(t: &Table) -> unsafe fn(&[f32], &mut [Self]) {
        t.quantize_q8_1
    }
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout) {
        p.fill_q8_1(a, nb, layout)
    }
}
impl ActivationBlock for BlockQ8_1 {}

impl select::Quantize for BlockQ8_0 {
    fn quantizer(t: &Table) -> unsafe fn(&[f32], &mut [Self]) {
        t.quantize_q8_0
    }
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout) {
        p.fill_q8_0(a, nb, layout)
    }
}
impl ActivationBlock for BlockQ8_0 {}

impl select::Multiply for BlockQ4_1 {
    fn gemm(t: &Table) -> GemmFn<Self> {
        t.gemm_q4_1
    }
    fn layout(t: &Table) -> Layout {
        t.layout_q4_1
    }
}
impl WeightBlock for BlockQ4_1 {
    type Activation = BlockQ8_1;
    fn reference_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        dot::vec_dot_q4_1_q8_1(w, a)
    }
}

impl select::Multiply for BlockQ8_0 {
    fn gemm(t: &Table) -> GemmFn<Self> {
        t.gemm_q8_0
    }
    fn layout(t: &Table) -> Layout {
        t.layout_q8_0
    }
}
impl WeightBlock for BlockQ8_0 {
    type Activation = BlockQ8_0;
    fn reference_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        dot::vec_dot_q8_0_q8_0(w, a)
    }
}

impl select::MultiplyPacked for PackedQ4_1 {
    fn gemm(k: &PackedKernels) -> PackedGemmFn<Self> {
        k.q4_1
    }
}
impl PackedWeight for PackedQ4_1 {
    type Block = BlockQ4_1;
    fn rows(&self) -> usize {
        PackedQ4_1::rows(self)
    }
    fn cols(&self) -> usize {
        PackedQ4_1::cols(self)
    }
    fn row_blocks(&self) -> usize {
        PackedQ4_1::row_blocks(self)
    }
}

impl select::MultiplyPacked for PackedQ8_0 {
    fn gemm(k: &PackedKernels) -> PackedGemmFn<Self> {
        k.q8_0
    }
}
impl PackedWeight for PackedQ8_0 {
    type Block = BlockQ8_0;
    fn rows(&self) -> usize {
        PackedQ8_0::rows(self)
    }
    fn cols(&self) -> usize {
        PackedQ8_0::cols(self)
    }
    fn row_blocks(&self) -> usize {
        PackedQ8_0::row_blocks(self)
    }
}
