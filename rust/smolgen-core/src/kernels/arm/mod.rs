//! aarch64 bodies of the kernels (Advanced SIMD).

pub(crate) mod neon;
