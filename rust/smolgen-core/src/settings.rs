//! The environment variables smolgen reads, parsed in one place, once per process, and strictly:
//! an unknown value is an [`Error::InvalidArgument`] naming the variable and what it accepts,
//! never a silent fallback.
//!
//! * `SMOLGEN_KERNELS`: the kernel path of our CPU engine, `auto` (the best this CPU has) or one
//!   of `scalar`, `avx2`, `avxvnni`, `avx512`, `neon` (or their long names, `avx2+fma`, ...). A
//!   path this CPU lacks is an [`Error::Unsupported`].
//! * `SMOLGEN_ENGINE`: `auto` (our kernels where they apply, candle elsewhere) or `candle` (candle
//!   everywhere, to compare).
//! * `SMOLGEN_THREADS`: the CPU kernels' threads when a load names none, `auto` (one per core)
//!   or 1..=[`MAX_THREADS`].
//! * `SMOLGEN_KV_CACHE`: the number format of the CPU KV cache, `f16` (the default: half the
//!   memory and reads) or `f32` (the precise path).
//! * `SMOLGEN_GPU_WEIGHTS`: how candle holds a quantized file's matrices on a GPU: `quantized`
//!   (as stored, multiplied by candle's kernels over 8-bit-quantized activations), or expanded
//!   at load to `f16` or `f32` and multiplied by the vendor's GEMM. `auto`: f32 where the
//!   expanded matrices take at most [`GpuWeights::F32_LIMIT_BYTES`], else f16.
//!
//! Unset or empty means `auto`.

use std::sync::OnceLock;

use crate::cache::element::KvFormat;
use crate::error::{Error, Result};
use crate::kernels::pool::MAX_THREADS;
use crate::kernels::{Isa, Kernels};

/// Which engine runs a model that our kernels could run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineChoice {
    /// Our CPU kernels where they apply, candle elsewhere.
    Auto,
    /// candle everywhere.
    Candle,
}

/// How candle holds a quantized file's matrices off the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuWeights {
    /// f32 for a model small enough, else f16 ([`GpuWeights::resolve`]).
    Auto,
    /// As stored; candle's kernels quantize the activations to 8 bits.
    Quantized,
    /// Expanded to f16 at load.
    F16,
    /// Expanded to f32 at load: the precise path.
    F32,
}

impl GpuWeights {
    /// The most f32 matrices `auto` expands to (SmolLM2-135M and -360M take 0.5 and 1.4 GB;
    /// 1.7B, 6.8 GB, gets f16).
    pub const F32_LIMIT_BYTES: usize = 2 << 30;

    /// `Auto` decided for a model with `matrix_elements` weights in its matrices.
    pub fn resolve(self, matrix_elements: usize) -> GpuWeights {
        match self {
            GpuWeights::Auto if matrix_elements * 4 <= Self::F32_LIMIT_BYTES => GpuWeights::F32,
            GpuWeights::Auto => GpuWeights::F16,
            chosen => chosen,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GpuWeights::Auto => "auto",
            GpuWeights::Quantized => "quantized",
            GpuWeights::F16 => "f16",
            GpuWeights::F32 => "f32",
        }
    }
}

/// What the environment asks for; `None`: choose automatically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub kernels: Option<Isa>,
    pub engine: EngineChoice,
    pub threads: Option<usize>,
    pub kv_cache: KvFormat,
    pub gpu_weights: GpuWeights,
}

