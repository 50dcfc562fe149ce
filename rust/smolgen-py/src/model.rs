//! `Model`: a loaded model shared between Python threads. Every call extracts its arguments,
//! releases the GIL for the computation, and converts the result back.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use smolgen_core::{Generation, LogitsFor};

use crate::arguments::{self, invalid};
use crate::completion::{Completion, CompletionStream};
use crate::errors::to_py;
use crate::options::{generate_options, subject_name};
use crate::tokenizer::{pieces, TokenPiece, Tokenizer};

/// A prompt: text, or token ids (any iterable of ints) taken as they are.
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Prompt {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_instance_of::<PyString>() {
            return Ok(Prompt::Text(arguments::text("prompt", &obj)?));
        }
        if obj.try_iter().is_err() {
            return Err(invalid(format!(
                "prompt must be a string or token ids, got {}",
                obj.get_type().name()?
            )));
        }
        Ok(Prompt::Ids(arguments::token_ids("prompt", &obj)?))
    }
}

/// A loaded model, shared between Python threads (`smolgen.Model` subclasses it with what only
/// Python does: `chat`, `peek`, `score`, `memory`).
#[pyclass(module = "smolgen._core", frozen, subclass)]
pub struct Model {
    inner: Arc<smolgen_core::Model>,
}

