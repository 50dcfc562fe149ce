//! The Llama decoder on candle: any device, any weight type candle reads.
//!
//! Each block: `x += o(attn(rope(q(norm(x))), rope(k(norm(x))), v(norm(x))))`, then
//! `x += down(silu(gate(norm(x))) * up(norm(x)))`. Every matrix is a `Linear` over a candle
//! `QMatMul`, quantized (GGUF) or plain (safetensors); on a GPU a quantized one is expanded at
//! load to f32 or f16 unless `SMOLGEN_GPU_WEIGHTS=quantized` ([`GpuWeights`]), since candle's
//! quantized kernels round the activations to 8 bits. On the CPU, attention is our own
//! row-wise loop over the KV cache ([`crate::engine::attention`]).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::cache::kv::KvCache;
use crate::engine::attention::{causal_attention, Heads};
use crate::engine::LogitsFor;
use crate::error::{Error, Result};
use crate::load::config::{Config, RopeLayout};
use crate::load::weights::Weights;
use crate::settings::GpuWeights;

/// A linear layer without bias: `y = x W^T`, whatever W is stored as.
#[derive(Debug, Clone)]
struct Linear {
    weight: QMatMul,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.weight {
            // A plain f16/bf16 matrix: multiply in its own dtype, hand back the caller's.
            QMatMul::Tensor(w) if w.dtype() != x.dtype() => {
                let w = match x.rank() {
                    3 => w.broadcast_left(x.dim(0)?)?.t()?,
                    _ => w.t()?,
                };
                x.to_dtype(w.dtype())?.matmul(&w)?.to_dtype(x.dtype())?
            }
            m => m.forward(x)?,
        })
    }
}

/// The token-embedding table. A quantized table is looked up row by row, never expanded to f32.
#[derive(Debug, Clone)]
enum Embedding {
    Quantized(Arc<QTensor>),
    Dense(Tensor),
}

impl Embedding {
    /// ids `[b, t]` -> `[b, t, hidden]` in f32.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Embedding::Quantized(q) => q.embedding(ids)?,
            Embedding::Dense(w) => {
                let (b, t) = ids.dims2()?;
                w.index_select(&ids.flatten_all()?, 0)?
                    .reshape((b, t, w.dim(1)?))?
                    .to_dtype(DType::F32)?
            }
        })
    }

    /// The table as [`Weights::table`] hands it out.
    fn new(table: QMatMul) -> Self {
        match table {
            QMatMul::QTensor(q) => Embedding::Quantized(q),
            QMatMul::Tensor(t) | QMatMul::TensorF16(t) => Embedding::Dense(t),
        }
    }

    /// The same table used as the output projection (tied embeddings).
    fn as_linear(&self, dense: Option<DType>) -> Result<Linear> {
        Ok(Linear {
            weight: match self {
                Embedding::Quantized(q) => expanded(QMatMul::from_arc(q.clone())?, dense)?,
                Embedding::Dense(w) => QMatMul::Tensor(w.clone()),
            },
        })
    }
}

fn linear(
    weights: &mut Weights,
    name: &str,
    shape: (usize, usize),
    dense: Option<DType>,
) -> Result<Linear> {
    Ok(Linear {
        weight: expanded(weights.matrix(name, shape)?, dense)?,
    })
}

