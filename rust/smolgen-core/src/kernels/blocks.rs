//! What every quantized block type shares: the [`Block`] contract, views of file bytes as
//! blocks, and [`QMatrix`]. The types themselves, byte for byte as ggml lays them out, live one
//! per file in [`super::types`].
//!
//! Every field of a block is a byte array, so each block type has alignment 1 and no padding: a
//! slice of blocks can be viewed straight out of a memory-mapped GGUF file at any offset (GGUF
//! only aligns the start of a tensor to 32 bytes; a 20- or 34-byte block puts the next block's
//! fields at odd addresses). Multi-byte fields are little-endian f16 read with
//! `u16::from_le_bytes`.

use half::f16;

use crate::error::{Error, Result};

/// Values per block of the 32-element types (ggml's K-quants group 256).
pub const QK: usize = 32;

/// The f16 stored in `b`.
#[inline(always)]
pub(crate) fn f16_bits(b: [u8; 2]) -> f16 {
    f16::from_bits(u16::from_le_bytes(b))
}

/// The bytes that store `x`.
#[inline(always)]
pub(crate) fn f16_bytes(x: f16) -> [u8; 2] {
    x.to_bits().to_le_bytes()
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A block type that can be viewed from raw bytes.
///
/// # Safety
/// Implementors are `#[repr(C)]` structs of byte arrays only: alignment 1, no padding, and every
/// bit pattern is a valid value. The trait is sealed: the types in [`super::types`] are the only
/// ones, each declared with `byte_block!`.
pub unsafe trait Block: sealed::Sealed + Copy + Send + Sync + 'static {
    /// Bytes per block.
    const SIZE: usize = std::mem::size_of::<Self>();
    /// Values per block.
    const ELEMENTS: usize = QK;
    /// ggml's name for the type, for error messages.
    const NAME: &'static str;
}

/// Declares `$t`, a `#[repr(C)]` struct of byte arrays only, a [`Block`] of `$size` bytes named
/// `$name` holding `$elements` values (default 32), checking its size and alignment.
macro_rules! byte_block {
    ($t:ty, $name:literal, $size:literal) => {
        $crate::kernels::blocks::byte_block!($t, $name, $size, $crate::kernels::blocks::QK);
    };
    ($t:ty, $name:literal, $size:literal, $elements:expr) => {
        impl $crate::kernels::blocks::sealed::Sealed for $t {}
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        const _: () = assert!(std::mem::align_of::<$t>() == 1);
        // SAFETY: byte arrays only (the caller's word), alignment 1 and size checked above, so
        // no padding and no invalid bit patterns.
        unsafe impl $crate::kernels::blocks::Block for $t {
            const ELEMENTS: usize = $elements;
            const NAME: &'static str = $name;
        }
    };
}
pub(crate) use byte_block;

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

/// Views `bytes` as blocks to write; the length must be a whole number of blocks.
pub fn cast_blocks_mut<B: Block>(bytes: &mut [u8]) -> Result<&mut [B]> {
    let n = cast_blocks::<B>(bytes)?.len();
    // SAFETY: as in `cast_blocks`; every bit pattern is a valid `B`, so any write through the
    // blocks leaves valid bytes, and the borrow is the input's.
    Ok(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), n) })
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
    /// Checks that `cols` is a positive multiple of the block's length and that there are
    /// exactly `rows * cols / B::ELEMENTS` blocks.
    pub fn new(blocks: &'a [B], rows: usize, cols: usize) -> Result<Self> {
        if cols == 0 || !cols.is_multiple_of(B::ELEMENTS) {
            return Err(Error::invalid(format!(
                "{} matrix: {cols} columns is not a positive multiple of {}",
                B::NAME,
                B::ELEMENTS
            )));
        }
        let want = rows.checked_mul(cols / B::ELEMENTS).ok_or_else(|| {
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
        self.cols / B::ELEMENTS
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
