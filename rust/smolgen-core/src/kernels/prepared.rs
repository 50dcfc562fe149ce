//! Activations laid out for a micro-kernel ([`Prepared`]), where a kernel writes
//! ([`OutPtr`]), and the signature every gemm has ([`GemmFn`]).
//!
//! The types are public in this private module: the kernel traits name them, and nothing
//! outside the crate can reach them.
//!
//! Activations arrive as ggml Q8_1/Q8_0 blocks and are first copied into a [`Prepared`] layout:
//! codes in 64-byte-aligned lines, scales as f32, plus whatever per-block constants the
//! instruction set's micro-kernel wants (that copy is `m * k` bytes, small next to the
//! `n * m * k` multiply-adds). f32 activations, for float weights, are held as they are.

use std::ops::Range;

use super::matmul::QWeight;
use super::types::{BlockF32, BlockQ8_0, BlockQ8_1};

/// 64 bytes, cache-line aligned: 2 blocks of codes, or 16 f32 / i32.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line(pub [u8; 64]);

pub(crate) const ZERO_LINE: Line = Line([0; 64]);

/// How a micro-kernel wants its activations laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Codes in element order; `d` per block; for Q8_1 `s` as `[0, s]` pairs per block.
    Natural,
    /// Q8_1 for 512-bit Q4_1 kernels: block pair (b, b+1) stored as
    /// `[a_b[0..16], a_b1[0..16], a_b[16..32], a_b1[16..32]]` (the order a 32-byte load of two
    /// blocks' nibbles unpacks to), `dx = [d_b x4, d_b1 x4, d_b x4, d_b1 x4]`,
    /// `sx = [0, s_b, 0, s_b1, 0 x12]`.
    PairsQ4,
    /// Q8_0 for 512-bit kernels: codes in element order, `dx = [d_b x8, d_b1 x8]`, and
    /// `cx[l] = -128 * (sum of codes 4l..4l+4)` to undo the +128 bias on the weights.
    PairsQ8,
}

/// Activations ready for a micro-kernel. Every row is padded to an even number of blocks with
/// zero codes and zero scales.
pub struct Prepared {
    pub m: usize,
    pub nb: usize,
    /// `nb` rounded up to even.
    pub nbp: usize,
    qs: Vec<Line>,
    d: Vec<f32>,
    s: Vec<f32>,
    dx: Vec<Line>,
    sx: Vec<Line>,
    cx: Vec<Line>,
    /// Q8_0: `-128 * sum(codes)` per block, the start of a dot against codes biased by +128.
    fix: Vec<i32>,
    /// Q8_0: `-32 * sum(codes)` of each 16-code half per block, the start of a dot against
    /// codes biased by +32 (Q6_K's, repacked).
    half_fix: Vec<i32>,
    /// F32 activations (for float weights): `nb * 32` values per row.
    x: Vec<f32>,
}

