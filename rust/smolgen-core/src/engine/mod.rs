//! The Llama decoder, as SmolLM2 uses it, behind one interface for two engines.
//!
//! Paper: Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023), with
//! grouped-query attention (Ainslie et al., 2023). Reference implementation: Hugging Face
//! `transformers/models/llama/modeling_llama.py`; llama.cpp's `llm_build_llama` for GGUF.
//!
//! * [`CpuEngine`]: our own kernels on the memory-mapped file, for weights on the CPU whose
//!   matrices are all of types the kernels multiply ([`crate::kernels::WEIGHT_KINDS`]: Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, so every K-quant mix, and F16, BF16
//!   and F32, so safetensors directories too).
//! * [`CandleEngine`]: candle, for CUDA and Metal, and for GGUF types outside that list (the
//!   IQ quantizations, which SmolLM2 is not published in).

pub mod attention;
pub mod candle;
pub mod cpu;

use std::path::PathBuf;

use candle_core::Device;

use crate::cache::kv::{KvCache, KvFormat};
use crate::engine::candle::CandleEngine;
use crate::engine::cpu::{CpuEngine, SeqStep};
use crate::error::{Error, Result};
use crate::load::config::Config;
use crate::load::weights::Weights;
use crate::settings::{EngineChoice, GpuWeights, Settings};

/// Which positions of a forward pass get next-token logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// Only the last position (generation): skips the 49K-wide LM head for the others.
    Last,
    All,
}

enum Backend {
    Cpu(Box<CpuEngine>),
    Candle(CandleEngine),
}

pub struct Engine {
    pub cfg: Config,
    pub tied_embeddings: bool,
    backend: Backend,
    device: Device,
    /// How new caches store keys and values on the CPU.
    kv_format: KvFormat,
    /// The model's file (or directory), named when its weights turn out to be corrupt.
    source: PathBuf,
}

/// The most prompt tokens one pass of our CPU kernels takes; longer prompts run in slices.
pub const PREFILL_CHUNK: usize = 512;

/// One sequence of a batched [`Engine::forward_batch`].
pub struct BatchItem<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub which: LogitsFor,
}

