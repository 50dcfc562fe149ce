//! What `Model.generate` hands back: a finished `Completion`, or a `CompletionStream` of chunks.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use smolgen_core::tokenizer::Tokenizer as CoreTokenizer;
use smolgen_core::{generate::generation, Generation};

use std::sync::Arc;

use crate::errors::to_py;

/// Token counts, as an OpenAI-style API reports them.
#[pyclass(module = "smolgen._core", frozen, get_all)]
#[derive(Clone)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// Prompt tokens served from the prefix cache (counted in `prompt_tokens` too).
    pub cached_tokens: usize,
}

#[pymethods]
impl Usage {
    fn __repr__(&self) -> String {
        format!(
            "Usage(prompt_tokens={}, completion_tokens={}, total_tokens={}, cached_tokens={})",
            self.prompt_tokens, self.completion_tokens, self.total_tokens, self.cached_tokens
        )
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prompt_tokens", self.prompt_tokens)?;
        d.set_item("completion_tokens", self.completion_tokens)?;
        d.set_item("total_tokens", self.total_tokens)?;
        let details = PyDict::new(py);
        details.set_item("cached_tokens", self.cached_tokens)?;
        d.set_item("prompt_tokens_details", details)?;
        Ok(d)
    }
}

/// Where the time went. Prefill is the forward pass over the prompt (in 512-token slices);
/// decode is every later token, one forward pass each.
#[pyclass(module = "smolgen._core", frozen)]
#[derive(Clone)]
pub struct Timings {
    inner: generation::Timings,
    prefilled_tokens: usize,
}

#[pymethods]
impl Timings {
    /// Seconds spent on the prompt's forward pass.
    #[getter]
    fn prefill_s(&self) -> f64 {
        self.inner.prefill_s
    }

    /// Seconds from the request to the first generated token.
    #[getter]
    fn ttft_s(&self) -> f64 {
        self.inner.ttft_s
    }

    /// Seconds spent generating every token after the first.
    #[getter]
    fn decode_s(&self) -> f64 {
        self.inner.decode_s()
    }

    /// Seconds of each decode step, in order.
    #[getter]
    fn decode_steps_s(&self) -> Vec<f64> {
        self.inner.decode_steps_s.clone()
    }

    /// Median seconds of one decode step, by nearest rank (`None` without decode steps).
    #[getter]
    fn decode_p50_s(&self) -> Option<f64> {
        self.inner.decode_percentile_s(50.0)
    }

    /// 95th-percentile seconds of one decode step, by nearest rank (see `percentile`): the
    /// stalls a user notices.
    #[getter]
    fn decode_p95_s(&self) -> Option<f64> {
        self.inner.decode_percentile_s(95.0)
    }

    /// The slowest decode step, in seconds.
    #[getter]
    fn decode_max_s(&self) -> Option<f64> {
        self.inner.decode_percentile_s(100.0)
    }

    /// Seconds, over all steps, spent working out which tokens a grammar allows next
    /// (`json_schema`, `regex`, `grammar`): structured output's own cost; 0 without one.
    #[getter]
    fn constraint_s(&self) -> f64 {
        self.inner.constraint_s
    }

    /// Prompt tokens per second of prefill (those the prefix cache supplied are not counted).
    #[getter]
    fn prefill_tokens_per_s(&self) -> f64 {
        rate(self.prefilled_tokens, self.inner.prefill_s)
    }

    /// Generated tokens per second after the first.
    #[getter]
    fn decode_tokens_per_s(&self) -> f64 {
        rate(self.inner.decode_steps_s.len(), self.inner.decode_s())
    }

    fn __repr__(&self) -> String {
        format!(
            "Timings(prefill_s={:.4}, ttft_s={:.4}, decode_s={:.4}, prefill_tokens_per_s={:.1}, \
             decode_tokens_per_s={:.1})",
            self.prefill_s(),
            self.ttft_s(),
            self.decode_s(),
            self.prefill_tokens_per_s(),
            self.decode_tokens_per_s()
        )
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("prefill_s", self.prefill_s())?;
        d.set_item("ttft_s", self.ttft_s())?;
        d.set_item("decode_s", self.decode_s())?;
        d.set_item("prefill_tokens_per_s", self.prefill_tokens_per_s())?;
        d.set_item("decode_tokens_per_s", self.decode_tokens_per_s())?;
        d.set_item("decode_p50_s", self.decode_p50_s())?;
        d.set_item("decode_p95_s", self.decode_p95_s())?;
        d.set_item("decode_max_s", self.decode_max_s())?;
        d.set_item("decode_steps_s", self.decode_steps_s())?;
        d.set_item("constraint_s", self.constraint_s())?;
        Ok(d)
    }
}

