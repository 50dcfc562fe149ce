//! `y = W x` for a batch of activation rows, split across threads.
//!
//! Weights are in ggml's layout, straight from the file, or repacked 16 rows at a time for the
//! kernels that have that layout ([`super::packed`]). Activations arrive as ggml Q8_1/Q8_0
//! blocks and are first copied into a `Prepared` layout: codes in 64-byte-aligned lines,
//! scales as f32, plus whatever per-block constants the instruction set's micro-kernel wants
//! (that copy is `m * k` bytes, small next to the `n * m * k` multiply-adds). Each thread gets a
//! contiguous run of weight rows; inside it, a micro-kernel computes a tile of up to 4 weight
//! rows x 4 activation rows, so every weight block loaded is used against several activation
//! rows (prefill) and every activation block against several weight rows (decode).
//!
//! Each output element is accumulated in the same order whatever the tile shape or thread
//! count, so results are bit-identical across 1..N threads and equal [`Kernels::vec_dot_q4_1_q8_1`]
//! on the same path.

use std::ops::Range;

use half::f16;

use super::blocks::{Block, BlockQ4_1, BlockQ8_0, BlockQ8_1, QMatrix, QK};
use super::dispatch::{Isa, Kernels};
use super::packed::{PackedQ4_1, PackedQ8_0, GROUP};
use super::pool::Pool;
use super::{dot, quantize};
use crate::error::{Error, Result};

/// 64 bytes, cache-line aligned: 2 blocks of codes, or 16 f32 / i32.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(crate) struct Line(pub [u8; 64]);

pub(crate) const ZERO_LINE: Line = Line([0; 64]);

/// How a micro-kernel wants its activations laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
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
pub(crate) struct Prepared {
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
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub fn bias_fix(&self, c: usize) -> &[i32] {
        &self.fix[c * self.nbp..(c + 1) * self.nbp]
    }
    /// Pair layouts: one line per block pair of row `c`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub fn dx(&self, c: usize) -> *const f32 {
        self.dx[c * self.lines_per_row()..].as_ptr().cast()
    }
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    #[inline(always)]
    pub fn sx(&self, c: usize) -> *const f32 {
        self.sx[c * self.lines_per_row()..].as_ptr().cast()
    }
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
        if !q8_1 {
            self.fix.resize(m * nbp, 0);
        }
    }

    fn put_f32(lines: &mut [Line], line: usize, lane: usize, v: f32) {
        let at = lane * 4;
        lines[line].0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    pub(crate) fn q8_1(a: &[BlockQ8_1], nb: usize, layout: Layout) -> Prepared {
        let mut p = Prepared::empty();
        p.fill_q8_1(a, nb, layout);
        p
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

    pub(crate) fn q8_0(a: &[BlockQ8_0], nb: usize, layout: Layout) -> Prepared {
        let mut p = Prepared::empty();
        p.fill_q8_0(a, nb, layout);
        p
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
                p.fix[c * p.nbp + b] = -128 * blk.qs.iter().map(|&q| q as i32).sum::<i32>();
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
pub(crate) struct OutPtr {
    ptr: *mut f32,
    ld: usize,
}

// SAFETY: threads write disjoint weight-row ranges (see `run`); the pointer outlives the scope.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Where activation row `c`, weight row `r` goes.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
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
/// The CPU supports the kernel's instruction set; `rows` lies inside the matrix; `out` is valid
/// for `a.m * w.rows()` floats and no one else writes these rows meanwhile; `a.nb` equals the
/// matrix's blocks per row and `a` has the layout the kernel expects.
pub(crate) type GemmFn<W> = unsafe fn(&QMatrix<'_, W>, &Prepared, Range<usize>, OutPtr);

/// As [`GemmFn`] for a packed matrix ([`PackedQ4_1`], [`PackedQ8_0`]); `rows.start` is a
/// multiple of its group, `a` has the natural layout.
pub(crate) type PackedGemmFn<P> = unsafe fn(&P, &Prepared, Range<usize>, OutPtr);

/// One instruction set's function set.
pub(crate) struct Table {
    pub isa: Isa,
    pub layout_q4_1: Layout,
    pub layout_q8_0: Layout,
    /// # Safety: the CPU supports `isa`; `x.len() == out.len() * 32`.
    pub quantize_q8_1: unsafe fn(&[f32], &mut [BlockQ8_1]),
    /// # Safety: as above.
    pub quantize_q8_0: unsafe fn(&[f32], &mut [BlockQ8_0]),
    pub gemm_q4_1: GemmFn<BlockQ4_1>,
    pub gemm_q8_0: GemmFn<BlockQ8_0>,
    /// Q4_1 and Q8_0 weights in the 16-row layout, where this path has kernels for it (they
    /// read the natural activation layout).
    pub packed: Option<PackedKernels>,
}

/// The 16-row kernels of one instruction set.
pub(crate) struct PackedKernels {
    pub q4_1: PackedGemmFn<PackedQ4_1>,
    pub q8_0: PackedGemmFn<PackedQ8_0>,
}

pub(crate) static SCALAR_TABLE: Table = Table {
    isa: Isa::Scalar,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: quantize::quantize_q8_1_scalar,
    quantize_q8_0: quantize::quantize_q8_0_scalar,
    gemm_q4_1: dot::gemm_q4_1_scalar,
    gemm_q8_0: dot::gemm_q8_0_scalar,
    packed: None,
};

#[cfg(target_arch = "x86_64")]
static AVX2_TABLE: Table = Table {
    isa: Isa::Avx2,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx2::gemm_q4_1,
    gemm_q8_0: super::x86::avx2::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx2::gemm_q4_1x16,
        q8_0: super::x86::avx2::gemm_q8_0x16,
    }),
};

#[cfg(target_arch = "x86_64")]
static AVXVNNI_TABLE: Table = Table {
    isa: Isa::AvxVnni,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx2::gemm_q4_1,
    gemm_q8_0: super::x86::avx2::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx2::gemm_q4_1x16_vnni,
        q8_0: super::x86::avx2::gemm_q8_0x16_vnni,
    }),
};

