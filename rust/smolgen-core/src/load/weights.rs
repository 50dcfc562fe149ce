//! Where the weights come from: a GGUF file or a Hugging Face safetensors directory.
//!
//! Both sources answer the same questions under llama.cpp's tensor names (`blk.3.attn_q`, ...).
//! Our CPU kernels read a matrix's bytes where the file maps them ([`Weights::raw_matrix`]);
//! candle (CUDA, Metal) gets every matrix as a `QMatMul`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::kernels::{BlockBF16, BlockF16, BlockF32, WeightBlock, WeightKind};
use crate::load::gguf::GgufFile;

/// Bytes that tensors lie in and kernels read in place: a memory-mapped file, or a buffer
/// filled at load (a dtype conversion).
pub trait TensorBytes: Send + Sync {
    /// `len` bytes at `offset`, if they lie inside.
    fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]>;
    /// Drops the resident copy of `offset..offset + len` once it has been copied elsewhere
    /// (a hint: the bytes stay readable).
    fn release(&self, _offset: usize, _len: usize) {}
    /// Where the bytes came from, for errors.
    fn origin(&self) -> &Path;
}

impl TensorBytes for GgufFile {
    fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        GgufFile::bytes(self, offset, len)
    }
    fn release(&self, offset: usize, len: usize) {
        GgufFile::release(self, offset, len)
    }
    fn origin(&self) -> &Path {
        &self.path
    }
}

/// A tensor converted at load, in its own buffer.
struct Converted {
    origin: PathBuf,
    data: Vec<u8>,
}

impl TensorBytes for Converted {
    fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.data.get(offset..offset.checked_add(len)?)
    }
    fn origin(&self) -> &Path {
        &self.origin
    }
}

/// A matrix as its file stores it: ggml's type id and where its bytes lie.
#[derive(Clone)]
pub struct RawMatrix {
    pub ggml_type: u32,
    pub bytes: Arc<dyn TensorBytes>,
    pub offset: usize,
    pub len: usize,
}

/// The ggml type id of a safetensors dtype.
fn safetensors_ggml_type(dtype: DType) -> Option<u32> {
    match dtype {
        DType::F32 => Some(<BlockF32 as WeightBlock>::GGML_TYPE),
        DType::F16 => Some(BlockF16::GGML_TYPE),
        DType::BF16 => Some(BlockBF16::GGML_TYPE),
        _ => None,
    }
}

/// What a tensor is stored as, for `Model.info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSummary {
    pub dtype: String,
    pub elements: usize,
    pub bytes: usize,
}

/// A weight source plus the bookkeeping of what was loaded from it.
pub struct Weights {
    source: Source,
    device: Device,
    /// Tensor name -> what it is stored as, filled as tensors are loaded.
    pub loaded: BTreeMap<String, TensorSummary>,
}

/// A tensor as its file stores it.
// One lives while its tensor loads, so the variants' sizes (far apart on AArch64) cost nothing.
#[allow(clippy::large_enum_variant)]
enum Stored {
    /// GGUF: ggml blocks (or floats) as candle reads them.
    Blocks(QTensor),
    /// safetensors: a plain tensor.
    Dense(Tensor),
}

enum Source {
    Gguf(Arc<GgufFile>),
    Safetensors(SafetensorsDir),
}

impl Weights {
    pub fn gguf(file: GgufFile, device: &Device) -> Self {
        Weights {
            source: Source::Gguf(Arc::new(file)),
            device: device.clone(),
            loaded: BTreeMap::new(),
        }
    }

    pub fn safetensors(dir: SafetensorsDir, device: &Device) -> Self {
        Weights {
            source: Source::Safetensors(dir),
            device: device.clone(),
            loaded: BTreeMap::new(),
        }
    }

