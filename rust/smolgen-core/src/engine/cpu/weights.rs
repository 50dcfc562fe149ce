//! The CPU engine's weights: where each matrix lies in its mapped file (GGUF or safetensors),
//! and its repacked copy on paths whose kernels have a 16-row layout.

use std::sync::{Arc, Mutex};

use super::scratch::Scratch;
use super::CpuEngine;
use crate::error::{Error, Result};
use crate::kernels::{exceeds_last_level_cache, PackedMatrix, Pool, QWeight, WeightKind};
use crate::load::config::Config;
use crate::load::weights::{TensorBytes, Weights};

/// A matrix where its file lies in memory.
#[derive(Clone)]
pub(super) struct MatrixRef {
    pub(super) kind: &'static WeightKind,
    pub(super) bytes: Arc<dyn TensorBytes>,
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

impl std::fmt::Debug for MatrixRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixRef")
            .field("kind", &self.kind)
            .field("origin", &self.bytes.origin())
            .field("offset", &self.offset)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

/// A matrix the kernels multiply: its bytes in the mapped file, or a copy repacked for the
/// kernels' 16-row layout ([`PackedMatrix`]) on paths that have it.
#[derive(Debug)]
pub(super) struct Matrix {
    pub(super) file: MatrixRef,
    pub(super) packed: Option<PackedMatrix>,
}

pub(super) struct LayerWeights {
    pub(super) attn_norm: Vec<f32>,
    pub(super) q: Matrix,
    pub(super) k: Matrix,
    pub(super) v: Matrix,
    pub(super) o: Matrix,
    pub(super) ffn_norm: Vec<f32>,
    pub(super) gate: Matrix,
    pub(super) up: Matrix,
    pub(super) down: Matrix,
}

impl CpuEngine {
    /// Whether every matrix of these weights is of a type the kernels cover (else candle runs
    /// them).
    pub fn supports(weights: &Weights, cfg: &Config) -> bool {
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..cfg.num_layers {
            for part in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                names.push(format!("blk.{i}.{part}.weight"));
            }
        }
        if weights.contains("output.weight") {
            names.push("output.weight".into());
        }
        names.iter().all(|n| {
            weights.stored_type(n).is_some_and(|(id, shape)| {
                WeightKind::for_ggml_type(id)
                    .is_some_and(|k| shape.len() == 2 && shape[1].is_multiple_of(k.block_elements))
            })
        })
    }

    /// `threads`: the kernel pool's size, 0 for one per core.
    pub fn load(cfg: Config, weights: &mut Weights, threads: usize) -> Result<Self> {
        let gguf = weights.gguf_file().cloned();
        let (h, kv, hd, ff) = (
            cfg.hidden_size,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        );
        let q_out = cfg.num_heads * hd;
        let kernels = crate::settings::Settings::get()?.kernels()?;
        let locate = |weights: &mut Weights, name: &str, rows: usize, cols: usize| {
            let raw = weights.raw_matrix(name, (rows, cols))?;
            let kind = WeightKind::for_ggml_type(raw.ggml_type).ok_or_else(|| {
                Error::unsupported(format!(
                    "the CPU kernels do not multiply ggml type {} matrices ({name})",
                    raw.ggml_type
                ))
            })?;
            let m = MatrixRef {
                kind,
                bytes: raw.bytes,
                offset: raw.offset,
                len: raw.len,
                rows,
                cols,
            };
            view(&m)?; // fails here, once, if the bytes are not whole blocks
            Ok::<_, Error>(m)
        };
        // Repacks a matrix for kernels with a 16-row layout. The file's copy then leaves resident
        // memory; where it is also the embedding table, a lookup faults back only the pages of
        // the rows it reads.
        let all_packed = std::cell::Cell::new(true);
        let prepare = |m: MatrixRef| -> Result<Matrix> {
            let packed = match m.kind.repack {
                Some(repack) if kernels.packs(m.kind) => Some((repack.pack)(&view(&m)?)?),
                _ => None,
            };
            if packed.is_some() {
                m.bytes.release(m.offset, m.len);
            } else {
                all_packed.set(false);
            }
            Ok(Matrix { file: m, packed })
        };
        let matrix = |weights: &mut Weights, name: &str, rows: usize, cols: usize| {
            prepare(locate(weights, name, rows, cols)?)
        };
        let vector = |weights: &mut Weights, name: &str| -> Result<Vec<f32>> {
            Ok(weights.vector(name, h)?.to_vec1::<f32>()?)
        };
        let embedding = locate(weights, "token_embd.weight", cfg.vocab_size, h)?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            layers.push(LayerWeights {
                attn_norm: vector(weights, &name("attn_norm"))?,
                q: matrix(weights, &name("attn_q"), q_out, h)?,
                k: matrix(weights, &name("attn_k"), kv * hd, h)?,
                v: matrix(weights, &name("attn_v"), kv * hd, h)?,
                o: matrix(weights, &name("attn_output"), h, q_out)?,
                ffn_norm: vector(weights, &name("ffn_norm"))?,
                gate: matrix(weights, &name("ffn_gate"), ff, h)?,
                up: matrix(weights, &name("ffn_up"), ff, h)?,
                down: matrix(weights, &name("ffn_down"), h, ff)?,
            });
        }
        let tied_embeddings = !weights.contains("output.weight");
        let output = if tied_embeddings {
            prepare(embedding.clone())?
        } else {
            matrix(weights, "output.weight", cfg.vocab_size, h)?
        };
        let output_norm = vector(weights, "output_norm.weight")?;
        if let (true, Some(file)) = (all_packed.get(), &gguf) {
            // Every matrix is a packed copy and the norms are copied: what the file still has
            // resident (norm pages, the header) is read again only if something asks.
            file.release(0, file.size());
        }
        let pool = Pool::new(threads)?;
        let weight_bytes: usize = layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .chain([&output])
            .map(|m| m.file.len)
            .sum();
        let rope_theta_scale = (cfg.rope_theta as f32).powf(-2.0 / hd as f32);
        Ok(CpuEngine {
            cfg,
            embedding,
            layers,
            output_norm,
            output,
            tied_embeddings,
            kernels,
            pool,
            cold_weights: exceeds_last_level_cache(weight_bytes),
            rope_theta_scale,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    pub(super) fn weight<'a>(&'a self, m: &'a Matrix) -> Result<QWeight<'a>> {
        let w = match &m.packed {
            Some(p) => p.weight(),
            None => view(&m.file)?,
        };
        Ok(w.cold(self.cold_weights))
    }
}

/// A matrix's blocks, viewed where its file lies.
pub(super) fn view(m: &MatrixRef) -> Result<QWeight<'_>> {
    let bytes = m.bytes.bytes(m.offset, m.len).ok_or_else(|| {
        Error::malformed(
            m.bytes.origin(),
            format!("tensor data at {}+{} is outside the file", m.offset, m.len),
        )
    })?;
    QWeight::from_bytes(m.kind, bytes, m.rows, m.cols)
}