#[cfg(target_arch = "x86_64")]
static AVX512_TABLE: Table = Table {
    isa: Isa::Avx512Vnni,
    layout_q4_1: Layout::PairsQ4,
    layout_q8_0: Layout::PairsQ8,
    quantize_q8_1: quantize::x86::quantize_q8_1_avx2,
    quantize_q8_0: quantize::x86::quantize_q8_0_avx2,
    gemm_q4_1: super::x86::avx512::gemm_q4_1,
    gemm_q8_0: super::x86::avx512::gemm_q8_0,
    packed: Some(PackedKernels {
        q4_1: super::x86::avx512::gemm_q4_1x16,
        q8_0: super::x86::avx512::gemm_q8_0x16,
    }),
};

#[cfg(target_arch = "aarch64")]
static NEON_TABLE: Table = Table {
    isa: Isa::Neon,
    layout_q4_1: Layout::Natural,
    layout_q8_0: Layout::Natural,
    quantize_q8_1: quantize::quantize_q8_1_scalar,
    quantize_q8_0: quantize::quantize_q8_0_scalar,
    gemm_q4_1: super::arm::neon::gemm_q4_1,
    gemm_q8_0: super::arm::neon::gemm_q8_0,
    packed: None,
};

/// The table for `isa` if this build's architecture has one (availability is checked by the
/// caller, [`Kernels::for_isa`]).
pub(crate) fn table_for(isa: Isa) -> Option<&'static Table> {
    match isa {
        Isa::Scalar => Some(&SCALAR_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(&AVX2_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::AvxVnni => Some(&AVXVNNI_TABLE),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => Some(&AVX512_TABLE),
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => Some(&NEON_TABLE),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Activation rows per L1-resident chunk in prefill.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) const MC: usize = 16;
/// How far ahead (in weight rows) a tile prefetches weights that stream from memory.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PREFETCH_ROWS: usize = 8;

/// The tile walk of a SIMD gemm: calls `tile(r0, nr, c0, nc, pf)` over `rows` x `0..m`, with
/// `pf` the software-prefetch distance in bytes for that tile (0: none). One activation row
/// (decode) walks `R x 1` tiles; more walk `R x C` tiles `MC` rows at a time. Where the weights
/// stream from memory once (one row, or a batch of up to `MC`), the first column tile of each
/// weight tile prefetches `PREFETCH_ROWS` rows ahead; a longer prefill reuses each weight tile
/// from L1 across column tiles and prefetches nothing.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn for_each_weight_tile<const R: usize, const C: usize>(
    rows: Range<usize>,
    m: usize,
    row_bytes: usize,
    mut tile: impl FnMut(usize, usize, usize, usize, usize),
) {
    let ahead = PREFETCH_ROWS * row_bytes;
    if m == 1 {
        for_each_tile::<R, 1>(rows, 1, 1, |r0, nr, c0, nc| tile(r0, nr, c0, nc, ahead));
    } else {
        let streaming = m <= MC;
        for_each_tile::<R, C>(rows, m, MC, |r0, nr, c0, nc| {
            let pf = if streaming && c0 == 0 { ahead } else { 0 };
            tile(r0, nr, c0, nc, pf)
        });
    }
}

/// Calls `tile(r0, nr, c0, nc)` over `rows` x `0..m` in tiles of at most `R` x `C`, taking
/// activation rows `mc` at a time (so that chunk stays in L1 while weight rows stream past).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn for_each_tile<const R: usize, const C: usize>(
    rows: Range<usize>,
    m: usize,
    mc: usize,
    mut tile: impl FnMut(usize, usize, usize, usize),
) {
    let mut c_chunk = 0;
    while c_chunk < m {
        let c_end = (c_chunk + mc).min(m);
        let mut r0 = rows.start;
        while r0 < rows.end {
            let nr = R.min(rows.end - r0);
            let mut c0 = c_chunk;
            while c0 < c_end {
                let nc = C.min(c_end - c0);
                tile(r0, nr, c0, nc);
                c0 += nc;
            }
            r0 += nr;
        }
        c_chunk = c_end;
    }
}