impl Engine {
    /// Our kernels when every matrix is of a type they cover and the device is the CPU; candle
    /// otherwise. `threads` sizes our kernels' pool (0: one per core).
    pub fn load(
        cfg: Config,
        weights: &mut Weights,
        device: &Device,
        threads: usize,
    ) -> Result<Self> {
        // `SMOLGEN_ENGINE=candle` keeps candle even where our kernels apply (to compare them).
        let settings = Settings::get()?;
        let candle_forced = settings.engine == EngineChoice::Candle;
        let ours = device.is_cpu() && !candle_forced && CpuEngine::supports(weights, &cfg);
        let backend = if ours {
            Backend::Cpu(Box::new(CpuEngine::load(cfg.clone(), weights, threads)?))
        } else {
            Backend::Candle(CandleEngine::load(
                cfg.clone(),
                weights,
                device,
                settings.gpu_weights,
            )?)
        };
        let tied_embeddings = match &backend {
            Backend::Cpu(m) => m.tied_embeddings,
            Backend::Candle(m) => m.tied_embeddings,
        };
        Ok(Engine {
            cfg,
            tied_embeddings,
            backend,
            device: device.clone(),
            // Off the CPU the cache is candle's f32 tensors.
            kv_format: if device.is_cpu() {
                settings.kv_cache
            } else {
                KvFormat::F32
            },
            source: weights.path().to_path_buf(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `"avx512vnni"`, `"avx2+vnni"`, `"avx2+fma"`, `"neon"` or `"scalar"` for our kernels; `"candle"`.
    pub fn engine_name(&self) -> &'static str {
        match &self.backend {
            Backend::Cpu(m) => m.kernels().name(),
            Backend::Candle(_) => "candle",
        }
    }

    /// How candle holds the matrices on a GPU (`None` on the CPU).
    pub fn gpu_weights(&self) -> Option<GpuWeights> {
        match &self.backend {
            Backend::Cpu(_) => None,
            Backend::Candle(m) => m.gpu_weights,
        }
    }

    /// Threads our kernels run on; `None` under candle (its own pool).
    pub fn threads(&self) -> Option<usize> {
        match &self.backend {
            Backend::Cpu(m) => Some(m.threads()),
            Backend::Candle(_) => None,
        }
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::with_format(self.cfg.num_layers, self.cfg.context_length, self.kv_format)
    }

    /// How the KV cache stores keys and values.
    pub fn kv_format(&self) -> KvFormat {
        self.kv_format
    }

    /// Runs `tokens` through the model after what `cache` already holds, appending their keys
    /// and values. Returns logits `[vocab]` (`LogitsFor::Last`) or `[tokens, vocab]` row-major.
    /// Logits that are not all finite are the weights' fault, an [`Error::MalformedModel`]
    /// naming the file.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
    ) -> Result<Vec<f32>> {
        self.forward_inspect(tokens, cache, which, None)
    }

    /// [`Engine::forward`], also keeping the attention weights of the listed layers: each
    /// `[heads, tokens, cached + tokens]`, pushed to `attention` in layer order. The same pass:
    /// nothing is recomputed, and nothing is kept when no layer is listed.
    pub fn forward_inspect(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        attention: Option<(&[usize], &mut Vec<Vec<f32>>)>,
    ) -> Result<Vec<f32>> {
        self.check_step(tokens, cache)?;
        let logits = match &self.backend {
            Backend::Cpu(m) if attention.is_none() && tokens.len() > PREFILL_CHUNK => {
                // Long prompts in slices: the pass's buffers stay the size of one slice, and the
                // row-wise arithmetic gives the same bits as one pass over everything.
                let mut logits = Vec::new();
                let chunks = tokens.len().div_ceil(PREFILL_CHUNK);
                for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
                    let mut seqs = [SeqStep {
                        tokens: chunk,
                        cache: &mut *cache,
                        which,
                    }];
                    let mut out = m.forward(&mut seqs, None)?;
                    if which == LogitsFor::All || i + 1 == chunks {
                        logits.append(&mut out.pop().unwrap_or_default());
                    }
                }
                logits
            }
            Backend::Cpu(m) => {
                let mut seqs = [SeqStep {
                    tokens,
                    cache,
                    which,
                }];
                let mut out = m.forward(&mut seqs, attention)?;
                out.pop().unwrap_or_default()
            }
            Backend::Candle(m) => m
                .forward(tokens, cache, which, attention)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        };
        self.finite(logits)
    }

    /// `logits`, if every one is finite. Token ids inside the vocabulary and finite weights
    /// give finite logits, so a NaN or an infinity here means the weights are corrupt in a way
    /// the load's checks did not see (a bad block they did not sample, values so large that a
    /// product overflows): the model file's fault, never the caller's.
    fn finite(&self, logits: Vec<f32>) -> Result<Vec<f32>> {
        // Without stopping early, so that the compiler tests many values at once.
        let all_finite = logits.iter().fold(true, |ok, x| ok & x.is_finite());
        if all_finite {
            return Ok(logits);
        }
        Err(Error::malformed(
            &self.source,
            "the weights produce non-finite values (NaN or infinity) in the forward pass: the \
             file is corrupt",
        ))
    }

    /// Several sequences' next tokens in one pass over the weights (each with its own cache):
    /// the decode steps of concurrent requests cost about one step's weight traffic. Returns
    /// each sequence's logits as [`Engine::forward`] would, or its own error: corrupt weights
    /// can give one sequence non-finite logits (a bad row of the embedding) and not the
    /// others. The outer error is the pass's. Under candle the sequences run one after another.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Result<Vec<f32>>>> {
        for item in items.iter() {
            self.check_step(item.tokens, item.cache)?;
        }
        match &self.backend {
            Backend::Cpu(m) => {
                let mut seqs: Vec<SeqStep<'_>> = items
                    .iter_mut()
                    .map(|it| SeqStep {
                        tokens: it.tokens,
                        cache: &mut *it.cache,
                        which: it.which,
                    })
                    .collect();
                let logits = m.forward(&mut seqs, None)?;
                Ok(logits.into_iter().map(|l| self.finite(l)).collect())
            }
            Backend::Candle(_) => Ok(items
                .iter_mut()
                .map(|it| self.forward(it.tokens, it.cache, it.which))
                .collect()),
        }
    }

    fn check_step(&self, tokens: &[u32], cache: &KvCache) -> Result<()> {
        let t = tokens.len();
        let pos = cache.len();
        if t == 0 {
            return Err(Error::invalid("forward needs at least one token"));
        }
        if pos + t > self.cfg.context_length {
            return Err(Error::context_exceeded(
                self.cfg.context_length,
                pos + t,
                0,
                "prompt",
            ));
        }
        if cache.num_layers() != self.cfg.num_layers {
            return Err(Error::invalid(format!(
                "a KV cache for {} layers, the model has {}",
                cache.num_layers(),
                self.cfg.num_layers
            )));
        }
        self.check_token_ids(tokens)
    }

    pub fn check_token_ids(&self, tokens: &[u32]) -> Result<()> {
        match tokens
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            Some(bad) => Err(Error::invalid(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            ))),
            None => Ok(()),
        }
    }
}
