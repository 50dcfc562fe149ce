//! The `smolgen._core` extension module: thin wrappers over `smolgen-core`.

use pyo3::prelude::*;

mod arguments;
mod completion;
mod errors;
mod machine;
mod model;
mod options;
mod quantize;
mod sampler;
mod tokenizer;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<model::Model>()?;
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<tokenizer::TokenPiece>()?;
    m.add_class::<completion::Completion>()?;
    m.add_class::<completion::CompletionStream>()?;
    m.add_class::<completion::Chunk>()?;
    m.add_class::<completion::Usage>()?;
    m.add_class::<completion::Timings>()?;
    m.add_class::<completion::TokenLogprob>()?;
    sampler::register(m)?;
    machine::register(m)?;
    quantize::register(m)?;
    m.add_function(wrap_pyfunction!(completion::step_streams, m)?)?;
    m.add_function(wrap_pyfunction!(completion::percentile, m)?)?;
    m.add_function(wrap_pyfunction!(options::check_context, m)?)?;
    m.add_function(wrap_pyfunction!(options::json_layout, m)?)?;
    Ok(())
}
