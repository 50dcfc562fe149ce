//! What the float matrix types (F32, F16, BF16) share: each is multiplied against f32
//! activations ([`BlockF32`]), in one of two fixed orders, so the same bits come out whatever
//! the tile shape or thread count:
//!
//! * Row-major (the file's layout; the scalar reference and NEON): sixteen lane sums, lane `l`
//!   taking elements `16s + l` by fused multiply-add with `s` in order along the row, then the
//!   lanes folded in halves (`l + 8`, then `+ 4`, `+ 2`, `+ 1`), which is what a 512-bit
//!   register, two 256-bit ones or four 128-bit ones reduce to.
//! * Repacked 16 rows at a time (the x86-64 paths): element after element of a row, the 16 rows'
//!   values side by side, so one register holds an element of 16 rows and each output is one
//!   fused multiply-add chain along its row ([`float_packed_step`]): a broadcast activation and
//!   one FMA serve 16 outputs, and AVX2 and AVX-512 give the same bits.

use super::BlockF32;
use crate::kernels::blocks::{blocks_as_bytes, cast_blocks, Block, QK};
use crate::kernels::matmul::QWeight;
use crate::kernels::packed::GROUP;
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

/// Lines per group of 16 rows of `nb` blocks of `W` in the 16-row layout: exactly their bytes.
pub(crate) const fn float_group_lines<W: Block>(nb: usize) -> usize {
    nb * W::SIZE * GROUP / 64
}

/// Stores `blk`, block `b` of a group's row `i`: value `k` goes to element `32b + k`'s slot `i`.
pub(crate) fn put_float<W: Block>(group: &mut [u8], b: usize, i: usize, blk: &W) {
    let vb = W::SIZE / QK;
    let bytes = blocks_as_bytes(std::slice::from_ref(blk));
    for (k, v) in bytes.chunks_exact(vb).enumerate() {
        let at = ((b * QK + k) * GROUP + i) * vb;
        group[at..at + vb].copy_from_slice(v);
    }
}

/// Stores a whole row `i` of a group: value after value into slot `i` of its element, one
/// fixed-size copy each (packing a large float matrix is this loop).
pub(crate) fn put_float_row<W: Block>(group: &mut [u8], i: usize, row: &[W]) {
    let vb = W::SIZE / QK;
    let values = blocks_as_bytes(row).chunks_exact(vb);
    for (slot, v) in group.chunks_exact_mut(GROUP * vb).zip(values) {
        slot[i * vb..(i + 1) * vb].copy_from_slice(v);
    }
}

/// Block `b` of a group's row `i`, back from the 16-row layout.
pub(crate) fn get_float<W: Block + Default>(group: &[u8], b: usize, i: usize) -> W {
    let vb = W::SIZE / QK;
    let mut bytes = vec![0u8; W::SIZE];
    for (k, v) in bytes.chunks_exact_mut(vb).enumerate() {
        let at = ((b * QK + k) * GROUP + i) * vb;
        v.copy_from_slice(&group[at..at + vb]);
    }
    match cast_blocks::<W>(&bytes) {
        Ok([blk]) => *blk,
        _ => W::default(),
    }
}

/// The 16-row kernels' arithmetic for one block: one FMA chain, element after element.
pub(crate) fn float_packed_step<W: FloatBlock>(acc: f32, w: &W, a: &BlockF32) -> f32 {
    (0..QK).fold(acc, |acc, i| w.value(i).mul_add(a.value(i), acc))
}

/// Registers a float block type: its [`WeightBlock`](super::WeightBlock) impl (values written by
/// `$encode`, f32 to the type's little-endian bytes; the row-major kernel `$gemm` and the 16-row
/// kernel `$packed` of each x86 path, NEON's `$gemm`, the scalar reference elsewhere) and its
/// [`Repack`](crate::kernels::packed::Repack) impl (the 16-row layout of this module).
macro_rules! float_weight {
    ($block:ty, ggml_type: $id:expr, encode: $encode:expr, kernels: $gemm:ident, $packed:ident) => {
        impl $crate::kernels::types::WeightBlock for $block {
            type Activation = $crate::kernels::types::BlockF32;
            const KIND: &'static $crate::kernels::types::WeightKind =
                &$crate::kernels::types::WeightKind::repacked::<Self>();
            const GGML_TYPE: u32 = $id;
            fn dequantize(&self, out: &mut [f32]) {
                use $crate::kernels::types::float::FloatBlock;
                for (i, o) in out.iter_mut().enumerate().take($crate::kernels::blocks::QK) {
                    *o = self.value(i);
                }
            }
            fn quantize(x: &[f32]) -> Self {
                let mut b = <$block>::default();
                for (v, &x) in b.v.iter_mut().zip(x) {
                    *v = $encode(x);
                }
                b
            }
            fn reference_dot(w: &[Self], a: &[$crate::kernels::types::BlockF32]) -> f32 {
                $crate::kernels::types::float::float_reference_dot(w, a)
            }
            fn kernels(isa: $crate::kernels::dispatch::Isa) -> $crate::kernels::types::TypeKernels {
                use $crate::kernels::dispatch::Isa;
                use $crate::kernels::prepared::Layout;
                use $crate::kernels::types::TypeKernels;
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 | Isa::AvxVnni => {
                        use $crate::kernels::x86::avx2;
                        TypeKernels::row_major(avx2::$gemm, Layout::Natural)
                            .with_packed(avx2::$packed)
                    }
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512Vnni => {
                        use $crate::kernels::x86::avx512;
                        TypeKernels::row_major(avx512::$gemm, Layout::Natural)
                            .with_packed(avx512::$packed)
                    }
                    #[cfg(target_arch = "aarch64")]
                    Isa::Neon => {
                        TypeKernels::row_major($crate::kernels::arm::neon::$gemm, Layout::Natural)
                    }
                    _ => TypeKernels::row_major(
                        $crate::kernels::types::float::gemm_float_scalar::<Self>,
                        Layout::Natural,
                    ),
                }
            }
        }

        impl $crate::kernels::packed::Repack for $block {
            fn group_lines(nb: usize) -> usize {
                $crate::kernels::types::float::float_group_lines::<Self>(nb)
            }
            fn put(group: &mut [u8], _nb: usize, b: usize, i: usize, blk: &Self) {
                $crate::kernels::types::float::put_float(group, b, i, blk)
            }
            fn put_row(group: &mut [u8], _nb: usize, i: usize, row: &[Self]) {
                $crate::kernels::types::float::put_float_row(group, i, row)
            }
            fn get(group: &[u8], _nb: usize, b: usize, i: usize) -> Self {
                $crate::kernels::types::float::get_float(group, b, i)
            }
            fn packed_step(acc: f32, x: &Self, a: &[$crate::kernels::types::BlockF32]) -> f32 {
                $crate::kernels::types::float::float_packed_step(acc, x, &a[0])
            }
        }
    };
}
pub(crate) use float_weight;
