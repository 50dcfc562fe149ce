//! The fused sampler, exposed to Python for the tests that hold it to the NumPy reference
//! (`smolgen.sampling`): the distribution it would draw from, and a run of seeded draws.
//!
//! Their settings are `generate`'s sampling keywords (read in `options.rs`); `prompt_tokens`
//! feeds the repetition penalty only, `generated` every penalty (as `history` and `generated` in
//! `smolgen.sampling.process`).

use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use smolgen_core::{Sampler, SamplingParams};

use crate::arguments::checked_ids;
use crate::errors::to_py;
use crate::options::sampling_params;

/// Adds `sampler_distribution` and `sampler_draws` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(sampler_distribution, m)?)?;
    m.add_function(wrap_pyfunction!(sampler_draws, m)?)?;
    Ok(())
}

/// The surviving tokens and their renormalised probabilities, as `[(id, probability)]` sorted
/// by probability (descending), then id. `**sampling`: the sampling keywords of `generate`.
#[pyfunction]
#[pyo3(signature = (logits, *, prompt_tokens = Vec::new(), generated = Vec::new(), **sampling))]
fn sampler_distribution(
    py: Python<'_>,
    logits: PyReadonlyArray1<'_, f32>,
    prompt_tokens: Vec<i64>,
    generated: Vec<i64>,
    sampling: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<(u32, f32)>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let params = SamplingParams {
        // Nothing is drawn: a fixed seed spares gathering entropy.
        seed: Some(0),
        ..sampling_params(sampling)?
    };
    let request = Request::new(prompt_tokens, generated, params)?;
    py.detach(move || {
        let sampler = request.sampler(logits.len())?;
        sampler.distribution(&logits)
    })
    .map_err(to_py)
}

/// `n` draws from one sampler seeded with `seed`, none of them recorded as generated, so
/// their frequencies estimate the distribution. `**sampling`: the sampling keywords of
/// `generate`.
#[pyfunction]
#[pyo3(signature = (
    logits, n, *, seed, prompt_tokens = Vec::new(), generated = Vec::new(), **sampling
))]
fn sampler_draws(
    py: Python<'_>,
    logits: PyReadonlyArray1<'_, f32>,
    n: usize,
    seed: u64,
    prompt_tokens: Vec<i64>,
    generated: Vec<i64>,
    sampling: Option<&Bound<'_, PyDict>>,
) -> PyResult<Vec<u32>> {
    let logits: Vec<f32> = logits.as_array().iter().copied().collect();
    let params = SamplingParams {
        seed: Some(seed),
        ..sampling_params(sampling)?
    };
    let request = Request::new(prompt_tokens, generated, params)?;
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
            prompt_tokens: checked_ids("prompt_tokens", &prompt_tokens)?,
            generated: checked_ids("generated", &generated)?,
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
