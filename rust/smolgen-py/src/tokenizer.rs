//! `Tokenizer` and `TokenPiece`: what the model sees of a text.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use smolgen_core::tokenizer;

use crate::arguments;
use crate::errors::to_py;

/// One token: its id, the bytes it stands for, and those bytes as readable text.
#[pyclass(module = "smolgen._core", frozen)]
pub struct TokenPiece {
    inner: tokenizer::TokenPiece,
}

#[pymethods]
impl TokenPiece {
    #[getter]
    fn id(&self) -> u32 {
        self.inner.id
    }

    /// The token's bytes decoded as UTF-8, invalid bytes shown as `\xNN`.
    #[getter]
    fn text(&self) -> &str {
        &self.inner.text
    }

    #[getter]
    fn bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.bytes)
    }

    fn __repr__(&self) -> String {
        format!(
            "TokenPiece(id={}, text={:?})",
            self.inner.id, self.inner.text
        )
    }

    fn __eq__(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

/// A model's tokenizer. Shared with the `Model` it came from; loading one from a GGUF reads the
/// file's metadata only. (`smolgen.Tokenizer` subclasses it to load by model name.)
#[pyclass(module = "smolgen._core", frozen, subclass)]
pub struct Tokenizer {
    pub inner: Arc<tokenizer::Tokenizer>,
}

/// Where a tokenizer comes from: a file to load, or a tokenizer to share.
#[derive(FromPyObject)]
pub enum TokenizerSource<'py> {
    Shared(Bound<'py, Tokenizer>),
    Path(PathBuf),
}

#[pymethods]
impl Tokenizer {
    /// The tokenizer of a `.gguf` file, a `tokenizer.json`, or a Hugging Face directory; given
    /// another `Tokenizer`, the same tokenizer, shared.
    #[new]
    fn new(py: Python<'_>, source: TokenizerSource<'_>) -> PyResult<Self> {
        let inner = match source {
            TokenizerSource::Shared(tk) => tk.get().inner.clone(),
            TokenizerSource::Path(path) => Arc::new(
                py.detach(|| tokenizer::Tokenizer::load(&path))
                    .map_err(to_py)?,
            ),
        };
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text`, without BOS. Special-token text such as `<|im_start|>` stays plain
    /// text unless `special=True`, so user text never turns into control tokens.
    #[pyo3(signature = (text, special = false))]
    fn encode(&self, py: Python<'_>, text: &Bound<'_, PyAny>, special: bool) -> PyResult<Vec<u32>> {
        let text = arguments::text("text", text)?;
        py.detach(|| self.inner.encode(&text, special))
            .map_err(to_py)
    }

    /// What a text prompt becomes for `generate`, `logits`, `peek` and `score`: special-token
    /// text parsed, and BOS first when the model asks for it.
    fn encode_prompt(&self, py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        let text = arguments::text("text", text)?;
        py.detach(|| self.inner.encode_prompt(&text)).map_err(to_py)
    }

    /// The text of `ids`; special tokens appear as their text, invalid UTF-8 as U+FFFD.
    fn decode(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        self.inner
            .decode(&arguments::token_ids("ids", ids)?)
            .map_err(to_py)
    }

    /// `text` as the model sees it: a `TokenPiece` per token.
    #[pyo3(signature = (text, special = false))]
    fn tokens(&self, text: &Bound<'_, PyAny>, special: bool) -> PyResult<Vec<TokenPiece>> {
        pieces(&self.inner, &arguments::text("text", text)?, special)
    }

    /// The piece of one token id.
    fn piece(&self, id: &Bound<'_, PyAny>) -> PyResult<TokenPiece> {
        let id = arguments::integer("id", id, 0, u32::MAX.into())? as u32;
        let inner = self.inner.piece(id).map_err(to_py)?;
        Ok(TokenPiece { inner })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[getter]
    fn bos_id(&self) -> Option<u32> {
        self.inner.bos_id
    }

    #[getter]
    fn eos_id(&self) -> Option<u32> {
        self.inner.eos_id
    }

    /// Ids that end generation (EOS and end-of-turn tokens).
    #[getter]
    fn end_of_generation_ids(&self) -> Vec<u32> {
        self.inner.end_of_generation.clone()
    }

    /// The model's own Jinja chat template, if it ships one.
    #[getter]
    fn chat_template(&self) -> Option<String> {
        self.inner.chat_template.clone()
    }

    fn __len__(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!("Tokenizer(vocab_size={})", self.inner.vocab_size())
    }
}

pub fn pieces(tk: &tokenizer::Tokenizer, text: &str, special: bool) -> PyResult<Vec<TokenPiece>> {
    Ok(tk
        .pieces(text, special)
        .map_err(to_py)?
        .into_iter()
        .map(|inner| TokenPiece { inner })
        .collect())
}