#[pymethods]
impl Model {
    /// Loads a `.gguf` file or a Hugging Face directory. `device`: `cpu`, `cuda[:N]` or `metal`.
    /// `dtype` (`f32`, `f16`, `bf16`) converts safetensors weights; `quantize` (a ggml type
    /// name, e.g. `q8_0`, `q4_K`) quantizes their matrices at load. `prefix_cache_bytes` bounds
    /// the keys and values kept from finished requests for reuse (0 disables the prefix cache).
    /// `threads` sizes the CPU kernels' thread pool (default: one per core).
    #[new]
    #[pyo3(signature = (path, device = "cpu", dtype = None, prefix_cache_bytes = None, threads = None, quantize = None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        dtype: Option<&str>,
        prefix_cache_bytes: Option<&Bound<'_, PyAny>>,
        threads: Option<&Bound<'_, PyAny>>,
        quantize: Option<&str>,
    ) -> PyResult<Self> {
        let threads = threads
            .filter(|t| !t.is_none())
            .map(|t| arguments::size("threads", t, 1))
            .transpose()?;
        let prefix_cache_bytes = cache_bytes(prefix_cache_bytes)?;
        let device = smolgen_core::parse_device(device).map_err(to_py)?;
        let dtype = dtype
            .map(smolgen_core::parse_dtype)
            .transpose()
            .map_err(to_py)?;
        let quantize = quantize
            .map(smolgen_core::kernels::WeightKind::by_name)
            .transpose()
            .map_err(to_py)?;
        let model = py
            .detach(|| {
                smolgen_core::Model::load(&path, &device, dtype, quantize, threads.unwrap_or(0))
            })
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
    fn configure_prefix_cache(
        &self,
        capacity_bytes: Option<&Bound<'_, PyAny>>,
        clear: bool,
    ) -> PyResult<()> {
        let capacity_bytes = cache_bytes(capacity_bytes)?;
        let mut cache = self.inner.prefix_cache();
        if clear {
            cache.clear();
        }
        if let Some(bytes) = capacity_bytes {
            cache.set_capacity_bytes(bytes);
        }
        Ok(())
    }

    /// Architecture, parameter count, layers, heads, context length, vocabulary size, storage
    /// type per tensor kind, weight bytes, KV-cache bytes per token, device, load time, engine,
    /// threads, and the `SMOLGEN_*` settings as parsed.
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
        d.set_item("kv_cache_format", &i.kv_cache_format)?;
        d.set_item("device", &i.device)?;
        d.set_item("load_seconds", i.load_seconds)?;
        d.set_item("engine", &i.engine)?;
        d.set_item("threads", i.threads)?;
        d.set_item("gpu_weights", &i.gpu_weights)?;
        d.set_item("settings", i.settings.clone())?;
        Ok(d)
    }

    /// The most tokens a request may hold: prompt and completion together.
    #[getter]
    fn context_length(&self) -> usize {
        self.inner.info.context_length
    }

    /// The byte length of the vocabulary's longest token. Each token of a text stands for at
    /// most this many of its bytes, so a text of `n` bytes (UTF-8) is at least
    /// `n / longest_token_bytes` tokens however it is split: the bound by which
    /// `check_prompt_length` refuses a prompt without tokenizing it.
    #[getter]
    fn longest_token_bytes(&self) -> usize {
        self.inner.tokenizer.longest_token_bytes()
    }

    /// Raises `ContextLengthExceededError` (with `at_least` set) when `text` is so long that no
    /// tokenization of it leaves a token of room in the context window, without tokenizing it:
    /// a cost in the length of the text, not in its tokens. A text it lets through is at most
    /// `context_length * longest_token_bytes` bytes, and may still not fit once tokenized
    /// (`check_context` says so exactly). `subject`: `"prompt"` or `"messages"`, for the
    /// message. `generate`, `logits` and `attention` check a text prompt so themselves.
    #[pyo3(signature = (text, subject = "prompt"))]
    fn check_prompt_length(&self, text: &Bound<'_, PyAny>, subject: &str) -> PyResult<()> {
        let text = arguments::text("text", text)?;
        let subject = subject_name(subject)?;
        let window = self.inner.info.context_length;
        self.inner
            .tokenizer
            .check_length(&text, 0, window, 1, subject)
            .map_err(to_py)
    }

    #[getter]
    fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            inner: self.inner.tokenizer.clone(),
        }
    }

    /// Token ids of `text`, without BOS. Special-token text such as `<|im_end|>` stays plain
    /// text unless `special=True`, so user text never turns into control tokens.
    #[pyo3(signature = (text, special = false))]
    fn tokenize(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyAny>,
        special: bool,
    ) -> PyResult<Vec<u32>> {
        let text = arguments::text("text", text)?;
        let tk = &self.inner.tokenizer;
        py.detach(|| tk.encode(&text, special)).map_err(to_py)
    }

    /// The text of `ids` (any iterable of ints).
    fn detokenize(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        self.inner
            .tokenizer
            .decode(&arguments::token_ids("ids", ids)?)
            .map_err(to_py)
    }

    /// `text` as the model sees it: id, raw bytes and readable text of every token (special-token
    /// text parsed only with `special=True`, as in `tokenize`).
    #[pyo3(signature = (text, special = false))]
    fn tokens(&self, text: &Bound<'_, PyAny>, special: bool) -> PyResult<Vec<TokenPiece>> {
        pieces(
            &self.inner.tokenizer,
            &arguments::text("text", text)?,
            special,
        )
    }

    /// Next-token logits after `prompt`: float32 `[vocab]` for the last position
    /// (`positions="last"`) or `[tokens, vocab]` for every position (`positions="all"`: row i
    /// predicts token i + 1).
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
        let ids = self.prompt_ids(py, prompt, 0)?;
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
    /// `[layers, heads, tokens, tokens]` (row: query position, column: key position; each row
    /// sums to 1 over the positions it may see). `layers` picks layers by index (default: all).
    #[pyo3(signature = (prompt, layers = None))]
    fn attention<'py>(
        &self,
        py: Python<'py>,
        prompt: Prompt,
        layers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ids = self.prompt_ids(py, prompt, 0)?;
        let layers = layers
            .filter(|ls| !ls.is_none())
            .map(|ls| {
                arguments::integers("layers", ls)?
                    .into_iter()
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

    /// Continues `prompt`: text (read as the model's raw input: special-token text parsed, BOS
    /// first when the model asks), or token ids used as they are.
    ///
    /// Every setting is an optional keyword whose default is the core's (`GenerateOptions`):
    /// `max_tokens` (256, or what is left of the context window if that is less),
    /// `temperature` (1; 0 is greedy), `top_k` (0), `top_p` (1) and `min_p` (0) (those values
    /// switch the filters off), `repetition_penalty` (1), `frequency_penalty` and
    /// `presence_penalty` (0), `logit_bias`, `seed` (the same seed and settings give the same
    /// tokens on every run), `stop` (a string or several: generation ends before the first
    /// one, which is never emitted), `logprobs=N` (0..20: every generated token's
    /// log-probability under the model and the N likeliest alternatives), `prefix_cache`
    /// (True: the prompt's beginning is taken from the prefix cache when an earlier request
    /// left it there, `usage.cached_tokens` says how much; the output is the same either way).
    ///
    /// Generation ends at an end-of-generation token or a stop string (`finish_reason="stop"`)
    /// or after `max_tokens` (`"length"`). Returns a `Completion`, or with `stream=True` a
    /// `CompletionStream` of chunks `(text, token_id)` that never splits a UTF-8 character (its
    /// `completion` is set once it is exhausted).
    #[pyo3(signature = (prompt, *, stream = false, **options))]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Prompt,
        stream: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let options = generate_options(options)?;
        let ids = self.prompt_ids(py, prompt, 1)?;
        let generation = Generation::new(self.inner.clone(), ids, options).map_err(to_py)?;
        if stream {
            let tokenizer = self.inner.tokenizer.clone();
            return Ok(Py::new(py, CompletionStream::new(generation, tokenizer))?.into_any());
        }
        let completion = run_interruptibly(py, generation)?;
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

/// Runs `generation` to its end without the GIL, checking between steps, at most every
/// [`SIGNAL_CHECK_INTERVAL`], for a signal Python must handle: Ctrl-C raises `KeyboardInterrupt`
/// within one step, and the model stays usable.
fn run_interruptibly(
    py: Python<'_>,
    mut generation: Generation,
) -> PyResult<smolgen_core::Completion> {
    py.detach(|| {
        let mut checked = Instant::now();
        while generation.step().map_err(to_py)?.is_some() {
            if checked.elapsed() >= SIGNAL_CHECK_INTERVAL {
                Python::attach(|py| py.check_signals())?;
                checked = Instant::now();
            }
        }
        Ok(generation.completion())
    })
}

/// How often a long generation takes the GIL to look for signals: rarely enough that threads
/// generating at once do not queue on it, often enough that Ctrl-C feels immediate.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// A byte count for the prefix cache: an int >= 0, or `None`.
fn cache_bytes(value: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    value
        .filter(|v| !v.is_none())
        .map(|v| arguments::size("prefix cache bytes", v, 0))
        .transpose()
}

impl Model {
    /// A text prompt as generation sees it (BOS first when the model asks for it), or ids as
    /// they are. A text too long for any tokenization of it to leave `room` tokens of the
    /// context window is refused before it is tokenized.
    fn prompt_ids(&self, py: Python<'_>, prompt: Prompt, room: usize) -> PyResult<Vec<u32>> {
        match prompt {
            Prompt::Text(text) => {
                let tk = &self.inner.tokenizer;
                let window = self.inner.info.context_length;
                py.detach(|| tk.encode_prompt_within(&text, window, room))
                    .map_err(to_py)
            }
            Prompt::Ids(ids) => Ok(ids),
        }
    }
}
