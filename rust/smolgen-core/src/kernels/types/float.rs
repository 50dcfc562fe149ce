//! What the float matrix types (F32, F16, BF16) share: each is multiplied against f32
//! activations ([`BlockF32`]) in one canonical order that every path keeps, so the same bits
//! come out of every x86 path, any tile shape and any thread count: sixteen lane sums, lane `l`
//! taking elements `16s + l` by fused multiply-add with `s` in order along the row, then the
//! lanes folded in halves (`l + 8`, then `+ 4`, `+ 2`, `+ 1`), which is what a 512-bit register,
//! two 256-bit ones or four 128-bit ones reduce to.

use super::BlockF32;
use crate::kernels::blocks::{Block, QK};
use crate::kernels::matmul::QWeight;
use crate::kernels::prepared::{OutPtr, Prepared};

/// Lane sums per dot product.
pub(crate) const LANES: usize = 16;

/// A float block type: 32 values, each read on its own.
pub(crate) trait FloatBlock: Block {
    /// Element `i` (0..32) as f32, exactly.
    fn value(&self, i: usize) -> f32;
}

/// The lanes folded in halves: `l + 8`, then `l + 4`, `l + 2`, `l + 1`.
#[inline(always)]
pub(crate) fn fold_lanes(mut v: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for l in 0..half {
            v[l] += v[l + half];
        }
        half /= 2;
    }
    v[0]
}

/// The canonical dot of a run of float blocks with as many f32 values.
pub(crate) fn float_dot<W: FloatBlock>(w: &[W], x: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    for (blk, xs) in w.iter().zip(x.chunks_exact(QK)) {
        for (i, &a) in xs.iter().enumerate() {
            let l = i % LANES;
            lanes[l] = blk.value(i).mul_add(a, lanes[l]);
        }
    }
    fold_lanes(lanes)
}

/// [`float_dot`] against activation blocks.
pub(crate) fn float_reference_dot<W: FloatBlock>(w: &[W], a: &[BlockF32]) -> f32 {
    let x: Vec<f32> = a.iter().flat_map(|b| (0..QK).map(|i| b.value(i))).collect();
    float_dot(w, &x)
}

/// The scalar gemm of a float type: [`float_dot`] per output.
///
/// # Safety
/// See `GemmFn`: `w` is a row-major matrix of `W`, `a` holds f32 activations.
pub(crate) unsafe fn gemm_float_scalar<W: FloatBlock>(
    w: &QWeight<'_>,
    a: &Prepared,
    rows: std::ops::Range<usize>,
    out: OutPtr,
) {
    let (blocks, nb) = (w.blocks::<W>(), w.row_blocks());
    for c in 0..a.m {
        let x = a.floats(c);
        for r in rows.clone() {
            let v = float_dot(&blocks[r * nb..(r + 1) * nb], x);
            // SAFETY: the caller's contract on `rows` and `out`.
            unsafe { out.write(c, r, v) };
        }
    }
}
