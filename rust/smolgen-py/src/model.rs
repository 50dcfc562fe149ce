//! `Model`: a loaded model shared between Python threads. Every call extracts its arguments,
//! releases the GIL for the computation, and converts the result back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use smolgen_core::{GenerateOptions, Generation, LogitsFor};

use crate::completion::{Completion, CompletionStream};
use crate::errors::to_py;
use crate::sampler::sampling_params;
use crate::tokenizer::{checked_ids, pieces, TokenPiece, Tokenizer};

/// Tokens generated when the caller gives no `max_tokens` (fewer if the context window is full).
const DEFAULT_MAX_TOKENS: usize = 256;

/// A prompt: text, or token ids taken as they are.
#[derive(FromPyObject)]
pub enum Prompt {
    Text(String),
    Ids(Vec<i64>),
}

/// One stop string or several.
#[derive(FromPyObject)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[pyclass(module = "smolgen._core", frozen)]
pub struct Model {
    inner: Arc<smolgen_core::Model>,
}

fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(smolgen_core::Error::invalid(msg))
}

#[pymethods]
impl Model {
    /// Loads a `.gguf` file or a Hugging Face directory. `device`: `cpu`, `cuda[:N]` or `metal`.
    /// `dtype` (`f32`, `f16`, `bf16`) converts safetensors weights. `prefix_cache_bytes` bounds
    /// the keys and values kept from finished requests for reuse (0 disables the prefix cache).
    /// `threads` sizes the CPU kernels' thread pool (default: one per core).
    #[staticmethod]
    #[pyo3(signature = (path, device = "cpu", dtype = None, prefix_cache_bytes = None, threads = None))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        dtype: Option<&str>,
        prefix_cache_bytes: Option<usize>,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        if threads == Some(0) {
            return Err(invalid("threads must be at least 1"));
        }
        let device = smolgen_core::parse_device(device).map_err(to_py)?;
        let dtype = dtype
            .map(smolgen_core::parse_dtype)
            .transpose()
            .map_err(to_py)?;
        let model = py
            .detach(|| smolgen_core::Model::load(&path, &device, dtype, threads.unwrap_or(0)))
            .map_err(to_py)?;
        if let Some(bytes) = prefix_cache_bytes {
            model.prefix_cache().set_capacity_bytes(bytes);
        }
        Ok(Model {
            inner: Arc::new(model),
        })
    }

    /// The prefix cache's state: `entries`, `bytes`, `capacity_bytes`, `hits`, `misses`,
    /// `tokens_reused`.
    fn prefix_cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.prefix_cache().stats();
        let d = PyDict::new(py);
        d.set_item("entries", s.entries)?;
        d.set_item("bytes", s.bytes)?;
        d.set_item("capacity_bytes", s.capacity_bytes)?;
        d.set_item("hits", s.hits)?;
        d.set_item("misses", s.misses)?;
        d.set_item("tokens_reused", s.tokens_reused)?;
        Ok(d)
    }

    /// Resizes the prefix cache (0 disables it) and, with `clear=True`, empties it.
    #[pyo3(signature = (capacity_bytes = None, clear = false))]
    fn configure_prefix_cache(&self, capacity_bytes: Option<usize>, clear: bool) {
        let mut cache = self.inner.prefix_cache();
        if clear {
            cache.clear();
        }
        if let Some(bytes) = capacity_bytes {
            cache.set_capacity_bytes(bytes);
        }
    }

    /// Architecture, sizes, storage types per tensor kind, memory needs, device.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let i = &self.inner.info;
        let d = PyDict::new(py);
        d.set_item("architecture", &i.architecture)?;
        d.set_item("path", &i.path)?;
        d.set_item("format", &i.format)?;
        d.set_item("parameters", i.parameters)?;
        d.set_item("layers", i.layers)?;
        d.set_item("heads", i.heads)?;
        d.set_item("kv_heads", i.kv_heads)?;
        d.set_item("head_dim", i.head_dim)?;
        d.set_item("hidden_size", i.hidden_size)?;
        d.set_item("intermediate_size", i.intermediate_size)?;
        d.set_item("context_length", i.context_length)?;
        d.set_item("vocab_size", i.vocab_size)?;
        d.set_item("rope_theta", i.rope_theta)?;
        d.set_item("rope_layout", &i.rope_layout)?;
        d.set_item("tied_embeddings", i.tied_embeddings)?;
        d.set_item("weight_types", i.weight_types.clone())?;
        d.set_item("weight_bytes", i.weight_bytes)?;
        d.set_item("kv_bytes_per_token", i.kv_bytes_per_token)?;
        d.set_item("device", &i.device)?;
        d.set_item("load_seconds", i.load_seconds)?;
        d.set_item("engine", &i.engine)?;
        d.set_item("threads", i.threads)?;
        Ok(d)
    }

    #[getter]
    fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            inner: self.inner.tokenizer.clone(),
        }
    }

    /// Token ids of `text`; `special=True` parses special-token text such as `<|im_end|>`.
    #[pyo3(signature = (text, special = true))]
    fn tokenize(&self, py: Python<'_>, text: &str, special: bool) -> PyResult<Vec<u32>> {
        let tk = &self.inner.tokenizer;
        py.detach(|| tk.encode(text, special)).map_err(to_py)
    }

    fn detokenize(&self, ids: Vec<i64>) -> PyResult<String> {
        self.inner
            .tokenizer
            .decode(&checked_ids(&ids)?)
            .map_err(to_py)
    }

    /// `text` as the model sees it: id, raw bytes and readable text of every token.
    #[pyo3(signature = (text, special = true))]
    fn tokens(&self, text: &str, special: bool) -> PyResult<Vec<TokenPiece>> {
        pieces(&self.inner.tokenizer, text, special)
    }

    /// Next-token logits after `prompt`: float32 `[vocab]` for the last position
    /// (`positions="last"`) or `[tokens, vocab]` for every position (`positions="all"`).
    #[pyo3(signature = (prompt, positions = "last"))]
    fn logits<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt,
        positions: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let which = match positions {
            "last" => LogitsFor::Last,
            "all" => LogitsFor::All,
            other => {
                return Err(invalid(format!(
                    "positions must be \"last\" or \"all\", got {other:?}"
                )))
            }
        };
        let ids = self.prompt_ids(py, prompt)?;
        let model = &self.inner;
        let (values, rows) = py.detach(|| model.logits(&ids, which)).map_err(to_py)?;
        let vocab = values.len() / rows.max(1);
        // Hands the buffer to numpy as is: no element-by-element copy.
        let array = PyArray1::from_vec(py, values);
        Ok(match which {
            LogitsFor::Last => array.into_any(),
            LogitsFor::All => array.reshape([rows, vocab])?.into_any(),
        })
    }

    /// Softmax attention weights of one forward pass over `prompt`: float32
    /// `[layers, heads, tokens, tokens]` (row: query position, column: key position). `layers`
    /// picks layers by index (default: all).
    #[pyo3(signature = (prompt, layers = None))]
    fn attention<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt,
        layers: Option<Vec<i64>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = self.prompt_ids(py, prompt)?;
        let layers = layers
            .map(|ls| {
                ls.into_iter()
                    .map(|l| {
                        usize::try_from(l).map_err(|_| invalid(format!("layer {l} does not exist")))
                    })
                    .collect::<PyResult<Vec<usize>>>()
            })
            .transpose()?;
        let model = &self.inner;
        let (values, shape) = py
            .detach(|| model.attention(&ids, layers.as_deref()))
            .map_err(to_py)?;
        Ok(PyArray1::from_vec(py, values).reshape(shape)?.into_any())
    }

    /// Generates a completion of `prompt` (text, or token ids used as they are).
    ///
    /// `max_tokens` defaults to 256, or what is left of the context window if that is less.
    /// `temperature=0` is greedy. `stop` ends generation before the first occurrence of any of
    /// the strings (never emitted). `logprobs=N` (0..20) reports every generated token's
    /// log-probability and the N likeliest alternatives. With `stream=True` returns a
    /// `CompletionStream` of chunks. `prefix_cache=False` neither reuses nor leaves keys and
    /// values in the model's prefix cache.
    #[pyo3(signature = (
        prompt, *, max_tokens = None, temperature = 1.0, top_p = 1.0, top_k = 0, min_p = 0.0,
        repetition_penalty = 1.0, frequency_penalty = 0.0, presence_penalty = 0.0,
        logit_bias = None, seed = None, stop = None, logprobs = None, stream = false,
        prefix_cache = true
    ))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        max_tokens: Option<i64>,
        temperature: f64,
        top_p: f64,
        top_k: i64,
        min_p: f64,
        repetition_penalty: f64,
        frequency_penalty: f64,
        presence_penalty: f64,
        logit_bias: Option<HashMap<i64, f64>>,
        seed: Option<u64>,
        stop: Option<Stop>,
        logprobs: Option<i64>,
        stream: bool,
        prefix_cache: bool,
    ) -> PyResult<Py<PyAny>> {
        let ids = self.prompt_ids(py, prompt)?;
        let max_tokens = match max_tokens {
            // Unset: a sensible default that never runs past the context window.
            None => DEFAULT_MAX_TOKENS
                .min(self.inner.info.context_length.saturating_sub(ids.len()))
                .max(1),
            Some(n) => usize::try_from(n)
                .map_err(|_| invalid(format!("max_tokens must be positive, got {n}")))?,
        };
        let options = GenerateOptions {
            max_tokens,
            sampling: sampling_params(
                temperature,
                top_k,
                top_p,
                min_p,
                repetition_penalty,
                frequency_penalty,
                presence_penalty,
                logit_bias,
                seed,
            )?,
            stop: match stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s],
                Some(Stop::Many(v)) => v,
            },
            logprobs: logprobs
                .map(|n| {
                    usize::try_from(n)
                        .map_err(|_| invalid(format!("logprobs must be >= 0, got {n}")))
                })
                .transpose()?,
            prefix_cache,
        };
        let generation = Generation::new(self.inner.clone(), ids, options).map_err(to_py)?;
        if stream {
            let tokenizer = self.inner.tokenizer.clone();
            return Ok(Py::new(py, CompletionStream::new(generation, tokenizer))?.into_any());
        }
        let completion = py.detach(|| generation.run()).map_err(to_py)?;
        let completion = Completion::new(py, &self.inner.tokenizer, completion)?;
        Ok(Py::new(py, completion)?.into_any())
    }

    fn __repr__(&self) -> String {
        let i = &self.inner.info;
        format!(
            "Model(path={:?}, format={:?}, parameters={}, device={:?})",
            i.path, i.format, i.parameters, i.device
        )
    }
}

impl Model {
    /// A text prompt as generation sees it (BOS first when the model asks for it), or ids as
    /// they are.
    fn prompt_ids(&self, py: Python<'_>, prompt: Prompt) -> PyResult<Vec<u32>> {
        match prompt {
            Prompt::Text(text) => {
                let tk = &self.inner.tokenizer;
                py.detach(|| tk.encode_prompt(&text)).map_err(to_py)
            }
            Prompt::Ids(ids) => checked_ids(&ids),
        }
    }
}
