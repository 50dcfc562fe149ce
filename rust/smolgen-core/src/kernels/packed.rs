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
//! * Q4_1 (5 lines, exactly the 16 blocks' bytes): line `j < 4` holds bytes
//!   `4j..4j+4` of each row's `qs`, row after row. Those bytes carry elements `4j..4j+4` in
//!   their low nibbles and `16+4j..16+4j+4` in their high nibbles. Line 4: the 16 rows' `d`
//!   (f16), then their `m` (f16).
//! * Q8_0 (8 lines, plus half a line of scales): line `j` holds codes
//!   `4j..4j+4` of each row, plus 128 so that they are the unsigned operand of `vpdpbusd`
//!   (the kernel starts each dot from `-128 * sum(activation codes)`, which cancels the bias
//!   exactly). The group's scales follow its records: the 16 rows' `d` (f16) per block, two
//!   blocks to a line, so a group holds exactly the bytes of its blocks.
//! * Q5_0 (5 lines, plus half a line of scales) and Q5_1 (6 lines): Q4_0's and Q4_1's records
//!   with a line of fifth bits (`FIFTH_BITS_LINE`) after the nibbles, laid out so that a mask
//!   move (AVX-512) or a bit-to-byte spread (AVX2) puts each in place over its nibble's byte.
//! * Q4_0 (4 lines, plus half a line of scales): the nibble lines of Q4_1, the scales placed as
//!   Q8_0's. The kernels start each dot from `-8 * sum(activation codes)`, which turns the
//!   unsigned codes' products into those of `q - 8`.
//! * Q4_K (4 lines per 32-value sub-block) and Q5_K (5): each sub-block as a Q4_0 or Q5_0
//!   record of its codes, then, after the group's records, `K_SCALE_LINES` per superblock:
//!   `d` and `dmin` of the 16 rows, and their 6-bit scales and mins unpacked to bytes (a
//!   superblock takes 37 or 45 lines against 36 or 44 for its bytes in the file). The kernels
//!   form `d * sc` and `dmin * m` per sub-block (both exact in f32) and go on as for Q4_1.
//! * Q6_K (6 lines per sub-block): the low nibbles of its codes as Q4_0's, then bits 4 and 5 in
//!   two lines laid out as the Q5 fifth bits; after the group's records, `K_SCALE_LINES` per
//!   superblock: the 16 rows' `d`, then their sixteen i8 scales (16 bytes per 16 weights). The
//!   kernels dot the two 16-code halves apart, each started from `-32 * sum(a)` of its half,
//!   and weight them by their scales in exact i32 (53 lines against 52.5 in the file).
//! * Q3_K (3 lines per sub-block) and Q2_K (2): the low two bits of its codes, four to a byte
//!   (`TWO_BIT_LINES`), and for Q3_K their third bit in a line laid out as the Q5 fifth bits;
//!   after the group's records, `K_SCALE_LINES` per superblock: the 16 rows' `d` (Q2_K: then
//!   `dmin`), then their sixteen scales as Q6_K's (Q3_K: each i8, less 32 as ggml applies it;
//!   Q2_K: each byte as the file has it, scale in the low nibble and min in the high one). The
//!   kernels dot each 16-code half apart as for Q6_K (Q3_K started from `-4 * sum(a)`), and
//!   Q2_K adds `-(dmin * d_a)` times the exact `m . sum(a)` of the halves (29 lines per
//!   superblock against 27.5 in the file for Q3_K, 21 against 21 for Q2_K).
//! * F16, BF16 (16 lines) and F32 (32 lines): element after element, the 16 rows' values side
//!   by side, so one register widened from 32 (or 64) bytes holds an element of every row, and a
//!   broadcast activation times it is one FMA for 16 outputs.
//!
//! Records run block after block within a group and group after group, so a thread's share of
//! rows is one contiguous stream. Rows past the matrix's end (in the last group) are zero.
//!
//! The arithmetic per output, block after block in f32, is fixed whatever the number of
//! activation rows or threads: `acc = fma(sumi, d_w * d_a, acc)`, then for Q4_1
//! `acc = fma(m_w, s_a, acc)`; for the float types one FMA per element, in order. Each type's [`Repack::packed_step`] states it in scalar code, and
//! [`reference_matmul_packed`] runs it.
//!
//! A type has this layout when it implements [`Repack`] (where its bytes go in a group) and
//! registers its 16-row kernels in its [`WeightBlock::kernels`].

