//! The Llama forward pass on our own CPU kernels, on the GGUF file's quantized weights.
//!
//! Nothing is expanded at load. Where the kernels have a 16-row layout (x86-64), every
//! Q4_1 / Q8_0 matrix is repacked into it once ([`crate::kernels::PackedMatrix`], as many
//! bytes as the file's blocks) and the file's pages are dropped from memory; elsewhere every
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
//! Every buffer lives in a [`Scratch`] that grows to the largest pass and is reused, so a decode
//! step allocates nothing but its logits. Norms and RoPE follow ggml's arithmetic (f64 sum of
//! squares; `theta *= theta_scale` per pair) so the numbers stay close to llama.cpp's.

use std::sync::{Arc, Mutex};

use candle_core::quantized::GgmlDType;
use candle_core::Tensor;

use crate::cache::kv::{HostKv, KvCache};
use crate::engine::attention::{attend_head, causal_attention, Heads};
use crate::engine::LogitsFor;
use crate::error::{Error, Result};
use crate::fastmath::silu_mul;
use crate::kernels::{Activation, Kernels, PackedMatrix, Pool, QMatrix, QWeight, QK};
use crate::load::config::{Config, RopeLayout};
use crate::load::gguf::{GgufFile, TensorInfo};
use crate::load::weights::Weights;

/// A matrix in the mapped file.
#[derive(Debug, Clone)]
struct MatrixRef {
    dtype: GgmlDType,
    offset: usize,
    len: usize,
    rows: usize,
    cols: usize,
}

/// A matrix the kernels multiply: its bytes in the mapped file, or a copy repacked for the
/// kernels' 16-row layout ([`PackedMatrix`]) on paths that have it.
#[derive(Debug)]
struct Matrix {
    file: MatrixRef,
    packed: Option<PackedMatrix>,
}

struct LayerWeights {
    attn_norm: Vec<f32>,
    q: Matrix,
    k: Matrix,
    v: Matrix,
    o: Matrix,
    ffn_norm: Vec<f32>,
    gate: Matrix,
    up: Matrix,
    down: Matrix,
}

/// One sequence's part of a batched pass.
pub struct SeqStep<'a> {
    /// Tokens to run after what the cache holds (at least one).
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub which: LogitsFor,
}

/// Reusable buffers for one pass; each grows to the largest pass seen.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    act: Activation,
    /// One score row per thread, `context_length` long.
    scores: Vec<f32>,
    /// (sequence, first row, position of that row, rows).
    spans: Vec<(usize, usize, usize, usize)>,
}

fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