/// Records ahead that the 16-row kernels prefetch while weights stream from memory.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const PACKED_PREFETCH_RECORDS: usize = 16;

/// The walk of the 16-row kernels: calls `tile(g, c0, nc, rows, pf)` for every group `g` of
/// `rows` (which starts on a group) and every tile of up to `COLS` activation rows, `MC`
/// activation rows at a time; `rows` is the group's rows inside `rows`, `pf` the prefetch
/// distance in bytes (0: none). Where weights stream from memory (at most `MC` activation
/// rows), each group's first tile prefetches; otherwise a group is reused from cache.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn for_each_group_tile<const COLS: usize>(
    rows: Range<usize>,
    m: usize,
    record_lines: usize,
    mut tile: impl FnMut(usize, usize, usize, Range<usize>, usize),
) {
    debug_assert!(rows.start.is_multiple_of(GROUP));
    let ahead = PACKED_PREFETCH_RECORDS * record_lines * 64;
    let streaming = m <= MC;
    let mut chunk = 0;
    while chunk < m {
        let chunk_end = (chunk + MC).min(m);
        for g in rows.start / GROUP..rows.end.div_ceil(GROUP) {
            let r0 = g * GROUP;
            let mut c0 = chunk;
            while c0 < chunk_end {
                let nc = COLS.min(chunk_end - c0);
                let pf = if streaming && c0 == chunk { ahead } else { 0 };
                tile(g, c0, nc, r0..rows.end.min(r0 + GROUP), pf);
                c0 += nc;
            }
        }
        chunk = chunk_end;
    }
}

