//! The feed-forward block: SiLU-gated MLP (Shazeer 2020, "GLU Variants Improve Transformer").

use super::norm::{add_in_place, rms_norm};
use super::scratch::{sized, Scratch};
use super::weights::LayerWeights;
use super::CpuEngine;
use crate::error::Result;
use crate::fastmath::silu_mul;

impl CpuEngine {
    /// `x += down(silu(gate(norm(x))) * up(norm(x)))`, gate and up from one shared
    /// quantization in one job of the pool.
    pub(super) fn feed_forward_block(&self, s: &mut Scratch, lw: &LayerWeights) -> Result<()> {
        let cfg = &self.cfg;
        let (m, h, ff) = (s.rows, cfg.hidden_size, cfg.intermediate_size);
        rms_norm(
            &s.x[..m * h],
            &lw.ffn_norm,
            cfg.rms_norm_eps,
            sized(&mut s.normed, m * h),
        );
        let (gate, up, down) = (
            self.weight(&lw.gate)?,
            self.weight(&lw.up)?,
            self.weight(&lw.down)?,
        );
        self.kernels
            .quantize_activation(&s.normed[..m * h], h, &[gate, up], &mut s.act)?;
        // Each thread applies SiLU(gate) * up to the columns it has just computed.
        let silu_mul_rows = |rows: std::ops::Range<usize>, outs: &[*mut f32]| {
            for c in 0..m {
                // SAFETY: `outs` are the gate and up outputs (m x ff each); the kernels have
                // finished this thread's share, columns `rows` of every activation row,
                // which no other thread touches.
                let (g, u) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(
                            outs[0].add(c * ff + rows.start),
                            rows.len(),
                        ),
                        std::slice::from_raw_parts(outs[1].add(c * ff + rows.start), rows.len()),
                    )
                };
                silu_mul(g, u);
            }
        };
        self.kernels.matmul_many_then(
            &self.pool,
            &s.act,
            &mut [
                (gate, sized(&mut s.gate, m * ff)),
                (up, sized(&mut s.up, m * ff)),
            ],
            silu_mul_rows,
        )?;
        self.kernels
            .quantize_activation(&s.gate[..m * ff], ff, &[down], &mut s.act)?;
        let proj = sized(&mut s.proj, m * h);
        self.kernels
            .matmul_many(&self.pool, &s.act, &mut [(down, &mut *proj)])?;
        add_in_place(&mut s.x[..m * h], proj);
        Ok(())
    }
}
