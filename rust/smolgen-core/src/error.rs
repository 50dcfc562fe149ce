//! The one error type of the core. The Python binding maps each variant to an exception class,
//! so callers branch on the kind of failure, never on message text.

use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No file or directory where a model was expected.
    #[error("model not found: {0}")]
    ModelNotFound(PathBuf),

    /// The file exists but is not a well-formed model file (truncated, wrong magic, bad offsets...).
    #[error("malformed model file {path}: {reason}")]
    MalformedModel { path: PathBuf, reason: String },

    /// A well-formed file asking for something smolgen does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),

    /// The prompt plus the requested completion do not fit the model's context window.
    #[error(
        "This model's maximum context length is {max_context} tokens. However, you requested \
         {requested} tokens ({prompt_tokens} in the prompt, {max_new_tokens} for the completion). \
         Please reduce the length of the prompt or max_tokens."
    )]
    ContextLengthExceeded {
        max_context: usize,
        requested: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
    },

    /// A caller passed a value outside its domain (negative temperature, unknown token id...).
    #[error("{0}")]
    InvalidArgument(String),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An error inside the tensor library: a bug on our side, not bad input.
    #[error("tensor backend: {0}")]
    Backend(#[from] candle_core::Error),

    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::MalformedModel {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