    pub fn format(&self) -> &'static str {
        match self.source {
            Source::Gguf(_) => "gguf",
            Source::Safetensors(_) => "safetensors",
        }
    }

    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Gguf(g) => &g.path,
            Source::Safetensors(s) => &s.dir,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Gguf(g) => g.tensor_info(name).is_some(),
            Source::Safetensors(s) => s.contains(name),
        }
    }

    fn record(&mut self, name: &str, dtype: String, elements: usize, bytes: usize) {
        self.loaded.insert(
            name.to_string(),
            TensorSummary {
                dtype,
                elements,
                bytes,
            },
        );
    }

    /// The gate every tensor passes before an engine uses it: the shape the architecture needs
    /// (`want`), a type the engines read, and finite values: all of them for a vector
    /// (`whole`), else [`SAMPLE_SPANS`] evenly spaced spans. Each error names the file and the
    /// tensor.
    fn check_stored(&self, name: &str, want: &[usize], whole: bool) -> Result<()> {
        let (origin, ggml_type, shape, bytes): (&Path, u32, &[usize], &[u8]) = match &self.source {
            Source::Gguf(g) => {
                let info = g
                    .tensor_info(name)
                    .ok_or_else(|| g.malformed(format!("missing tensor `{name}`")))?;
                let ggml_type = crate::load::gguf::ggml_type_id(info.dtype);
                (&g.path, ggml_type, &info.shape, g.tensor_bytes(info))
            }
            Source::Safetensors(s) => {
                let (file, info, dtype) = s.locate(name)?;
                let (start, end) = info.data_offsets;
                let bytes = &file.mmap[file.data_start + start..file.data_start + end];
                let ggml_type = safetensors_ggml_type(dtype).unwrap_or(u32::MAX);
                (&file.path, ggml_type, &info.shape, bytes)
            }
        };
        if shape != want {
            return Err(Error::malformed(
                origin,
                format!("tensor `{name}` has shape {shape:?}, expected {want:?}"),
            ));
        }
        let kind = WeightKind::for_ggml_type(ggml_type).ok_or_else(|| Error::Unsupported {
            path: Some(origin.to_path_buf()),
            reason: format!(
                "tensor `{name}` is stored as {}, a type smolgen does not run (it runs {})",
                crate::load::gguf::ggml_type_name(ggml_type),
                crate::kernels::WEIGHT_KINDS
                    .map(|k| crate::load::gguf::ggml_type_name(k.ggml_type))
                    .join(", ")
            ),
        })?;
        match first_non_finite(kind, bytes, whole) {
            None => Ok(()),
            Some((index, value)) => Err(Error::malformed(
                origin,
                format!(
                    "tensor `{name}` holds {value} at element {index}: its data, type or offset \
                     is corrupt"
                ),
            )),
        }
    }

    /// The GGUF file behind these weights, for readers of raw tensor bytes.
    pub fn gguf_file(&self) -> Option<&Arc<GgufFile>> {
        match &self.source {
            Source::Gguf(g) => Some(g),
            Source::Safetensors(_) => None,
        }
    }

    /// The ggml type and shape a matrix is stored with, without loading it (`None` when the
    /// file lacks it or stores it in a type ggml has no id for).
    pub fn stored_type(&self, name: &str) -> Option<(u32, Vec<usize>)> {
        match &self.source {
            Source::Gguf(g) => g
                .tensor_info(name)
                .map(|t| (crate::load::gguf::ggml_type_id(t.dtype), t.shape.clone())),
            Source::Safetensors(s) => {
                let (_, info, dtype) = s.locate(name).ok()?;
                let quantized = match info.shape[..] {
                    [_, cols] => s.quantized_type(cols).map(|k| k.ggml_type),
                    _ => None,
                };
                let dtype = s.dtype.unwrap_or(dtype);
                Some((
                    quantized.or(safetensors_ggml_type(dtype))?,
                    info.shape.clone(),
                ))
            }
        }
    }

    /// Where a `[rows, cols]` matrix's bytes lie, in its file's own layout, recorded as loaded
    /// without copying anything (a safetensors dtype conversion, asked for at open, copies).
    pub fn raw_matrix(&mut self, name: &str, shape: (usize, usize)) -> Result<RawMatrix> {
        let want = [shape.0, shape.1];
        self.check_stored(name, &want, false)?;
        let (raw, dtype, elements) = match &self.source {
            Source::Gguf(g) => {
                let info = g
                    .tensor_info(name)
                    .ok_or_else(|| g.malformed(format!("missing tensor `{name}`")))?;
                let raw = RawMatrix {
                    ggml_type: crate::load::gguf::ggml_type_id(info.dtype),
                    bytes: g.clone(),
                    offset: info.offset,
                    len: info.size_in_bytes,
                };
                (raw, format!("{:?}", info.dtype), info.elem_count())
            }
            Source::Safetensors(s) => {
                let (file, info, dtype) = s.locate(name)?;
                let (start, end) = info.data_offsets;
                if let Some(kind) = s.quantized_type(shape.1) {
                    let (ggml_type, data) = s.quantize_matrix(name, kind)?;
                    let raw = RawMatrix {
                        ggml_type,
                        len: data.len(),
                        bytes: Arc::new(Converted {
                            origin: file.path.clone(),
                            data,
                        }),
                        offset: 0,
                    };
                    let dtype = ggml_dtype_name(ggml_type);
                    self.record(name, dtype, want[0] * want[1], raw.len);
                    return Ok(raw);
                }
                let raw = match s.dtype {
                    Some(to) if to != dtype => {
                        let t = s.tensor(name, &Device::Cpu)?;
                        RawMatrix {
                            ggml_type: safetensors_ggml_type(to).unwrap_or(u32::MAX),
                            len: t.elem_count() * to.size_in_bytes(),
                            bytes: Arc::new(Converted {
                                origin: file.path.clone(),
                                data: tensor_bytes(&t)?,
                            }),
                            offset: 0,
                        }
                    }
                    _ => RawMatrix {
                        ggml_type: safetensors_ggml_type(dtype).unwrap_or(u32::MAX),
                        bytes: file.clone(),
                        offset: file.data_start + start,
                        len: end - start,
                    },
                };
                let dtype = s.dtype.unwrap_or(dtype);
                (raw, dtype_name(dtype), want[0] * want[1])
            }
        };
        self.record(name, dtype, elements, raw.len);
        Ok(raw)
    }

    /// A `[rows, cols]` tensor as it is stored, its shape checked and recorded.
    fn two_dimensional(&mut self, name: &str, shape: (usize, usize)) -> Result<Stored> {
        let want = [shape.0, shape.1];
        self.check_stored(name, &want, false)?;
        Ok(match &self.source {
            Source::Gguf(g) => {
                let q = g.load_qtensor(name, &self.device)?;
                let (dtype, bytes) = (format!("{:?}", q.dtype()), q.storage_size_in_bytes());
                self.record(name, dtype, want[0] * want[1], bytes);
                Stored::Blocks(q)
            }
            Source::Safetensors(s) => match s.quantized_type(shape.1) {
                Some(kind) => {
                    let (ggml_type, data) = s.quantize_matrix(name, kind)?;
                    let dtype = crate::load::gguf::ggml_dtype(ggml_type).ok_or_else(|| {
                        Error::invalid(format!("ggml type {ggml_type} has no candle dtype"))
                    })?;
                    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(
                        dtype,
                        &data,
                        want.to_vec(),
                        &self.device,
                    )?;
                    self.record(
                        name,
                        ggml_dtype_name(ggml_type),
                        want[0] * want[1],
                        data.len(),
                    );
                    Stored::Blocks(q)
                }
                None => {
                    let t = s.tensor(name, &self.device)?;
                    let bytes = t.elem_count() * t.dtype().size_in_bytes();
                    self.record(name, dtype_name(t.dtype()), t.elem_count(), bytes);
                    Stored::Dense(t)
                }
            },
        })
    }

    /// A matrix of shape `[out, in]`, quantized (GGUF) or plain (safetensors).
    pub fn matrix(&mut self, name: &str, shape: (usize, usize)) -> Result<QMatMul> {
        Ok(match self.two_dimensional(name, shape)? {
            Stored::Blocks(q) => QMatMul::from_qtensor(q)?,
            Stored::Dense(t) => QMatMul::Tensor(t),
        })
    }

    /// A vector (a norm's scale), always f32.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Tensor> {
        self.check_stored(name, &[len], true)?;
        let t = match &self.source {
            Source::Gguf(g) => g
                .load_qtensor(name, &self.device)?
                .dequantize(&self.device)?,
            Source::Safetensors(s) => s.tensor(name, &self.device)?,
        };
        let bytes = t.elem_count() * t.dtype().size_in_bytes();
        self.record(name, dtype_name(t.dtype()), len, bytes);
        Ok(t.to_dtype(DType::F32)?)
    }

    /// A `[rows, cols]` table read row by row (the token embedding): quantized blocks stay
    /// quantized, float tables come back as a plain tensor.
    pub fn table(&mut self, name: &str, shape: (usize, usize)) -> Result<QMatMul> {
        Ok(match self.two_dimensional(name, shape)? {
            Stored::Blocks(q) => match q.dtype() {
                GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                    QMatMul::Tensor(q.dequantize(&self.device)?)
                }
                _ => QMatMul::QTensor(Arc::new(q)),
            },
            Stored::Dense(t) => QMatMul::Tensor(t),
        })
    }
}