use super::blocks::{Block, QMatrix};
use super::matmul::{activation_rows, QWeight};
use super::prepared::{Line, ZERO_LINE};
use super::types::{WeightBlock, WeightKind};
use crate::error::{Error, Result};

/// Rows per group.
pub const GROUP: usize = 16;
/// 64-byte lines per (group, block) record of a packed Q4_1 matrix.
pub(crate) const Q4_1_RECORD_LINES: usize = 5;
/// 64-byte lines per (group, block) record of a packed Q8_0 matrix; the group's scales follow
/// its records.
pub(crate) const Q8_0_RECORD_LINES: usize = 8;
/// 64-byte lines per (group, block) record of a packed Q4_0 matrix; the group's scales follow
/// its records.
pub(crate) const Q4_0_RECORD_LINES: usize = 4;
/// 64-byte lines per (group, block) record of a packed Q5_0 matrix (Q4_0's, then the fifth
/// bits); the group's scales follow its records.
pub(crate) const Q5_0_RECORD_LINES: usize = 5;
/// 64-byte lines per (group, block) record of a packed Q5_1 matrix (Q5_0's, then `d` and `m`).
pub(crate) const Q5_1_RECORD_LINES: usize = 6;
/// The line of a Q5 record that holds its fifth bits.
pub(crate) const FIFTH_BITS_LINE: usize = 4;
/// Lines per sub-block record of a packed Q4_K matrix (Q4_0's nibble lines).
pub(crate) const Q4_K_RECORD_LINES: usize = 4;
/// Lines per sub-block record of a packed Q5_K matrix (Q5_0's: nibbles, then fifth bits).
pub(crate) const Q5_K_RECORD_LINES: usize = 5;
/// Lines per sub-block record of a packed Q6_K matrix: the low nibbles of its codes, then
/// their bits 4 and 5 as [`FIFTH_BITS_LINE`] lays out a fifth bit.
pub(crate) const Q6_K_RECORD_LINES: usize = 6;
/// Lines of a record holding 2-bit codes (Q2_K, Q3_K): line `h` holds the codes of elements
/// `16h..16h+16`, row `i`'s byte `4i + k` those of elements `16h + 4j + k` at bits `2j`, so
/// the register of elements `16h + 4j..` is the line shifted right by `2j`, masked.
pub(crate) const TWO_BIT_LINES: usize = 2;
/// Lines per sub-block record of a packed Q2_K matrix: its [`TWO_BIT_LINES`].
pub(crate) const Q2_K_RECORD_LINES: usize = TWO_BIT_LINES;
/// Lines per sub-block record of a packed Q3_K matrix: the low two bits of its codes, then
/// their third bits as [`FIFTH_BITS_LINE`] lays out a fifth bit.
pub(crate) const Q3_K_RECORD_LINES: usize = TWO_BIT_LINES + 1;
/// The line of a packed Q3_K record holding its codes' third bits.
pub(crate) const THIRD_BITS_LINE: usize = TWO_BIT_LINES;
/// Lines per superblock of a packed Q4_K or Q5_K group's scales, after all its sub-block
/// records: the 16 rows' `d`, then their `dmin` (f16); the 16 rows' 6-bit scale of each
/// sub-block (16 bytes per sub-block, two lines); then their mins (two lines).
pub(crate) const K_SCALE_LINES: usize = 5;

/// The first scale line of the superblock holding sub-block (activation block) `b`, in a group
/// of `nb` sub-blocks per row whose records are `record_lines` lines each.
#[inline(always)]
pub(crate) fn k_scales_at(record_lines: usize, nb: usize, b: usize) -> usize {
    nb * record_lines + b / 8 * K_SCALE_LINES
}

/// The two bytes of an f16 at byte `at` of line `line` of a group.
pub(crate) fn f16_at(group: &[u8], line: usize, at: usize) -> [u8; 2] {
    [group[line * 64 + at], group[line * 64 + at + 1]]
}