/// The `q`-th percentile (0..100) of `values` by nearest rank: one of the values, the same
/// definition as `Timings.decode_p95_s`. `None` for no values or `q` out of range.
#[pyfunction]
pub fn percentile(values: Vec<f64>, q: f64) -> Option<f64> {
    smolgen_core::percentile(&values, q)
}

fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n as f64 / seconds
    } else {
        0.0
    }
}

/// A generated token's log-probability under the model (softmax of the raw logits), with the
/// likeliest alternatives at that step in `top_logprobs` (empty for an alternative itself).
#[pyclass(module = "smolgen._core", frozen, get_all)]
pub struct TokenLogprob {
    pub id: u32,
    /// The token's text, invalid UTF-8 shown as `\xNN`.
    pub token: String,
    pub bytes: Py<PyBytes>,
    pub logprob: f32,
    pub top_logprobs: Vec<Py<TokenLogprob>>,
}

impl TokenLogprob {
    fn one(py: Python<'_>, tk: &CoreTokenizer, id: u32, logprob: f32) -> PyResult<Py<Self>> {
        let piece = tk.piece(id).map_err(to_py)?;
        Py::new(
            py,
            TokenLogprob {
                id,
                token: piece.text,
                bytes: PyBytes::new(py, &piece.bytes).unbind(),
                logprob,
                top_logprobs: Vec::new(),
            },
        )
    }

    pub fn new(
        py: Python<'_>,
        tk: &CoreTokenizer,
        lp: &smolgen_core::TokenLogprob,
    ) -> PyResult<Py<Self>> {
        let piece = tk.piece(lp.token).map_err(to_py)?;
        let top = lp
            .top
            .iter()
            .map(|&(id, logprob)| Self::one(py, tk, id, logprob))
            .collect::<PyResult<Vec<_>>>()?;
        Py::new(
            py,
            TokenLogprob {
                id: lp.token,
                token: piece.text,
                bytes: PyBytes::new(py, &piece.bytes).unbind(),
                logprob: lp.logprob,
                top_logprobs: top,
            },
        )
    }
}

#[pymethods]
impl TokenLogprob {
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("id", self.id)?;
        d.set_item("token", &self.token)?;
        // A list of ints, as OpenAI's `logprobs.content[].bytes`, so the dict is JSON-ready.
        let bytes: Vec<u32> = self
            .bytes
            .bind(py)
            .as_bytes()
            .iter()
            .map(|&b| b.into())
            .collect();
        d.set_item("bytes", bytes)?;
        d.set_item("logprob", self.logprob)?;
        let top = self
            .top_logprobs
            .iter()
            .map(|t| t.get().to_dict(py))
            .collect::<PyResult<Vec<_>>>()?;
        d.set_item("top_logprobs", top)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!(
            "TokenLogprob(id={}, token={:?}, logprob={:.4}, top_logprobs=[{} alternatives])",
            self.id,
            self.token,
            self.logprob,
            self.top_logprobs.len()
        )
    }
}

/// The result of one generation.
#[pyclass(module = "smolgen._core", frozen, get_all)]
pub struct Completion {
    /// The generated text, without the end-of-generation token and without any stop string.
    pub text: String,
    /// Every generated token id, including an end-of-generation token that ended it.
    pub token_ids: Vec<u32>,
    /// `"stop"` (end-of-generation token or stop string) or `"length"` (max_tokens).
    pub finish_reason: &'static str,
    /// The stop string that ended generation, if one did.
    pub stop_sequence: Option<String>,
    pub usage: Py<Usage>,
    pub timings: Py<Timings>,
    /// One `TokenLogprob` per generated token with `logprobs=N`, else `None`.
    pub logprobs: Option<Vec<Py<TokenLogprob>>>,
    /// Bytes this request's KV cache held at the end.
    pub kv_cache_bytes: usize,
}