/// Prefetches the `record_lines` lines `pf` bytes past `r` (nothing when `pf` is 0).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn prefetch_record(r: *const u8, pf: usize, record_lines: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    if pf != 0 {
        for line in 0..record_lines {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(r.wrapping_add(pf + 64 * line).cast()) };
        }
    }
}

/// Weight rows per thread share are a multiple of this (a multiple of every tile height).
const ROW_GRAIN: usize = 16;
const _: () = assert!(ROW_GRAIN.is_multiple_of(super::packed::GROUP));

/// Runs `part(rows)` on the pool for each thread's share of `n` weight rows: contiguous runs
/// whose starts are multiples of [`ROW_GRAIN`].
fn for_each_share(pool: &Pool, n: usize, part: impl Fn(Range<usize>) + Sync) {
    let grains = n.div_ceil(ROW_GRAIN);
    let parts = pool.threads().min(grains).max(1);
    let per = grains.div_ceil(parts) * ROW_GRAIN;
    let parts = n.div_ceil(per).max(1);
    pool.run(parts, |i| part((i * per).min(n)..((i + 1) * per).min(n)));
}

fn run_gemm<W: Block>(
    pool: &Pool,
    gemm: GemmFn<W>,
    w: &QMatrix<'_, W>,
    a: &Prepared,
    out: &mut [f32],
) {
    let n = w.rows();
    debug_assert_eq!(out.len(), a.m * n);
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        ld: n,
    };
    for_each_share(pool, n, |rows| {
        // SAFETY: the table exists only on a CPU with its instruction set; shares are disjoint
        // and inside the matrix; `out` holds `a.m * n` floats (checked by callers) and
        // outlives the run; `a` was prepared for this table's layout with the matrix's blocks
        // per row.
        unsafe { gemm(w, a, rows, out) };
    });
}

fn run_packed_gemm<P: Sync>(
    pool: &Pool,
    gemm: PackedGemmFn<P>,
    w: &P,
    n: usize,
    a: &Prepared,
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), a.m * n);
    let out = OutPtr {
        ptr: out.as_mut_ptr(),
        ld: n,
    };
    for_each_share(pool, n, |rows| {
        // SAFETY: as in `run_gemm`; shares start on multiples of 16, so on groups.
        unsafe { gemm(w, a, rows, out) };
    });
}

fn check_quantize(x_len: usize, blocks: usize) -> Result<()> {
    if x_len != blocks * QK {
        return Err(Error::invalid(format!(
            "quantize: {x_len} values do not fill {blocks} blocks of {QK}"
        )));
    }
    Ok(())
}

/// Activation rows in `a_len` blocks of rows of `nb` blocks (at least one whole row).
pub(crate) fn activation_rows(nb: usize, a_len: usize) -> Result<usize> {
    if a_len == 0 || !a_len.is_multiple_of(nb) {
        return Err(Error::invalid(format!(
            "matmul: {a_len} activation blocks are not whole rows of {nb}"
        )));
    }
    Ok(a_len / nb)
}

/// Checks a product's shapes for a `rows x cols` matrix; returns the activation rows.
fn check_matmul(rows: usize, cols: usize, a_len: usize, out_len: usize) -> Result<usize> {
    let m = activation_rows(cols / QK, a_len)?;
    if out_len != m * rows {
        return Err(Error::invalid(format!(
            "matmul: output has {out_len} values, expected {m} x {rows}"
        )));
    }
    Ok(m)
}

impl Kernels {
    /// Quantizes `x` (`32 * out.len()` values, any number of rows back to back) to Q8_1.
    pub fn quantize_q8_1(&self, x: &[f32], out: &mut [BlockQ8_1]) -> Result<()> {
        check_quantize(x.len(), out.len())?;
        // SAFETY: the table exists only on a CPU with its instruction set; lengths checked.
        unsafe { (self.table.quantize_q8_1)(x, out) };
        Ok(())
    }

    /// Quantizes `x` (`32 * out.len()` values) to Q8_0.
    pub fn quantize_q8_0(&self, x: &[f32], out: &mut [BlockQ8_0]) -> Result<()> {
        check_quantize(x.len(), out.len())?;
        // SAFETY: as above.
        unsafe { (self.table.quantize_q8_0)(x, out) };
        Ok(())
    }

