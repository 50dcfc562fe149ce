//! How the x86-64 gemms walk a matrix: tiles of weight rows x activation rows sized for
//! registers, activation rows taken `MC` at a time so they stay in L1, and software prefetch
//! where the weights stream from memory once (decode, small batches).
//!
//! The prefetch hint follows where the weights come from ([`Prefetch`]): while a model's
//! weights fit the last-level cache, prefetching into L1 (`T0`) pays; when they do not and
//! every token reads them from memory, `T0` prefetches hold L1's few fill buffers for a whole
//! memory latency each and stall the loads behind them, so cold weights are prefetched into L2
//! (`T1`) and the L1 prefetcher takes them from there. (1.7B decode, two threads: Q5_1 12.3 ->
//! 16.4 tok/s, Q4_1 16.2 -> 21.3, Q8_0 13.4 -> 14.1, the K-quants within noise; at 135M, whose
//! weights stay in L3, `T1` costs 3-12%.)

use std::ops::Range;

use crate::kernels::packed::{k_scales_at, GROUP, K_SCALE_LINES};
use crate::kernels::prepared::Line;

/// Calls `$f::<NR, NC>(args)` for a run-time tile shape `nr x nc`, both in 1..=4.
macro_rules! dispatch_tile {
    ($f:ident, $nr:expr, $nc:expr, $($arg:expr),* $(,)?) => {
        match ($nr, $nc) {
            (4, 4) => $f::<4, 4>($($arg),*),
            (4, 3) => $f::<4, 3>($($arg),*),
            (4, 2) => $f::<4, 2>($($arg),*),
            (4, _) => $f::<4, 1>($($arg),*),
            (3, 4) => $f::<3, 4>($($arg),*),
            (3, 3) => $f::<3, 3>($($arg),*),
            (3, 2) => $f::<3, 2>($($arg),*),
            (3, _) => $f::<3, 1>($($arg),*),
            (2, 4) => $f::<2, 4>($($arg),*),
            (2, 3) => $f::<2, 3>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, _) => $f::<2, 1>($($arg),*),
            (_, 4) => $f::<1, 4>($($arg),*),
            (_, 3) => $f::<1, 3>($($arg),*),
            (_, 2) => $f::<1, 2>($($arg),*),
            (_, _) => $f::<1, 1>($($arg),*),
        }
    };
}
pub(crate) use dispatch_tile;

/// Activation rows per L1-resident chunk in prefill.
pub(crate) const MC: usize = 16;
/// How far ahead (in weight rows) a tile prefetches weights that stream from memory.
const PREFETCH_ROWS: usize = 8;

/// The tile walk of a SIMD gemm: calls `tile(r0, nr, c0, nc, pf)` over `rows` x `0..m`, with
/// `pf` that tile's software prefetch (for `cold` weights into L2). One activation row
/// (decode) walks `R x 1` tiles; more walk `R x C` tiles `MC` rows at a time. Where the weights
/// stream from memory once (one row, or a batch of up to `MC`), the first column tile of each
/// weight tile prefetches `PREFETCH_ROWS` rows ahead; a longer prefill reuses each weight tile
/// from L1 across column tiles and prefetches nothing.
#[inline(always)]
pub(crate) fn for_each_weight_tile<const R: usize, const C: usize>(
    rows: Range<usize>,
    m: usize,
    row_bytes: usize,
    cold: bool,
    mut tile: impl FnMut(usize, usize, usize, usize, Prefetch),
) {
    let ahead = Prefetch::new(PREFETCH_ROWS * row_bytes, cold);
    if m == 1 {
        for_each_tile::<R, 1>(rows, 1, 1, |r0, nr, c0, nc| tile(r0, nr, c0, nc, ahead));
    } else {
        let streaming = m <= MC;
        for_each_tile::<R, C>(rows, m, MC, |r0, nr, c0, nc| {
            let pf = if streaming && c0 == 0 {
                ahead
            } else {
                Prefetch::NONE
            };
            tile(r0, nr, c0, nc, pf)
        });
    }
}

