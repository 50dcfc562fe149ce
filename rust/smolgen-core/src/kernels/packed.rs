//! Weights repacked 16 rows at a time, for the x86-64 kernels (AVX-512 VNNI and AVX2).
//!
//! In ggml's layout a block is one row's contiguous bytes, so a SIMD register holds codes of one
//! row, and each block's products end in lanes that must be scaled and summed per row. In this
//! layout one 512-bit register holds 4 codes of each of 16 rows: `vpdpbusd` against 4
//! activation codes broadcast to every lane accumulates the 16 rows' dots at once, each i32 lane
//! one output. A block of 16 rows then costs, per activation row, 8 `vpdpbusd`, one conversion
//! and one or two FMAs, about a third of the instructions of the row-major kernels. AVX2 takes
//! each group as two 8-row halves, with `vpmaddubsw` in place of `vpdpbusd`.
//!
//! Per group of 16 rows and per block, a record of 64-byte lines:
//! * Q4_1 ([`PackedQ4_1`], 5 lines, exactly the 16 blocks' bytes): line `j < 4` holds bytes
//!   `4j..4j+4` of each row's `qs`, row after row. Those bytes carry elements `4j..4j+4` in
//!   their low nibbles and `16+4j..16+4j+4` in their high nibbles. Line 4: the 16 rows' `d`
//!   (f16), then their `m` (f16).
//! * Q8_0 ([`PackedQ8_0`], 8 lines, plus half a line of scales): line `j` holds codes
//!   `4j..4j+4` of each row, plus 128 so that they are the unsigned operand of `vpdpbusd`
//!   (the kernel starts each dot from `-128 * sum(activation codes)`, which cancels the bias
//!   exactly). The group's scales follow its records: the 16 rows' `d` (f16) per block, two
//!   blocks to a line, so a group holds exactly the bytes of its blocks.
//!
//! Records run block after block within a group and group after group, so a thread's share of
//! rows is one contiguous stream. Rows past the matrix's end (in the last group) are zero.
//!
//! The arithmetic per output, block after block in f32, is fixed whatever the number of
//! activation rows or threads: `acc = fma(sumi, d_w * d_a, acc)`, then for Q4_1
//! `acc = fma(m_w, s_a, acc)`. [`reference_matmul_q4_1`] and [`reference_matmul_q8_0`] state it
//! in scalar code.

use super::blocks::f16_to_f32;
use super::blocks::{Block, BlockQ4_1, BlockQ8_0, BlockQ8_1, QMatrix, QK};
use super::matmul::{activation_rows, QWeight};
use super::prepared::{Line, ZERO_LINE};
use crate::error::{Error, Result};

/// Rows per group.
pub const GROUP: usize = 16;
/// 64-byte lines per (group, block) record of a [`PackedQ4_1`] matrix.
pub(crate) const Q4_1_RECORD_LINES: usize = 5;
/// 64-byte lines per (group, block) record of a [`PackedQ8_0`] matrix; the group's scales
/// follow its records.
pub(crate) const Q8_0_RECORD_LINES: usize = 8;

/// Where block `b`'s 16 Q8_0 scales lie in a group of `nb` blocks: (line, byte offset).
#[inline(always)]
pub(crate) fn q8_0_scales_at(nb: usize, b: usize) -> (usize, usize) {
    (nb * Q8_0_RECORD_LINES + b / 2, 32 * (b % 2))
}

/// Groups of `group_lines` lines each, as both packed types store them (each type decides
/// what a group's lines hold).
struct Groups {
    rows: usize,
    cols: usize,
    group_lines: usize,
    lines: Vec<Line>,
}

impl Groups {
    /// Zeroed groups for `w`'s shape, filled by `fill(group, block, row in group, &block)`.
    fn pack<B: Block>(
        w: &QMatrix<'_, B>,
        group_lines: usize,
        fill: impl Fn(&mut [Line], usize, usize, &B),
    ) -> Groups {
        let rows = w.rows();
        let mut lines = vec![ZERO_LINE; rows.div_ceil(GROUP) * group_lines];
        for (g, group) in lines.chunks_exact_mut(group_lines).enumerate() {
            for i in 0..GROUP.min(rows - g * GROUP) {
                for (b, blk) in w.row(g * GROUP + i).iter().enumerate() {
                    fill(group, b, i, blk);
                }
            }
        }
        Groups {
            rows,
            cols: w.cols(),
            group_lines,
            lines,
        }
    }