pub struct CpuEngine {
    cfg: Config,
    file: Arc<GgufFile>,
    /// Looked up row by row, from the file unless tied to a packed `output`.
    embedding: MatrixRef,
    layers: Vec<LayerWeights>,
    output_norm: Vec<f32>,
    output: Matrix,
    pub tied_embeddings: bool,
    kernels: Kernels,
    pool: Pool,
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

/// Matrix types the kernels multiply.
fn kernel_type(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_1 | GgmlDType::Q8_0)
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
            file.tensor_info(n)
                .is_some_and(|t| kernel_type(t.dtype) && t.shape.len() == 2 && t.shape[1] % QK == 0)
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
        let kernels = Kernels::best();
        let locate = |weights: &mut Weights, name: &str, rows: usize, cols: usize| {
            let info: TensorInfo = weights.gguf_tensor(name, &[rows, cols])?;
            let m = MatrixRef {
                dtype: info.dtype,
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
        let prepare = |m: MatrixRef| -> Result<Matrix> {
            let packed = if kernels.packs_weights() {
                PackedMatrix::pack(&view(&file, &m)?)
            } else {
                None
            };
            if packed.is_some() {
                file.release(m.offset, m.len);
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
        if kernels.packs_weights() {
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

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn weight<'a>(&'a self, m: &'a Matrix) -> Result<QWeight<'a>> {
        match &m.packed {
            Some(p) => Ok(p.weight()),
            None => view(&self.file, &m.file),
        }
    }

    /// One pass over several sequences (token ids already checked against the vocabulary and
    /// the context window). Returns each sequence's logits: `[vocab]` (`Last`) or
    /// `[tokens, vocab]` (`All`). With `attention`, the softmax weights of the listed layers for
    /// the first sequence are pushed in layer order, each `[heads, tokens, cached + tokens]`.
    pub fn forward(
        &self,
        seqs: &mut [SeqStep<'_>],
        mut attention: Option<(&[usize], &mut Vec<Tensor>)>,
    ) -> Result<Vec<Vec<f32>>> {
        let cfg = &self.cfg;
        let (h, hd, nh, nkv, ff) = (
            cfg.hidden_size,
            cfg.head_dim,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.intermediate_size,
        );
        let (q_width, kv_width) = (nh * hd, nkv * hd);
        let heads = Heads {
            query: nh,
            kv: nkv,
            dim: hd,
        };
        let mut guard = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;

        s.spans.clear();
        let mut m = 0;
        for (i, seq) in seqs.iter().enumerate() {
            if seq.tokens.is_empty() {
                return Err(Error::invalid(
                    "forward needs at least one token per sequence",
                ));
            }
            s.spans.push((i, m, seq.cache.len(), seq.tokens.len()));
            m += seq.tokens.len();
        }
        if m == 0 {
            return Err(Error::invalid("forward needs at least one sequence"));
        }
        if attention.is_some() && seqs.len() > 1 {
            return Err(Error::invalid(
                "attention weights are kept for a pass over one sequence only",
            ));
        }

        // Embeddings, dequantized row by row from the table's blocks: the packed LM head when
        // it is the same matrix (the file's pages then stay out of memory), else the file.
        let table = match (&self.output.packed, self.tied_embeddings) {
            (Some(packed), true) => packed.weight(),
            _ => view(&self.file, &self.embedding)?,
        };
        let x = sized(&mut s.x, m * h);
        for (row, &id) in seqs.iter().flat_map(|s| s.tokens).enumerate() {
            dequantize_row(&table, id as usize, &mut x[row * h..][..h])?;
        }
        self.rope_tables(s, m, hd);

        for (layer, lw) in self.layers.iter().enumerate() {
            // Attention block.
            rms_norm(
                &s.x[..m * h],
                &lw.attn_norm,
                cfg.rms_norm_eps,
                sized(&mut s.normed, m * h),
            );
            let (q, k, v) = (
                self.weight(&lw.q)?,
                self.weight(&lw.k)?,
                self.weight(&lw.v)?,
            );
            self.quantize(&s.normed[..m * h], h, &[q, k, v], &mut s.act)?;
            self.kernels.matmul_many(
                &self.pool,
                &s.act,
                &mut [
                    (q, sized(&mut s.q, m * q_width)),
                    (k, sized(&mut s.k, m * kv_width)),
                    (v, sized(&mut s.v, m * kv_width)),
                ],
            )?;
            self.rope(&mut s.q[..m * q_width], nh, &s.cos, &s.sin);
            self.rope(&mut s.k[..m * kv_width], nkv, &s.cos, &s.sin);
            for &(i, first, _, t) in &s.spans {
                let (kd, vd) = seqs[i].cache.host_rows_mut(layer, t, kv_width)?;
                kd.copy_from_slice(&s.k[first * kv_width..][..t * kv_width]);
                vd.copy_from_slice(&s.v[first * kv_width..][..t * kv_width]);
            }
            let keep = match &mut attention {
                Some((layers, out)) if layers.contains(&layer) => Some(&mut **out),
                _ => None,
            };
            self.attention(seqs, s, m, heads, layer, keep)?;
            let o = self.weight(&lw.o)?;
            self.quantize(&s.attn[..m * q_width], q_width, &[o], &mut s.act)?;
            let proj = sized(&mut s.proj, m * h);
            self.kernels
                .matmul_many(&self.pool, &s.act, &mut [(o, &mut *proj)])?;
            add_in_place(&mut s.x[..m * h], proj);

            // Feed-forward block.
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
            self.quantize(&s.normed[..m * h], h, &[gate, up], &mut s.act)?;
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
                            std::slice::from_raw_parts(
                                outs[1].add(c * ff + rows.start),
                                rows.len(),
                            ),
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
            self.quantize(&s.gate[..m * ff], ff, &[down], &mut s.act)?;
            let proj = sized(&mut s.proj, m * h);
            self.kernels
                .matmul_many(&self.pool, &s.act, &mut [(down, &mut *proj)])?;
            add_in_place(&mut s.x[..m * h], proj);
        }
        for (seq, &(_, _, _, t)) in seqs.iter_mut().zip(&s.spans) {
            seq.cache.advance(t);
        }

        // The LM head, for the rows that want logits.
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
        self.quantize(&s.normed[..r * h], h, &[head], &mut s.act)?;
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

    /// Quantizes `x` for whichever weight types `reads` are.
    fn quantize(
        &self,
        x: &[f32],
        cols: usize,
        reads: &[QWeight<'_>],
        act: &mut Activation,
    ) -> Result<()> {
        self.kernels.quantize_activation(x, cols, reads, act)
    }

    /// cos and sin for every row's position, `[m, head_dim / 2]`, as ggml computes them:
    /// `theta` starts at the position and is multiplied by `theta_scale` for each pair.
    fn rope_tables(&self, s: &mut Scratch, m: usize, hd: usize) {
        let half = hd / 2;
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
    fn rope(&self, x: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
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

    /// Attention of every row against its own sequence's cache, written to `s.attn`.
    fn attention(
        &self,
        seqs: &[SeqStep<'_>],
        s: &mut Scratch,
        m: usize,
        heads: Heads,
        layer: usize,
        keep: Option<&mut Vec<Tensor>>,
    ) -> Result<()> {
        let width = heads.query * heads.dim;
        let views: Vec<HostKv<'_>> = s
            .spans
            .iter()
            .map(|&(i, _, pos, t)| {
                seqs[i]
                    .cache
                    .host_layer(layer, pos + t)
                    .ok_or_else(|| Error::invalid("KV cache lost its CPU rows"))
            })
            .collect::<Result<_>>()?;
        if let Some(out) = keep {
            // Inspection: one sequence, weights kept; no need for the pool here.
            let &(_, first, pos, t) = &s.spans[0];
            let (y, probs) = causal_attention(
                &s.q[first * width..][..t * width],
                views[0],
                pos,
                t,
                heads,
                true,
            );
            sized(&mut s.attn, m * width)[first * width..][..t * width].copy_from_slice(&y);
            if let Some(p) = probs {
                out.push(Tensor::from_vec(
                    p,
                    (heads.query, t, pos + t),
                    &candle_core::Device::Cpu,
                )?);
            }
            return Ok(());
        }

        let threads = self.pool.threads();
        let longest = s.spans.iter().map(|&(_, _, p, t)| p + t).max().unwrap_or(0);
        let scores = sized(&mut s.scores, threads * longest);
        let out = sized(&mut s.attn, m * width);
        // Split the (sequence, head) pairs into `threads` runs of about equal work.
        let jobs = s.spans.len() * heads.query;
        let cost = |j: usize| {
            let (_, _, pos, t) = s.spans[j / heads.query];
            t * (pos + t)
        };
        let total: usize = (0..jobs).map(cost).sum();
        let mut bounds = [0usize; 65];
        let parts = threads.min(jobs).clamp(1, 64);
        let (mut part, mut acc) = (1, 0);
        for j in 0..jobs {
            acc += cost(j);
            if part < parts && acc * parts >= total * part {
                bounds[part] = j + 1;
                part += 1;
            }
        }
        for b in bounds.iter_mut().take(parts + 1).skip(part) {
            *b = jobs;
        }
        let out_ptr = SharedOut(out.as_mut_ptr());
        let scores_ptr = SharedOut(scores.as_mut_ptr());
        let spans = &s.spans;
        let q = &s.q[..m * width];
        self.pool.run(parts, |p| {
            // SAFETY: each part has its own `longest`-float slice of `scores`, which outlives
            // the run.
            let scratch =
                unsafe { std::slice::from_raw_parts_mut(scores_ptr.at(p * longest), longest) };
            for j in bounds[p]..bounds[p + 1] {
                let (seq, head) = (j / heads.query, j % heads.query);
                let (_, first, pos, t) = spans[seq];
                let rows = &q[first * width..][..t * width];
                attend_head(rows, views[seq], pos, t, heads, head, scratch, |i, y, _| {
                    // SAFETY: (row, head) pairs are disjoint between parts: each (sequence,
                    // head) job belongs to one part, and a job writes only its own head's
                    // `dim` floats of its own rows, inside `out`, which outlives the run.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out_ptr.at((first + i) * width + head * heads.dim),
                            heads.dim,
                        )
                    };
                    dst.copy_from_slice(y);
                });
            }
        });
        Ok(())
    }
}

/// A raw output pointer shared by the parts of one pool run, each writing its own elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used inside `Pool::run`, where parts write disjoint elements (see the callers).
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// A matrix's blocks, viewed in the mapped file.
fn view<'a>(file: &'a GgufFile, m: &MatrixRef) -> Result<QWeight<'a>> {
    let bytes = file.bytes(m.offset, m.len).ok_or_else(|| {
        file.malformed(format!(
            "tensor data at {}+{} is outside the file",
            m.offset, m.len
        ))
    })?;
    Ok(match m.dtype {
        GgmlDType::Q4_1 => QWeight::Q4_1(QMatrix::from_bytes(bytes, m.rows, m.cols)?),
        GgmlDType::Q8_0 => QWeight::Q8_0(QMatrix::from_bytes(bytes, m.rows, m.cols)?),
        other => {
            return Err(Error::Unsupported(format!(
                "the CPU kernels do not multiply {other:?} matrices"
            )))
        }
    })
}

/// Row `r` of a quantized table in f32 (`d * q` for Q8_0, `d * q + m` for Q4_1).
fn dequantize_row(table: &QWeight<'_>, r: usize, out: &mut [f32]) -> Result<()> {
    let mut buf = [0f32; QK];
    for (b, dst) in out.chunks_exact_mut(QK).enumerate() {
        match table {
            QWeight::Q4_1(w) => w.row(r)[b].dequantize(&mut buf),
            QWeight::Q8_0(w) => w.row(r)[b].dequantize(&mut buf),
            QWeight::Q4_1x16(w) => w.block(r, b)?.dequantize(&mut buf),
            QWeight::Q8_0x16(w) => w.block(r, b)?.dequantize(&mut buf),
        }
        dst.copy_from_slice(&buf);
    }
    Ok(())
}

/// ggml's RMSNorm then its multiply by the weight: the sum of squares in f64, `scale` in f32.
fn rms_norm(x: &[f32], weight: &[f32], eps: f64, out: &mut [f32]) {
    let n = weight.len();
    for (xr, yr) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let sum: f64 = xr.iter().map(|&v| (v * v) as f64).sum();
        let mean = (sum / n as f64) as f32;
        let scale = 1.0 / (mean + eps as f32).sqrt();
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = (v * scale) * w;
        }
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
