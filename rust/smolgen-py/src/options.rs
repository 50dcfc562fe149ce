//! The one place where Python keyword arguments become the core's settings: `GenerateOptions`
//! and its `SamplingParams`. `Model.generate` and the sampler's test hooks (`sampler_distribution`,
//! `sampler_draws`) take their settings as `**kwargs` and hand them here; a setting left out keeps
//! the core's default (`GenerateOptions::default()`), so no default is repeated in the binding.
//!
//! A new setting is a field in the core's options type and an arm in [`fill`].

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use smolgen_core::{GenerateOptions, Grammar, SamplingParams};

use crate::arguments::{self, invalid};
use crate::errors::to_py;

/// Which settings an entry point takes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only what shapes one draw: the `SamplingParams` but the seed (the sampler hooks take
    /// their own).
    Sampling,
    /// Everything a request takes: sampling, `seed`, `max_tokens`, `stop`, `logprobs`,
    /// `prefix_cache`, and one structured-output constraint (`json_schema`, `regex`, `grammar`).
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
/// can (types, integers that do not fit); the core checks every domain. `None` keeps the
/// default, so a caller (the server's request models) can pass every field as it came. An
/// unknown keyword, a value of the wrong type or out of range is an `InvalidArgumentError`
/// (a `TypeError` too, as Python raises for an unknown keyword) naming the keyword.
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
        let key = arguments::text("a keyword", &key)?;
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
            "top_k" => set!(s.top_k, arguments::size(&key, &value, 0)?),
            "top_p" => set!(s.top_p, float(&key, &value)?),
            "min_p" => set!(s.min_p, float(&key, &value)?),
            "repetition_penalty" => set!(s.repetition_penalty, float(&key, &value)?),
            "frequency_penalty" => set!(s.frequency_penalty, float(&key, &value)?),
            "presence_penalty" => set!(s.presence_penalty, float(&key, &value)?),
            "logit_bias" => set!(s.logit_bias, logit_bias(&value)?),
            "seed" if request => set!(
                s.seed,
                Some(arguments::integer(&key, &value, 0, u64::MAX.into())? as u64)
            ),
            "max_tokens" if request => {
                set!(options.max_tokens, Some(arguments::size(&key, &value, 1)?))
            }
            "stop" if request => set!(options.stop, stop(&value)?),
            "logprobs" if request => {
                set!(options.logprobs, Some(arguments::size(&key, &value, 0)?))
            }
            "prefix_cache" if request => set!(options.prefix_cache, boolean(&key, &value)?),
            "json_schema" | "regex" | "grammar" if request && given => {
                let grammar = grammar(&key, &value)?;
                if let Some(other) = &options.grammar {
                    return Err(invalid(format!(
                        "{} and {key} cannot be combined: give one constraint",
                        other.option_name()
                    )));
                }
                options.grammar = Some(grammar);
            }
            "json_schema" | "regex" | "grammar" if request => {}
            _ => return Err(invalid(format!("unexpected keyword argument '{key}'"))),
        }
    }
    Ok(())
}

/// A structured-output constraint: `json_schema` as a mapping (or its JSON text), `regex` and
/// `grammar` (Lark) as text.
fn grammar(key: &str, value: &Bound<'_, PyAny>) -> PyResult<Grammar> {
    Ok(match key {
        "json_schema" if value.is_instance_of::<PyString>() => {
            Grammar::JsonSchema(arguments::text(key, value)?)
        }
        "json_schema" => {
            if !value.is_instance_of::<PyDict>() {
                return Err(invalid(format!(
                    "json_schema must be a dict or its JSON text, got {}",
                    value.get_type().name()?
                )));
            }
            let text = value
                .py()
                .import("json")?
                .call_method1("dumps", (value,))
                .map_err(|e| invalid(format!("json_schema cannot be written as JSON: {e}")))?;
            Grammar::JsonSchema(arguments::text(key, &text)?)
        }
        "regex" => Grammar::Regex(arguments::text(key, value)?),
        _ => Grammar::Lark(arguments::text(key, value)?),
    })
}

