//! The number format of the CPU KV cache: f16 by default (half the memory and half the reads of
//! f32, llama.cpp's default too), f32 for the precise path.

use half::f16;

use crate::error::{Error, Result};

/// How the CPU cache stores keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvFormat {
    #[default]
    F16,
    F32,
}

impl KvFormat {
    pub fn parse(name: &str) -> Result<KvFormat> {
        match name.trim().to_ascii_lowercase().as_str() {
            "f16" | "float16" => Ok(KvFormat::F16),
            "f32" | "float32" => Ok(KvFormat::F32),
            other => Err(Error::invalid(format!(
                "{other:?} is not a KV cache format (expected f16 or f32)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvFormat::F16 => "f16",
            KvFormat::F32 => "f32",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KvFormat::F16 => 2,
            KvFormat::F32 => 4,
        }
    }
}

/// A number the cache can hold. Rounding to it is round-to-nearest-even (IEEE), so a value
/// stored by the portable code and by a SIMD conversion is the same.
pub trait KvElement: Copy + Default + Send + Sync + std::fmt::Debug + 'static {
    fn from_f32(x: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl KvElement for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElement for f16 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_rounds_to_nearest_even_and_saturates_to_infinity() {
        // 1 + 2^-11 is halfway between 1 and the next f16: ties to even, 1.
        assert_eq!(f16::from_f32(1.0 + 2f32.powi(-11)).to_f32(), 1.0);
        assert_eq!(
            f16::from_f32(1.0 + 3.0 * 2f32.powi(-11)).to_f32(),
            1.0 + 2f32.powi(-9)
        );
        assert_eq!(f16::from_f32(65504.0).to_f32(), 65504.0);
        assert!(f16::from_f32(1e6).to_f32().is_infinite());
        assert_eq!(KvFormat::parse(" F16 ").expect("f16"), KvFormat::F16);
        assert!(KvFormat::parse("bf16").is_err());
    }
}