impl Settings {
    /// The process's settings, read from the environment the first time they are asked for.
    pub fn get() -> Result<&'static Settings> {
        // Parse errors are all invalid arguments; their message is what is kept.
        static SETTINGS: OnceLock<std::result::Result<Settings, String>> = OnceLock::new();
        SETTINGS
            .get_or_init(|| {
                Settings::parse(|name| std::env::var(name).ok()).map_err(|e| match e {
                    Error::InvalidArgument(message) => message,
                    other => other.to_string(),
                })
            })
            .as_ref()
            .map_err(|message| Error::InvalidArgument(message.clone()))
    }

    /// Parses the variables `lookup` finds (the environment, or a test's map).
    pub fn parse(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let value = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty() && v != "auto")
        };
        let kernels = match value("SMOLGEN_KERNELS") {
            None => None,
            Some(v) => Some(Isa::parse(&v).ok_or_else(|| {
                Error::invalid(format!(
                    "SMOLGEN_KERNELS={v:?} is not a kernel path (expected auto, scalar, avx2, \
                     avxvnni, avx512 or neon)"
                ))
            })?),
        };
        let engine = match value("SMOLGEN_ENGINE").as_deref() {
            None => EngineChoice::Auto,
            Some("candle") => EngineChoice::Candle,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "SMOLGEN_ENGINE={v:?} is not an engine (expected auto or candle)"
                )))
            }
        };
        let threads = match value("SMOLGEN_THREADS") {
            None => None,
            Some(v) => Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_THREADS).contains(n))
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "SMOLGEN_THREADS={v:?} is not a thread count (expected auto or \
                             1..={MAX_THREADS})"
                        ))
                    })?,
            ),
        };
        let kv_cache = match value("SMOLGEN_KV_CACHE") {
            None => KvFormat::default(),
            Some(v) => KvFormat::parse(&v).map_err(|_| {
                Error::invalid(format!(
                    "SMOLGEN_KV_CACHE={v:?} is not a KV cache format (expected auto, f16 or f32)"
                ))
            })?,
        };
        let gpu_weights = match value("SMOLGEN_GPU_WEIGHTS").as_deref() {
            None => GpuWeights::Auto,
            Some("quantized") => GpuWeights::Quantized,
            Some("f16") => GpuWeights::F16,
            Some("f32") => GpuWeights::F32,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "SMOLGEN_GPU_WEIGHTS={v:?} is not a way to hold weights (expected auto, \
                     quantized, f16 or f32)"
                )))
            }
        };
        Ok(Settings {
            kernels,
            engine,
            threads,
            kv_cache,
            gpu_weights,
        })
    }

    /// The kernel path to run: the one asked for, or the best this CPU has.
    pub fn kernels(&self) -> Result<Kernels> {
        match self.kernels {
            None => Ok(Kernels::best()),
            Some(isa) => Kernels::for_isa(isa).ok_or_else(|| {
                Error::unsupported(format!(
                    "SMOLGEN_KERNELS asks for the {} kernels, which this CPU (or build) lacks; \
                     it has {}",
                    isa.name(),
                    crate::kernels::available_isas()
                        .iter()
                        .map(|i| i.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
        }
    }

    /// `threads` as a load gives it (0: not given), resolved against `SMOLGEN_THREADS`
    /// (0 still means one per core).
    pub fn threads(&self, threads: usize) -> usize {
        match threads {
            0 => self.threads.unwrap_or(0),
            n => n,
        }
    }

    /// What was chosen, for `Model.info`: each variable's parsed value or `"auto"`.
    pub fn describe(&self) -> [(&'static str, String); 5] {
        let auto = || "auto".to_string();
        [
            (
                "SMOLGEN_KERNELS",
                self.kernels.map_or_else(auto, |i| i.name().to_string()),
            ),
            (
                "SMOLGEN_ENGINE",
                match self.engine {
                    EngineChoice::Auto => auto(),
                    EngineChoice::Candle => "candle".to_string(),
                },
            ),
            (
                "SMOLGEN_THREADS",
                self.threads.map_or_else(auto, |n| n.to_string()),
            ),
            ("SMOLGEN_KV_CACHE", self.kv_cache.name().to_string()),
            ("SMOLGEN_GPU_WEIGHTS", self.gpu_weights.name().to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(vars: &[(&str, &str)]) -> Result<Settings> {
        Settings::parse(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_empty_and_auto_choose_automatically() {
        let auto = Settings {
            kernels: None,
            engine: EngineChoice::Auto,
            threads: None,
            kv_cache: KvFormat::F16,
            gpu_weights: GpuWeights::Auto,
        };
        assert_eq!(parse(&[]).ok(), Some(auto.clone()));
        let blank = [
            ("SMOLGEN_KERNELS", " "),
            ("SMOLGEN_ENGINE", "AUTO"),
            ("SMOLGEN_THREADS", "auto"),
            ("SMOLGEN_KV_CACHE", ""),
            ("SMOLGEN_GPU_WEIGHTS", "auto"),
        ];
        assert_eq!(parse(&blank).ok(), Some(auto));
    }

    #[test]
    fn known_values_parse() {
        let s = parse(&[
            ("SMOLGEN_KERNELS", "Scalar"),
            ("SMOLGEN_ENGINE", "candle"),
            ("SMOLGEN_THREADS", "3"),
            ("SMOLGEN_KV_CACHE", "F32"),
            ("SMOLGEN_GPU_WEIGHTS", "F16"),
        ]);
        let s = s.ok();
        assert_eq!(s.as_ref().map(|s| s.kv_cache), Some(KvFormat::F32));
        assert_eq!(s.as_ref().map(|s| s.gpu_weights), Some(GpuWeights::F16));
        assert_eq!(s.as_ref().and_then(|s| s.kernels), Some(Isa::Scalar));
        assert_eq!(s.as_ref().map(|s| s.engine), Some(EngineChoice::Candle));
        assert_eq!(s.as_ref().map(|s| s.threads(0)), Some(3));
        assert_eq!(s.as_ref().map(|s| s.threads(2)), Some(2));
        assert_eq!(
            s.and_then(|s| s.kernels().ok()).map(|k| k.isa()),
            Some(Isa::Scalar)
        );
    }

    #[test]
    fn unknown_values_are_invalid_argument_errors() {
        for vars in [
            [("SMOLGEN_KERNELS", "avx9")],
            [("SMOLGEN_ENGINE", "ours")],
            [("SMOLGEN_THREADS", "0")],
            [("SMOLGEN_THREADS", "-1")],
            [("SMOLGEN_THREADS", "100000")],
            [("SMOLGEN_THREADS", "two")],
            [("SMOLGEN_KV_CACHE", "q8_0")],
            [("SMOLGEN_GPU_WEIGHTS", "bf16")],
        ] {
            let err = parse(&vars).err();
            assert!(
                matches!(&err, Some(Error::InvalidArgument(m)) if m.contains(vars[0].0)),
                "{vars:?}: {err:?}"
            );
        }
    }

    #[test]
    fn auto_gpu_weights_are_f32_up_to_the_limit_then_f16() {
        let limit = GpuWeights::F32_LIMIT_BYTES / 4;
        assert_eq!(GpuWeights::Auto.resolve(limit), GpuWeights::F32);
        assert_eq!(GpuWeights::Auto.resolve(limit + 1), GpuWeights::F16);
        assert_eq!(
            GpuWeights::Quantized.resolve(limit + 1),
            GpuWeights::Quantized
        );
    }

    #[test]
    fn a_path_this_cpu_lacks_is_unsupported() {
        let missing = Isa::ALL.into_iter().find(|i| !i.is_available());
        if let Some(isa) = missing {
            let s = Settings {
                kernels: Some(isa),
                engine: EngineChoice::Auto,
                threads: None,
                kv_cache: KvFormat::F16,
                gpu_weights: GpuWeights::Auto,
            };
            assert!(matches!(s.kernels(), Err(Error::Unsupported { .. })));
        }
    }
}
