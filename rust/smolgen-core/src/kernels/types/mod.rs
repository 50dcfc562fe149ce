//! The block types, one file each: a type's bytes as ggml lays them out, its scalar definitions
//! (dequantization, ggml's reference quantization, the reference dot product and the scalar
//! gemm), the activation type its products read, its 16-row layout if it has one, and which
//! kernels multiply it on each instruction set. The drivers ([`Kernels::quantize`],
//! [`Kernels::matmul_many`], the engine's loader) read only the [`WeightKind`] record built
//! from it, so a new weight type costs its file here, its SIMD inner loops and a line in
//! [`WEIGHT_KINDS`], never another copy of a driver (candle's `GgmlType` trait and ggml's
//! `type_traits_cpu` play the same part).
//!
//! [`Kernels::quantize`]: super::Kernels::quantize
//! [`Kernels::matmul_many`]: super::Kernels::matmul_many

use super::blocks::{cast_blocks, cast_blocks_mut, Block};
use super::dispatch::Isa;
use super::matmul::QWeight;
use super::packed::{PackedMatrix, Repack};
use super::prepared::{GemmFn, Layout, Prepared};
use crate::error::{Error, Result};

mod bf16;
mod f16;
mod f32;
mod float;
mod k_rounding;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_1;

pub use bf16::BlockBF16;
pub use f16::BlockF16;
pub use f32::BlockF32;
#[cfg(test)]
pub(crate) use float::FloatBlock;
pub use q2_k::BlockQ2K;
pub use q3_k::BlockQ3K;
pub use q4_0::BlockQ4_0;
pub use q4_1::BlockQ4_1;
#[cfg(target_arch = "aarch64")]
pub(crate) use q4_k::sub_scales;
#[cfg(test)]
pub(crate) use q4_k::OffsetSuperblock;
pub use q4_k::{BlockQ4K, QK_K};
pub use q5_0::BlockQ5_0;
pub use q5_1::BlockQ5_1;
pub use q5_k::BlockQ5K;
pub use q6_k::BlockQ6K;
#[cfg(target_arch = "x86_64")]
pub(crate) use q6_k::SIXTH_BITS_LINE;
pub use q8_0::BlockQ8_0;
pub use q8_1::BlockQ8_1;

/// An activation block type: what f32 activations are quantized to before a product.
pub trait ActivationBlock: Block + Default {
    /// The type, erased, for [`super::Activation`].
    const KIND: &'static ActivationKind;
    /// Quantizes `x` (`out.len()` blocks) on `isa`.
    ///
    /// # Safety
    /// The CPU supports `isa`; `x.len() == out.len() * Self::ELEMENTS`.
    #[doc(hidden)]
    unsafe fn quantize(isa: Isa, x: &[f32], out: &mut [Self]);
    /// Copies whole rows of `nb` blocks into `p` in `layout`.
    #[doc(hidden)]
    fn prepare(p: &mut Prepared, a: &[Self], nb: usize, layout: Layout);
}

/// A weight block type the kernels multiply.
pub trait WeightBlock: Block {
    /// The activation blocks its products read.
    type Activation: ActivationBlock;
    /// The type, erased: what [`QWeight`] carries.
    const KIND: &'static WeightKind;
    /// ggml's type id (`GGML_TYPE_*`, as GGUF stores it).
    const GGML_TYPE: u32;
    /// The block's values in f32, in ggml's arithmetic.
    fn dequantize(&self, out: &mut [f32]);
    /// ggml's reference quantization (`quantize_row_*_ref`) of `Self::ELEMENTS` values.
    fn quantize(x: &[f32]) -> Self;
    /// The scalar statement of one dot product over equal-length block runs.
    fn reference_dot(w: &[Self], a: &[Self::Activation]) -> f32;
    /// The kernels that multiply this type on `isa` (the scalar ones where it has none).
    #[doc(hidden)]
    fn kernels(isa: Isa) -> TypeKernels;
}

