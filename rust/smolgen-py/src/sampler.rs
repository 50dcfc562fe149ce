//! The fused sampler, exposed to Python for the tests that hold it to the NumPy reference
//! (`smolgen.sampling`): the distribution it would draw from, and a run of seeded draws.
//!
//! Keyword arguments mirror `smolgen.sampling.process`: `prompt_tokens` feeds the repetition
//! penalty only, `generated` every penalty.

use std::collections::HashMap;

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use smolgen_core::{Sampler, SamplingParams};

use crate::errors::to_py;
use crate::tokenizer::checked_ids;

/// Adds `sampler_distribution` and `sampler_draws` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sampler_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(sampler_draws, m)?)?;
    Ok(())
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
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repetition_penalty: f64,
    frequency_penalty: f64,
    presence_penalty: f64,
    logit_bias: Option<HashMap<i64, f64>>,
) -> PyResult<Vec<(u32, f32)>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let request = Request::new(
        prompt_tokens,
        generated,
        sampling_params(
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            Some(0),
        )?,
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
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repetition_penalty: f64,
    frequency_penalty: f64,
    presence_penalty: f64,
    logit_bias: Option<HashMap<i64, f64>>,
) -> PyResult<Vec<u32>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let request = Request::new(
        prompt_tokens,
        generated,
        sampling_params(
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            frequency_penalty,
            presence_penalty,
            logit_bias,
            Some(seed),
        )?,
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
            prompt_tokens: checked_ids(&prompt_tokens)?,
            generated: checked_ids(&generated)?,
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

/// The sampling keyword arguments every entry point takes (`generate` and the functions above),
/// checked and converted in one place.
#[allow(clippy::too_many_arguments)]
pub fn sampling_params(
    temperature: f64,
    top_k: i64,
    top_p: f64,
    min_p: f64,
    repetition_penalty: f64,
    frequency_penalty: f64,
    presence_penalty: f64,
    logit_bias: Option<HashMap<i64, f64>>,
    seed: Option<u64>,
) -> PyResult<SamplingParams> {
    let top_k = usize::try_from(top_k).map_err(|_| {
        to_py(smolgen_core::Error::invalid(format!(
            "top_k must be >= 0, got {top_k}"
        )))
    })?;
    // Sorted by id, so that a run does not depend on the dict's order.
    let mut bias = logit_bias
        .unwrap_or_default()
        .into_iter()
        .map(|(id, b)| Ok((checked_ids(&[id])?[0], b as f32)))
        .collect::<PyResult<Vec<_>>>()?;
    bias.sort_unstable_by_key(|&(id, _)| id);
    Ok(SamplingParams {
        temperature: temperature as f32,
        top_k,
        top_p: top_p as f32,
        min_p: min_p as f32,
        repetition_penalty: repetition_penalty as f32,
        frequency_penalty: frequency_penalty as f32,
        presence_penalty: presence_penalty as f32,
        logit_bias: bias,
        seed,
    })
}
