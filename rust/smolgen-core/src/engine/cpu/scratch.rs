//! The buffers of one pass, reused from pass to pass so that a decode step allocates nothing
//! but its logits.

use std::sync::Mutex;

use super::SeqStep;
use crate::engine::attention::UnitScratch;
use crate::error::{Error, Result};
use crate::kernels::Activation;

/// Reusable buffers for one pass; each grows to the largest pass seen.
#[derive(Default)]
pub(super) struct Scratch {
    /// Rows of the current pass: the tokens of every sequence.
    pub(super) rows: usize,
    pub(super) x: Vec<f32>,
    pub(super) normed: Vec<f32>,
    pub(super) q: Vec<f32>,
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) attn: Vec<f32>,
    pub(super) proj: Vec<f32>,
    pub(super) gate: Vec<f32>,
    pub(super) up: Vec<f32>,
    pub(super) cos: Vec<f32>,
    pub(super) sin: Vec<f32>,
    pub(super) act: Activation,
    /// Attention's buffers, one per thread.
    pub(super) units: Vec<Mutex<UnitScratch>>,
    /// Attention's partials of a decode step split along the history.
    pub(super) partials: Vec<f32>,
    /// (sequence, first row, position of that row, rows).
    pub(super) spans: Vec<(usize, usize, usize, usize)>,
}

pub(super) fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

impl Scratch {
    /// Lays out a pass over `seqs`: each sequence's run of rows ([`Scratch::spans`]) and the
    /// total ([`Scratch::rows`]).
    pub(super) fn plan(&mut self, seqs: &[SeqStep<'_>]) -> Result<()> {
        self.spans.clear();
        let mut m = 0;
        for (i, seq) in seqs.iter().enumerate() {
            if seq.tokens.is_empty() {
                return Err(Error::invalid(
                    "forward needs at least one token per sequence",
                ));
            }
            self.spans.push((i, m, seq.cache.len(), seq.tokens.len()));
            m += seq.tokens.len();
        }
        if m == 0 {
            return Err(Error::invalid("forward needs at least one sequence"));
        }
        self.rows = m;
        Ok(())
    }
}