/// One weight type's kernels on one instruction set.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    /// The activation layout the row-major kernel reads.
    pub(crate) layout: Layout,
    /// Row-major matrices, as the file stores them.
    pub(crate) gemm: GemmFn,
    /// Matrices repacked 16 rows at a time ([`PackedMatrix`]), where this path has a kernel
    /// for that layout (it reads the natural activation layout).
    pub(crate) packed: Option<GemmFn>,
}

impl TypeKernels {
    pub(crate) const fn row_major(gemm: GemmFn, layout: Layout) -> TypeKernels {
        TypeKernels {
            layout,
            gemm,
            packed: None,
        }
    }
    #[cfg(target_arch = "x86_64")]
    pub(crate) const fn with_packed(self, packed: GemmFn) -> TypeKernels {
        TypeKernels {
            packed: Some(packed),
            ..self
        }
    }
}

/// Quantizes `x` (rows of `cols` values) on `isa` into `p` in `layout`, the blocks in `scratch`.
type PrepareFn = fn(Isa, &[f32], usize, Layout, &mut Prepared, &mut Vec<u8>) -> Result<()>;

/// An activation type, erased.
pub struct ActivationKind {
    pub name: &'static str,
    pub(crate) prepare: PrepareFn,
}

impl ActivationKind {
    const fn of<A: ActivationBlock>() -> ActivationKind {
        ActivationKind {
            name: A::NAME,
            prepare: prepare_activation::<A>,
        }
    }
}

impl PartialEq for ActivationKind {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

fn prepare_activation<A: ActivationBlock>(
    isa: Isa,
    x: &[f32],
    cols: usize,
    layout: Layout,
    p: &mut Prepared,
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if cols == 0 || !cols.is_multiple_of(A::ELEMENTS) || !x.len().is_multiple_of(cols) {
        return Err(Error::invalid(format!(
            "activation: {} values are not whole rows of {cols} (a positive multiple of {})",
            x.len(),
            A::ELEMENTS
        )));
    }
    let (blocks, nb) = (x.len() / A::ELEMENTS, cols / A::ELEMENTS);
    // Grown, never cleared: the quantizer writes every block.
    let bytes = blocks * A::SIZE;
    if scratch.len() < bytes {
        scratch.resize(bytes, 0);
    }
    let a = cast_blocks_mut::<A>(&mut scratch[..bytes])?;
    // SAFETY: a `Kernels` for `isa` exists only on a CPU with it; the lengths match.
    unsafe { A::quantize(isa, x, a) };
    A::prepare(p, a, nb, layout);
    Ok(())
}

/// A weight type, erased: what the drivers and the loader know of it.
pub struct WeightKind {
    /// ggml's name, e.g. `"q4_1"`.
    pub name: &'static str,
    /// ggml's type id.
    pub ggml_type: u32,
    /// Bytes and values per block.
    pub block_bytes: usize,
    pub block_elements: usize,
    pub(crate) activation: &'static ActivationKind,
    pub(crate) kernels: fn(Isa) -> TypeKernels,
    pub(crate) dequantize: fn(&[u8], &mut [f32]),
    pub(crate) quantize: fn(&[f32], &mut [u8]),
    /// The 16-row layout, for types that have one.
    pub(crate) repack: Option<Repacking>,
}

/// How a type is repacked 16 rows at a time, erased.
#[derive(Clone, Copy)]
pub(crate) struct Repacking {
    pub(crate) pack: fn(&QWeight<'_>) -> Result<PackedMatrix>,
    /// Block `b` of row `r` of a packed matrix, dequantized.
    pub(crate) dequantize: fn(&QWeight<'_>, usize, usize, &mut [f32]) -> Result<()>,
}

impl WeightKind {
    /// The record of `W`.
    pub const fn of<W: WeightBlock>() -> WeightKind {
        WeightKind {
            name: W::NAME,
            ggml_type: W::GGML_TYPE,
            block_bytes: W::SIZE,
            block_elements: W::ELEMENTS,
            activation: <W::Activation as ActivationBlock>::KIND,
            kernels: W::kernels,
            dequantize: dequantize_bytes::<W>,
            quantize: quantize_bytes::<W>,
            repack: None,
        }
    }

    /// The record of `W`, with its 16-row layout.
    pub(crate) const fn repacked<W: Repack>() -> WeightKind {
        WeightKind {
            repack: Some(Repacking {
                pack: PackedMatrix::pack_weight::<W>,
                dequantize: PackedMatrix::dequantize_block::<W>,
            }),
            ..WeightKind::of::<W>()
        }
    }

    /// The activation type its products read.
    pub fn activation(&self) -> &'static str {
        self.activation.name
    }

    /// `x` in this type, ggml's reference rounding: a whole number of blocks' values. Large
    /// inputs are split across the current rayon pool in runs of whole blocks, so the bytes do
    /// not depend on the thread count.
    pub fn quantize(&self, x: &[f32]) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        /// Values per task: enough to keep a thread busy, small enough to balance.
        const VALUES_PER_TASK: usize = 1 << 16;
        if !x.len().is_multiple_of(self.block_elements) {
            return Err(Error::invalid(format!(
                "{} values are not whole {} blocks of {}",
                x.len(),
                self.name,
                self.block_elements
            )));
        }
        let mut out = vec![0u8; x.len() / self.block_elements * self.block_bytes];
        let blocks_per_task = (VALUES_PER_TASK / self.block_elements).max(1);
        x.par_chunks(blocks_per_task * self.block_elements)
            .zip(out.par_chunks_mut(blocks_per_task * self.block_bytes))
            .for_each(|(x, o)| (self.quantize)(x, o));
        Ok(out)
    }

