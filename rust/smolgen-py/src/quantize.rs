//! ggml quantization of f32 values into the block types the kernels multiply.

use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use smolgen_core::kernels::{WeightKind, WEIGHT_KINDS};

use crate::errors::to_py;

/// Adds `quantize` and `weight_types` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(weight_types, m)?)?;
    Ok(())
}

/// `values` (contiguous f32, a whole number of blocks) as blocks of `type_name` (ggml's name,
/// any case, e.g. `"q4_0"`), in ggml's bytes.
#[pyfunction]
fn quantize<'py>(
    py: Python<'py>,
    type_name: &str,
    values: PyReadonlyArray1<'_, f32>,
) -> PyResult<Bound<'py, PyBytes>> {
    let kind = WeightKind::by_name(type_name).map_err(to_py)?;
    let values = values.as_slice().map_err(|_| {
        to_py(smolgen_core::Error::invalid(format!(
            "values must be a contiguous array, got shape {:?}",
            values.shape()
        )))
    })?;
    let bytes = py.detach(|| kind.quantize(values)).map_err(to_py)?;
    Ok(PyBytes::new(py, &bytes))
}

/// ggml's names of the weight types the kernels multiply.
#[pyfunction]
fn weight_types() -> Vec<&'static str> {
    names()
}

fn names() -> Vec<&'static str> {
    WEIGHT_KINDS.iter().map(|k: &&WeightKind| k.name).collect()
}
