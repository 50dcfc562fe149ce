//! x86-64 bodies of the kernels: AVX2 (+ AVX-VNNI) and AVX-512 VNNI, each function compiled
//! for its instruction set with `#[target_feature]` and reached only through a
//! [`super::Kernels`] handle that exists when the CPU has it.

pub(crate) mod avx2;
pub(crate) mod walk;
// AVX-512 intrinsics and target features are stable since Rust 1.89, the workspace's minimum.
pub(crate) mod avx512;