/// Lines of a record holding its nibbles (Q4_0, Q4_1, Q5_0, Q5_1): line `j` holds bytes
/// `4j..4j+4` of each row's 16 bytes of `qs`, row after row.
pub(crate) const NIBBLE_LINES: usize = 4;

/// Stores row `i`'s 16 bytes of nibbles in the record starting at line `rec`.
pub(crate) fn put_nibbles(group: &mut [u8], rec: usize, i: usize, qs: &[u8; 16]) {
    for j in 0..NIBBLE_LINES {
        span_mut(group, rec + j, 4 * i, 4).copy_from_slice(&qs[4 * j..4 * j + 4]);
    }
}

/// Row `i`'s 16 bytes of nibbles back from the record starting at line `rec`.
pub(crate) fn get_nibbles(group: &[u8], rec: usize, i: usize) -> [u8; 16] {
    let mut qs = [0u8; 16];
    for j in 0..NIBBLE_LINES {
        qs[4 * j..4 * j + 4].copy_from_slice(span(group, rec + j, 4 * i, 4));
    }
    qs
}

/// Stores row `i`'s 32 codes (each below 4) in the [`TWO_BIT_LINES`] of the record starting at
/// line `rec`.
pub(crate) fn put_two_bit_codes(group: &mut [u8], rec: usize, i: usize, codes: &[u8; 32]) {
    for h in 0..TWO_BIT_LINES {
        for k in 0..4 {
            group[(rec + h) * 64 + 4 * i + k] =
                (0..4).fold(0, |b, j| b | (codes[16 * h + 4 * j + k] & 3) << (2 * j));
        }
    }
}

/// Row `i`'s 32 two-bit codes back from the record starting at line `rec`.
pub(crate) fn get_two_bit_codes(group: &[u8], rec: usize, i: usize) -> [u8; 32] {
    std::array::from_fn(|e| {
        let (h, j, k) = (e / 16, (e % 16) / 4, e % 4);
        (group[(rec + h) * 64 + 4 * i + k] >> (2 * j)) & 3
    })
}

/// The fifth bits of a record's 16 rows, as [`FIFTH_BITS_LINE`] stores them: eight u64 words,
/// word `2j + h` for nibble line `j` and its low (`h` 0, elements `4j..4j+4`) or high (`h` 1,
/// elements `16+4j..`) nibbles, bit `4i + k` for row `i`'s element `k` of those four. So a
/// 512-bit register's byte `4i + k` takes bit `4i + k` of its word (a mask move), and an 8-row
/// half's bytes the word's 32 bits from `32 * half`.
pub(crate) fn put_fifth_bits(line: &mut [u8], i: usize, qh: u32) {
    for j in 0..4 {
        for h in 0..2 {
            let bits = (qh >> (4 * j + 16 * h)) & 0xF;
            let word = &mut line[8 * (2 * j + h)..8 * (2 * j + h) + 8];
            let mut v = u64::from_le_bytes(word.try_into().unwrap_or_default());
            v |= (bits as u64) << (4 * i);
            word.copy_from_slice(&v.to_le_bytes());
        }
    }
}

/// Row `i`'s fifth bits back from a [`FIFTH_BITS_LINE`] line.
pub(crate) fn get_fifth_bits(line: &[u8], i: usize) -> u32 {
    let mut qh = 0u32;
    for j in 0..4 {
        for h in 0..2 {
            let word = &line[8 * (2 * j + h)..8 * (2 * j + h) + 8];
            let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
            qh |= (((v >> (4 * i)) & 0xF) as u32) << (4 * j + 16 * h);
        }
    }
    qh
}

/// Where block `b`'s 16 scales lie in a group of `nb` records of `record_lines` lines followed
/// by the scales, two blocks' to a line: (line, byte offset).
#[inline(always)]
pub(crate) fn scales_at(record_lines: usize, nb: usize, b: usize) -> (usize, usize) {
    (nb * record_lines + b / 2, 32 * (b % 2))
}

