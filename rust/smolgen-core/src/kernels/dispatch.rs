//! Run-time CPU dispatch: which instruction set the kernels use.
//!
//! The CPU is probed once. Every SIMD kernel is a `#[target_feature]` function reached only
//! through a [`Kernels`] handle, and a handle for an instruction set exists only when the CPU
//! has it, so a portable build (no `-C target-cpu`) runs the same code as a native one. Each
//! block type names its kernels per instruction set ([`super::types`]).
//!
//! `SMOLGEN_KERNELS` forces a path for the engine (see [`crate::settings`]): an unknown name, or a
//! path this CPU lacks, is an error, not a silent fallback.

use std::sync::OnceLock;

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

/// The kernels of one instruction set this CPU has. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    isa: Isa,
}

impl Kernels {
    /// The path for `isa`, or `None` when this CPU (or this build's architecture) lacks it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        isa.is_available().then_some(Kernels { isa })
    }

    /// The best path this CPU has; probed once per process. (The engine runs the one
    /// [`crate::settings::Settings::kernels`] chooses, which honours `SMOLGEN_KERNELS`.)
    pub fn best() -> Kernels {
        static BEST: OnceLock<Kernels> = OnceLock::new();
        *BEST
            .get_or_init(|| Kernels::for_isa(detect_best()).unwrap_or(Kernels { isa: Isa::Scalar }))
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn name(&self) -> &'static str {
        self.isa.name()
    }
}

/// The kernel path the engine runs on this CPU, `SMOLGEN_KERNELS` honoured: `"avx512vnni"`,
/// `"avx2+vnni"`, `"avx2+fma"`, `"neon"` or `"scalar"`.
pub fn kernel_path() -> crate::error::Result<&'static str> {
    Ok(crate::settings::Settings::get()?.kernels()?.name())
}