    fn row_blocks(&self) -> usize {
        self.cols / QK
    }

    #[cfg(target_arch = "x86_64")]
    fn group(&self, g: usize) -> *const Line {
        self.lines[g * self.group_lines..].as_ptr()
    }

    /// The group holding row `r`, and the row's place in it (checking that block `b` exists).
    fn group_of(&self, r: usize, b: usize) -> Result<(&[Line], usize)> {
        let nb = self.row_blocks();
        if r >= self.rows || b >= nb {
            return Err(Error::invalid(format!(
                "block ({r}, {b}) is outside a {} x {nb}-block matrix",
                self.rows
            )));
        }
        let at = (r / GROUP) * self.group_lines;
        Ok((&self.lines[at..at + self.group_lines], r % GROUP))
    }

    fn size_in_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }
}

/// Implements the shared accessors of a packed matrix type.
macro_rules! packed_accessors {
    ($t:ty) => {
        impl $t {
            pub fn rows(&self) -> usize {
                self.0.rows
            }
            pub fn cols(&self) -> usize {
                self.0.cols
            }
            /// Blocks per row.
            pub fn row_blocks(&self) -> usize {
                self.0.row_blocks()
            }
            /// Bytes of weight data one pass reads (the zero rows of the last group included).
            pub fn size_in_bytes(&self) -> usize {
                self.0.size_in_bytes()
            }
            /// The first record of group `g`; records of a group follow block by block.
            #[cfg(target_arch = "x86_64")]
            #[inline(always)]
            pub(crate) fn group(&self, g: usize) -> *const Line {
                self.0.group(g)
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("rows", &self.0.rows)
                    .field("cols", &self.0.cols)
                    .finish()
            }
        }
    };
}

/// A Q4_1 matrix in the 16-row layout (see the module documentation). Owns its bytes, as many
/// as the ggml layout's (plus zero rows up to a multiple of 16).
pub struct PackedQ4_1(Groups);

packed_accessors!(PackedQ4_1);

impl PackedQ4_1 {
    /// Repacks `w`.
    pub fn pack(w: &QMatrix<'_, BlockQ4_1>) -> PackedQ4_1 {
        let group_lines = w.row_blocks() * Q4_1_RECORD_LINES;
        PackedQ4_1(Groups::pack(w, group_lines, |group, b, i, blk| {
            let rec = &mut group[b * Q4_1_RECORD_LINES..][..Q4_1_RECORD_LINES];
            for (j, line) in rec[..4].iter_mut().enumerate() {
                line.0[4 * i..4 * i + 4].copy_from_slice(&blk.qs[4 * j..4 * j + 4]);
            }
            rec[4].0[2 * i..2 * i + 2].copy_from_slice(&blk.d);
            rec[4].0[32 + 2 * i..32 + 2 * i + 2].copy_from_slice(&blk.m);
        }))
    }

    /// Block `b` of row `r`, as ggml stores it.
    pub fn block(&self, r: usize, b: usize) -> Result<BlockQ4_1> {
        let (group, i) = self.0.group_of(r, b)?;
        let rec = &group[b * Q4_1_RECORD_LINES..][..Q4_1_RECORD_LINES];
        let mut blk = BlockQ4_1::default();
        for (j, line) in rec[..4].iter().enumerate() {
            blk.qs[4 * j..4 * j + 4].copy_from_slice(&line.0[4 * i..4 * i + 4]);
        }
        blk.d.copy_from_slice(&rec[4].0[2 * i..2 * i + 2]);
        blk.m.copy_from_slice(&rec[4].0[32 + 2 * i..32 + 2 * i + 2]);
        Ok(blk)
    }
}

/// A Q8_0 matrix in the 16-row layout, codes biased by +128 (see the module documentation).
pub struct PackedQ8_0(Groups);

packed_accessors!(PackedQ8_0);

