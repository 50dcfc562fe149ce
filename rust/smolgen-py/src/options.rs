//! The one place where Python keyword arguments become the core's settings: `GenerateOptions`
//! and its `SamplingParams`. `Model.generate` and the sampler's test hooks (`sampler_distribution`,
//! `sampler_draws`) take their settings as `**kwargs` and hand them here; a setting left out keeps
//! the core's default (`GenerateOptions::default()`), so no default is repeated in the binding.
//!
//! A new setting is a field in the core's options type and an arm in [`fill`].

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use smolgen_core::{GenerateOptions, SamplingParams};

use crate::errors::to_py;
use crate::tokenizer::checked_ids;

/// Which settings an entry point takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only what shapes one draw: the `SamplingParams` but the seed (the sampler hooks take
    /// their own).
    Sampling,
    /// Everything a request takes: sampling, `seed`, `max_tokens`, `stop`, `logprobs`,
    /// `prefix_cache`.
    Generation,
}

/// The settings of one `generate` call.
pub fn generate_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<GenerateOptions> {
    let mut options = GenerateOptions::default();
    fill(&mut options, kwargs, Scope::Generation)?;
    Ok(options)
}

/// The sampling settings of one call to a sampler hook.
pub fn sampling_params(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<SamplingParams> {
    let mut options = GenerateOptions::default();
    fill(&mut options, kwargs, Scope::Sampling)?;
    Ok(options.sampling)
}

/// Sets each keyword's setting, converting Python's values and checking what only the binding
/// can (integers that do not fit); the core checks every domain. `None` keeps the default, so a
/// caller (the server's request models) can pass every field as it came. An unknown keyword is
/// a `TypeError`, as for any Python function.
fn fill(
    options: &mut GenerateOptions,
    kwargs: Option<&Bound<'_, PyDict>>,
    scope: Scope,
) -> PyResult<()> {
    let Some(kwargs) = kwargs else {
        return Ok(());
    };
    let request = scope == Scope::Generation;
    for (key, value) in kwargs.iter() {
        let key = key.cast::<PyString>()?.to_cow()?;
        let given = !value.is_none();
        // `field <- value`: converted only when given.
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if given {
                    $field = $value;
                }
            };
        }
        let s = &mut options.sampling;
        match &*key {
            "temperature" => set!(s.temperature, float(&key, &value)?),
            "top_k" => set!(s.top_k, non_negative(&key, arg(&key, &value)?)?),
            "top_p" => set!(s.top_p, float(&key, &value)?),
            "min_p" => set!(s.min_p, float(&key, &value)?),
            "repetition_penalty" => set!(s.repetition_penalty, float(&key, &value)?),
            "frequency_penalty" => set!(s.frequency_penalty, float(&key, &value)?),
            "presence_penalty" => set!(s.presence_penalty, float(&key, &value)?),
            "logit_bias" => set!(s.logit_bias, logit_bias(&value)?),
            "seed" if request => set!(s.seed, Some(arg(&key, &value)?)),
            "max_tokens" if request => {
                set!(options.max_tokens, Some(positive(arg(&key, &value)?)?))
            }
            "stop" if request => set!(options.stop, arg::<Stop>(&key, &value)?.into()),
            "logprobs" if request => set!(
                options.logprobs,
                Some(non_negative(&key, arg(&key, &value)?)?)
            ),
            "prefix_cache" if request => set!(options.prefix_cache, arg(&key, &value)?),
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unexpected keyword argument '{key}'"
                )))
            }
        }
    }
    Ok(())
}

/// One stop string or several.
#[derive(FromPyObject)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl From<Stop> for Vec<String> {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A float setting; the core keeps them in `f32`.
fn float(key: &str, value: &Bound<'_, PyAny>) -> PyResult<f32> {
    Ok(arg::<f64>(key, value)? as f32)
}

/// `value` as a `T`; a value of the wrong type is a `TypeError` that names the argument.
fn arg<'py, T: FromPyObjectOwned<'py>>(key: &str, value: &Bound<'py, PyAny>) -> PyResult<T> {
    value.extract::<T>().map_err(|e| {
        let e: PyErr = e.into();
        if e.is_instance_of::<PyTypeError>(value.py()) {
            PyTypeError::new_err(format!("argument '{key}': {}", e.value(value.py())))
        } else {
            e
        }
    })
}

/// `max_tokens` as given; 0 is refused by the core.
fn positive(n: i64) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| invalid(format!("max_tokens must be positive, got {n}")))
}

fn non_negative(key: &str, n: i64) -> PyResult<usize> {
    usize::try_from(n).map_err(|_| invalid(format!("{key} must be >= 0, got {n}")))
}

/// `{token id: bias}` from any mapping, sorted by id so that a run does not depend
/// on the mapping's order.
fn logit_bias(value: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, f32)>> {
    let items = value.call_method0("items").map_err(|_| {
        PyTypeError::new_err("argument 'logit_bias': must be a mapping of token id to bias")
    })?;
    let mut bias = items
        .try_iter()?
        .map(|item| {
            let (id, b): (i64, f64) = arg("logit_bias", &item?)?;
            Ok((checked_ids(&[id])?[0], b as f32))
        })
        .collect::<PyResult<Vec<_>>>()?;
    bias.sort_unstable_by_key(|&(id, _)| id);
    Ok(bias)
}

fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(smolgen_core::Error::invalid(msg))
}

/// Checks that `prompt_tokens` and `max_tokens` fit a context window of `context_length` and
/// returns how many tokens the request may generate (unset: the core's default). Raises
/// `ContextLengthExceededError` in the one wording every entry point uses; `subject` is what the
/// prompt was made from: `"prompt"` or `"messages"`.
#[pyfunction]
#[pyo3(signature = (context_length, prompt_tokens, max_tokens = None, subject = "prompt"))]
pub fn check_context(
    context_length: usize,
    prompt_tokens: usize,
    max_tokens: Option<i64>,
    subject: &str,
) -> PyResult<usize> {
    let subject = match subject {
        "prompt" => "prompt",
        "messages" => "messages",
        other => {
            return Err(invalid(format!(
                "subject must be \"prompt\" or \"messages\", got {other:?}"
            )))
        }
    };
    smolgen_core::check_context(
        context_length,
        prompt_tokens,
        max_tokens.map(positive).transpose()?,
        subject,
    )
    .map_err(to_py)
}