/// A quantized matrix expanded to `dense` (on its own device), so that the vendor's GEMM
/// multiplies it at full precision; a plain one, or `None`, as it is.
fn expanded(matrix: QMatMul, dense: Option<DType>) -> Result<QMatMul> {
    Ok(match (matrix, dense) {
        (QMatMul::QTensor(q), Some(dtype)) => {
            QMatMul::Tensor(q.dequantize(&q.device())?.to_dtype(dtype)?)
        }
        (matrix, _) => matrix,
    })
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Block {
    attn_norm: Tensor,
    attn: Attention,
    ffn_norm: Tensor,
    mlp: Mlp,
}

pub struct CandleEngine {
    cfg: Config,
    /// How the matrices are held off the CPU (`None` on the CPU).
    pub gpu_weights: Option<GpuWeights>,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: Linear,
    pub tied_embeddings: bool,
    /// `[head_dim / 2]` rotary frequencies.
    inv_freq: Vec<f32>,
    device: Device,
}

impl CandleEngine {
    /// `gpu_weights` says how a quantized file's matrices are held off the CPU (on the CPU
    /// candle multiplies them as stored).
    pub fn load(
        cfg: Config,
        weights: &mut Weights,
        device: &Device,
        gpu_weights: GpuWeights,
    ) -> Result<Self> {
        let gpu_weights = (!device.is_cpu()).then(|| gpu_weights.resolve(cfg.matrix_elements()));
        let dense = match gpu_weights {
            Some(GpuWeights::F16) => Some(DType::F16),
            Some(GpuWeights::F32) => Some(DType::F32),
            _ => None,
        };
        let linear = |weights: &mut Weights, name: &str, shape| linear(weights, name, shape, dense);
        let (h, kv, hd) = (cfg.hidden_size, cfg.num_kv_heads, cfg.head_dim);
        let q_out = cfg.num_heads * hd;
        let embedding = Embedding::new(weights.table("token_embd.weight", (cfg.vocab_size, h))?);
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let name = |part: &str| format!("blk.{i}.{part}.weight");
            blocks.push(Block {
                attn_norm: weights.vector(&name("attn_norm"), h)?,
                attn: Attention {
                    q: linear(weights, &name("attn_q"), (q_out, h))?,
                    k: linear(weights, &name("attn_k"), (kv * hd, h))?,
                    v: linear(weights, &name("attn_v"), (kv * hd, h))?,
                    o: linear(weights, &name("attn_output"), (h, q_out))?,
                },
                ffn_norm: weights.vector(&name("ffn_norm"), h)?,
                mlp: Mlp {
                    gate: linear(weights, &name("ffn_gate"), (cfg.intermediate_size, h))?,
                    up: linear(weights, &name("ffn_up"), (cfg.intermediate_size, h))?,
                    down: linear(weights, &name("ffn_down"), (h, cfg.intermediate_size))?,
                },
            });
        }
        let norm = weights.vector("output_norm.weight", h)?;
        // The output projection: its own tensor, or the embedding table when the two are tied.
        let tied_embeddings = !weights.contains("output.weight");
        let lm_head = if tied_embeddings {
            embedding.as_linear(dense)?
        } else {
            linear(weights, "output.weight", (cfg.vocab_size, h))?
        };
        let half = cfg.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim as f64) as f32)
            .collect();
        Ok(CandleEngine {
            cfg,
            gpu_weights,
            embedding,
            blocks,
            norm,
            lm_head,
            tied_embeddings,
            inv_freq,
            device: device.clone(),
        })
    }

    /// Runs `tokens` (checked by the caller) after what `cache` holds, appending their keys and
    /// values; returns logits `[vocab]` or `[tokens, vocab]`. Keeps the attention weights of
    /// the listed layers, each `[heads, tokens, cached + tokens]`, in layer order.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: LogitsFor,
        mut attention: Option<(&[usize], &mut Vec<Vec<f32>>)>,
    ) -> Result<Tensor> {
        let t = tokens.len();
        let pos = cache.len();
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?; // [1, t]
        let mut x = self.embedding.forward(&ids)?; // [1, t, hidden]
        let (cos, sin) = self.rotary_tables(pos, t)?;
        // The CPU path attends row by row and needs no mask.
        let mask = if t > 1 && !self.device.is_cpu() {
            Some(causal_mask(t, pos, &self.device)?)
        } else {
            None // one query attends to everything cached: nothing to mask
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &block.attn_norm, self.cfg.rms_norm_eps)?;
            let keep = match &mut attention {
                Some((layers, out)) if layers.contains(&layer) => Some(&mut **out),
                _ => None,
            };
            let h = self.attention(
                &block.attn,
                &h,
                layer,
                cache,
                (&cos, &sin),
                mask.as_ref(),
                keep,
            )?;
            x = (x + h)?;
            let h = rms_norm(&x, &block.ffn_norm, self.cfg.rms_norm_eps)?;
            let gate = candle_nn::ops::silu(&block.mlp.gate.forward(&h)?)?;
            let h = block
                .mlp
                .down
                .forward(&(gate * block.mlp.up.forward(&h)?)?)?;
            x = (x + h)?;
        }
        cache.advance(t);
        let x = match which {
            LogitsFor::Last => x.narrow(1, t - 1, 1)?, // the LM head for one position only
            LogitsFor::All => x,
        };
        let x = rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?;
        let logits = self.lm_head.forward(&x)?.squeeze(0)?; // [t or 1, vocab]
        Ok(match which {
            LogitsFor::Last => logits.squeeze(0)?,
            LogitsFor::All => logits,
        })
    }

    /// cos and sin of every (position, frequency) pair for positions `pos..pos + t`: `[t, hd/2]`.
    fn rotary_tables(&self, pos: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let angles: Vec<f32> = (pos..pos + t)
            .flat_map(|p| self.inv_freq.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (t, self.inv_freq.len()), &self.device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        attn: &Attention,
        x: &Tensor,
        layer: usize,
        cache: &mut KvCache,
        (cos, sin): (&Tensor, &Tensor),
        mask: Option<&Tensor>,
        keep_weights: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?) // [b, n, t, hd]
        };
        let q = heads(attn.q.forward(x)?, nh)?;
        let k = heads(attn.k.forward(x)?, nkv)?;
        let v = heads(attn.v.forward(x)?, nkv)?;
        let (q, k) = match self.cfg.rope_layout {
            RopeLayout::Interleaved => (
                candle_nn::rotary_emb::rope_i(&q, cos, sin)?,
                candle_nn::rotary_emb::rope_i(&k, cos, sin)?,
            ),
            RopeLayout::HalfSplit => (
                candle_nn::rotary_emb::rope(&q, cos, sin)?,
                candle_nn::rotary_emb::rope(&k, cos, sin)?,
            ),
        };
        let appended = cache.append(layer, &k, &v)?;
        let y = if let Some(kv) = cache.host_layer(layer, cache.len() + t) {
            // CPU: our row-wise attention over the cache, read in place.
            let pos = cache.len();
            let q = q
                .squeeze(0)?
                .transpose(0, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?; // [t, nh*hd]
            let heads = Heads {
                query: nh,
                kv: nkv,
                dim: hd,
            };
            let (y, probs) = causal_attention(&q, kv, pos, t, heads, keep_weights.is_some());
            if let (Some(out), Some(probs)) = (keep_weights, probs) {
                out.push(probs); // [nh, t, pos + t]
            }
            Tensor::from_vec(y, (b, t, nh * hd), &self.device)?
        } else {
            let (k, v) = appended
                .ok_or_else(|| Error::invalid("KV cache returned no tensors off the CPU"))?;
            let total = k.dim(2)?;
            // Grouped-query attention without copying K/V per query head: fold the query heads
            // that share a KV head into the row dimension.
            let rep = nh / nkv;
            let q = q.reshape((b, nkv, rep * t, hd))?;
            let scale = 1.0 / (hd as f64).sqrt();
            let scores = (q.matmul(&k.t()?)? * scale)?; // [b, nkv, rep * t, T]
            let scores = match mask {
                Some(m) => scores
                    .reshape((b, nkv, rep, t, total))?
                    .broadcast_add(m)?
                    .reshape((b, nkv, rep * t, total))?,
                None => scores,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            if let Some(out) = keep_weights {
                // Rows are (KV head, query head in its group, query); fold back to query heads.
                out.push(probs.flatten_all()?.to_vec1::<f32>()?); // [nh, t, total]
            }
            let y = probs.matmul(&v.contiguous()?)?; // [b, nkv, rep * t, hd]
            y.reshape((b, nh, t, hd))?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?
        };
        attn.o.forward(&y)
    }
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(
        &x.contiguous()?,
        weight,
        eps as f32,
    )?)
}

/// `[t, pos + t]`: query i (at absolute position pos + i) may see keys 0..=pos + i.
fn causal_mask(t: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let total = pos + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..total).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(mask, (t, total), device)?)
}