impl Completion {
    pub fn new(py: Python<'_>, tk: &CoreTokenizer, c: smolgen_core::Completion) -> PyResult<Self> {
        let logprobs = c
            .logprobs
            .as_ref()
            .map(|all| {
                all.iter()
                    .map(|lp| TokenLogprob::new(py, tk, lp))
                    .collect::<PyResult<Vec<_>>>()
            })
            .transpose()?;
        let usage = Usage {
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.token_ids.len(),
            total_tokens: c.prompt_tokens + c.token_ids.len(),
            cached_tokens: c.cached_tokens,
        };
        let timings = Timings {
            inner: c.timings,
            // The rate of the prefill pass counts only what it computed, not what the prefix
            // cache supplied.
            prefilled_tokens: c.prompt_tokens - c.cached_tokens,
        };
        Ok(Completion {
            text: c.text,
            token_ids: c.token_ids,
            finish_reason: c.finish_reason.as_str(),
            stop_sequence: c.stop_sequence,
            usage: Py::new(py, usage)?,
            timings: Py::new(py, timings)?,
            logprobs,
            kv_cache_bytes: c.kv_cache_bytes,
        })
    }
}

#[pymethods]
impl Completion {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "Completion(text={:?}, finish_reason={:?}, usage={})",
            self.text,
            self.finish_reason,
            self.usage.borrow(py).__repr__()
        )
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("text", &self.text)?;
        d.set_item("token_ids", &self.token_ids)?;
        d.set_item("finish_reason", self.finish_reason)?;
        d.set_item("stop_sequence", &self.stop_sequence)?;
        d.set_item("usage", self.usage.borrow(py).to_dict(py)?)?;
        d.set_item("timings", self.timings.borrow(py).to_dict(py)?)?;
        d.set_item("kv_cache_bytes", self.kv_cache_bytes)?;
        if let Some(logprobs) = &self.logprobs {
            let items = logprobs
                .iter()
                .map(|t| t.get().to_dict(py))
                .collect::<PyResult<Vec<_>>>()?;
            d.set_item("logprobs", items)?;
        }
        Ok(d)
    }
}

/// One streamed token: `text` is what it completes (may be empty while a UTF-8 character or a
/// possible stop string is incomplete). Unpacks as `(text, token_id)`.
#[pyclass(module = "smolgen._core", frozen, get_all)]
pub struct Chunk {
    pub text: String,
    pub token_id: u32,
    /// Set on the last chunk: `"stop"` or `"length"`.
    pub finish_reason: Option<&'static str>,
    /// This token's log-probability and alternatives, with `logprobs=N`.
    pub logprob: Option<Py<TokenLogprob>>,
}

#[pymethods]
impl Chunk {
    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pair = PyTuple::new(
            py,
            [
                self.text.clone().into_pyobject(py)?.into_any(),
                self.token_id.into_pyobject(py)?.into_any(),
            ],
        )?;
        Ok(pair.try_iter()?.into_any())
    }

    fn __repr__(&self) -> String {
        format!(
            "Chunk(text={:?}, token_id={}, finish_reason={})",
            self.text,
            self.token_id,
            self.finish_reason
                .map_or_else(|| "None".to_string(), |f| format!("{f:?}"))
        )
    }
}

/// An iterator of [`Chunk`]s. Each `next()` runs one decode step with the GIL released; when it
/// is exhausted, `completion` holds the whole result (usage and timings included).
#[pyclass(module = "smolgen._core")]
pub struct CompletionStream {
    /// `None` once closed.
    generation: Option<Generation>,
    tokenizer: Arc<CoreTokenizer>,
    completion: Option<Py<Completion>>,
}

impl CompletionStream {
    pub fn new(generation: Generation, tokenizer: Arc<CoreTokenizer>) -> Self {
        CompletionStream {
            generation: Some(generation),
            tokenizer,
            completion: None,
        }
    }
}

#[pymethods]
impl CompletionStream {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Chunk>> {
        let py = slf.py();
        let mut this = slf.try_borrow_mut().map_err(|_| in_use())?;
        let Some(generation) = this.generation.as_mut() else {
            return Ok(None);
        };
        let step = py.detach(|| generation.step()).map_err(to_py)?;
        this.deliver(py, step)
    }

