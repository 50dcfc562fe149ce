//! Q4_1 weights repacked 16 rows at a time, for the 512-bit VNNI kernel.
//!
//! In ggml's layout a block is one row's 20 contiguous bytes, so a SIMD register holds codes of
//! one row, and each block's products end in lanes that must be scaled and summed per row. In
//! this layout one 512-bit register holds 4 codes of each of 16 rows: `vpdpbusd` against 4
//! activation codes broadcast to every lane accumulates the 16 rows' dots at once, each i32 lane
//! one output. A block of 16 rows then costs, per activation row, 8 `vpdpbusd`, one conversion
//! and two FMAs, about a third of the instructions of the row-major kernel.
//!
//! Per group of 16 rows and per block, a 320-byte record holds exactly the bytes of the 16
//! blocks, rearranged:
//! * lines 0..4: line `j` holds bytes `4j..4j+4` of each row's `qs`, row after row. Those bytes
//!   carry elements `4j..4j+4` in their low nibbles and `16+4j..16+4j+4` in their high nibbles;
//! * line 4: the 16 rows' `d` (f16), then their `m` (f16).
//!
//! Records run block after block within a group and group after group, so a thread's share of
//! rows is one contiguous stream. Rows past the matrix's end (in the last group) are zero.
//!
//! The arithmetic per output, block after block in f32, is
//! `acc = fma(sumi, d_w * d_a, acc); acc = fma(m_w, s_a, acc)`, whatever the number of
//! activation rows or threads: [`reference_matmul`] is the scalar statement of it.

use super::blocks::{BlockQ4_1, BlockQ8_1, QMatrix, QK};
use super::matmul::{f16_to_f32, Line, ZERO_LINE};
use crate::error::{Error, Result};

/// Rows per group.
pub const GROUP: usize = 16;
/// 64-byte lines per (group, block) record.
pub(crate) const RECORD_LINES: usize = 5;

/// A Q4_1 matrix in the 16-row layout (see the module documentation). Owns its bytes, as many
/// as the ggml layout's (plus zero rows up to a multiple of 16).
pub struct PackedQ4_1 {
    rows: usize,
    cols: usize,
    lines: Vec<Line>,
}

impl std::fmt::Debug for PackedQ4_1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedQ4_1")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl PackedQ4_1 {
    /// Repacks `w`.
    pub fn pack(w: &QMatrix<'_, BlockQ4_1>) -> PackedQ4_1 {
        let (rows, nb) = (w.rows(), w.row_blocks());
        let groups = rows.div_ceil(GROUP);
        let mut lines = vec![ZERO_LINE; groups * nb * RECORD_LINES];
        for (g, group) in lines.chunks_exact_mut(nb * RECORD_LINES).enumerate() {
            for i in 0..GROUP.min(rows - g * GROUP) {
                let row = w.row(g * GROUP + i);
                for (blk, rec) in row.iter().zip(group.chunks_exact_mut(RECORD_LINES)) {
                    for (j, line) in rec[..4].iter_mut().enumerate() {
                        line.0[4 * i..4 * i + 4].copy_from_slice(&blk.qs[4 * j..4 * j + 4]);
                    }
                    rec[4].0[2 * i..2 * i + 2].copy_from_slice(&blk.d);
                    rec[4].0[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk.m);
                }
            }
        }
        PackedQ4_1 {
            rows,
            cols: w.cols(),
            lines,
        }
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
    /// Bytes of weight data one pass reads (the zero rows of the last group included).
    pub fn size_in_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// The first record of group `g`; records of a group follow block by block.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn group(&self, g: usize) -> *const Line {
        self.lines[g * self.row_blocks() * RECORD_LINES..].as_ptr()
    }

    /// Block `b` of row `r`, as ggml stores it.
    pub fn block(&self, r: usize, b: usize) -> Result<BlockQ4_1> {
        let nb = self.row_blocks();
        if r >= self.rows || b >= nb {
            return Err(Error::invalid(format!(
                "block ({r}, {b}) is outside a {} x {nb}-block matrix",
                self.rows
            )));
        }
        let (g, i) = (r / GROUP, r % GROUP);
        let rec = &self.lines[(g * nb + b) * RECORD_LINES..][..RECORD_LINES];
        let mut blk = BlockQ4_1::default();
        for (j, line) in rec[..4].iter().enumerate() {
            blk.qs[4 * j..4 * j + 4].copy_from_slice(&line.0[4 * i..4 * i + 4]);
        }
        blk.d.copy_from_slice(&rec[4].0[2 * i..2 * i + 2]);
        blk.m.copy_from_slice(&rec[4].0[32 + 2 * i..32 + 2 * i + 2]);
        Ok(blk)
    }
}

/// The scalar statement of the packed kernel's arithmetic: `out[c * rows + r]` for `a`, `m` rows
/// of `w.row_blocks()` Q8_1 blocks. The SIMD kernel must equal it bit for bit.
pub fn reference_matmul(w: &PackedQ4_1, a: &[BlockQ8_1]) -> Result<Vec<f32>> {
    let nb = w.row_blocks();
    if a.is_empty() || !a.len().is_multiple_of(nb) {
        return Err(Error::invalid(format!(
            "matmul: {} activation blocks are not whole rows of {nb}",
            a.len()
        )));
    }
    let m = a.len() / nb;
    let mut out = vec![0f32; m * w.rows()];
    for (c, act) in a.chunks_exact(nb).enumerate() {
        for r in 0..w.rows() {
            let mut acc = 0f32;
            for (b, y) in act.iter().enumerate() {
                let x = w.block(r, b)?;
                let sumi: i32 = (0..QK).map(|j| x.q(j) as i32 * y.qs[j] as i32).sum();
                let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
                acc = (sumi as f32).mul_add(scale, acc);
                acc = f16_to_f32(x.m).mul_add(f16_to_f32(y.s), acc);
            }
            out[c * w.rows() + r] = acc;
        }
    }
    Ok(out)
}