/// Calls `tile(r0, nr, c0, nc)` over `rows` x `0..m` in tiles of at most `R` x `C`, taking
/// activation rows `mc` at a time (so that chunk stays in L1 while weight rows stream past).
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
const PACKED_PREFETCH_RECORDS: usize = 16;

/// The walk of the 16-row kernels: calls `tile(g, c0, nc, rows, pf)` for every group `g` of
/// `rows` (which starts on a group) and every tile of up to `COLS` activation rows, `MC`
/// activation rows at a time; `rows` is the group's rows inside `rows`, `pf` the tile's
/// prefetch (for `cold` weights into L2). Where weights stream from memory (at most `MC`
/// activation rows), each group's first tile prefetches; otherwise a group is reused from
/// cache.
#[inline(always)]
pub(crate) fn for_each_group_tile<const COLS: usize>(
    rows: Range<usize>,
    m: usize,
    record_lines: usize,
    cold: bool,
    mut tile: impl FnMut(usize, usize, usize, Range<usize>, Prefetch),
) {
    debug_assert!(rows.start.is_multiple_of(GROUP));
    let ahead = Prefetch::new(PACKED_PREFETCH_RECORDS * record_lines * 64, cold);
    let streaming = m <= MC;
    let mut chunk = 0;
    while chunk < m {
        let chunk_end = (chunk + MC).min(m);
        for g in rows.start / GROUP..rows.end.div_ceil(GROUP) {
            let r0 = g * GROUP;
            let mut c0 = chunk;
            while c0 < chunk_end {
                let nc = COLS.min(chunk_end - c0);
                let pf = if streaming && c0 == chunk {
                    ahead
                } else {
                    Prefetch::NONE
                };
                tile(g, c0, nc, r0..rows.end.min(r0 + GROUP), pf);
                c0 += nc;
            }
        }
        chunk = chunk_end;
    }
}

/// A tile's software prefetch of the weights it streams: how many bytes ahead (0: none), and
/// whether into L2 (cold weights, read from memory) or L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Prefetch {
    ahead: usize,
    to_l2: bool,
}

impl Prefetch {
    /// No prefetch: the weights are reused from cache.
    pub(crate) const NONE: Prefetch = Prefetch {
        ahead: 0,
        to_l2: false,
    };

    /// `ahead` bytes ahead, into L2 for `cold` weights, else into L1.
    pub(crate) fn new(ahead: usize, cold: bool) -> Prefetch {
        Prefetch { ahead, to_l2: cold }
    }

    /// Whether the tile prefetches at all.
    #[inline(always)]
    pub(crate) fn is_on(self) -> bool {
        self.ahead != 0
    }

    /// Prefetches the line `self.ahead` bytes past `p` (nothing when off).
    #[inline(always)]
    pub(crate) fn line(self, p: *const u8) {
        if self.is_on() {
            self.line_at(p.wrapping_add(self.ahead));
        }
    }

    /// Prefetches the line at `p` itself, with this hint.
    #[inline(always)]
    fn line_at(self, p: *const u8) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0, _MM_HINT_T1};
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe {
            if self.to_l2 {
                _mm_prefetch::<_MM_HINT_T1>(p.cast())
            } else {
                _mm_prefetch::<_MM_HINT_T0>(p.cast())
            }
        }
    }
}

/// Prefetches the `record_lines` lines `pf.ahead` bytes past `r` (nothing when off).
#[inline(always)]
pub(crate) fn prefetch_record(r: *const u8, pf: Prefetch, record_lines: usize) {
    if pf.is_on() {
        for line in 0..record_lines {
            pf.line(r.wrapping_add(64 * line));
        }
    }
}

