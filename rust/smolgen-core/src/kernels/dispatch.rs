//! Run-time CPU dispatch: which instruction set the kernels use.
//!
//! The CPU is probed once. Every SIMD kernel is a `#[target_feature]` function reached only
//! through a [`Kernels`] handle, and a handle for an instruction set exists only when the CPU
//! has it, so a portable build (no `-C target-cpu`) runs the same code as a native one.
//!
//! `SMOLGEN_KERNELS` forces a path for the engine (see [`crate::settings`]): an unknown name, or a
//! path this CPU lacks, is an error, not a silent fallback.

use std::sync::OnceLock;

use super::blocks::{BlockQ4_1, BlockQ8_0, BlockQ8_1};
use super::packed::{PackedQ4_1, PackedQ8_0};
use super::prepared::{GemmFn, Layout, PackedGemmFn};

/// An instruction set the kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust; the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C, 256-bit.
    Avx2,
    /// AVX2 plus AVX-VNNI (256-bit `vpdpbusd`, Intel's client CPUs since Alder Lake): the AVX2
    /// kernels, with `vpdpbusd` in the 16-row ones.
    AvxVnni,
    /// x86-64 AVX-512 F/BW/VL + VNNI (`vpdpbusd`), 512-bit, two blocks per step.
    Avx512Vnni,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every path, most capable last.
    pub const ALL: [Isa; 5] = [
        Isa::Scalar,
        Isa::Neon,
        Isa::Avx2,
        Isa::AvxVnni,
        Isa::Avx512Vnni,
    ];

    /// A short description: `"scalar"`, `"avx2+fma"`, `"avx2+vnni"`, `"avx512vnni"` or
    /// `"neon"`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma",
            Isa::AvxVnni => "avx2+vnni",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Neon => "neon",
        }
    }

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => Isa::Avx2.is_available() && is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                Isa::Avx2.is_available()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// A path by name: its short name (`avx2`, `avxvnni`, `avx512`) or [`Isa::name`].
    pub fn parse(s: &str) -> Option<Isa> {
        match s.trim().to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" | "avx2+fma" => Some(Isa::Avx2),
            "avxvnni" | "avx2+vnni" => Some(Isa::AvxVnni),
            "avx512" | "avx512vnni" => Some(Isa::Avx512Vnni),
            "neon" => Some(Isa::Neon),
            _ => None,
        }
    }
}

/// The paths this CPU can run, scalar first.
pub fn available_isas() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
}

fn detect_best() -> Isa {
    available_isas().into_iter().last().unwrap_or(Isa::Scalar)
}

/// One instruction set's function set.
pub(crate) struct Table {
    pub isa: Isa,
    pub layout_q4_1: Layout,
    pub layout_q8_0: Layout,
    /// # Safety: the CPU supports `isa`; `x.len() == out.len() * 32`.
    pub quantize_q8_1: unsafe fn(&[f32], &mut [BlockQ8_1]),
    /// # Safety: as above.
    pub quantize_q8_0: unsafe fn(&[f32], &mut [BlockQ8_0]),
    pub gemm_q4_1: GemmFn<BlockQ4_1>,
    pub gemm_q8_0: GemmFn<BlockQ8_0>,
    /// Q4_1 and Q8_0 weights in the 16-row layout, where this path has kernels for it (they
    /// read the natural activation layout).
    pub packed: Option<PackedKernels>,
}

/// The 16-row kernels of one instruction set.
pub(crate) struct PackedKernels {
    pub q4_1: PackedGemmFn<PackedQ4_1>,
    pub q8_0: PackedGemmFn<PackedQ8_0>,
}

pub(crate) static SCALAR_TABLE: Table = Table {
    isa: Isa::Scalar,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: super::quantize::quantize_q8_1_scalar,
    quantize_q8_0: super::quantize::quantize_q8_0_scalar,
    gemm_q4_1: super::dot::gemm_q4_1_scalar,
    gemm_q8_0: super::dot::gemm_q8_0_scalar,
    packed: None,
};

#[cfg(target_arch = "x86_64")]
static AVX2_TABLE: Table = Table {
    isa: Isa::Avx2,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: super::quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: super::quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx2::gemm_q4_1,
    gemm_q8_0: super::x86::avx2::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx2::gemm_q4_1x16,
        q8_0: super::x86::avx2::gemm_q8_0x16,
    }),
};

#[cfg(target_arch = "x86_64")]
static AVXVNNI_TABLE: Table = Table {
    isa: Isa::AvxVnni,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: super::quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: super::quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx2::gemm_q4_1,
    gemm_q8_0: super::x86::avx2::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx2::gemm_q4_1x16_vnni,
        q8_0: super::x86::avx2::gemm_q8_0x16_vnni,
    }),
};

#[cfg(target_arch = "x86_64")]
static AVX512_TABLE: Table = Table {
    isa: Isa::Avx512Vnni,
    layout_q4_1: Layout::PairsQ4,
    layout_q8_0: Layout::PairsQ8,
    quantize_q8_1: super::quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: super::quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx512::gemm_q4_1,
    gemm_q8_0: super::x86::avx512::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx512::gemm_q4_1x16,
        q8_0: super::x86::avx512::gemm_q8_0x16,
    }),
};

#[cfg(target_arch = "aarch64")]
static NEON_TABLE: Table = Table {
    isa: Isa::Neon,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: super::quantize::quantize_q8_1_scalar,
    quantize_q8_0: super::quantize::quantize_q8_0_scalar,
    gemm_q4_1: super::arm::neon::gemm_q4_1,
    gemm_q8_0: super::arm::neon::gemm_q8_0,
    packed: None,
};

/// The table for `isa` if this build's architecture has one (availability is checked by the
/// caller, [`Kernels::for_isa`]).
pub(crate) fn table_for(isa: Isa) -> Option<&'static Table> {
    match isa {
        Isa::Scalar => Some(&SCALAR_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&AVX2_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => Some(&AVXVNNI_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(&AVX512_TABLE),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some(&NEON_TABLE),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The function set for one instruction set. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub(crate) table: &'static Table,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Kernels").field(&self.table.isa).finish()
    }
}

impl Kernels {
    /// The path for `isa`, or `None` when this CPU (or this build's architecture) lacks it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        if !isa.is_available() {
            return None;
        }
        table_for(isa).map(|table| Kernels { table })
    }

    /// The best path this CPU has; probed once per process. (The engine runs the one
    /// [`crate::settings::Settings::kernels`] chooses, which honours `SMOLGEN_KERNELS`.)
    pub fn best() -> Kernels {
        static BEST: OnceLock<Kernels> = OnceLock::new();
        *BEST.get_or_init(|| {
            Kernels::for_isa(detect_best()).unwrap_or(Kernels {
                table: &SCALAR_TABLE,
            })
        })
    }

    pub fn isa(&self) -> Isa {
        self.table.isa
    }

    pub fn name(&self) -> &'static str {
        self.table.isa.name()
    }
}

/// The kernel path the engine runs on this CPU, `SMOLGEN_KERNELS` honoured: `"avx512vnni"`,
/// `"avx2+vnni"`, `"avx2+fma"`, `"neon"` or `"scalar"`.
pub fn kernel_path() -> crate::error::Result<&'static str> {
    Ok(crate::settings::Settings::get()?.kernels()?.name())
}
