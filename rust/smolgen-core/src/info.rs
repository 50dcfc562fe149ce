//! What a loaded model is: shape, size, storage formats, memory needs.

use std::collections::BTreeMap;

use candle_core::Device;

use crate::engine::Engine;
use crate::load::config::RopeLayout;
use crate::load::weights::Weights;
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub architecture: String,
    pub path: String,
    /// `gguf` or `safetensors`.
    pub format: String,
    pub parameters: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub context_length: usize,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub rope_layout: String,
    pub tied_embeddings: bool,
    /// Tensor kind (`attn_q`, `ffn_down`, `token_embd`, ...) -> storage type(s) (`Q4_1`, `F32`).
    pub weight_types: BTreeMap<String, String>,
    pub weight_bytes: usize,
    pub kv_bytes_per_token: usize,
    /// `"f16"` or `"f32"`.
    pub kv_cache_format: String,
    pub device: String,
    pub load_seconds: f64,
    /// What runs the forward pass: our CPU kernels' instruction set (`avx512vnni`,
    /// `avx2+vnni`, `avx2+fma`, `neon`, `scalar`) or `candle`.
    pub engine: String,
    /// Threads of our CPU kernels (`None` under candle).
    pub threads: Option<usize>,
    /// How a GPU holds the matrices: `"f32"`, `"f16"` or `"quantized"` (`None` on the CPU).
    pub gpu_weights: Option<String>,
    /// The environment's settings as parsed ([`crate::settings`]): each variable's value or
    /// `"auto"`.
    pub settings: BTreeMap<String, String>,
}

impl ModelInfo {
    pub fn new(engine: &Engine, weights: &Weights, device: &Device, load_seconds: f64) -> Self {
        let cfg = &engine.cfg;
        let mut kinds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, t) in &weights.loaded {
            let kind = tensor_kind(name);
            let types = kinds.entry(kind).or_default();
            if !types.contains(&t.dtype) {
                types.push(t.dtype.clone());
            }
        }
        ModelInfo {
            architecture: cfg.architecture.clone(),
            path: weights.path().display().to_string(),
            format: weights.format().to_string(),
            parameters: weights.loaded.values().map(|t| t.elements).sum(),
            layers: cfg.num_layers,
            heads: cfg.num_heads,
            kv_heads: cfg.num_kv_heads,
            head_dim: cfg.head_dim,
            hidden_size: cfg.hidden_size,
            intermediate_size: cfg.intermediate_size,
            context_length: cfg.context_length,
            vocab_size: cfg.vocab_size,
            rope_theta: cfg.rope_theta,
            rope_layout: match cfg.rope_layout {
                RopeLayout::Interleaved => "interleaved",
                RopeLayout::HalfSplit => "half-split",
            }
            .to_string(),
            tied_embeddings: engine.tied_embeddings,
            weight_types: kinds.into_iter().map(|(k, v)| (k, v.join("/"))).collect(),
            weight_bytes: weights.loaded.values().map(|t| t.bytes).sum(),
            kv_bytes_per_token: cfg.kv_bytes_per_token(engine.kv_format().bytes()),
            kv_cache_format: engine.kv_format().name().to_string(),
            device: device_name(device),
            load_seconds,
            engine: engine.engine_name().to_string(),
            threads: engine.threads(),
            gpu_weights: engine.gpu_weights().map(|w| w.name().to_string()),
            settings: Settings::get()
                .map(|s| {
                    s.describe()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// `blk.7.attn_q.weight` -> `attn_q`; `token_embd.weight` -> `token_embd`.
fn tensor_kind(name: &str) -> String {
    let name = name.strip_suffix(".weight").unwrap_or(name);
    match name.strip_prefix("blk.") {
        Some(rest) => rest.split_once('.').map_or(rest, |(_, k)| k).to_string(),
        None => name.to_string(),
    }
}

pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
