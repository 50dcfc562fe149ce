//! Our own CPU kernels for model weights: dot and matrix products of every weight type in
//! [`WEIGHT_KINDS`] (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K against 8-bit
//! activations; F16, BF16 and F32 against f32 activations), activation quantization, and
//! run-time CPU dispatch.
//!
//! * [`blocks`]: what block types share, viewed safely from file bytes at any alignment.
//! * [`types`]: each block type in its own file, and which kernels multiply it.
//! * [`quantize`]: f32 activations to Q8_1 / Q8_0, bit-exact with ggml's x86 SIMD path.
//! * [`dot`]: the row-at-a-time walk of the scalar references and NEON.
//! * `avx2`, `avx512`, `neon`: SIMD micro-kernels, each a `#[target_feature]` function.
//! * [`matmul`]: [`QWeight`], activation preparation and the threaded products.
//! * [`packed`]: weights repacked 16 rows at a time for the x86-64 kernels.
//! * [`pool`]: the persistent spinning thread [`Pool`].
//! * [`dispatch`]: CPU detection; [`Kernels`] is the entry point.
//!
//! ```no_run
//! use smolgen_core::kernels::{Activation, BlockQ4_1, Kernels, Pool, QMatrix, QWeight};
//! # fn f(bytes: &[u8], x: &[f32]) -> smolgen_core::Result<()> {
//! let w = QWeight::from(QMatrix::<BlockQ4_1>::from_bytes(bytes, 1536, 576)?);
//! let kernels = Kernels::best();
//! let mut act = Activation::default();
//! kernels.quantize_activation(x, 576, &[w], &mut act)?; // once for every matrix reading x
//! let mut y = vec![0f32; act.rows() * 1536];
//! kernels.matmul_many(Pool::global(), &act, &mut [(w, &mut y[..])])?;
//! # Ok(()) }
//! ```

pub mod blocks;
pub mod cache;
pub mod dispatch;
pub mod dot;
pub mod matmul;
pub mod packed;
pub mod pool;
mod prepared;
pub mod quantize;
#[cfg(any(test, feature = "bench"))]
mod single;
pub mod types;

#[cfg(target_arch = "aarch64")]
mod arm;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

pub use blocks::{cast_blocks, Block, QMatrix, QK};
pub use cache::exceeds_last_level_cache;
pub use dispatch::{available_isas, kernel_path, Isa, Kernels};
pub use matmul::{Activation, QWeight, MAX_SHARED_MATMULS};
pub use packed::{PackedMatrix, Repack};
pub use pool::Pool;
pub use types::{
    ActivationBlock, BlockBF16, BlockF16, BlockF32, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0,
    BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8_0, BlockQ8_1, WeightBlock,
    WeightKind, WEIGHT_KINDS,
};
