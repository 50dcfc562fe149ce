//! The Llama forward pass on our own CPU kernels, on the weights where their file (GGUF or
//! safetensors) lies in memory.
//!
//! Nothing is expanded at load. Where the kernels have a 16-row layout for a matrix's type
//! (x86-64), the matrix is repacked into it once ([`crate::kernels::PackedMatrix`], as many
//! bytes as the file's blocks) and its pages of the file are dropped from memory; every other
//! matrix is a view of the memory-mapped file's blocks. A pass over `m` rows (the tokens of one
//! or several sequences) runs, per layer:
//!
//! 1. RMSNorm, then the activation is quantized once and shared by Q, K and V, which run as one
//!    job of the thread pool (each thread takes its share of all three matrices' rows);
//! 2. RoPE in place, keys and values written straight into each sequence's cache;
//! 3. attention row by row over the cache ([`crate::engine::attention`]), threads split by (sequence, head);
//! 4. the output projection and the residual;
//! 5. RMSNorm, one quantization shared by gate and up (one job), SiLU(gate) * up, down, residual.
//!
//! Every buffer lives in a `Scratch` that grows to the largest pass and is reused, so a decode
//! step allocates nothing but its logits. Norms and RoPE follow ggml's arithmetic (f64 sum of
//! squares; `theta *= theta_scale` per pair) so the numbers stay close to llama.cpp's.

mod attention;
mod feed_forward;
mod norm;
mod rope;
mod scratch;
mod weights;

use std::sync::Mutex;

use crate::cache::kv::KvCache;
use crate::engine::attention::Heads;
use crate::engine::LogitsFor;
use crate::error::{Error, Result};
use crate::kernels::{Kernels, Pool};
use crate::load::config::Config;
use norm::rms_norm;
use scratch::{sized, Scratch};
use weights::{view, LayerWeights, Matrix, MatrixRef};

/// One sequence's part of a batched pass.
pub struct SeqStep<'a> {
    /// Tokens to run after what the cache holds (at least one).
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub which: LogitsFor,
}

pub struct CpuEngine {
    cfg: Config,
    /// Looked up row by row, from the file unless tied to a packed `output`.
    embedding: MatrixRef,
    layers: Vec<LayerWeights>,
    output_norm: Vec<f32>,
    output: Matrix,
    pub tied_embeddings: bool,
    kernels: Kernels,
    pool: Pool,
    /// Whether the matrices exceed the last-level cache, so that every token reads them from
    /// memory: the kernels then prefetch them into L2 (see `QWeight::cold`).
    cold_weights: bool,
    /// `theta_base^(-2/head_dim)`, the ratio between consecutive rotary frequencies.
    rope_theta_scale: f32,
    scratch: Mutex<Scratch>,
}

impl std::fmt::Debug for CpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuEngine")
            .field("kernels", &self.kernels)
            .field("threads", &self.pool.threads())
            .finish()
    }
}

impl CpuEngine {
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn heads(&self) -> Heads {
        Heads {
            query: self.cfg.num_heads,
            kv: self.cfg.num_kv_heads,
            dim: self.cfg.head_dim,
        }
    }

    /// One pass over several sequences (token ids already checked against the vocabulary and
    /// the context window). Returns each sequence's logits: `[vocab]` (`Last`) or
    /// `[tokens, vocab]` (`All`). With `attention`, the softmax weights of the listed layers for
    /// the first sequence are pushed in layer order, each `[heads, tokens, cached + tokens]`.
    pub fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        mut attention: Option<(&[usize], &mut Vec<Vec<f32>>)>,
    ) -> Result<Vec<Vec<f32>>> {
        if attention.is_some() && seqs.len() > 1 {
            return Err(Error::invalid(
                "attention weights are kept for a pass over one sequence only",
            ));
        }
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        s.plan(seqs)?;
        self.embed(seqs, s)?;
        self.rope_tables(s, s.rows);
        for (layer, lw) in self.layers.iter().enumerate() {
            let keep = match &mut attention {
                Some((layers, out)) if layers.contains(&layer) => Some(&mut **out),
                _ => None,
            };
            self.attention_block(seqs, s, layer, lw, keep)?;
            self.feed_forward_block(s, lw)?;
        }
        for (seq, &(_, _, _, t)) in seqs.iter_mut().zip(&s.spans) {
            seq.cache.advance(t);
        }
        self.logits(seqs, s)
    }

    /// Every row's token embedding into `s.x`, dequantized row by row from the table's blocks:
    /// the packed LM head when it is the same matrix (the file's pages then stay out of
    /// memory), else the file.
    fn embed(&self, seqs: &[SeqStep<'_>], s: &mut Scratch) -> Result<()> {
        let h = self.cfg.hidden_size;
        let table = match (&self.output.packed, self.tied_embeddings) {
            (Some(packed), true) => packed.weight(),
            _ => view(&self.embedding)?,
        };
        let x = sized(&mut s.x, s.rows * h);
        for (row, &id) in seqs.iter().flat_map(|s| s.tokens).enumerate() {
            table.dequantize_row(id as usize, &mut x[row * h..][..h])?;
        }
        Ok(())
    }

    /// The final norm and the LM head, for the rows that want logits; split per sequence.
    fn logits(&self, seqs: &[SeqStep<'_>], s: &mut Scratch) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let h = cfg.hidden_size;
        let mut rows = Vec::new();
        for (seq, &(_, first, _, t)) in seqs.iter().zip(&s.spans) {
            match seq.which {
                LogitsFor::Last => rows.push(first + t - 1),
                LogitsFor::All => rows.extend(first..first + t),
            }
        }
        let r = rows.len();
        let picked = sized(&mut s.proj, r * h);
        for (dst, &row) in picked.chunks_exact_mut(h).zip(&rows) {
            dst.copy_from_slice(&s.x[row * h..][..h]);
        }
        rms_norm(
            &s.proj[..r * h],
            &self.output_norm,
            cfg.rms_norm_eps,
            sized(&mut s.normed, r * h),
        );
        let head = self.weight(&self.output)?;
        self.kernels
            .quantize_activation(&s.normed[..r * h], h, &[head], &mut s.act)?;
        let mut logits = vec![0f32; r * cfg.vocab_size];
        self.kernels
            .matmul_many(&self.pool, &s.act, &mut [(head, &mut logits[..])])?;
        if seqs.len() == 1 {
            return Ok(vec![logits]);
        }
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for seq in seqs.iter() {
            let n = match seq.which {
                LogitsFor::Last => 1,
                LogitsFor::All => seq.tokens.len(),
            } * cfg.vocab_size;
            out.push(logits[at..at + n].to_vec());
            at += n;
        }
        Ok(out)
    }
}
