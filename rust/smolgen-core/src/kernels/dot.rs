//! The scalar walk every row-at-a-time gemm shares: the scalar reference of each block type
//! (in [`super::types`]) and the NEON kernels are written with it.

/// Defines a gemm entry point (see `GemmFn`) for `$block` weights that takes one weight row x
/// one activation row at a time, block after block in order: `$row` sets up activation row `$c`
/// of `$a` (bound to `$row_pat`), `$term` is block `$b` (`$x`)'s share of the sum. The scalar
/// and NEON paths share this walk; a new weight type costs its two expressions.
macro_rules! row_by_row_gemm {
    (
        $(#[$attr:meta])* $name:ident, $block:ty,
        |$a:ident, $c:ident| $row_pat:pat = $row:expr,
        |$x:ident, $b:ident| $term:expr
    ) => {
        /// # Safety
        /// See `GemmFn`: `w` is a row-major matrix of this block type, `a` in the natural
        /// layout.
        $(#[$attr])*
        pub(crate) unsafe fn $name(
            w: &$crate::kernels::matmul::QWeight<'_>,
            $a: &$crate::kernels::prepared::Prepared,
            rows: std::ops::Range<usize>,
            out: $crate::kernels::prepared::OutPtr,
        ) {
            let (blocks, nb) = (w.blocks::<$block>(), w.row_blocks());
            for $c in 0..$a.m {
                let $row_pat = $row;
                for r in rows.clone() {
                    let mut sumf = 0f32;
                    for ($b, $x) in blocks[r * nb..(r + 1) * nb].iter().enumerate() {
                        sumf += $term;
                    }
                    // SAFETY: the caller's contract on `rows` and `out`.
                    unsafe { out.write($c, r, sumf) };
                }
            }
        }
    };
}
pub(crate) use row_by_row_gemm;