/// How much of each matrix is checked for NaN and infinity at load: [`SAMPLE_SPANS`] spans,
/// evenly spaced from the first block to the last, of [`SPAN_BLOCKS`] consecutive blocks (and at
/// least [`SPAN_VALUES`] values) each. A corrupt type or offset spoils every block, so any span
/// shows it; a corrupt scale is found as often as by as many scattered blocks, while the spans
/// touch only a few pages of the file. For the default model that is about a millisecond where
/// the load repacks the matrices (it reads those pages anyway), two or three where the kernels
/// read the file in place (the first forward pass then finds the pages mapped). What the spans
/// miss shows as non-finite logits, which the engine reports as the file's fault too.
const SAMPLE_SPANS: usize = 4;
const SPAN_BLOCKS: usize = 16;
const SPAN_VALUES: usize = 256;

/// The first value among `bytes` (whole blocks of `kind`) that is NaN or infinite, with its
/// index: in every block when `whole`, else in the sampled spans.
fn first_non_finite(kind: &WeightKind, bytes: &[u8], whole: bool) -> Option<(usize, f32)> {
    let (block_bytes, block_elements) = (kind.block_bytes, kind.block_elements);
    let blocks = bytes.len() / block_bytes;
    let span = SPAN_BLOCKS
        .max(SPAN_VALUES.div_ceil(block_elements))
        .min(blocks);
    if span == 0 {
        return None;
    }
    let all_spans = blocks.div_ceil(span);
    let spans = if whole {
        all_spans
    } else {
        all_spans.min(SAMPLE_SPANS)
    };
    let mut values = vec![0f32; span * block_elements];
    for r in 0..spans {
        let first = if spans == all_spans {
            r * span
        } else {
            (blocks - span) * r / (spans - 1)
        };
        let n = span.min(blocks - first);
        let values = &mut values[..n * block_elements];
        kind.dequantize_blocks(&bytes[first * block_bytes..][..n * block_bytes], values);
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Some((first * block_elements + i, values[i]));
        }
    }
    None
}

