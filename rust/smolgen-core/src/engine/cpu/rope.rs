//! Rotary position embeddings (Su et al. 2021, "RoFormer"), applied in place to queries and
//! keys, in the pair layout the weights were stored for ([`RopeLayout`]).

use super::scratch::{sized, Scratch};
use super::CpuEngine;
use crate::load::config::RopeLayout;

impl CpuEngine {
    /// cos and sin for every row's position, `[m, head_dim / 2]`, as ggml computes them:
    /// `theta` starts at the position and is multiplied by `theta_scale` for each pair.
    pub(super) fn rope_tables(&self, s: &mut Scratch, m: usize) {
        let half = self.cfg.head_dim / 2;
        let cos = sized(&mut s.cos, m * half);
        let sin = sized(&mut s.sin, m * half);
        for &(_, first, pos, t) in &s.spans {
            for i in 0..t {
                let row = (first + i) * half;
                let mut theta = (pos + i) as f32;
                for j in 0..half {
                    cos[row + j] = theta.cos();
                    sin[row + j] = theta.sin();
                    theta *= self.rope_theta_scale;
                }
            }
        }
    }

    /// Rotates every head of every row in place (`x`: `[m, heads * head_dim]`).
    pub(super) fn rope(&self, x: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
        let hd = self.cfg.head_dim;
        let half = hd / 2;
        for (row, xr) in x.chunks_exact_mut(heads * hd).enumerate() {
            let (c, s) = (&cos[row * half..][..half], &sin[row * half..][..half]);
            for head in xr.chunks_exact_mut(hd) {
                match self.cfg.rope_layout {
                    RopeLayout::Interleaved => {
                        for (j, pair) in head.chunks_exact_mut(2).enumerate() {
                            let (x0, x1) = (pair[0], pair[1]);
                            pair[0] = x0 * c[j] - x1 * s[j];
                            pair[1] = x0 * s[j] + x1 * c[j];
                        }
                    }
                    RopeLayout::HalfSplit => {
                        let (lo, hi) = head.split_at_mut(half);
                        for j in 0..half {
                            let (x0, x1) = (lo[j], hi[j]);
                            lo[j] = x0 * c[j] - x1 * s[j];
                            hi[j] = x0 * s[j] + x1 * c[j];
                        }
                    }
                }
            }
        }
    }
}