/// A weight type's 16-row layout: where each block's bytes go in its group.
pub trait Repack: WeightBlock {
    /// 64-byte lines per group of 16 rows of `nb` blocks.
    fn group_lines(nb: usize) -> usize;
    /// Stores `blk`, block `b` of the group's row `i`, in `group` (zeroed before the first put).
    fn put(group: &mut [u8], nb: usize, b: usize, i: usize, blk: &Self);
    /// Stores the group's row `i`, all `nb` blocks (a type may do it faster than block by block).
    fn put_row(group: &mut [u8], nb: usize, i: usize, row: &[Self]) {
        for (b, blk) in row.iter().enumerate() {
            Self::put(group, nb, b, i, blk);
        }
    }
    /// Block `b` of the group's row `i`, as ggml stores it.
    fn get(group: &[u8], nb: usize, b: usize, i: usize) -> Self;
    /// The packed kernels' arithmetic for one block, which they must equal bit for bit:
    /// `acc` plus `w . a`, `a` the activation blocks the block spans (one, or a superblock's
    /// eight).
    fn packed_step(acc: f32, w: &Self, a: &[Self::Activation]) -> f32;
}

/// `n` lines filled in parallel, `group_lines` at a time, by `fill` (given the group's index and
/// its lines, zeroed first). Linux is asked to back them with transparent huge pages before
/// their first touch: a decode step streams every packed matrix once, and 2 MiB pages spare it
/// a TLB miss every 4 KiB (where the kernel's policy is `madvise`, the common default, only
/// asking helps). Each thread's first touch of its groups also spreads the kernel's clearing of
/// fresh pages (most of the time a large matrix takes to pack) over every core.
fn packed_lines(
    n: usize,
    group_lines: usize,
    fill: impl Fn(usize, &mut [Line]) + Sync,
) -> Vec<Line> {
    use rayon::prelude::*;
    let mut lines: Vec<Line> = Vec::with_capacity(n);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = lines.as_ptr() as usize;
        let end = start + n * std::mem::size_of::<Line>();
        let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if to > from {
            // SAFETY: the range lies inside this vector's allocation, which nothing has touched
            // yet; the advice changes how pages are backed, never their contents.
            let _ =
                unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
    lines.spare_capacity_mut()[..n]
        .par_chunks_mut(group_lines.max(1))
        .enumerate()
        .for_each(|(g, group)| {
            group.fill(std::mem::MaybeUninit::new(ZERO_LINE));
            // SAFETY: every element of `group` was just initialized, and `MaybeUninit<Line>`
            // has `Line`'s layout.
            let group =
                unsafe { &mut *(group as *mut [std::mem::MaybeUninit<Line>] as *mut [Line]) };
            fill(g, group);
        });
    // SAFETY: the chunks cover `0..n`, and each was initialized above.
    unsafe { lines.set_len(n) };
    lines
}

fn as_bytes(lines: &[Line]) -> &[u8] {
    // SAFETY: `Line` is 64 plain bytes with no padding.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast(), std::mem::size_of_val(lines)) }
}

fn as_bytes_mut(lines: &mut [Line]) -> &mut [u8] {
    // SAFETY: as above; every byte pattern is a valid `Line`.
    unsafe {
        std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), std::mem::size_of_val(lines))
    }
}

/// A matrix repacked 16 rows at a time (see the module documentation). Owns its bytes, as
/// many as the ggml layout's plus zero rows up to a multiple of 16.
pub struct PackedMatrix {
    kind: &'static WeightKind,
    rows: usize,
    cols: usize,
    group_lines: usize,
    lines: Vec<Line>,
}

impl PackedMatrix {
    /// Repacks `w`.
    pub fn pack<W: Repack>(w: &QMatrix<'_, W>) -> PackedMatrix {
        let (rows, nb) = (w.rows(), w.row_blocks());
        let group_lines = W::group_lines(nb);
        // Groups are independent: a large matrix (a 1.7B model's) packs on every core.
        let lines = packed_lines(
            rows.div_ceil(GROUP) * group_lines,
            group_lines,
            |g, group| {
                let group = as_bytes_mut(group);
                for i in 0..GROUP.min(rows - g * GROUP) {
                    W::put_row(group, nb, i, w.row(g * GROUP + i));
                }
            },
        );
        PackedMatrix {
            kind: W::KIND,
            rows,
            cols: w.cols(),
            group_lines,
            lines,
        }
    }