impl PackedQ8_0 {
    /// Repacks `w`.
    pub fn pack(w: &QMatrix<'_, BlockQ8_0>) -> PackedQ8_0 {
        let nb = w.row_blocks();
        let group_lines = nb * Q8_0_RECORD_LINES + nb.div_ceil(2);
        PackedQ8_0(Groups::pack(w, group_lines, |group, b, i, blk| {
            let rec = &mut group[b * Q8_0_RECORD_LINES..][..Q8_0_RECORD_LINES];
            for (j, line) in rec.iter_mut().enumerate() {
                for (dst, &q) in line.0[4 * i..4 * i + 4].iter_mut().zip(&blk.qs[4 * j..]) {
                    *dst = (q as u8) ^ 0x80;
                }
            }
            let (line, at) = q8_0_scales_at(nb, b);
            group[line].0[at + 2 * i..at + 2 * i + 2].copy_from_slice(&blk.d);
        }))
    }

    /// Block `b` of row `r`, as ggml stores it.
    pub fn block(&self, r: usize, b: usize) -> Result<BlockQ8_0> {
        let (group, i) = self.0.group_of(r, b)?;
        let rec = &group[b * Q8_0_RECORD_LINES..][..Q8_0_RECORD_LINES];
        let mut blk = BlockQ8_0::default();
        for (j, line) in rec.iter().enumerate() {
            for (dst, &q) in blk.qs[4 * j..4 * j + 4].iter_mut().zip(&line.0[4 * i..]) {
                *dst = (q ^ 0x80) as i8;
            }
        }
        let (line, at) = q8_0_scales_at(self.row_blocks(), b);
        blk.d
            .copy_from_slice(&group[line].0[at + 2 * i..at + 2 * i + 2]);
        Ok(blk)
    }
}

/// A matrix of either packed type.
#[derive(Debug)]
pub enum PackedMatrix {
    Q4_1(PackedQ4_1),
    Q8_0(PackedQ8_0),
}

impl PackedMatrix {
    /// Repacks `w` if it is of a type the 16-row kernels cover (else `None`).
    pub fn pack(w: &QWeight<'_>) -> Option<PackedMatrix> {
        match w {
            QWeight::Q4_1(m) => Some(PackedMatrix::Q4_1(PackedQ4_1::pack(m))),
            QWeight::Q8_0(m) => Some(PackedMatrix::Q8_0(PackedQ8_0::pack(m))),
            QWeight::Q4_1x16(_) | QWeight::Q8_0x16(_) => None,
        }
    }

    pub fn weight(&self) -> QWeight<'_> {
        match self {
            PackedMatrix::Q4_1(m) => QWeight::Q4_1x16(m),
            PackedMatrix::Q8_0(m) => QWeight::Q8_0x16(m),
        }
    }
}

/// The scalar statement of the Q4_1 kernel's arithmetic: `out[c * rows + r]` for `a`, `m` rows
/// of `w.row_blocks()` Q8_1 blocks. The SIMD kernel must equal it bit for bit.
pub fn reference_matmul_q4_1(w: &PackedQ4_1, a: &[BlockQ8_1]) -> Result<Vec<f32>> {
    let nb = w.row_blocks();
    let m = activation_rows(nb, a.len())?;
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

/// The scalar statement of the Q8_0 kernel's arithmetic, as [`reference_matmul_q4_1`].
pub fn reference_matmul_q8_0(w: &PackedQ8_0, a: &[BlockQ8_0]) -> Result<Vec<f32>> {
    let nb = w.row_blocks();
    let m = activation_rows(nb, a.len())?;
    let mut out = vec![0f32; m * w.rows()];
    for (c, act) in a.chunks_exact(nb).enumerate() {
        for r in 0..w.rows() {
            let mut acc = 0f32;
            for (b, y) in act.iter().enumerate() {
                let x = w.block(r, b)?;
                let sumi: i32 =
                    x.qs.iter()
                        .zip(&y.qs)
                        .map(|(&p, &q)| p as i32 * q as i32)
                        .sum();
                let scale = f16_to_f32(x.d) * f16_to_f32(y.d);
                acc = (sumi as f32).mul_add(scale, acc);
            }
            out[c * w.rows() + r] = acc;
        }
    }
    Ok(out)
}
