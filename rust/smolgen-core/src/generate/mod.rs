//! From logits to text: the [`generation`] step machine drives the engine, the fused
//! [`sampler`] picks each token, [`logprobs`] reports what it chose between, and [`text`] turns
//! token bytes into text without splitting a UTF-8 character or showing a stop string.

pub mod generation;
pub mod logprobs;
pub mod sampler;
pub mod text;
