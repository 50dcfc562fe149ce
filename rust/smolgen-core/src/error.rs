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

    /// The prompt plus the requested completion do not fit the model's context window. Built
    /// by [`Error::context_exceeded`]; `max_new_tokens == 0` when the prompt alone does not fit.
    #[error("{}", context_message(*.max_context, *.prompt_tokens, *.max_new_tokens, .subject))]
    ContextLengthExceeded {
        max_context: usize,
        requested: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
        /// What the prompt was made from, as the caller knows it: `"prompt"` or `"messages"`.
        subject: &'static str,
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

/// The context-window error in the words API users know (OpenAI's).
fn context_message(window: usize, prompt: usize, new: usize, subject: &str) -> String {
    if new == 0 {
        format!(
            "This model's maximum context length is {window} tokens. However, your {subject} \
             resulted in {prompt} tokens. Please reduce the length of the {subject}."
        )
    } else {
        format!(
            "This model's maximum context length is {window} tokens. However, you requested {} \
             tokens ({prompt} in the {subject}, {new} for the completion). Please reduce the \
             length of the {subject} or max_tokens.",
            prompt + new
        )
    }
}

impl Error {
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::MalformedModel {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// `prompt_tokens` plus `max_new_tokens` (0: the prompt alone) exceed `max_context`.
    /// `subject` names what the prompt was made from: `"prompt"` or `"messages"`.
    pub fn context_exceeded(
        max_context: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
        subject: &'static str,
    ) -> Self {
        Error::ContextLengthExceeded {
            max_context,
            requested: prompt_tokens.saturating_add(max_new_tokens),
            prompt_tokens,
            max_new_tokens,
            subject,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