/// Where weights stream from memory (`pf` on), prefetches at sub-block `b`, the first of its
/// superblock, the scale lines of the superblock two ahead (past the group's last, the next
/// group's): they lie after the group's records, a stream the records' prefetch misses.
#[inline(always)]
pub(crate) fn prefetch_k_scales(
    rec: *const Line,
    record_lines: usize,
    nb: usize,
    b: usize,
    pf: Prefetch,
) {
    if !pf.is_on() || !b.is_multiple_of(8) {
        return;
    }
    let (supers, ahead) = (nb / 8, b / 8 + 2);
    let line = if ahead < supers {
        k_scales_at(record_lines, nb, 8 * ahead)
    } else {
        // A group is its records, then its scale lines: `k_scales_at(.., nb)` lines.
        k_scales_at(record_lines, nb, nb) + k_scales_at(record_lines, nb, 8 * (ahead - supers))
    };
    // Into L1 even for cold weights: a superblock's few scale lines are wanted whole and at
    // once (into L2, 1.7B K-quant decodes lost 1-5%).
    let pf = Prefetch { to_l2: false, ..pf };
    for l in 0..K_SCALE_LINES {
        pf.line_at(rec.wrapping_add(line + l).cast());
    }
}

/// Calls `$f::<NC>(args)` for a run-time tile width `nc` in `1..=$max` (8 or 4).
macro_rules! dispatch_cols {
    (8, $f:ident, $nc:expr, $($arg:expr),* $(,)?) => {
        match $nc {
            8 => $f::<8>($($arg),*),
            7 => $f::<7>($($arg),*),
            6 => $f::<6>($($arg),*),
            5 => $f::<5>($($arg),*),
            nc => $crate::kernels::x86::walk::dispatch_cols!(4, $f, nc, $($arg),*),
        }
    };
    (4, $f:ident, $nc:expr, $($arg:expr),* $(,)?) => {
        match $nc {
            4 => $f::<4>($($arg),*),
            3 => $f::<3>($($arg),*),
            2 => $f::<2>($($arg),*),
            _ => $f::<1>($($arg),*),
        }
    };
}
pub(crate) use dispatch_cols;

/// Runs `$body` with `$c` bound to each of `0..$n` in turn, unrolled. `$n` is a tile's const
/// count of activation rows (at most 8). LLVM leaves a loop with a large body rolled, and the
/// tile's accumulators then live on the stack: a load and a store around every FMA.
macro_rules! unrolled_cols {
    ($c:ident in $n:expr => $body:block) => {
        $crate::kernels::x86::walk::unrolled_cols!(@ $c, $n, $body, 0 1 2 3 4 5 6 7)
    };
    (@ $c:ident, $n:expr, $body:block, $($k:literal)*) => {{
        const { assert!($n <= 8) };
        $(
            if $k < $n {
                let $c: usize = $k;
                $body
            }
        )*
    }};
}
pub(crate) use unrolled_cols;

/// Defines a row-major gemm entry point (see `GemmFn`) for `$block` weights that walks
/// `$tile::<R, C>` over tiles of at most `$r` weight rows x `$c` activation rows. A new weight
/// type costs its tile, not another copy of the walk.
macro_rules! row_major_gemm {
    ($name:ident, $features:literal, $block:ty, $tile:ident, $r:literal x $c:literal) => {
        /// # Safety
        /// See `GemmFn`: `w` is a row-major matrix of this block type, `a` in the layout the
        /// type registers for this path.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            w: &$crate::kernels::matmul::QWeight<'_>,
            a: &$crate::kernels::prepared::Prepared,
            rows: std::ops::Range<usize>,
            out: $crate::kernels::prepared::OutPtr,
        ) {
            // Weight blocks per row (a K-quant block spans several activation blocks).
            let nb = w.row_blocks();
            let base = w.blocks::<$block>().as_ptr();
            let row_bytes = nb * std::mem::size_of::<$block>();
            $crate::kernels::x86::walk::for_each_weight_tile::<$r, $c>(
                rows,
                a.m,
                row_bytes,
                w.is_cold(),
                |r0, nr, c0, nc, pf| {
                    // SAFETY: the walk stays inside `rows` x `0..m`; the caller's contract.
                    unsafe {
                        $crate::kernels::x86::walk::dispatch_tile!(
                            $tile,
                            nr,
                            nc,
                            base.add(r0 * nb),
                            nb,
                            a,
                            c0,
                            r0,
                            out,
                            pf
                        )
                    }
                },
            );
        }
    };
}
pub(crate) use row_major_gemm;

