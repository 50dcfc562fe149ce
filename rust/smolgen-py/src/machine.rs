//! What this machine offers the kernels: the instruction sets they can use and the memory
//! read bandwidth that bounds a decode step.

use pyo3::prelude::*;

use crate::errors::to_py;

/// Adds `kernel_path`, `kernel_paths` and `measure_read_bandwidth` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(kernel_path, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_paths, m)?)?;
    m.add_function(wrap_pyfunction!(measure_read_bandwidth, m)?)?;
    Ok(())
}

/// The kernel path the CPU engine runs here: `avx512vnni`, `avx2+vnni`, `avx2+fma`, `neon` or
/// `scalar` (`SMOLGEN_KERNELS` forces one this CPU has; an unknown or missing one is an error).
#[pyfunction]
fn kernel_path() -> PyResult<&'static str> {
    smolgen_core::kernels::kernel_path().map_err(to_py)
}

/// Every kernel path this CPU can run, scalar first.
#[pyfunction]
fn kernel_paths() -> Vec<&'static str> {
    smolgen_core::kernels::available_isas()
        .into_iter()
        .map(|i| i.name())
        .collect()
}

/// Best-of-`repeats` read bandwidth in GB/s of `threads` threads reading a `megabytes` buffer.
#[pyfunction]
#[pyo3(signature = (threads, megabytes = None, repeats = None))]
fn measure_read_bandwidth(
    py: Python<'_>,
    threads: &Bound<'_, PyAny>,
    megabytes: Option<&Bound<'_, PyAny>>,
    repeats: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let size = |name, value: Option<&Bound<'_, PyAny>>, default| match value {
        Some(v) => crate::arguments::size(name, v, 1),
        None => Ok(default),
    };
    let threads = crate::arguments::size("threads", threads, 1)?;
    let megabytes = size("megabytes", megabytes, 256)?;
    let repeats = size("repeats", repeats, 5)?;
    py.detach(|| smolgen_core::bandwidth::measure_read_bandwidth(threads, megabytes, repeats))
        .map_err(to_py)
}
