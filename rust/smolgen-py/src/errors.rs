//! One mapping from core errors to the exception classes of `smolgen.errors`.
//!
//! The classes are defined in Python (so they can inherit from both `SmolgenError` and the
//! builtin a Python user expects: `FileNotFoundError`, `ValueError`, ...) and looked up here.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use smolgen_core::Error;

pub fn to_py(err: Error) -> PyErr {
    Python::attach(|py| build(py, &err).unwrap_or_else(|e| e))
}

fn build(py: Python<'_>, err: &Error) -> PyResult<PyErr> {
    let errors = py.import("smolgen.errors")?;
    let message = err.to_string();
    let class = match err {
        Error::ModelNotFound(_) => "ModelNotFoundError",
        Error::MalformedModel { .. } => "MalformedModelError",
        Error::Unsupported { .. } => "UnsupportedModelError",
        Error::ContextLengthExceeded { .. } => "ContextLengthExceededError",
        Error::InvalidArgument(_) => "InvalidArgumentError",
        Error::Io { .. } => "ModelIOError",
        Error::Backend(_) | Error::Tokenizer(_) => "InternalError",
    };
    let cls = errors.getattr(class)?;
    let kwargs = PyDict::new(py);
    match err {
        Error::ModelNotFound(path)
        | Error::MalformedModel { path, .. }
        | Error::Io { path, .. } => {
            kwargs.set_item("path", path.display().to_string())?;
        }
        Error::Unsupported { path, .. } => {
            // None for a device or kernel path, which is no file's.
            let path = path.as_ref().map(|p| p.display().to_string());
            kwargs.set_item("path", path)?;
        }
        Error::ContextLengthExceeded {
            max_context,
            requested,
            prompt_tokens,
            max_new_tokens,
            prompt_bytes,
            ..
        } => {
            kwargs.set_item("at_least", prompt_bytes.is_some())?;
            kwargs.set_item("max_context", max_context)?;
            kwargs.set_item("requested", requested)?;
            kwargs.set_item("prompt_tokens", prompt_tokens)?;
            kwargs.set_item("max_tokens", max_new_tokens)?;
        }
        _ => {}
    }
    let value = cls.call((message,), Some(&kwargs))?;
    Ok(PyErr::from_value(value))
}