    /// `sum_b d_w d_a sum_j(q_w q_a) + m_w s_a` over equal-length block runs. One row: prefer
    /// [`Kernels::matmul_q4_1`] for anything hot.
    pub fn vec_dot_q4_1_q8_1(&self, w: &[BlockQ4_1], a: &[BlockQ8_1]) -> Result<f32> {
        if w.len() != a.len() || w.is_empty() {
            return Err(Error::invalid(format!(
                "vec_dot: {} weight blocks against {} activation blocks",
                w.len(),
                a.len()
            )));
        }
        if self.isa() == Isa::Scalar {
            return Ok(dot::vec_dot_q4_1_q8_1(w, a));
        }
        let mat = QMatrix::new(w, 1, w.len() * QK)?;
        let mut out = [0f32];
        self.matmul_q4_1(&Pool::single(), &mat, a, &mut out)?;
        Ok(out[0])
    }

    /// `sum_b d_w d_a sum_j(q_w q_a)`. Activation codes must lie in -127..=127 (what the
    /// quantizer produces; the SIMD paths do not handle -128).
    pub fn vec_dot_q8_0_q8_0(&self, w: &[BlockQ8_0], a: &[BlockQ8_0]) -> Result<f32> {
        if w.len() != a.len() || w.is_empty() {
            return Err(Error::invalid(format!(
                "vec_dot: {} weight blocks against {} activation blocks",
                w.len(),
                a.len()
            )));
        }
        if self.isa() == Isa::Scalar {
            return Ok(dot::vec_dot_q8_0_q8_0(w, a));
        }
        let mat = QMatrix::new(w, 1, w.len() * QK)?;
        let mut out = [0f32];
        self.matmul_q8_0(&Pool::single(), &mat, a, &mut out)?;
        Ok(out[0])
    }

    /// `out[c][r] = dot(w row r, a row c)`: `a` is `m` rows of `w.row_blocks()` Q8_1 blocks,
    /// `out` is `m x w.rows()` row-major.
    pub fn matmul_q4_1(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, BlockQ4_1>,
        a: &[BlockQ8_1],
        out: &mut [f32],
    ) -> Result<()> {
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let prepared = Prepared::q8_1(a, w.row_blocks(), self.table.layout_q4_1);
        run_gemm(pool, self.table.gemm_q4_1, w, &prepared, out);
        Ok(())
    }

    /// Whether this path multiplies packed matrices ([`PackedQ4_1`], [`PackedQ8_0`]), and so
    /// wants its weights repacked.
    pub fn packs_weights(&self) -> bool {
        self.table.packed.is_some()
    }

