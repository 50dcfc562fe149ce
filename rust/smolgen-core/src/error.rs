//! The one error type of the core. The Python binding maps each variant to an exception class,
//! so callers branch on the kind of failure, never on message text.

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No file or directory where a model was expected.
    #[error("model not found: {0}")]
    ModelNotFound(PathBuf),

    /// The file exists but is not a well-formed model file (truncated, wrong magic, bad offsets...).
    #[error("malformed model file {path}: {reason}")]
    MalformedModel { path: PathBuf, reason: String },

    /// A well-formed file asking for something smolgen does not implement (`path`: the model's
    /// file), or, without a path, a device or instruction set this build or machine lacks.
    #[error("{}", unsupported_message(.path.as_deref(), .reason))]
    Unsupported {
        path: Option<PathBuf>,
        reason: String,
    },

    /// The prompt plus the requested completion do not fit the model's context window. Built
    /// by [`Error::context_exceeded`]; `max_new_tokens == 0` when the prompt alone does not fit.
    /// Built by [`Error::text_exceeds_context`] for a text refused for its length in bytes,
    /// before tokenizing: then `prompt_bytes` is set and `prompt_tokens` is a lower bound.
    #[error("{}", context_message(*.max_context, *.prompt_tokens, *.max_new_tokens, *.prompt_bytes, .subject))]
    ContextLengthExceeded {
        max_context: usize,
        requested: usize,
        prompt_tokens: usize,
        max_new_tokens: usize,
        prompt_bytes: Option<usize>,
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

fn unsupported_message(path: Option<&Path>, reason: &str) -> String {
    match path {
        Some(path) => format!("unsupported model {}: {reason}", path.display()),
        None => format!("unsupported: {reason}"),
    }
}

/// The context-window error in the words API users know (OpenAI's).
fn context_message(
    window: usize,
    prompt: usize,
    new: usize,
    bytes: Option<usize>,
    subject: &str,
) -> String {
    if let Some(bytes) = bytes {
        format!(
            "This model's maximum context length is {window} tokens. However, your {subject} \
             ({bytes} bytes) is at least {prompt} tokens. Please reduce the length of the \
             {subject}."
        )
    } else if new == 0 {
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

    /// Something smolgen does not implement, not (yet) tied to a file: loading names the file
    /// ([`Error::loading`]).
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Error::Unsupported {
            path: None,
            reason: reason.into(),
        }
    }

    /// This error, raised while loading the model at `path`, made to name it: every problem
    /// found in a file is about that file. An unsupported feature gets the path; an error of the
    /// tensor library or of the tokenizer while reading the file means the file holds what
    /// they cannot take, so it becomes [`Error::MalformedModel`]. Errors that already name a
    /// path, and the caller's own bad arguments, stay as they are.
    pub fn loading(self, path: &Path) -> Self {
        match self {
            Error::Unsupported { path: None, reason } => Error::Unsupported {
                path: Some(path.to_path_buf()),
                reason,
            },
            Error::Backend(e) => {
                // The message, without the backtrace candle may have captured.
                let mut e = e;
                while let candle_core::Error::WithBacktrace { inner, .. } = e {
                    e = *inner;
                }
                Error::malformed(path, format!("the tensor library rejected it: {e}"))
            }
            Error::Tokenizer(reason) => Error::malformed(path, format!("tokenizer: {reason}")),
            other => other,
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
            prompt_bytes: None,
            subject,
        }
    }

    /// A text of `prompt_bytes` bytes that no tokenization fits into `max_context` tokens with
    /// room to spare: every tokenization of it has at least `fewest_tokens`.
    pub fn text_exceeds_context(
        max_context: usize,
        prompt_bytes: usize,
        fewest_tokens: usize,
        subject: &'static str,
    ) -> Self {
        Error::ContextLengthExceeded {
            max_context,
            requested: fewest_tokens,
            prompt_tokens: fewest_tokens,
            max_new_tokens: 0,
            prompt_bytes: Some(prompt_bytes),
            subject,
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_while_loading_names_the_file() {
        let file = Path::new("models/m.gguf");
        match Error::unsupported("tokenizer model `x`").loading(file) {
            e @ Error::Unsupported { path: Some(_), .. } => {
                assert_eq!(
                    e.to_string(),
                    "unsupported model models/m.gguf: tokenizer model `x`"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Error::unsupported("no CUDA").to_string(),
            "unsupported: no CUDA"
        );
        let backend = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("quantized type Q8_1".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        for e in [
            Error::Backend(backend),
            Error::Tokenizer("bad merges".into()),
        ] {
            match e.loading(file) {
                Error::MalformedModel { path, reason } => {
                    assert_eq!(path, file);
                    assert!(!reason.contains('\n'), "a backtrace in {reason}");
                }
                other => panic!("{other:?}"),
            }
        }
        // Errors that name their own path, and the caller's arguments, stay as they were.
        let other = Path::new("elsewhere/shard.safetensors");
        for e in [
            Error::malformed(other, "bad header"),
            Error::Unsupported {
                path: Some(other.to_path_buf()),
                reason: "dtype I8".into(),
            },
            Error::invalid("threads must be between 1 and 256"),
        ] {
            let before = e.to_string();
            assert_eq!(e.loading(file).to_string(), before);
        }
    }
}