/// How `Model.info` names a ggml type (as for a GGUF's tensors).
fn ggml_dtype_name(id: u32) -> String {
    crate::load::gguf::ggml_dtype(id)
        .map_or_else(|| format!("ggml type {id}"), |d| format!("{d:?}"))
}

pub fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        other => return format!("{other:?}"),
    }
    .to_string()
}

struct MappedSafetensors {
    path: PathBuf,
    mmap: memmap2::Mmap,
    /// Where the tensor data starts: after the u64 header length and the JSON header.
    data_start: usize,
    /// The validated header: every tensor's dtype, shape and byte range.
    header: safetensors::tensor::Metadata,
}

/// A Hugging Face model directory: `*.safetensors` (one or sharded), tensors renamed to
/// llama.cpp's names on the way in.
pub struct SafetensorsDir {
    pub dir: PathBuf,
    files: Vec<Arc<MappedSafetensors>>,
    /// llama.cpp name -> (file index, Hugging Face name).
    index: HashMap<String, (usize, String)>,
    dtype: Option<DType>,
    /// Quantize every matrix to this type at load (ggml's reference rounding).
    quantize: Option<&'static WeightKind>,
}

impl SafetensorsDir {
    /// `dtype` converts every tensor on load (f32, f16 or bf16); `None` keeps the file's dtype.
    pub fn open(dir: &Path, dtype: Option<DType>) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::ModelNotFound(dir.join("*.safetensors")));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, path) in paths.into_iter().enumerate() {
            let mmap = crate::load::gguf::map_file(&path)?;
            // Parses and validates the header: byte ranges inside the file, sizes matching shapes.
            let (header_len, header) = safetensors::SafeTensors::read_metadata(&mmap)
                .map_err(|e| Error::malformed(&path, format!("{e}")))?;
            for name in header.tensors().keys() {
                if let Some(ours) = gguf_name(name) {
                    index.insert(ours, (i, name.to_string()));
                }
            }
            files.push(Arc::new(MappedSafetensors {
                path,
                mmap,
                data_start: 8 + header_len,
                header,
            }));
        }
        Ok(SafetensorsDir {
            dir: dir.to_path_buf(),
            files,
            index,
            dtype,
            quantize: None,
        })
    }

    /// Quantizes every matrix to `kind` at load, in ggml's reference rounding (what llama.cpp's
    /// converter then `llama-quantize` write), falling back as llama-quantize does where a
    /// row is not a whole number of `kind`'s blocks. `kind` must be a quantization.
    pub fn quantized(mut self, kind: &'static WeightKind) -> Result<Self> {
        if kind.is_float() {
            return Err(Error::invalid(format!(
                "quantize takes a quantization type, not {} (use dtype)",
                kind.name
            )));
        }
        self.quantize = Some(kind);
        Ok(self)
    }

    /// The type a `[rows, cols]` matrix is quantized to, if the directory quantizes.
    fn quantized_type(&self, cols: usize) -> Option<&'static WeightKind> {
        self.quantize
            .map(|kind| crate::convert::file_type::quantization_fallback(kind, cols))
    }

    /// A matrix quantized at load: ggml's type id and its blocks.
    fn quantize_matrix(&self, name: &str, kind: &'static WeightKind) -> Result<(u32, Vec<u8>)> {
        Ok((kind.ggml_type, kind.quantize(&self.f32_values(name)?)?))
    }

    /// A tensor's values as f32, rows as the file stores them (Hugging Face's Q/K order).
    pub(crate) fn f32_values(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self
            .tensor(name, &Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    }

    /// Every tensor under llama.cpp's name: its shape (outermost first) and ggml's type id of
    /// its stored dtype.
    pub(crate) fn listing(&self) -> Result<Vec<(String, Vec<usize>, u32)>> {
        self.index
            .keys()
            .map(|name| {
                let (_, info, dtype) = self.locate(name)?;
                let ggml_type = safetensors_ggml_type(dtype)
                    .ok_or_else(|| Error::unsupported(format!("{dtype:?} tensors")))?;
                Ok((name.clone(), info.shape.clone(), ggml_type))
            })
            .collect()
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file a tensor lies in, its header entry and its dtype (f32, f16 or bf16).
    fn locate(
        &self,
        name: &str,
    ) -> Result<(
        &Arc<MappedSafetensors>,
        &safetensors::tensor::TensorInfo,
        DType,
    )> {
        let (file_idx, hf_name) = self
            .index
            .get(name)
            .ok_or_else(|| Error::malformed(&self.dir, format!("missing tensor for `{name}`")))?;
        let file = &self.files[*file_idx];
        let path = &file.path;
        let info = file
            .header
            .info(hf_name)
            .ok_or_else(|| Error::malformed(path, format!("missing tensor `{hf_name}`")))?;
        let dtype = match info.dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::Unsupported {
                    path: Some(path.clone()),
                    reason: format!(
                        "tensor `{hf_name}` has dtype {other:?} (f32, f16 and bf16 are supported)"
                    ),
                })
            }
        };
        Ok((file, info, dtype))
    }

    fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let (file, info, dtype) = self.locate(name)?;
        let (start, end) = info.data_offsets;
        let data = &file.mmap[file.data_start + start..file.data_start + end];
        let t = Tensor::from_raw_buffer(data, dtype, &info.shape, device)?;
        Ok(match self.dtype {
            Some(d) if d != dtype => t.to_dtype(d)?,
            _ => t,
        })
    }
}

