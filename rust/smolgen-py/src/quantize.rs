//! ggml quantization of f32 values into the block types the kernels multiply, and of whole
//! model files.

use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use smolgen_core::convert::{self, FileType, QuantizeOptions, FILE_TYPES};
use smolgen_core::kernels::{WeightKind, WEIGHT_KINDS};

use crate::errors::to_py;

/// Adds `quantize`, `weight_types`, `quantize_model` and `file_types` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(weight_types, m)?)?;
    m.add_function(wrap_pyfunction!(quantize_model, m)?)?;
    m.add_function(wrap_pyfunction!(file_types, m)?)?;
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

/// Writes the model at `input` (a `.gguf` or a Hugging Face directory) to the GGUF `output` as
/// `file_type` (llama-quantize's names: `Q4_K_M`, `Q8_0`, `BF16`, ...). `progress(i, n, name,
/// from, to)` is called after each tensor. Returns what was written.
#[pyfunction]
#[pyo3(signature = (input, output, file_type, threads = None, allow_requantize = false, progress = None))]
fn quantize_model<'py>(
    py: Python<'py>,
    input: std::path::PathBuf,
    output: std::path::PathBuf,
    file_type: &str,
    threads: Option<&Bound<'py, PyAny>>,
    allow_requantize: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let file_type = FileType::by_name(file_type).map_err(to_py)?;
    let threads = threads
        .filter(|t| !t.is_none())
        .map(|t| crate::arguments::size("threads", t, 1))
        .transpose()?;
    let options = QuantizeOptions {
        threads: threads.unwrap_or(0),
        allow_requantize,
    };
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        convert::quantize_model(&input, &output, file_type, options, &mut |i, n, t| {
            Python::attach(|py| {
                let called = py.check_signals().and_then(|()| match &progress {
                    Some(f) => f.call1(py, (i, n, &t.name, t.from, t.to)).map(drop),
                    None => Ok(()),
                });
                called.map_err(|e| {
                    raised = Some(e);
                    smolgen_core::Error::invalid("interrupted")
                })
            })
        })
    });
    if let Some(e) = raised {
        return Err(e);
    }
    let report = result.map_err(to_py)?;
    let tensors = PyList::empty(py);
    for t in &report.tensors {
        let d = PyDict::new(py);
        d.set_item("name", &t.name)?;
        d.set_item("shape", t.shape.clone())?;
        d.set_item("from", t.from)?;
        d.set_item("to", t.to)?;
        d.set_item("bytes", t.bytes)?;
        tensors.append(d)?;
    }
    let out = PyDict::new(py);
    out.set_item("file_type", report.file_type.name)?;
    out.set_item("input_bytes", report.input_bytes)?;
    out.set_item("output_bytes", report.output_bytes)?;
    out.set_item("tensors", tensors)?;
    Ok(out)
}

/// llama-quantize's names of the file types `quantize_model` writes.
#[pyfunction]
fn file_types() -> Vec<&'static str> {
    FILE_TYPES.iter().map(|t| t.name).collect()
}
