//! Keys and values: one request's [`kv`] cache, and the [`prefix`] cache that keeps finished
//! requests' entries for later prompts that begin the same way.

pub mod element;
pub mod kv;
pub mod prefix;