/// The `x-guidance` value that lays out generated JSON (the core's default for `json_schema`),
/// as JSON text: for a `%json` schema inside a Lark grammar, which Python writes.
#[pyfunction]
pub fn json_layout() -> String {
    smolgen_core::generate::constraint::json_layout().to_string()
}

/// One stop string or several.
fn stop(value: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if value.is_instance_of::<PyString>() {
        return Ok(vec![arguments::text("stop", value)?]);
    }
    let items = value
        .try_iter()
        .map_err(|_| invalid("stop must be a string or a list of strings"))?;
    items.map(|item| arguments::text("stop", &item?)).collect()
}

/// A float setting (an int will do); the core keeps them in `f32`.
fn float(key: &str, value: &Bound<'_, PyAny>) -> PyResult<f32> {
    if value.is_instance_of::<PyBool>()
        || !(value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>())
    {
        return Err(invalid(format!(
            "{key} must be a number, got {}",
            value.get_type().name()?
        )));
    }
    let v: f64 = value
        .extract()
        .map_err(|_| invalid(format!("{key} is too large a number")))?;
    Ok(v as f32)
}

fn boolean(key: &str, value: &Bound<'_, PyAny>) -> PyResult<bool> {
    value
        .cast::<PyBool>()
        .map(|b| b.is_true())
        .map_err(|_| invalid(format!("{key} must be True or False")))
}

/// `{token id: bias}` from any mapping, sorted by id so that a run does not depend
/// on the mapping's order.
fn logit_bias(value: &Bound<'_, PyAny>) -> PyResult<Vec<(u32, f32)>> {
    let items = value
        .call_method0("items")
        .map_err(|_| invalid("logit_bias must be a mapping of token id to bias"))?;
    let mut bias = items
        .try_iter()?
        .map(|item| {
            let (id, b): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?
                .extract()
                .map_err(|_| invalid("logit_bias must be a mapping of token id to bias"))?;
            let id = arguments::integer("a logit_bias token id", &id, 0, u32::MAX.into())?;
            Ok((id as u32, float("a logit_bias value", &b)?))
        })
        .collect::<PyResult<Vec<_>>>()?;
    bias.sort_unstable_by_key(|&(id, _)| id);
    Ok(bias)
}

/// What a prompt was made from, as the context error says it.
pub fn subject_name(subject: &str) -> PyResult<&'static str> {
    match subject {
        "prompt" => Ok("prompt"),
        "messages" => Ok("messages"),
        other => Err(invalid(format!(
            "subject must be \"prompt\" or \"messages\", got {other:?}"
        ))),
    }
}

/// Checks that `prompt_tokens` and `max_tokens` fit a context window of `context_length` and
/// returns how many tokens the request may generate (unset: the core's default). Raises
/// `ContextLengthExceededError` in the one wording every entry point uses; `subject` is what the
/// prompt was made from: `"prompt"` or `"messages"`.
#[pyfunction]
#[pyo3(signature = (context_length, prompt_tokens, max_tokens = None, subject = "prompt"))]
pub fn check_context(
    context_length: &Bound<'_, PyAny>,
    prompt_tokens: &Bound<'_, PyAny>,
    max_tokens: Option<&Bound<'_, PyAny>>,
    subject: &str,
) -> PyResult<usize> {
    let context_length = arguments::size("context_length", context_length, 0)?;
    let prompt_tokens = arguments::size("prompt_tokens", prompt_tokens, 0)?;
    let max_tokens = max_tokens
        .filter(|m| !m.is_none())
        .map(|m| arguments::size("max_tokens", m, 1))
        .transpose()?;
    let subject = subject_name(subject)?;
    smolgen_core::check_context(context_length, prompt_tokens, max_tokens, subject).map_err(to_py)
}
