//! Python values as the core's types, for the arguments every entry point takes. A value of the
//! wrong type, out of range, or text that is not valid Unicode (a lone surrogate such as
//! `"\ud800"`) is an `InvalidArgumentError` naming the argument: never the conversion layer's
//! own `OverflowError`, `UnicodeEncodeError` or "failed to extract" `TypeError`.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyString};

use crate::errors::to_py;

pub fn invalid(msg: impl Into<String>) -> PyErr {
    to_py(smolgen_core::Error::invalid(msg))
}

/// What a value is, for a message: its repr, cut short.
fn shown(value: &Bound<'_, PyAny>) -> String {
    let repr = value
        .repr()
        .map(|r| r.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".into());
    match repr.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &repr[..cut]),
        None => repr,
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// `value` as text.
pub fn text(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    let s = value
        .cast::<PyString>()
        .map_err(|_| invalid(format!("{name} must be a string, got {}", type_name(value))))?;
    match s.to_cow() {
        Ok(text) => Ok(text.into_owned()),
        Err(_) => Err(invalid(format!(
            "{name} is not valid Unicode text: it holds a lone surrogate (such as \"\\ud800\"), \
             which no encoding can represent"
        ))),
    }
}

/// `value` as an integer in `min..=max`: an `int`, or anything that converts like one (a NumPy
/// integer), but not a bool.
pub fn integer(name: &str, value: &Bound<'_, PyAny>, min: i128, max: i128) -> PyResult<i128> {
    let out_of_range = || {
        invalid(format!(
            "{name} must be an integer from {min} to {max}, got {}",
            shown(value)
        ))
    };
    let not_an_integer = || {
        invalid(format!(
            "{name} must be an integer, got {}",
            type_name(value)
        ))
    };
    if value.is_instance_of::<PyBool>() {
        return Err(not_an_integer());
    }
    match value.extract::<i128>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(out_of_range()),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(value.py()) => {
            Err(out_of_range())
        }
        Err(_) => Err(not_an_integer()),
    }
}

/// `value` as a count or size: an integer from `min` to `usize::MAX`.
pub fn size(name: &str, value: &Bound<'_, PyAny>, min: usize) -> PyResult<usize> {
    // In range by the check, so the conversion is exact.
    Ok(integer(name, value, min as i128, usize::MAX as i128)? as usize)
}

/// Token ids (any iterable of ints: a list, a tuple, a NumPy array...).
pub fn token_ids(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
    checked_ids(name, &integers(name, value)?)
}

/// Integers as token ids: within `u32` (the vocabulary is checked where it is known).
pub fn checked_ids(name: &str, ids: &[i64]) -> PyResult<Vec<u32>> {
    ids.iter()
        .map(|&id| {
            u32::try_from(id).map_err(|_| invalid(format!("{name}: {id} is not a valid token id")))
        })
        .collect()
}

/// The integers of any iterable of ints, each within `i64`.
pub fn integers(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    if value.is_instance_of::<PyString>() {
        return Err(invalid(format!("{name} must be integers, got a string")));
    }
    let items = value.try_iter().map_err(|_| {
        invalid(format!(
            "{name} must be an iterable of integers, got {}",
            type_name(value)
        ))
    })?;
    items
        .map(|item| {
            let item = item?;
            // NumPy integers are not `int` instances but convert like them.
            if item.is_instance_of::<PyBool>() {
                return Err(invalid(format!("{name} must be integers, got a bool")));
            }
            item.extract::<i64>().map_err(|_| {
                invalid(format!(
                    "{name} must be integers from {} to {}, got {}",
                    i64::MIN,
                    i64::MAX,
                    shown(&item)
                ))
            })
        })
        .collect()
}
