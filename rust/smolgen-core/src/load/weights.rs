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

    fn check_shape(&self, name: &str, got: &[usize], want: &[usize]) -> Result<()> {
        if got != want {
            return Err(Error::malformed(
                self.path(),
                format!("tensor `{name}` has shape {got:?}, expected {want:?}"),
            ));
        }
        Ok(())
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
        let (raw, dtype, elements) = match &self.source {
            Source::Gguf(g) => {
                let info = g
                    .tensor_info(name)
                    .ok_or_else(|| g.malformed(format!("missing tensor `{name}`")))?;
                self.check_shape(name, &info.shape, &want)?;
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
                self.check_shape(name, &info.shape, &want)?;
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
        Ok(match &self.source {
            Source::Gguf(g) => {
                let q = g.load_qtensor(name, &self.device)?;
                self.check_shape(name, q.shape().dims(), &want)?;
                let (dtype, bytes) = (format!("{:?}", q.dtype()), q.storage_size_in_bytes());
                self.record(name, dtype, want[0] * want[1], bytes);
                Stored::Blocks(q)
            }
            Source::Safetensors(s) => match s.quantized_type(shape.1) {
                Some(kind) => {
                    let (_, info, _) = s.locate(name)?;
                    self.check_shape(name, &info.shape, &want)?;
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
                    self.check_shape(name, t.dims(), &want)?;
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
        let t = match &self.source {
            Source::Gguf(g) => g
                .load_qtensor(name, &self.device)?
                .dequantize(&self.device)?,
            Source::Safetensors(s) => s.tensor(name, &self.device)?,
        };
        self.check_shape(name, t.dims(), &[len])?;
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
    use super::gguf_name;

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
