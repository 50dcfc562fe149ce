//! What a model file is converted from: a GGUF, or a Hugging Face directory of safetensors.
//! Either way, tensors under llama.cpp's names and in llama.cpp's row order, as f32 values.

use std::path::Path;

use crate::error::{Error, Result};
use crate::kernels::WeightKind;
use crate::load::config::Config;
use crate::load::gguf::{ggml_type_id, GgufFile, Value};
use crate::load::weights::SafetensorsDir;

/// One tensor of the source: llama.cpp's name, its shape (outermost first), ggml's id of the
/// type it is stored in.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: u32,
}

pub enum Source {
    Gguf(GgufFile),
    HuggingFace {
        dir: SafetensorsDir,
        metadata: Vec<(String, Value)>,
    },
}

/// Keys a converted file sets itself, or that describe the source file's own splitting.
const REWRITTEN_KEYS: [&str; 5] = [
    "general.file_type",
    "general.quantization_version",
    "split.no",
    "split.count",
    "split.tensors.count",
];

impl Source {
    /// A `.gguf` file, or a directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    pub fn open(path: &Path) -> Result<(Source, Config)> {
        if path.is_dir() {
            let config_path = path.join("config.json");
            let json = std::fs::read_to_string(&config_path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::ModelNotFound(config_path.clone()),
                _ => Error::Io {
                    path: config_path.clone(),
                    source: e,
                },
            })?;
            let cfg = Config::from_hf_json(&json, &config_path)?;
            let metadata = super::hf_metadata::hf_metadata(path, &cfg)?;
            let dir = SafetensorsDir::open(path, None)?;
            Ok((Source::HuggingFace { dir, metadata }, cfg))
        } else {
            let gguf = GgufFile::open(path)?;
            let cfg = Config::from_gguf(&gguf)?;
            Ok((Source::Gguf(gguf), cfg))
        }
    }

    /// The model's metadata, less what the converted file sets anew.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let all: Vec<(String, Value)> = match self {
            Source::Gguf(g) => g
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Source::HuggingFace { metadata, .. } => metadata.clone(),
        };
        all.into_iter()
            .filter(|(k, _)| !REWRITTEN_KEYS.contains(&k.as_str()))
            .collect()
    }

    pub fn tensors(&self) -> Result<Vec<SourceTensor>> {
        Ok(match self {
            Source::Gguf(g) => g
                .tensors
                .iter()
                .map(|t| SourceTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    ggml_type: ggml_type_id(t.dtype),
                })
                .collect(),
            Source::HuggingFace { dir, .. } => dir
                .listing()?
                .into_iter()
                .map(|(name, shape, ggml_type)| SourceTensor {
                    name,
                    shape,
                    ggml_type,
                })
                .collect(),
        })
    }

    /// A tensor's bytes exactly as a GGUF stores them, for copying it unchanged; `None` for a
    /// Hugging Face tensor, whose rows may need reordering.
    pub fn stored_bytes(&self, name: &str) -> Option<&[u8]> {
        match self {
            Source::Gguf(g) => g.tensor_info(name).map(|t| g.tensor_bytes(t)),
            Source::HuggingFace { .. } => None,
        }
    }

    /// A tensor's values, dequantized to f32, rows in llama.cpp's order.
    pub fn values(&self, t: &SourceTensor, cfg: &Config) -> Result<Vec<f32>> {
        match self {
            Source::Gguf(g) => {
                let kind = WeightKind::for_ggml_type(t.ggml_type).ok_or_else(|| {
                    Error::unsupported(format!(
                        "tensor `{}` is stored as ggml type {}, which smolgen does not read",
                        t.name, t.ggml_type
                    ))
                })?;
                let info = g
                    .tensor_info(&t.name)
                    .ok_or_else(|| g.malformed(format!("missing tensor `{}`", t.name)))?;
                let bytes = g.tensor_bytes(info);
                let mut out = vec![0f32; info.elem_count()];
                for (block, values) in bytes
                    .chunks_exact(kind.block_bytes)
                    .zip(out.chunks_exact_mut(kind.block_elements))
                {
                    (kind.dequantize)(block, values);
                }
                Ok(out)
            }
            Source::HuggingFace { dir, .. } => {
                let values = dir.f32_values(&t.name)?;
                let heads = if t.name.ends_with("attn_q.weight") {
                    cfg.num_heads
                } else if t.name.ends_with("attn_k.weight") {
                    cfg.num_kv_heads
                } else {
                    return Ok(values);
                };
                interleave_rope_pairs(&values, heads, cfg.head_dim).ok_or_else(|| {
                    Error::malformed(
                        &dir.dir,
                        format!(
                            "`{}` has shape {:?}, not {heads} heads of {} rows",
                            t.name, t.shape, cfg.head_dim
                        ),
                    )
                })
            }
        }
    }
}

/// Reorders a Hugging Face Q or K projection's rows into the pairing GGUF files use: within
/// each head, row `j * head_dim / 2 + i` (rotary pair `i`, half `j`) moves to row `2 * i + j`,
/// as llama.cpp's converter does. `None` when the values are not `heads` heads of `head_dim`
/// (even) rows.
pub fn interleave_rope_pairs(values: &[f32], heads: usize, head_dim: usize) -> Option<Vec<f32>> {
    let rows = heads
        .checked_mul(head_dim)
        .filter(|&r| r > 0 && head_dim.is_multiple_of(2))?;
    if !values.len().is_multiple_of(rows) {
        return None;
    }
    let cols = values.len() / rows;
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * head_dim + j * half + i) * cols;
                let to = (h * head_dim + 2 * i + j) * cols;
                out[to..to + cols].copy_from_slice(&values[from..from + cols]);
            }
        }
    }
    Some(out)
}