    /// `w` repacked, or `None` when its type has no 16-row layout (or it is packed already).
    pub fn repack(w: &QWeight<'_>) -> Result<Option<PackedMatrix>> {
        match w.kind().repack {
            Some(r) if !w.is_packed() => (r.pack)(w).map(Some),
            _ => Ok(None),
        }
    }

    /// [`PackedMatrix::pack`] of an erased matrix of type `W`.
    pub(crate) fn pack_weight<W: Repack>(w: &QWeight<'_>) -> Result<PackedMatrix> {
        Ok(PackedMatrix::pack(&w.typed::<W>()?))
    }

    /// The matrix as the kernels take it.
    pub fn weight(&self) -> QWeight<'_> {
        QWeight::packed(
            self.kind,
            as_bytes(&self.lines),
            self.rows,
            self.cols,
            self.group_lines * std::mem::size_of::<Line>(),
        )
    }

    pub fn kind(&self) -> &'static WeightKind {
        self.kind
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row.
    pub fn row_blocks(&self) -> usize {
        self.cols / self.kind.block_elements
    }
    /// Bytes of weight data one pass reads (the zero rows of the last group included).
    pub fn size_in_bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    /// Block `b` of row `r`, as ggml stores it.
    pub fn block<W: Repack>(&self, r: usize, b: usize) -> Result<W> {
        packed_block(&self.weight(), r, b)
    }

    /// Block `b` of row `r` of a packed matrix of type `W`, dequantized.
    pub(crate) fn dequantize_block<W: Repack>(
        w: &QWeight<'_>,
        r: usize,
        b: usize,
        out: &mut [f32],
    ) -> Result<()> {
        packed_block::<W>(w, r, b)?.dequantize(out);
        Ok(())
    }
}

/// Block `b` of row `r` of `w`, a packed matrix of type `W`.
fn packed_block<W: Repack>(w: &QWeight<'_>, r: usize, b: usize) -> Result<W> {
    let nb = w.row_blocks();
    if *w.kind() != *W::KIND || !w.is_packed() {
        return Err(Error::invalid(format!(
            "a {} matrix read as packed {}",
            w.kind().name,
            W::NAME
        )));
    }
    if r >= w.rows() || b >= nb {
        return Err(Error::invalid(format!(
            "block ({r}, {b}) is outside a {} x {nb}-block matrix",
            w.rows()
        )));
    }
    Ok(W::get(w.group_bytes(r / GROUP), nb, b, r % GROUP))
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("kind", &self.kind)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// Line `l` of a group's bytes, at byte `at`, `n` bytes.
pub(crate) fn span(group: &[u8], line: usize, at: usize, n: usize) -> &[u8] {
    &group[line * 64 + at..line * 64 + at + n]
}

pub(crate) fn span_mut(group: &mut [u8], line: usize, at: usize, n: usize) -> &mut [u8] {
    &mut group[line * 64 + at..line * 64 + at + n]
}

/// The scalar statement of a packed kernel's arithmetic: `out[c * rows + r]` for `a`, `m` rows
/// of `w.row_blocks()` activation blocks. The SIMD kernels must equal it bit for bit.
pub fn reference_matmul_packed<W: Repack>(
    w: &PackedMatrix,
    a: &[W::Activation],
) -> Result<Vec<f32>> {
    let (nb, per) = (w.row_blocks(), W::ELEMENTS / W::Activation::ELEMENTS);
    let m = activation_rows(nb * per, a.len())?;
    let mut out = vec![0f32; m * w.rows()];
    for (c, act) in a.chunks_exact(nb * per).enumerate() {
        for r in 0..w.rows() {
            let mut acc = 0f32;
            for (b, ys) in act.chunks_exact(per).enumerate() {
                acc = W::packed_step(acc, &w.block::<W>(r, b)?, ys);
            }
            out[c * w.rows() + r] = acc;
        }
    }
    Ok(out)
}
