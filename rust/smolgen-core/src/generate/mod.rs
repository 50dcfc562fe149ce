//! From logits to text: the [`generation`] step machine drives the engine, the fused
//! [`sampler`] picks each token with its own seeded [`rng`], [`logprobs`] reports what it chose
//! between, [`utf8`] turns token bytes into text without splitting a character, and [`stop`]
//! ends generation before a stop string, never showing it; a [`constraint`] keeps the text
//! inside a grammar (JSON Schema, regex, Lark) by telling the sampler which tokens may come next.

pub mod constraint;
pub mod generation;
pub mod logprobs;
pub mod rng;
pub mod sampler;
pub mod stop;
pub mod utf8;