    fn packed_kernels(&self) -> Result<&'static PackedKernels> {
        self.table.packed.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "the {} kernels do not multiply 16-row packed matrices",
                self.name()
            ))
        })
    }

    /// [`Kernels::matmul_q4_1`] for a repacked matrix, on a path that
    /// [`Kernels::packs_weights`].
    pub fn matmul_q4_1_packed(
        &self,
        pool: &Pool,
        w: &PackedQ4_1,
        a: &[BlockQ8_1],
        out: &mut [f32],
    ) -> Result<()> {
        let gemm = self.packed_kernels()?.q4_1;
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let prepared = Prepared::q8_1(a, w.row_blocks(), Layout::Natural);
        run_packed_gemm(pool, gemm, w, w.rows(), &prepared, out);
        Ok(())
    }

    /// [`Kernels::matmul_q8_0`] for a repacked matrix, on a path that
    /// [`Kernels::packs_weights`].
    pub fn matmul_q8_0_packed(
        &self,
        pool: &Pool,
        w: &PackedQ8_0,
        a: &[BlockQ8_0],
        out: &mut [f32],
    ) -> Result<()> {
        let gemm = self.packed_kernels()?.q8_0;
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let prepared = Prepared::q8_0(a, w.row_blocks(), Layout::Natural);
        run_packed_gemm(pool, gemm, w, w.rows(), &prepared, out);
        Ok(())
    }

    /// As [`Kernels::matmul_q4_1`] for Q8_0 weights and Q8_0 activations (codes in -127..=127).
    pub fn matmul_q8_0(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, BlockQ8_0>,
        a: &[BlockQ8_0],
        out: &mut [f32],
    ) -> Result<()> {
        check_matmul(w.rows(), w.cols(), a.len(), out.len())?;
        let prepared = Prepared::q8_0(a, w.row_blocks(), self.table.layout_q8_0);
        run_gemm(pool, self.table.gemm_q8_0, w, &prepared, out);
        Ok(())
    }

    /// Quantizes `x` (`m x w.cols()` f32, row-major) to Q8_1 and runs [`Kernels::matmul_q4_1`].
    pub fn matmul_q4_1_f32(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, BlockQ4_1>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let mut a = vec![BlockQ8_1::default(); x.len() / QK];
        self.quantize_q8_1(x, &mut a)?;
        self.matmul_q4_1(pool, w, &a, out)
    }

    /// Quantizes `x` (`m x w.cols()` f32) to Q8_0 and runs [`Kernels::matmul_q8_0`].
    pub fn matmul_q8_0_f32(
        &self,
        pool: &Pool,
        w: &QMatrix<'_, BlockQ8_0>,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let mut a = vec![BlockQ8_0::default(); x.len() / QK];
        self.quantize_q8_0(x, &mut a)?;
        self.matmul_q8_0(pool, w, &a, out)
    }
}

/// f16 bits to f32 for the scalar paths (the SIMD paths convert with F16C).
#[inline(always)]
pub(crate) fn f16_to_f32(b: [u8; 2]) -> f32 {
    f16::from_bits(u16::from_le_bytes(b)).to_f32()
}

/// A quantized weight matrix of any type the kernels cover.
#[derive(Clone, Copy, Debug)]
pub enum QWeight<'a> {
    Q4_1(QMatrix<'a, BlockQ4_1>),
    Q8_0(QMatrix<'a, BlockQ8_0>),
    /// Q4_1 repacked, for paths that [`Kernels::packs_weights`].
    Q4_1x16(&'a PackedQ4_1),
    /// Q8_0 repacked, for paths that [`Kernels::packs_weights`].
    Q8_0x16(&'a PackedQ8_0),
}

impl QWeight<'_> {
    pub fn rows(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.rows(),
            QWeight::Q8_0(w) => w.rows(),
            QWeight::Q4_1x16(w) => w.rows(),
            QWeight::Q8_0x16(w) => w.rows(),
        }
    }
    pub fn cols(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.cols(),
            QWeight::Q8_0(w) => w.cols(),
            QWeight::Q4_1x16(w) => w.cols(),
            QWeight::Q8_0x16(w) => w.cols(),
        }
    }
    pub fn size_in_bytes(&self) -> usize {
        match self {
            QWeight::Q4_1(w) => w.size_in_bytes(),
            QWeight::Q8_0(w) => w.size_in_bytes(),
            QWeight::Q4_1x16(w) => w.size_in_bytes(),
            QWeight::Q8_0x16(w) => w.size_in_bytes(),
        }
    }
    /// Whether Q8_1 activations feed it (else Q8_0).
    pub fn reads_q8_1(&self) -> bool {
        matches!(self, QWeight::Q4_1(_) | QWeight::Q4_1x16(_))
    }
    fn is_packed(&self) -> bool {
        matches!(self, QWeight::Q4_1x16(_) | QWeight::Q8_0x16(_))
    }
}

