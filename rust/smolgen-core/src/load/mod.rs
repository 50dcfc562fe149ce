//! Reading a model from disk: GGUF files ([`gguf`]), Hugging Face safetensors directories
//! ([`weights`]), and the architecture both describe ([`config`]).

pub mod config;
pub mod gguf;
pub mod weights;
