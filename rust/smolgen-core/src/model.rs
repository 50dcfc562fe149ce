//! A loaded model: what [`Model::load`] reads from a GGUF file or a Hugging Face directory
//! (the engine with its weights, the tokenizer, what is known about them) and the one-pass
//! inspections (logits, attention) that need no generation.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use candle_core::{DType, Device};

use crate::cache::prefix::PrefixCache;
use crate::engine::{Engine, LogitsFor};
use crate::error::{Error, Result};
use crate::generate::constraint::Grammars;
use crate::info::ModelInfo;
use crate::kernels;
use crate::load::config::Config;
use crate::load::{gguf, weights};
use crate::settings::{EngineChoice, Settings};
use crate::tokenizer::Tokenizer;

/// Bytes of finished requests' keys and values kept for reuse unless the caller says otherwise.
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 256 << 20;

/// A loaded model: weights, tokenizer and what is known about them.
pub struct Model {
    pub engine: Engine,
    pub tokenizer: Arc<Tokenizer>,
    pub info: ModelInfo,
    /// Shared by every request on this model; see [`prefix_cache`].
    prefix_cache: Mutex<PrefixCache>,
    /// Built by the first constrained request; see [`Model::grammars`].
    grammars: OnceLock<std::result::Result<Grammars, String>>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

impl Model {
    /// Loads a `.gguf` file or a Hugging Face directory (`config.json`, `*.safetensors`,
    /// `tokenizer.json`). `dtype` converts safetensors weights (f32, f16, bf16); `quantize`
    /// quantizes their matrices at load (ggml's reference rounding, llama-quantize's fallbacks
    /// for rows a K-quant's superblocks do not tile); a GGUF keeps its own quantization.
    /// `threads` sizes the CPU kernels' thread pool (0: `SMOLGEN_THREADS`, else one per core).
    pub fn load(
        path: impl AsRef<Path>,
        device: &Device,
        dtype: Option<DType>,
        quantize: Option<&'static kernels::WeightKind>,
        threads: usize,
    ) -> Result<Self> {
        let path = path.as_ref();
        let t0 = Instant::now();
        if threads > kernels::pool::MAX_THREADS {
            return Err(Error::invalid(format!(
                "threads must be between 1 and {}, got {threads}",
                kernels::pool::MAX_THREADS
            )));
        }
        let settings = Settings::get()?;
        // The environment's choice of kernels is checked before the file is read, so that its
        // error is not taken for the file's.
        if device.is_cpu() && settings.engine != EngineChoice::Candle {
            settings.kernels()?;
        }
        let threads = settings.threads(threads);
        let loaded = if path.is_dir() {
            Self::load_hf_dir(path, device, dtype, quantize, t0, threads)
        } else if path.exists() {
            if dtype.is_some() || quantize.is_some() {
                return Err(Error::invalid(
                    "dtype and quantize apply to safetensors weights; a GGUF file keeps its own \
                     quantization",
                ));
            }
            Self::load_gguf(path, device, t0, threads)
        } else {
            Err(Error::ModelNotFound(path.to_path_buf()))
        };
        loaded.map_err(|e| e.loading(path))
    }

    /// The store of reusable prompt prefixes (resize it with `set_capacity_bytes`; 0 disables).
    pub fn prefix_cache(&self) -> MutexGuard<'_, PrefixCache> {
        // A panic while the lock was held leaves nothing half-written that matters here:
        // the worst case is a missing entry.
        self.prefix_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The compiler of this model's structured-output grammars. Its vocabulary trie takes a
    /// moment to build, so it is built by the first request that needs it, then kept.
    pub fn grammars(&self) -> Result<&Grammars> {
        self.grammars
            .get_or_init(|| Grammars::new(Arc::clone(&self.tokenizer)).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::invalid(e.clone()))
    }

    /// Next-token logits after `tokens`, in one fresh forward pass: `[vocab]` for the last
    /// position, or `[tokens, vocab]` for every position.
    pub fn logits(&self, tokens: &[u32], which: LogitsFor) -> Result<(Vec<f32>, usize)> {
        let mut cache = self.engine.new_cache();
        let logits = self.engine.forward(tokens, &mut cache, which)?;
        let rows = match which {
            LogitsFor::Last => 1,
            LogitsFor::All => tokens.len(),
        };
        Ok((logits, rows))
    }

