//! ggml's quantized block types, byte for byte.
//!
//! Every field is a byte array, so each block type has alignment 1 and no padding: a slice of
//! blocks can be viewed straight out of a memory-mapped GGUF file at any offset (GGUF only aligns
//! the start of a tensor to 32 bytes; a 20- or 34-byte block puts the next block's fields at odd
//! addresses). Multi-byte fields are little-endian f16 read with `u16::from_le_bytes`.

use half::f16;

use crate::error::{Error, Result};

/// Weights per block, for every type here.
pub const QK: usize = 32;

/// ggml's `block_q4_1`: 32 weights `d * q + m`, `q` in 0..=15. Element `j < 16` is the low
/// nibble of `qs[j]`, element `j + 16` its high nibble.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; QK / 2],
}

/// ggml's `block_q8_0`: 32 values `d * q`, `q` an i8.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_0 {
    pub d: [u8; 2],
    pub qs: [i8; QK],
}

/// ggml's `block_q8_1`: like q8_0 plus `s = d * sum(qs)` (as f16), which folds a Q4_1 block's
/// offset `m` into one multiply per block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockQ8_1 {
    pub d: [u8; 2],
    pub s: [u8; 2],
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::align_of::<BlockQ4_1>() == 1);
const _: () = assert!(std::mem::align_of::<BlockQ8_0>() == 1);
const _: () = assert!(std::mem::align_of::<BlockQ8_1>() == 1);

#[inline(always)]
fn f16_bits(b: [u8; 2]) -> f16 {
    f16::from_bits(u16::from_le_bytes(b))
}

#[inline(always)]
fn f16_bytes(x: f16) -> [u8; 2] {
    x.to_bits().to_le_bytes()
}

impl BlockQ4_1 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn m(&self) -> f16 {
        f16_bits(self.m)
    }
    pub fn new(d: f16, m: f16, qs: [u8; QK / 2]) -> Self {
        BlockQ4_1 {
            d: f16_bytes(d),
            m: f16_bytes(m),
            qs,
        }
    }
    /// The 4-bit code of element `j` (0..32).
    #[inline(always)]
    pub fn q(&self, j: usize) -> u8 {
        if j < QK / 2 {
            self.qs[j] & 0x0F
        } else {
            self.qs[j - QK / 2] >> 4
        }
    }
    /// The 32 weights as f32, in ggml's arithmetic (`q * d + m` in f32).
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d().to_f32();
        let m = self.m().to_f32();
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.q(j) as f32 * d + m;
        }
    }
}

impl BlockQ8_0 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    pub fn new(d: f16, qs: [i8; QK]) -> Self {
        BlockQ8_0 {
            d: f16_bytes(d),
            qs,
        }
    }
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d().to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

impl BlockQ8_1 {
    #[inline(always)]
    pub fn d(&self) -> f16 {
        f16_bits(self.d)
    }
    #[inline(always)]
    pub fn s(&self) -> f16 {
        f16_bits(self.s)
    }
    pub fn new(d: f16, s: f16, qs: [i8; QK]) -> Self {
        BlockQ8_1 {
            d: f16_bytes(d),
            s: f16_bytes(s),
            qs,
        }
    }
    pub fn dequantize(&self, out: &mut [f32; QK]) {
        let d = self.d().to_f32();
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::BlockQ4_1 {}
    impl Sealed for super::BlockQ8_0 {}
    impl Sealed for super::BlockQ8_1 {}
}

/// A block type that can be viewed from raw bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of byte arrays only: alignment 1, no padding, and every
/// bit pattern is a valid value. The trait is sealed; the three types above are the only ones.
pub unsafe trait Block: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Bytes per block.
    const SIZE: usize;
    /// ggml's name for the type, for error messages.
    const NAME: &'static str;
}

// SAFETY: byte arrays only, checked by the size/alignment asserts above.
unsafe impl Block for BlockQ4_1 {
    const SIZE: usize = 20;
    const NAME: &'static str = "q4_1";
}
// SAFETY: as above.
unsafe impl Block for BlockQ8_0 {
    const SIZE: usize = 34;
    const NAME: &'static str = "q8_0";
}
// SAFETY: as above.
unsafe impl Block for BlockQ8_1 {
    const SIZE: usize = 36;
    const NAME: &'static str = "q8_1";
}

/// Views `bytes` (any alignment) as blocks. The length must be a whole number of blocks.
pub fn cast_blocks<B: Block>(bytes: &[u8]) -> Result<&[B]> {
    if !bytes.len().is_multiple_of(B::SIZE) {
        return Err(Error::invalid(format!(
            "{} bytes are not a whole number of {} blocks ({} bytes each)",
            bytes.len(),
            B::NAME,
            B::SIZE
        )));
    }
    let n = bytes.len() / B::SIZE;
    // SAFETY: `B` has alignment 1, size `B::SIZE`, no padding and no invalid bit patterns
    // (the `Block` contract), and `n * B::SIZE == bytes.len()`; the lifetime is the input's.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n) })
}

/// The bytes of a block slice, for writing or hashing.
pub fn blocks_as_bytes<B: Block>(blocks: &[B]) -> &[u8] {
    // SAFETY: see `cast_blocks`; every byte of a block is initialized (no padding).
    unsafe {
        std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), std::mem::size_of_val(blocks))
    }
}

/// A row-major quantized matrix: `rows` rows of `cols / 32` blocks each (GGUF's layout for a
/// `[rows, cols]` weight, `cols` being the input features).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a, B: Block> {
    blocks: &'a [B],
    rows: usize,
    cols: usize,
}

impl<'a, B: Block> QMatrix<'a, B> {
    /// Checks that `cols` is a positive multiple of 32 and that there are exactly
    /// `rows * cols / 32` blocks.
    pub fn new(blocks: &'a [B], rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(QK) {
            return Err(Error::invalid(format!(
                "{} matrix: {cols} columns is not a positive multiple of {QK}",
                B::NAME
            )));
        }
        let want = rows.checked_mul(cols / QK).ok_or_else(|| {
            Error::invalid(format!("{} matrix: {rows} x {cols} overflows", B::NAME))
        })?;
        if blocks.len() != want {
            return Err(Error::invalid(format!(
                "{} matrix {rows} x {cols} needs {want} blocks, got {}",
                B::NAME,
                blocks.len()
            )));
        }
        Ok(QMatrix { blocks, rows, cols })
    }

    /// [`cast_blocks`] then [`QMatrix::new`].
    pub fn from_bytes(bytes: &'a [u8], rows: usize, cols: usize) -> Result<Self> {
        Self::new(cast_blocks(bytes)?, rows, cols)
    }

    pub fn blocks(&self) -> &'a [B] {
        self.blocks
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row.
    pub fn row_blocks(&self) -> usize {
        self.cols / QK
    }
    pub fn row(&self, r: usize) -> &'a [B] {
        let nb = self.row_blocks();
        &self.blocks[r * nb..(r + 1) * nb]
    }
    /// Bytes of weight data (what one pass over the matrix reads).
    pub fn size_in_bytes(&self) -> usize {
        self.blocks.len() * B::SIZE
    }
}

/// f16 bits to f32 for the scalar paths (the SIMD paths convert with F16C).
#[inline(always)]
pub(crate) fn f16_to_f32(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}