impl TensorBytes for MappedSafetensors {
    fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.mmap.get(offset..offset.checked_add(len)?)
    }
    fn release(&self, offset: usize, len: usize) {
        crate::load::gguf::release_mapped(&self.mmap, offset, len)
    }
    fn origin(&self) -> &Path {
        &self.path
    }
}

/// A CPU tensor's values as little-endian bytes.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        other => return Err(Error::unsupported(format!("{other:?} tensors"))),
    })
}

/// Hugging Face Llama tensor name -> llama.cpp's.
fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match rest {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}.weight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` of `shape` in `dtype`'s blocks, as a file stores them.
    fn blocks(dtype: GgmlDType, values: Vec<f32>, shape: &[usize]) -> Vec<u8> {
        let t = Tensor::from_vec(values, shape, &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        q.data().expect("bytes").to_vec()
    }

    /// A GGUF file of one tensor (its name, type, blocks and shape, outermost first), opened.
    fn weights_of(
        label: &str,
        name: &str,
        dtype: GgmlDType,
        data: &[u8],
        shape: &[usize],
    ) -> Weights {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&1u64.to_le_bytes()); // tensors
        out.extend_from_slice(&0u64.to_le_bytes()); // metadata
        out.extend_from_slice(&(name.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&crate::load::gguf::ggml_type_id(dtype).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // offset
        out.resize(out.len().next_multiple_of(32), 0);
        out.extend_from_slice(data);
        let dir = std::env::temp_dir().join(format!("smolgen-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{label}.gguf"));
        std::fs::write(&path, out).expect("write");
        Weights::gguf(GgufFile::open(&path).expect("open"), &Device::Cpu)
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i % 17) as f32 / 8.0 - 1.0).collect()
    }

    #[test]
    fn a_type_no_engine_runs_is_unsupported_naming_the_file_the_tensor_and_the_type() {
        let name = "blk.0.attn_q.weight";
        for (dtype, type_name, cols) in
            [(GgmlDType::Q8_1, "Q8_1", 64), (GgmlDType::Q8K, "Q8_K", 256)]
        {
            let data = blocks(dtype, ramp(4 * cols), &[4, cols]);
            let mut w = weights_of(type_name, name, dtype, &data, &[4, cols]);
            let path = w.path().to_path_buf();
            for err in [
                w.raw_matrix(name, (4, cols)).err(),
                w.matrix(name, (4, cols)).err(),
            ] {
                match err {
                    Some(Error::Unsupported {
                        path: Some(p),
                        reason,
                    }) => {
                        assert_eq!(p, path);
                        assert!(reason.contains("`blk.0.attn_q.weight`"), "{reason}");
                        assert!(reason.contains(type_name), "{reason}");
                    }
                    other => {
                        panic!("{type_name}: expected Unsupported with the path, got {other:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn non_finite_values_are_found_at_load_naming_the_file_and_the_tensor() {
        let (rows, cols) = (64, 64);
        let name = "blk.0.ffn_up.weight";
        let last_block = rows * cols / 32 - 1;
        for (dtype, at, bad) in [
            (GgmlDType::F32, 0, f32::NAN),
            (GgmlDType::F32, rows * cols - 1, f32::INFINITY),
            (GgmlDType::F16, 5, f32::NAN),
            // A quantized block's scale (its first two bytes): `at` is the block.
            (GgmlDType::Q8_0, last_block, f32::NAN),
            (GgmlDType::Q4_0, 0, f32::INFINITY),
        ] {
            let mut values = ramp(rows * cols);
            let quantized = dtype.block_size() > 1;
            if !quantized {
                values[at] = bad;
            }
            let mut data = blocks(dtype, values, &[rows, cols]);
            if quantized {
                let scale = half::f16::from_f32(bad).to_le_bytes();
                data[at * dtype.type_size()..][..2].copy_from_slice(&scale);
            }
            let label = format!("{dtype:?}-{at}");
            let mut w = weights_of(&label, name, dtype, &data, &[rows, cols]);
            let path = w.path().to_path_buf();
            for err in [
                w.raw_matrix(name, (rows, cols)).err(),
                w.matrix(name, (rows, cols)).err(),
            ] {
                match err {
                    Some(Error::MalformedModel { path: p, reason }) => {
                        assert_eq!(p, path);
                        assert!(reason.contains("`blk.0.ffn_up.weight`"), "{reason}");
                    }
                    other => panic!("{label}: expected MalformedModel, got {other:?}"),
                }
            }
        }
        // A norm is read whole: a bad value anywhere is found.
        for at in [0, 17, 575] {
            let mut values = vec![1.0; 576];
            values[at] = f32::NAN;
            let data = blocks(GgmlDType::F32, values, &[576]);
            let name = "output_norm.weight";
            let mut w = weights_of(&format!("norm-{at}"), name, GgmlDType::F32, &data, &[576]);
            match w.vector(name, 576) {
                Err(Error::MalformedModel { reason, .. }) => {
                    assert!(reason.contains("`output_norm.weight`"), "{reason}");
                    assert!(reason.contains(&format!("element {at}")), "{reason}");
                }
                other => panic!("norm NaN at {at}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_sample_spans_the_tensor_and_the_whole_check_every_block() {
        let kind = <crate::kernels::BlockQ8_0 as WeightBlock>::KIND;
        let n = 1000;
        let clean = blocks(GgmlDType::Q8_0, ramp(n * 32), &[n, 32]);
        assert_eq!(first_non_finite(kind, &clean, false), None);
        assert_eq!(first_non_finite(kind, &clean, true), None);
        let nan_scale = |block: usize| {
            let mut bytes = clean.clone();
            bytes[block * 34..][..2].copy_from_slice(&half::f16::NAN.to_le_bytes());
            bytes
        };
        // The first and the last block are always in the sample.
        for block in [0, n - 1] {
            let found = first_non_finite(kind, &nan_scale(block), false).map(|(i, _)| i / 32);
            assert_eq!(found, Some(block));
        }
        // Every block is checked when the whole tensor is.
        for block in [1, 2, 500, 998] {
            let found = first_non_finite(kind, &nan_scale(block), true).map(|(i, _)| i / 32);
            assert_eq!(found, Some(block));
        }
    }

    #[test]
    fn maps_hf_names() {
        assert_eq!(
            gguf_name("model.layers.12.self_attn.k_proj.weight").as_deref(),
            Some("blk.12.attn_k.weight")
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(gguf_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_name("model.rotary_emb.inv_freq"), None);
    }
}