/// Activation rows quantized once for every weight type that reads them (Q8_1 for Q4_1
/// weights, Q8_0 for Q8_0 weights), in buffers that grow to the largest input and are reused.
#[derive(Default)]
pub struct Activation {
    m: usize,
    cols: usize,
    q8_1: Vec<BlockQ8_1>,
    q8_0: Vec<BlockQ8_0>,
    for_q4_1: Option<Prepared>,
    for_q8_0: Option<Prepared>,
    /// The layouts the last quantization prepared (`None`: that type was not prepared).
    ready_q4_1: Option<Layout>,
    ready_q8_0: Option<Layout>,
}

impl Activation {
    /// Rows currently held.
    pub fn rows(&self) -> usize {
        self.m
    }
}

/// At most this many matrices share one [`Kernels::matmul_many`] call.
pub const MAX_SHARED_MATMULS: usize = 4;

impl Kernels {
    /// The activation layout the kernel for `w` reads: the table's for row-major matrices, the
    /// natural one for packed matrices (every 16-row kernel reads it, needing only codes and
    /// per-block scales).
    pub(super) fn layout_for(&self, w: &QWeight<'_>) -> Layout {
        match w {
            QWeight::Q4_1(_) => self.table.layout_q4_1,
            QWeight::Q8_0(_) => self.table.layout_q8_0,
            QWeight::Q4_1x16(_) | QWeight::Q8_0x16(_) => Layout::Natural,
        }
    }

