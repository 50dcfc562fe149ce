//! smolgen-core: SmolLM2 (Llama-architecture) inference with the lid off.
//!
//! The modules follow a token's path:
//!
//! text -> [`tokenizer`] -> ids -> [`engine`] (prefill once, then one token at a time against
//! the [`cache`]'s keys and values; the CPU engine runs on our own [`kernels`], candle runs the
//! rest) -> last-position logits -> [`generate`] (the fused sampler, log-probs, UTF-8 streaming
//! and stop strings, driven by the [`Generation`] step machine) -> text piece.
//!
//! [`load`] reads GGUF files and Hugging Face directories; [`Model`] is what a loaded model is;
//! [`settings`] parses the environment once.

pub mod bandwidth;
pub mod cache;
pub mod convert;
pub mod engine;
pub mod error;
pub mod fastmath;
pub mod generate;
pub mod info;
pub mod kernels;
pub mod load;
pub mod model;
pub mod settings;
pub mod tokenizer;

pub use cache::prefix::{PrefixCache, PrefixCacheStats};
pub use engine::{BatchItem, Engine, LogitsFor};
pub use error::{Error, Result};
pub use generate::constraint::Grammar;
pub use generate::generation::{
    check_context, percentile, Chunk, Completion, FinishReason, GenerateOptions, Generation,
    Timings, DEFAULT_MAX_TOKENS,
};
pub use generate::logprobs::TokenLogprob;
pub use generate::sampler::{Sampler, SamplingParams};
pub use info::ModelInfo;
pub use load::config::Config;
pub use model::{parse_device, parse_dtype, Model, DEFAULT_PREFIX_CACHE_BYTES};
pub use tokenizer::{TokenPiece, Tokenizer};