    /// Stops generating (a client went away): no further step runs, and the keys and values
    /// computed so far go to the prefix cache. Closing a finished stream changes nothing.
    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let generation = slf
            .try_borrow_mut()
            .map_err(|_| in_use())?
            .generation
            .take();
        if let Some(generation) = generation {
            slf.py().detach(move || drop(generation));
        }
        Ok(())
    }

    /// Prompt tokens taken from the prefix cache instead of being prefilled.
    #[getter]
    fn cached_tokens(slf: &Bound<'_, Self>) -> PyResult<usize> {
        let this = slf.try_borrow().map_err(|_| in_use())?;
        Ok(this
            .generation
            .as_ref()
            .map_or(0, Generation::cached_tokens))
    }

    /// The finished result; `None` until the stream is exhausted.
    #[getter]
    fn completion(slf: &Bound<'_, Self>) -> PyResult<Option<Py<Completion>>> {
        let this = slf.try_borrow().map_err(|_| in_use())?;
        Ok(this.completion.as_ref().map(|c| c.clone_ref(slf.py())))
    }
}

impl CompletionStream {
    /// A core step's result as Python sees it; the completion is filled in at the end.
    fn deliver(
        &mut self,
        py: Python<'_>,
        step: Option<generation::Chunk>,
    ) -> PyResult<Option<Chunk>> {
        let Some(chunk) = step else {
            return Ok(None);
        };
        if chunk.finish_reason.is_some() {
            self.finalize(py)?;
        }
        let logprob = chunk
            .logprob
            .as_ref()
            .map(|lp| TokenLogprob::new(py, &self.tokenizer, lp))
            .transpose()?;
        Ok(Some(Chunk {
            text: chunk.text,
            token_id: chunk.token_id,
            finish_reason: chunk.finish_reason.map(|f| f.as_str()),
            logprob,
        }))
    }

    fn finalize(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(generation) = self.generation.as_ref() else {
            return Ok(());
        };
        let c = Completion::new(py, &self.tokenizer, generation.completion())?;
        self.completion = Some(Py::new(py, c)?);
        Ok(())
    }
}

/// A stream is stepped by one caller at a time.
fn in_use() -> PyErr {
    crate::arguments::invalid(
        "this stream is being stepped elsewhere (by another thread, or twice in one \
         step_streams call): a stream takes one step at a time",
    )
}

/// One step of each stream, their forward passes batched into one pass over the weights (the
/// streams must come from the same model). Returns, per stream, its next `Chunk`, `None` when it
/// had already finished, or the exception its step raised (a stream given twice, or being
/// stepped by another thread, gets an `InvalidArgumentError` and the others still step).
#[pyfunction]
pub fn step_streams<'py>(
    py: Python<'py>,
    streams: Vec<Bound<'py, CompletionStream>>,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let mut borrowed: Vec<Result<PyRefMut<'py, CompletionStream>, PyErr>> = streams
        .iter()
        .map(|s| s.try_borrow_mut().map_err(|_| in_use()))
        .collect();
    let results = {
        let mut gens: Vec<&mut Generation> = borrowed
            .iter_mut()
            .filter_map(|s| s.as_mut().ok()?.generation.as_mut())
            .collect();
        py.detach(|| Generation::step_many(&mut gens))
    };
    let mut results = results.into_iter();
    let mut out = Vec::with_capacity(borrowed.len());
    for stream in borrowed.iter_mut() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                out.push(e.clone_ref(py).into_value(py).into_bound(py).into_any());
                continue;
            }
        };
        let item = if stream.generation.is_none() {
            py.None().into_bound(py)
        } else {
            match results.next() {
                Some(Ok(step)) => match stream.deliver(py, step) {
                    Ok(Some(chunk)) => Bound::new(py, chunk)?.into_any(),
                    Ok(None) => py.None().into_bound(py),
                    Err(e) => e.into_value(py).into_bound(py).into_any(),
                },
                Some(Err(e)) => to_py(e).into_value(py).into_bound(py).into_any(),
                None => py.None().into_bound(py),
            }
        };
        out.push(item);
    }
    Ok(out)
}