/// Defines a 16-row gemm entry point (see `GemmFn`) that walks `$tile::<C>` over the groups of
/// a packed matrix, `$cols` activation rows at a time, each group in the row ranges
/// `$parts(rows)` yields (the whole group, or halves for 8-lane registers); the activations
/// have the natural layout.
macro_rules! packed_gemm {
    ($name:ident, $features:literal, $record_lines:expr, $tile:ident, $cols:tt, $parts:path) => {
        /// # Safety
        /// See `GemmFn`: `w` is packed, of the type whose records the tile reads.
        #[target_feature(enable = $features)]
        pub(crate) unsafe fn $name(
            w: &$crate::kernels::matmul::QWeight<'_>,
            a: &$crate::kernels::prepared::Prepared,
            rows: std::ops::Range<usize>,
            out: $crate::kernels::prepared::OutPtr,
        ) {
            $crate::kernels::x86::walk::for_each_group_tile::<$cols>(
                rows,
                a.m,
                $record_lines,
                w.is_cold(),
                |g, c0, nc, rows, pf| {
                    for part in $parts(rows) {
                        // SAFETY: the walk stays inside the matrix's groups and `0..m`; the
                        // caller's contract.
                        unsafe {
                            $crate::kernels::x86::walk::dispatch_cols!(
                                $cols,
                                $tile,
                                nc,
                                w.group(g),
                                a.nb,
                                a,
                                c0,
                                part,
                                out,
                                pf
                            )
                        }
                    }
                },
            );
        }
    };
}
pub(crate) use packed_gemm;

/// A group's rows as one range, for kernels whose registers hold all 16 rows.
#[inline(always)]
pub(crate) fn whole_group(rows: Range<usize>) -> std::iter::Once<Range<usize>> {
    std::iter::once(rows)
}

/// Activation rows per chunk of the float 16-row kernels: a chunk's f32 rows stay in L2 while
/// each run of weight groups is reused across all of them.
pub(crate) const FLOAT_MC: usize = 72;

/// The walk of the float 16-row kernels: calls `tile(g, ng, c0, nc)` over the groups of `rows`
/// (which starts on a group) in runs of `ng` groups and tiles of `nc <= c_max` activation rows,
/// [`FLOAT_MC`] activation rows at a time. A chunk of `n` rows takes runs of up to
/// `group_run(n)` groups (a power of two: more independent FMA chains where there are few
/// activation rows), shorter ones (powers of two) at the end.
#[inline(always)]
pub(crate) fn for_each_group_run(
    rows: Range<usize>,
    m: usize,
    group_run: impl Fn(usize) -> usize,
    c_max: usize,
    mut tile: impl FnMut(usize, usize, usize, usize),
) {
    debug_assert!(rows.start.is_multiple_of(GROUP));
    let groups = rows.start / GROUP..rows.end.div_ceil(GROUP);
    let mut chunk = 0;
    while chunk < m {
        let chunk_end = (chunk + FLOAT_MC).min(m);
        let run = group_run(chunk_end - chunk);
        let mut g = groups.start;
        while g < groups.end {
            let left = (groups.end - g).min(run);
            let ng = 1 << left.ilog2();
            let mut c0 = chunk;
            while c0 < chunk_end {
                let nc = c_max.min(chunk_end - c0);
                tile(g, ng, c0, nc);
                c0 += nc;
            }
            g += ng;
        }
        chunk = chunk_end;
    }
}