impl Prepared {
    fn lines_per_row(&self) -> usize {
        self.nbp / 2
    }
    /// Codes of activation row `c`: `nbp * 32` bytes, 64-byte aligned.
    #[inline(always)]
    pub fn qs(&self, c: usize) -> *const i8 {
        self.qs[c * self.lines_per_row()..].as_ptr().cast()
    }
    /// `d` of row `c`, `nbp` values.
    #[inline(always)]
    pub fn d(&self, c: usize) -> &[f32] {
        &self.d[c * self.nbp..(c + 1) * self.nbp]
    }
    /// Q8_1: `[0, s]` per block of row `c`, `2 * nbp` values.
    #[inline(always)]
    pub fn s(&self, c: usize) -> &[f32] {
        &self.s[c * 2 * self.nbp..(c + 1) * 2 * self.nbp]
    }
    /// Q8_0: `-128 * sum(codes)` per block of row `c`, `nbp` values.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn bias_fix(&self, c: usize) -> &[i32] {
        &self.fix[c * self.nbp..(c + 1) * self.nbp]
    }
    /// Q8_0: `-32 * sum(codes)` of block `b`'s halves, `[first 16, last 16]`, for row `c`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn half_bias_fix(&self, c: usize) -> &[i32] {
        &self.half_fix[c * 2 * self.nbp..(c + 1) * 2 * self.nbp]
    }
    /// F32 activations: row `c`, `nb * 32` values.
    #[inline(always)]
    pub fn floats(&self, c: usize) -> &[f32] {
        let k = self.nb * super::blocks::QK;
        &self.x[c * k..(c + 1) * k]
    }
    /// Pair layouts: one line per block pair of row `c`.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn dx(&self, c: usize) -> *const f32 {
        self.dx[c * self.lines_per_row()..].as_ptr().cast()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn sx(&self, c: usize) -> *const f32 {
        self.sx[c * self.lines_per_row()..].as_ptr().cast()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn cx(&self, c: usize) -> *const i32 {
        self.cx[c * self.lines_per_row()..].as_ptr().cast()
    }

    /// An empty layout whose buffers grow to the largest activation seen and are then reused.
    pub(crate) fn empty() -> Prepared {
        Prepared {
            m: 0,
            nb: 0,
            nbp: 0,
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            dx: Vec::new(),
            sx: Vec::new(),
            cx: Vec::new(),
            fix: Vec::new(),
            half_fix: Vec::new(),
            x: Vec::new(),
        }
    }

    /// Sizes the buffers for `m` rows of `nb` blocks, zeroed (the padding block must be zero).
    fn reset(&mut self, m: usize, nb: usize, layout: Layout, q8_1: bool) {
        let nbp = nb + nb % 2;
        (self.m, self.nb, self.nbp) = (m, nb, nbp);
        let lines = m * nbp / 2;
        let refill = |v: &mut Vec<Line>, n: usize| {
            v.clear();
            v.resize(n, ZERO_LINE);
        };
        refill(&mut self.qs, lines);
        self.d.clear();
        self.d.resize(m * nbp, 0.0);
        let (pairs_q4, pairs_q8) = (layout == Layout::PairsQ4, layout == Layout::PairsQ8);
        self.s.clear();
        if q8_1 {
            self.s.resize(m * 2 * nbp, 0.0);
        }
        refill(&mut self.dx, if pairs_q4 || pairs_q8 { lines } else { 0 });
        refill(&mut self.sx, if pairs_q4 { lines } else { 0 });
        refill(&mut self.cx, if pairs_q8 { lines } else { 0 });
        self.fix.clear();
        self.half_fix.clear();
        if !q8_1 {
            self.fix.resize(m * nbp, 0);
            self.half_fix.resize(m * 2 * nbp, 0);
        }
    }

    fn put_f32(lines: &mut [Line], line: usize, lane: usize, v: f32) {
        let at = lane * 4;
        lines[line].0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// Holds `a` (whole rows of `nb` blocks of f32) for a float kernel, reusing this buffer.
    pub(crate) fn fill_f32(&mut self, a: &[BlockF32], nb: usize) {
        (self.m, self.nb, self.nbp) = (a.len() / nb, nb, nb);
        self.x.clear();
        self.x
            .extend(a.iter().flat_map(|b| b.v.map(f32::from_le_bytes)));
    }

    /// Lays out `a` (whole rows of `nb` blocks) for a Q4_1 kernel, reusing this buffer.
    pub(crate) fn fill_q8_1(&mut self, a: &[BlockQ8_1], nb: usize, layout: Layout) {
        let m = a.len() / nb;
        self.reset(m, nb, layout, true);
        let p = self;
        let lpr = p.lines_per_row();
        for c in 0..m {
            for b in 0..nb {
                let blk = &a[c * nb + b];
                let d = blk.d().to_f32();
                let s = blk.s().to_f32();
                p.d[c * p.nbp + b] = d;
                let line = c * lpr + b / 2;
                let half = b % 2;
                let codes = blk.qs.map(|q| q as u8);
                match layout {
                    Layout::PairsQ4 => {
                        let dst = &mut p.qs[line].0;
                        dst[half * 16..half * 16 + 16].copy_from_slice(&codes[..16]);
                        dst[32 + half * 16..32 + half * 16 + 16].copy_from_slice(&codes[16..]);
                        Prepared::put_f32(&mut p.sx, line, 1 + 2 * half, s);
                    }
                    _ => {
                        p.qs[line].0[half * 32..half * 32 + 32].copy_from_slice(&codes);
                    }
                }
                p.s[(c * p.nbp + b) * 2 + 1] = s;
            }
        }
        if layout == Layout::PairsQ4 {
            // dx lanes: [d_b x4, d_b1 x4, d_b x4, d_b1 x4].
            for c in 0..m {
                for pair in 0..lpr {
                    let d0 = p.d[c * p.nbp + 2 * pair];
                    let d1 = p.d[c * p.nbp + 2 * pair + 1];
                    for lane in 0..16 {
                        let v = if (lane / 4) % 2 == 0 { d0 } else { d1 };
                        Prepared::put_f32(&mut p.dx, c * lpr + pair, lane, v);
                    }
                }
            }
        }
    }

    /// Lays out `a` (whole rows of `nb` blocks) for a Q8_0 kernel, reusing this buffer.
    pub(crate) fn fill_q8_0(&mut self, a: &[BlockQ8_0], nb: usize, layout: Layout) {
        let m = a.len() / nb;
        self.reset(m, nb, layout, false);
        let p = self;
        let lpr = p.lines_per_row();
        for c in 0..m {
            for b in 0..nb {
                let blk = &a[c * nb + b];
                p.d[c * p.nbp + b] = blk.d().to_f32();
                let half_sum = |h: usize| {
                    blk.qs[16 * h..16 * h + 16]
                        .iter()
                        .map(|&q| q as i32)
                        .sum::<i32>()
                };
                let (s0, s1) = (half_sum(0), half_sum(1));
                p.fix[c * p.nbp + b] = -128 * (s0 + s1);
                p.half_fix[2 * (c * p.nbp + b)] = -32 * s0;
                p.half_fix[2 * (c * p.nbp + b) + 1] = -32 * s1;
                let half = b % 2;
                p.qs[c * lpr + b / 2].0[half * 32..half * 32 + 32]
                    .copy_from_slice(&blk.qs.map(|q| q as u8));
            }
        }
        if layout == Layout::PairsQ8 {
            for c in 0..m {
                for pair in 0..lpr {
                    let line = c * lpr + pair;
                    for lane in 0..16 {
                        let d = p.d[c * p.nbp + 2 * pair + lane / 8];
                        Prepared::put_f32(&mut p.dx, line, lane, d);
                        let sum: i32 = p.qs[line].0[lane * 4..lane * 4 + 4]
                            .iter()
                            .map(|&q| q as i8 as i32)
                            .sum();
                        let at = lane * 4;
                        p.cx[line].0[at..at + 4].copy_from_slice(&(-128 * sum).to_ne_bytes());
                    }
                }
            }
        }
    }
}

/// Where a kernel writes: `out[c * ld + r]` for activation row `c`, weight row `r`.
#[derive(Clone, Copy)]
pub struct OutPtr {
    pub(super) ptr: *mut f32,
    pub(super) ld: usize,
}

// SAFETY: threads write disjoint weight-row ranges (see `run`); the pointer outlives the scope.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Where activation row `c`, weight row `r` goes.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub fn at(self, c: usize, r: usize) -> *mut f32 {
        self.ptr.wrapping_add(c * self.ld + r)
    }
    /// # Safety
    /// `c * ld + r` is inside the output and no other thread writes it.
    #[inline(always)]
    pub unsafe fn write(self, c: usize, r: usize, v: f32) {
        // SAFETY: the caller's contract.
        unsafe { *self.ptr.add(c * self.ld + r) = v }
    }
}

/// Computes rows `rows` of the output for all activation rows.
///
/// # Safety
/// The CPU supports the kernel's instruction set; `w` is of the block type and storage
/// (row-major or 16-row packed) the kernel is registered for; `rows` lies inside the matrix and,
/// for a packed matrix, starts on a group; `out` is valid for `a.m * w.rows()` floats and no one
/// else writes these rows meanwhile; `a` holds the matrix's activation type with its blocks per
/// row, in the layout the kernel expects.
pub type GemmFn = unsafe fn(&QWeight<'_>, &Prepared, Range<usize>, OutPtr);