    /// The attention weights of one fresh forward pass over `tokens`, row-major with their
    /// shape `[layers.len(), heads, tokens, tokens]` (row: query position, column: key
    /// position; each row sums to 1). `layers` default to all; out-of-range layers are an error.
    pub fn attention(
        &self,
        tokens: &[u32],
        layers: Option<&[usize]>,
    ) -> Result<(Vec<f32>, [usize; 4])> {
        let num_layers = self.engine.cfg.num_layers;
        let all: Vec<usize> = (0..num_layers).collect();
        let layers = layers.unwrap_or(&all);
        if layers.is_empty() {
            return Err(Error::invalid("layers must name at least one layer"));
        }
        if let Some(&bad) = layers.iter().find(|&&l| l >= num_layers) {
            return Err(Error::invalid(format!(
                "layer {bad} does not exist (the model has {num_layers} layers)"
            )));
        }
        let mut distinct = layers.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let mut kept = Vec::with_capacity(distinct.len());
        let mut cache = self.engine.new_cache();
        self.engine.forward_inspect(
            tokens,
            &mut cache,
            LogitsFor::Last,
            Some((&distinct, &mut kept)),
        )?;
        // The pass keeps them in layer order; hand them back in the order asked for.
        let t = tokens.len();
        let shape = [layers.len(), self.engine.cfg.num_heads, t, t];
        let mut out = Vec::with_capacity(shape.iter().product());
        for layer in layers {
            if let Ok(i) = distinct.binary_search(layer) {
                out.extend_from_slice(&kept[i]);
            }
        }
        Ok((out, shape))
    }

    fn load_gguf(path: &Path, device: &Device, t0: Instant, threads: usize) -> Result<Self> {
        let mut file = gguf::GgufFile::open(path)?;
        let cfg = Config::from_gguf(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        check_vocabulary(path, &tokenizer, &cfg)?;
        file.shed_header();
        let mut weights = weights::Weights::gguf(file, device);
        let engine = Engine::load(cfg, &mut weights, device, threads)?;
        Self::finish(engine, tokenizer, &weights, device, t0)
    }

    fn load_hf_dir(
        dir: &Path,
        device: &Device,
        dtype: Option<DType>,
        quantize: Option<&'static kernels::WeightKind>,
        t0: Instant,
        threads: usize,
    ) -> Result<Self> {
        let read = |name: &str| -> Result<Option<String>> {
            let p = dir.join(name);
            match std::fs::read_to_string(&p) {
                Ok(s) => Ok(Some(s)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Io { path: p, source: e }),
            }
        };
        let config_path = dir.join("config.json");
        let config_json =
            read("config.json")?.ok_or_else(|| Error::ModelNotFound(config_path.clone()))?;
        let cfg = Config::from_hf_json(&config_json, &config_path)?;
        let tokenizer = Tokenizer::load(dir)?;
        check_vocabulary(dir, &tokenizer, &cfg)?;
        let mut dir_weights = weights::SafetensorsDir::open(dir, dtype)?;
        if let Some(kind) = quantize {
            dir_weights = dir_weights.quantized(kind)?;
        }
        let mut weights = weights::Weights::safetensors(dir_weights, device);
        let engine = Engine::load(cfg, &mut weights, device, threads)?;
        Self::finish(engine, tokenizer, &weights, device, t0)
    }

    fn finish(
        engine: Engine,
        tokenizer: Tokenizer,
        weights: &weights::Weights,
        device: &Device,
        t0: Instant,
    ) -> Result<Self> {
        let info = ModelInfo::new(&engine, weights, device, t0.elapsed().as_secs_f64());
        Ok(Model {
            engine,
            tokenizer: Arc::new(tokenizer),
            info,
            prefix_cache: Mutex::new(PrefixCache::new(DEFAULT_PREFIX_CACHE_BYTES)),
            grammars: OnceLock::new(),
        })
    }
}

/// The tokenizer makes only ids the model has embeddings for.
fn check_vocabulary(path: &Path, tokenizer: &Tokenizer, cfg: &Config) -> Result<()> {
    if tokenizer.vocab_size() > cfg.vocab_size {
        return Err(Error::malformed(
            path,
            format!(
                "the tokenizer has {} token ids, the model's vocabulary only {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            ),
        ));
    }
    Ok(())
}

/// `"cpu"`, `"cuda"`, `"cuda:N"` or `"metal"`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let unavailable = |e: candle_core::Error| {
        Error::unsupported(format!(
            "device `{spec}` is not available in this build: {e}"
        ))
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).map_err(unavailable),
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| Error::invalid(format!("unknown device `{spec}`")))?,
                None => {
                    return Err(Error::invalid(format!(
                        "unknown device `{spec}` (expected cpu, cuda, cuda:N or metal)"
                    )))
                }
            };
            Device::new_cuda(ordinal).map_err(unavailable)
        }
    }
}

/// `"f32"`, `"f16"` or `"bf16"` (also the long names `float32`, ...).
pub fn parse_dtype(spec: &str) -> Result<DType> {
    match spec {
        "f32" | "float32" => Ok(DType::F32),
        "f16" | "float16" => Ok(DType::F16),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        _ => Err(Error::invalid(format!(
            "unknown dtype `{spec}` (expected f32, f16 or bf16)"
        ))),
    }
}
