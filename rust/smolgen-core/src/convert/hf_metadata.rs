//! A Hugging Face directory's config and tokenizer as GGUF metadata, under the keys and in the
//! forms llama.cpp's converter writes for a Llama model with a byte-level BPE tokenizer.

use std::path::Path;

use serde_json::Value as Json;

use crate::error::{Error, Result};
use crate::load::config::Config;
use crate::load::gguf::Value;
use crate::tokenizer::Tokenizer;

/// llama.cpp's `llama_token_type`.
const NORMAL: i32 = 1;
const UNUSED: i32 = 5;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The metadata of the model in `dir` (`config.json`, `tokenizer.json`,
/// `tokenizer_config.json`), `cfg` being its parsed config.
pub fn hf_metadata(dir: &Path, cfg: &Config) -> Result<Vec<(String, Value)>> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    let u32_of = |v: usize| Value::U32(v as u32);
    let mut m: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name)),
        ("llama.block_count".into(), u32_of(cfg.num_layers)),
        ("llama.context_length".into(), u32_of(cfg.context_length)),
        ("llama.embedding_length".into(), u32_of(cfg.hidden_size)),
        (
            "llama.feed_forward_length".into(),
            u32_of(cfg.intermediate_size),
        ),
        ("llama.attention.head_count".into(), u32_of(cfg.num_heads)),
        (
            "llama.attention.head_count_kv".into(),
            u32_of(cfg.num_kv_heads),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.vocab_size".into(), u32_of(cfg.vocab_size)),
        ("llama.rope.dimension_count".into(), u32_of(cfg.head_dim)),
    ];
    m.extend(tokenizer_metadata(dir, cfg.vocab_size)?);
    Ok(m)
}

/// `tokenizer.ggml.*` and the chat template, from `tokenizer.json` (vocabulary, merges, added
/// tokens, pre-tokenizer) and what smolgen's tokenizer reads from the directory (BOS/EOS, the
/// BOS policy, the template): so the GGUF tokenizes exactly as the directory does.
fn tokenizer_metadata(dir: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::load(dir)?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    let json: Json =
        serde_json::from_str(&text).map_err(|e| Error::malformed(&path, e.to_string()))?;
    let bad = |what: &str| Error::malformed(&path, what.to_string());
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(Error::Unsupported {
            path: Some(path.clone()),
            reason: format!(
                "tokenizer model {} (GGUF export writes byte-level BPE)",
                model["type"]
            ),
        });
    }
    let pre = pre_tokenizer_name(&json["pre_tokenizer"]).ok_or_else(|| Error::Unsupported {
        path: Some(path.clone()),
        reason: format!(
            "pre-tokenizer {} (GGUF export knows SmolLM2's digits + byte-level and GPT-2's \
                 byte-level)",
            json["pre_tokenizer"]
        ),
    })?;

    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![NORMAL; vocab_size];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("no model.vocab"))?;
    let mut place = |token: &str, id: Option<u64>, ty: i32| -> Result<()> {
        let id = id
            .and_then(|id| usize::try_from(id).ok())
            .filter(|&id| id < vocab_size)
            .ok_or_else(|| {
                bad(&format!(
                    "token {token:?} has an id outside the model's {vocab_size} embeddings"
                ))
            })?;
        tokens[id] = Some(token.to_string());
        types[id] = ty;
        Ok(())
    };
    for (token, id) in vocab {
        place(token, id.as_u64(), NORMAL)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let content = added["content"]
            .as_str()
            .ok_or_else(|| bad("an added token has no content"))?;
        let ty = if added["special"].as_bool() == Some(true) {
            CONTROL
        } else {
            USER_DEFINED
        };
        place(content, added["id"].as_u64(), ty)?;
    }
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| {
            Value::String(t.unwrap_or_else(|| {
                types[id] = UNUSED;
                format!("[PAD{id}]")
            }))
        })
        .collect();

    let merges = model["merges"]
        .as_array()
        .ok_or_else(|| bad("no model.merges"))?
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(pair) => match pair.as_slice() {
                [Json::String(a), Json::String(b)] => Ok(Value::String(format!("{a} {b}"))),
                _ => Err(bad("a merge is not a pair of tokens")),
            },
            _ => Err(bad("a merge is not a pair of tokens")),
        })
        .collect::<Result<Vec<_>>>()?;

    let config: Option<Json> = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let token_id = |key: &str| -> Option<u32> {
        let v = config.as_ref()?.get(key)?;
        let name = v.as_str().or_else(|| v.get("content")?.as_str())?;
        tokens
            .iter()
            .position(|t| t.as_str() == Some(name))
            .map(|i| i as u32)
    };

    let ids = [
        ("tokenizer.ggml.bos_token_id", tokenizer.bos_id),
        ("tokenizer.ggml.eos_token_id", tokenizer.eos_id),
        ("tokenizer.ggml.unknown_token_id", token_id("unk_token")),
        ("tokenizer.ggml.padding_token_id", token_id("pad_token")),
    ];
    let mut m: Vec<(String, Value)> = vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ];
    for (key, id) in ids {
        if let Some(id) = id {
            m.push((key.into(), Value::U32(id)));
        }
    }
    m.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(tokenizer.add_bos),
    ));
    m.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)));
    if let Some(template) = tokenizer.chat_template {
        m.push(("tokenizer.chat_template".into(), Value::String(template)));
    }
    Ok(m)
}

/// llama.cpp's name of a `tokenizer.json` pre-tokenizer, for the two it shares with smolgen's
/// GGUF tokenizer: SmolLM2's (every digit alone, then GPT-2's byte-level regex) and GPT-2's.
fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    let byte_level = |p: &Json| {
        p["type"] == "ByteLevel"
            && p["add_prefix_space"].as_bool() != Some(true)
            && p["use_regex"].as_bool() != Some(false)
    };
    if byte_level(pre) {
        return Some("gpt2");
    }
    match pre["pretokenizers"].as_array()?.as_slice() {
        [digits, bl]
            if pre["type"] == "Sequence"
                && digits["type"] == "Digits"
                && digits["individual_digits"].as_bool() == Some(true)
                && byte_level(bl) =>
        {
            Some("smollm")
        }
        [bl] if pre["type"] == "Sequence" && byte_level(bl) => Some("gpt2"),
        _ => None,
    }
}
