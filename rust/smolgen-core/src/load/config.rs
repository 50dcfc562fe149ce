//! The Llama hyper-parameters, read from GGUF metadata or a Hugging Face `config.json`.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::load::gguf::GgufFile;

/// How the rotary embedding pairs up the dimensions of a head.
///
/// llama.cpp's converter permutes the rows of the Q and K projections so that GGUF files use the
/// interleaved ("GPT-J") pairing (0,1), (2,3), ...; Hugging Face checkpoints keep the original
/// "half split" pairing (i, i + d/2). The same weights give the same logits when each format is
/// rotated its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    Interleaved,
    HalfSplit,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
}

/// Sizes beyond these are not a model this library can run; treat them as a corrupt header
/// rather than trying to allocate for them.
const MAX_DIM: usize = 1 << 20;
const MAX_LAYERS: usize = 1024;
const MAX_CONTEXT: usize = 1 << 24;
/// The most token ids a vocabulary may have (a tokenizer's largest id is below it).
pub const MAX_VOCAB: usize = 1 << 24;

impl Config {
    /// Checks the invariants the forward pass relies on, so a bad header fails here, once.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let in_range = |name: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(format!("{name} = {v} is outside 1..={max}"))
            } else {
                Ok(())
            }
        };
        in_range("hidden size", self.hidden_size, MAX_DIM)?;
        in_range("intermediate size", self.intermediate_size, MAX_DIM)?;
        in_range("layer count", self.num_layers, MAX_LAYERS)?;
        in_range("head count", self.num_heads, MAX_DIM)?;
        in_range("KV head count", self.num_kv_heads, MAX_DIM)?;
        // A `config.json` names it: bounded, so that no product of sizes overflows.
        in_range("head dimension", self.head_dim, MAX_DIM)?;
        in_range("vocabulary size", self.vocab_size, MAX_VOCAB)?;
        in_range("context length", self.context_length, MAX_CONTEXT)?;
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(format!(
                "hidden size {} is not divisible by the head count {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "head count {} is not a multiple of the KV head count {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head dimension {} is odd", self.head_dim));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(format!(
                "RMSNorm epsilon {} is not positive",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(format!("RoPE theta {} is not positive", self.rope_theta));
        }
        Ok(())
    }

    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .ok_or_else(|| gguf.malformed("missing metadata key `general.architecture`"))?
            .to_string();
        if arch != "llama" {
            return Err(gguf.unsupported(format!(
                "architecture `{arch}` (smolgen runs Llama-architecture models)"
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let usize_key = |k: &str| -> Result<usize> {
            let v = gguf.require_u64(&key(k))?;
            usize::try_from(v)
                .map_err(|_| gguf.malformed(format!("`{}` = {v} is too large", key(k))))
        };
        let float_key = |k: &str, default: f64| -> Result<f64> {
            match gguf.get(&key(k)) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| gguf.malformed(format!("`{}` is not a number", key(k)))),
            }
        };
        let hidden_size = usize_key("embedding_length")?;
        let num_heads = usize_key("attention.head_count")?;
        let num_kv_heads = match gguf.get(&key("attention.head_count_kv")) {
            None => num_heads,
            Some(_) => usize_key("attention.head_count_kv")?,
        };
        let vocab_size = match gguf.get(&key("vocab_size")) {
            Some(_) => usize_key("vocab_size")?,
            None => gguf
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .ok_or_else(|| gguf.malformed("no vocabulary size and no token list"))?,
        };
        let head_dim = hidden_size.checked_div(num_heads).unwrap_or(0);
        let cfg = Config {
            architecture: arch.clone(),
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            num_layers: usize_key("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            context_length: usize_key("context_length")?,
            rms_norm_eps: float_key("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_theta: float_key("rope.freq_base", 10_000.0)?,
            rope_layout: RopeLayout::Interleaved,
        };
        cfg.validate().map_err(|e| gguf.malformed(e))?;
        if let Some(v) = gguf.get(&key("rope.dimension_count")) {
            if v.as_u64() != Some(cfg.head_dim as u64) {
                return Err(gguf.unsupported(format!(
                    "partial rotary embeddings (rope.dimension_count = {v:?}, head dim {})",
                    cfg.head_dim
                )));
            }
        }
        Ok(cfg)
    }

    /// From a Hugging Face `config.json`.
    pub fn from_hf_json(json: &str, path: &std::path::Path) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(json)
            .map_err(|e| Error::malformed(path, format!("config.json: {e}")))?;
        let archs = hf.architectures.unwrap_or_default();
        let is_llama = hf.model_type.as_deref() == Some("llama")
            || archs.iter().any(|a| a == "LlamaForCausalLM");
        if !is_llama {
            return Err(Error::Unsupported {
                path: Some(path.to_path_buf()),
                reason: format!(
                    "model_type {:?} / architectures {archs:?} (smolgen runs Llama-architecture \
                     models)",
                    hf.model_type
                ),
            });
        }
        if let Some(scaling) = hf.rope_scaling.filter(|v| !v.is_null()) {
            return Err(Error::Unsupported {
                path: Some(path.to_path_buf()),
                reason: format!("rope_scaling {scaling}"),
            });
        }
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        let head_dim = hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1));
        let cfg = Config {
            architecture: "llama".into(),
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: hf.vocab_size,
            context_length: hf.max_position_embeddings,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-5),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_layout: RopeLayout::HalfSplit,
        };
        cfg.validate().map_err(|e| Error::malformed(path, e))?;
        if cfg.head_dim * cfg.num_heads != cfg.hidden_size {
            return Err(Error::Unsupported {
                path: Some(path.to_path_buf()),
                reason: format!(
                    "head_dim {} x {} heads != hidden size {}",
                    cfg.head_dim, cfg.num_heads, cfg.hidden_size
                ),
            });
        }
        Ok(cfg)
    }

    /// Bytes the KV cache needs per token of context (keys and values, all layers) when each
    /// number takes `bytes`.
    pub fn kv_bytes_per_token(&self, bytes: usize) -> usize {
        2 * self.num_layers * self.num_kv_heads * self.head_dim * bytes
    }

    /// Weights in the matrices the forward pass multiplies: each layer's projections and the
    /// LM head (the embedding table counted once, as the head, when the two are tied).
    pub fn matrix_elements(&self) -> usize {
        let (h, hd) = (self.hidden_size, self.head_dim);
        let attention = 2 * h * self.num_heads * hd + 2 * h * self.num_kv_heads * hd;
        let mlp = 3 * h * self.intermediate_size;
        self.num_layers * (attention + mlp) + self.vocab_size * h
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    max_position_embeddings: usize,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_dim_whose_product_with_the_heads_wraps_is_malformed() {
        // 2 heads of 2^63 + 16 wrap around to the hidden size of 32: this loaded, then the
        // forward pass panicked allocating for the huge head.
        let json = r#"{"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
            "head_dim": 9223372036854775824, "vocab_size": 265, "max_position_embeddings": 32}"#;
        let path = std::path::Path::new("m/config.json");
        match Config::from_hf_json(json, path) {
            Err(Error::MalformedModel { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains("head dimension"), "{reason}");
            }
            other => panic!("expected MalformedModel, got {other:?}"),
        }
        let fine = json.replace("9223372036854775824", "16");
        assert_eq!(
            Config::from_hf_json(&fine, path).expect("loads").head_dim,
            16
        );
    }
}
