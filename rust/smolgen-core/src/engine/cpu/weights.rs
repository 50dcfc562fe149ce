//! The CPU engine's weights: where each matrix lies in the mapped GGUF file, and its repacked
//! copy on paths whose kernels have a 16-row layout.

use std::sync::Mutex;

use super::scratch::Scratch;
use super::CpuEngine;
use crate::error::{Error, Result};
use crate::kernels::{PackedMatrix, Pool, QWeight, WeightKind};
use crate::load::config::Config;
use crate::load::gguf::{ggml_type_id, GgufFile, TensorInfo};
use crate::load::weights::Weights;

/// A matrix in the mapped file.
#[derive(Debug, Clone)]
pub(super) struct MatrixRef {
    pub(super) kind: &'static WeightKind,
    pub(super) offset: usize,
    pub(super) len: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
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

/// The kernels' record of a tensor's type, if they multiply it.
fn kernel_type(info: &TensorInfo) -> Option<&'static WeightKind> {
    WeightKind::for_ggml_type(ggml_type_id(info.dtype))
}

impl CpuEngine {
    /// Whether every matrix of this GGUF is of a type the kernels cover (else candle runs it).
    pub fn supports(file: &GgufFile, cfg: &Config) -> bool {
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
        if file.tensor_info("output.weight").is_some() {
            names.push("output.weight".into());
        }
        names.iter().all(|n| {
            file.tensor_info(n).is_some_and(|t| {
                kernel_type(t).is_some_and(|k| {
                    t.shape.len() == 2 && t.shape[1].is_multiple_of(k.block_elements)
                })
            })
        })
    }

    /// `threads`: the kernel pool's size, 0 for one per core.
    pub fn load(cfg: Config, weights: &mut Weights, threads: usize) -> Result<Self> {
        let file = weights
            .gguf_file()
            .cloned()
            .ok_or_else(|| Error::invalid("the CPU kernels read GGUF files only"))?;
        let (h, kv, hd, ff) = (
            cfg.hidden_size,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
        );
        let q_out = cfg.num_heads * hd;
        let kernels = crate::settings::Settings::get()?.kernels()?;
        let locate = |weights: &mut Weights, name: &str, rows: usize, cols: usize| {
            let info: TensorInfo = weights.gguf_tensor(name, &[rows, cols])?;
            let kind = kernel_type(&info).ok_or_else(|| {
                Error::Unsupported(format!(
                    "the CPU kernels do not multiply {:?} matrices ({name})",
                    info.dtype
                ))
            })?;
            let m = MatrixRef {
                kind,
                offset: info.offset,
                len: info.size_in_bytes,
                rows,
                cols,
            };
            view(&file, &m)?; // fails here, once, if the bytes are not whole blocks
            Ok::<_, Error>(m)
        };
        // Repacks a matrix for kernels with a 16-row layout. The file's copy then leaves resident
        // memory; where it is also the embedding table, a lookup faults back only the pages of
        // the rows it reads.
        let all_packed = std::cell::Cell::new(true);
        let prepare = |m: MatrixRef| -> Result<Matrix> {
            let packed = match m.kind.repack {
                Some(repack) if kernels.packs(m.kind) => Some((repack.pack)(&view(&file, &m)?)?),
                _ => None,
            };
            if packed.is_some() {
                file.release(m.offset, m.len);
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
        let tied_embeddings = file.tensor_info("output.weight").is_none();
        let output = if tied_embeddings {
            prepare(embedding.clone())?
        } else {
            matrix(weights, "output.weight", cfg.vocab_size, h)?
        };
        let output_norm = vector(weights, "output_norm.weight")?;
        if all_packed.get() {
            // Every matrix is a packed copy and the norms are copied: what the file still has
            // resident (norm pages, the header) is read again only if something asks.
            file.release(0, file.size());
        }
        let pool = Pool::new(threads)?;
        let rope_theta_scale = (cfg.rope_theta as f32).powf(-2.0 / hd as f32);
        Ok(CpuEngine {
            cfg,
            file,
            embedding,
            layers,
            output_norm,
            output,
            tied_embeddings,
            kernels,
            pool,
            rope_theta_scale,
            scratch: Mutex::new(Scratch::default()),
        })
    }

    pub(super) fn weight<'a>(&'a self, m: &'a Matrix) -> Result<QWeight<'a>> {
        match &m.packed {
            Some(p) => Ok(p.weight()),
            None => view(&self.file, &m.file),
        }
    }
}

/// A matrix's blocks, viewed in the mapped file.
pub(super) fn view<'a>(file: &'a GgufFile, m: &MatrixRef) -> Result<QWeight<'a>> {
    let bytes = file.bytes(m.offset, m.len).ok_or_else(|| {
        file.malformed(format!(
            "tensor data at {}+{} is outside the file",
            m.offset, m.len
        ))
    })?;
    QWeight::from_bytes(m.kind, bytes, m.rows, m.cols)
}