    /// Whole blocks' values in f32, in ggml's arithmetic: `out` holds
    /// `bytes.len() / block_bytes * block_elements` values.
    pub fn dequantize_blocks(&self, bytes: &[u8], out: &mut [f32]) {
        let blocks = bytes.chunks_exact(self.block_bytes);
        for (block, values) in blocks.zip(out.chunks_exact_mut(self.block_elements)) {
            (self.dequantize)(block, values);
        }
    }

    /// The weight type named `name` (ggml's name, any case: `"q4_0"`, `"Q4_K"`, `"bf16"`).
    pub fn by_name(name: &str) -> Result<&'static WeightKind> {
        WEIGHT_KINDS
            .iter()
            .copied()
            .find(|k| k.name.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                let known: Vec<_> = WEIGHT_KINDS.iter().map(|k| k.name).collect();
                Error::invalid(format!(
                    "unknown weight type {name:?}; known: {}",
                    known.join(", ")
                ))
            })
    }

    /// Whether this is a float type (F32, F16, BF16) rather than a quantization.
    pub fn is_float(&self) -> bool {
        *self.activation == *<BlockF32 as ActivationBlock>::KIND
    }

    /// The weight type with ggml type id `id`, if the kernels multiply it.
    pub fn for_ggml_type(id: u32) -> Option<&'static WeightKind> {
        WEIGHT_KINDS.iter().copied().find(|k| k.ggml_type == id)
    }
}

impl PartialEq for WeightKind {
    fn eq(&self, other: &Self) -> bool {
        self.ggml_type == other.ggml_type
    }
}

impl std::fmt::Debug for WeightKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

fn dequantize_bytes<W: WeightBlock>(bytes: &[u8], out: &mut [f32]) {
    if let Ok([block]) = cast_blocks::<W>(bytes) {
        block.dequantize(out);
    }
}

fn quantize_bytes<W: WeightBlock>(x: &[f32], out: &mut [u8]) {
    if let Ok(blocks) = cast_blocks_mut::<W>(out) {
        for (blk, xs) in blocks.iter_mut().zip(x.chunks_exact(W::ELEMENTS)) {
            *blk = W::quantize(xs);
        }
    }
}

/// Every weight type the kernels multiply.
pub const WEIGHT_KINDS: [&WeightKind; 13] = [
    BlockQ4_0::KIND,
    BlockQ4_1::KIND,
    BlockQ5_0::KIND,
    BlockQ5_1::KIND,
    BlockQ2K::KIND,
    BlockQ3K::KIND,
    BlockQ4K::KIND,
    BlockQ5K::KIND,
    BlockQ6K::KIND,
    <BlockQ8_0 as WeightBlock>::KIND,
    BlockF16::KIND,
    BlockBF16::KIND,
    <BlockF32 as WeightBlock>::KIND,
];
