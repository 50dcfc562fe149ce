//! The fused sampler, exposed to Python for the tests that hold it to the NumPy reference
//! (`smolgen.sampling`): the distribution it would draw from, and a run of seeded draws.
//!
//! Keyword arguments mirror `smolgen.sampling.process`: `prompt_tokens` feeds the repetition
//! penalty only, `generated` every penalty.

use std::collections::HashMap;

use numpy::PyReadonlyArray1;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use smolgen_core::sampler::{Sampler, SamplingParams};

/// Adds `sampler_distribution` and `sampler_draws` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sampler_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(sampler_draws, m)?)?;
    Ok(())
}

fn to_py(e: smolgen_core::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// The surviving tokens and their renormalised probabilities, as `[(id, probability)]` sorted
/// by probability (descending), then id.
#[pyfunction]
#[pyo3(signature = (
    logits,
    *,
    prompt_tokens = Vec::new(),
    generated = Vec::new(),
    temperature = 1.0,
    top_k = 0,
    top_p = 1.0,
    min_p = 0.0,
    repetition_penalty = 1.0,
    frequency_penalty = 0.0,
    presence_penalty = 0.0,
    logit_bias = None,
))]
#[allow(clippy::too_many_arguments)]
fn sampler_distribution(
    py: Python<'_>,
    logits: PyReadonlyArray1<'_, f32>,
    prompt_tokens: Vec<i64>,
    generated: Vec<i64>,
    temperature: f32,
    top_k: i64,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    logit_bias: Option<HashMap<i64, f32>>,
) -> PyResult<Vec<(u32, f32)>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let request = Request::new(
        prompt_tokens,
        generated,
        SamplingParams {
            temperature,
            top_k: non_negative("top_k", top_k)?,
            top_p,
            min_p,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            logit_bias: bias_entries(logit_bias)?,
            seed: Some(0),
        },
    )?;
    py.detach(move || {
        let sampler = request.sampler(logits.len())?;
        sampler.distribution(&logits)
    })
    .map_err(to_py)
}

/// `n` draws from one sampler seeded with `seed`, none of them recorded as generated, so
/// their frequencies estimate the distribution.
#[pyfunction]
#[pyo3(signature = (
    logits,
    n,
    *,
    seed,
    prompt_tokens = Vec::new(),
    generated = Vec::new(),
    temperature = 1.0,
    top_k = 0,
    top_p = 1.0,
    min_p = 0.0,
    repetition_penalty = 1.0,
    frequency_penalty = 0.0,
    presence_penalty = 0.0,
    logit_bias = None,
))]
#[allow(clippy::too_many_arguments)]
fn sampler_draws(
    py: Python<'_>,
    logits: PyReadonlyArray1<'_, f32>,
    n: usize,
    seed: u64,
    prompt_tokens: Vec<i64>,
    generated: Vec<i64>,
    temperature: f32,
    top_k: i64,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    logit_bias: Option<HashMap<i64, f32>>,
) -> PyResult<Vec<u32>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let request = Request::new(
        prompt_tokens,
        generated,
        SamplingParams {
            temperature,
            top_k: non_negative("top_k", top_k)?,
            top_p,
            min_p,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            logit_bias: bias_entries(logit_bias)?,
            seed: Some(seed),
        },
    )?;
    py.detach(move || {
        let mut sampler = request.sampler(logits.len())?;
        (0..n)
            .map(|_| sampler.sample(&logits))
            .collect::<smolgen_core::Result<Vec<u32>>>()
    })
    .map_err(to_py)
}

/// The arguments with Python's integers checked, ready to build a sampler without the GIL.
struct Request {
    prompt_tokens: Vec<u32>,
    generated: Vec<u32>,
    params: SamplingParams,
}

impl Request {
    fn new(prompt_tokens: Vec<i64>, generated: Vec<i64>, params: SamplingParams) -> PyResult<Self> {
        Ok(Self {
            prompt_tokens: token_ids("prompt_tokens", prompt_tokens)?,
            generated: token_ids("generated", generated)?,
            params,
        })
    }

    /// A sampler over `vocab_size` tokens that has seen the prompt and generated the rest.
    fn sampler(self, vocab_size: usize) -> smolgen_core::Result<Sampler> {
        let mut sampler = Sampler::new(self.params, vocab_size, &self.prompt_tokens)?;
        for &id in &self.generated {
            if id as usize >= vocab_size {
                return Err(smolgen_core::Error::invalid(format!(
                    "generated: token id {id} is outside the vocabulary (size {vocab_size})"
                )));
            }
            sampler.accept(id);
        }
        Ok(sampler)
    }
}

fn non_negative(name: &str, value: i64) -> PyResult<usize> {
    usize::try_from(value)
        .map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {value}")))
}

fn token_ids(what: &str, ids: Vec<i64>) -> PyResult<Vec<u32>> {
    ids.into_iter()
        .map(|id| {
            u32::try_from(id)
                .map_err(|_| PyValueError::new_err(format!("{what}: {id} is not a valid token id")))
        })
        .collect()
}

/// The bias map as `(id, bias)` pairs in id order, so that runs are reproducible.
fn bias_entries(bias: Option<HashMap<i64, f32>>) -> PyResult<Vec<(u32, f32)>> {
    let mut entries = bias
        .unwrap_or_default()
        .into_iter()
        .map(|(id, b)| {
            let id = u32::try_from(id).map_err(|_| {
                PyValueError::new_err(format!("logit_bias: {id} is not a valid token id"))
            })?;
            Ok((id, b))
        })
        .collect::<PyResult<Vec<_>>>()?;
    entries.sort_unstable_by_key(|&(id, _)| id);
    Ok(entries)
}