    /// The one layout of the `reads` of one activation type (`q8_1`: the Q4_1 weights, else the
    /// Q8_0 ones), or `None` when none reads it.
    fn layout_of(&self, reads: &[QWeight<'_>], q8_1: bool) -> Result<Option<Layout>> {
        let mut layouts = reads
            .iter()
            .filter(|w| w.reads_q8_1() == q8_1)
            .map(|w| self.layout_for(w));
        let first = layouts.next();
        if layouts.any(|l| Some(l) != first) {
            return Err(Error::invalid(
                "activation: its readers want different layouts (packed and row-major matrices)",
            ));
        }
        Ok(first)
    }

    /// Quantizes `x` (`rows x cols` f32, row-major) for the matrices in `reads`: once per
    /// activation type (Q8_1 for Q4_1 weights, Q8_0 for Q8_0 weights), laid out as their
    /// kernels read it.
    pub fn quantize_activation(
        &self,
        x: &[f32],
        cols: usize,
        reads: &[QWeight<'_>],
        act: &mut Activation,
    ) -> Result<()> {
        if cols == 0 || !cols.is_multiple_of(QK) || !x.len().is_multiple_of(cols) || x.is_empty() {
            return Err(Error::invalid(format!(
                "activation: {} values are not whole rows of {cols} (a positive multiple of {QK})",
                x.len()
            )));
        }
        let (for_q4_1, for_q8_0) = (self.layout_of(reads, true)?, self.layout_of(reads, false)?);
        let (m, nb) = (x.len() / cols, cols / QK);
        (act.m, act.cols) = (m, cols);
        (act.ready_q4_1, act.ready_q8_0) = (None, None);
        if let Some(layout) = for_q4_1 {
            act.q8_1.resize(m * nb, BlockQ8_1::default());
            self.quantize_q8_1(x, &mut act.q8_1)?;
            act.for_q4_1
                .get_or_insert_with(Prepared::empty)
                .fill_q8_1(&act.q8_1, nb, layout);
        }
        if let Some(layout) = for_q8_0 {
            act.q8_0.resize(m * nb, BlockQ8_0::default());
            self.quantize_q8_0(x, &mut act.q8_0)?;
            act.for_q8_0
                .get_or_insert_with(Prepared::empty)
                .fill_q8_0(&act.q8_0, nb, layout);
        }
        (act.ready_q4_1, act.ready_q8_0) = (for_q4_1, for_q8_0);
        Ok(())
    }

    /// `out_j = act x W_j^T` for up to [`MAX_SHARED_MATMULS`] matrices with the activation's
    /// column count, in one pass of the pool: each thread takes its share of every matrix's
    /// rows, so the matrices cost one synchronisation instead of one each.
    pub fn matmul_many(
        &self,
        pool: &Pool,
        act: &Activation,
        jobs: &mut [(QWeight<'_>, &mut [f32])],
    ) -> Result<()> {
        self.matmul_many_then(pool, act, jobs, |_, _| {})
    }

    /// [`Kernels::matmul_many`], then each thread calls `then(rows, outputs)` once its own
    /// products are done, with its share of the first matrix's rows (the same share of every
    /// matrix with as many rows) and the outputs' base pointers (`out_j[c * rows_j + r]`):
    /// elementwise work on those columns needs no extra round trip through the pool. `then`
    /// may touch only the columns in `rows` of each output.
    pub(crate) fn matmul_many_then(
        &self,
        pool: &Pool,
        act: &Activation,
        jobs: &mut [(QWeight<'_>, &mut [f32])],
        then: impl Fn(Range<usize>, &[*mut f32]) + Sync,
    ) -> Result<()> {
        if jobs.len() > MAX_SHARED_MATMULS {
            return Err(Error::invalid(format!(
                "matmul_many: {} matrices, at most {MAX_SHARED_MATMULS}",
                jobs.len()
            )));
        }
        type Plan<'p> = (QWeight<'p>, OutPtr, usize);
        let mut plans: [Option<Plan<'_>>; MAX_SHARED_MATMULS] = [None; MAX_SHARED_MATMULS];
        let parts = pool.threads().max(1);
        for (slot, (w, out)) in plans.iter_mut().zip(jobs.iter_mut()) {
            if w.cols() != act.cols || out.len() != act.m * w.rows() {
                return Err(Error::invalid(format!(
                    "matmul_many: a {} x {} matrix against {} rows of {} into {} outputs",
                    w.rows(),
                    w.cols(),
                    act.m,
                    act.cols,
                    out.len()
                )));
            }
            let ready = if w.reads_q8_1() {
                act.ready_q4_1
            } else {
                act.ready_q8_0
            };
            if ready != Some(self.layout_for(w)) {
                return Err(Error::invalid(
                    "matmul_many: the activation was not quantized for this matrix",
                ));
            }
            if w.is_packed() {
                self.packed_kernels()?;
            }
            let per = w.rows().div_ceil(ROW_GRAIN).div_ceil(parts) * ROW_GRAIN;
            let ptr = OutPtr {
                ptr: out.as_mut_ptr(),
                ld: w.rows(),
            };
            *slot = Some((*w, ptr, per));
        }
        let count = jobs.len();
        let (q4, q8) = (act.for_q4_1.as_ref(), act.for_q8_0.as_ref());
        pool.run(parts, |i| {
            for (w, out, per) in plans.iter().flatten() {
                let n = w.rows();
                let rows = (i * per).min(n)..((i + 1) * per).min(n);
                if rows.is_empty() {
                    continue;
                }
                // SAFETY: the table exists only on a CPU with its instruction set; each part's
                // row range is disjoint from the others' and inside the matrix; every output
                // holds `m * rows` floats (checked above) and outlives `run`; the activation was
                // prepared for this table's layouts with the matrix's blocks per row (same cols).
                unsafe {
                    match (w, q4, q8) {
                        (QWeight::Q4_1(w), Some(a), _) => (self.table.gemm_q4_1)(w, a, rows, *out),
                        (QWeight::Q8_0(w), _, Some(a)) => (self.table.gemm_q8_0)(w, a, rows, *out),
                        (QWeight::Q4_1x16(w), Some(a), _) => {
                            if let Some(k) = &self.table.packed {
                                (k.q4_1)(w, a, rows, *out)
                            }
                        }
                        (QWeight::Q8_0x16(w), _, Some(a)) => {
                            if let Some(k) = &self.table.packed {
                                (k.q8_0)(w, a, rows, *out)
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some((w, _, per)) = &plans[0] {
                let n = w.rows();
                let outs = plans.map(|p| p.map_or(std::ptr::null_mut(), |(_, o, _)| o.ptr));
                then((i * per).min(n)..((i + 1) * per).min(n), &outs[..count]);
            }
        });
        Ok(())
    }
}
