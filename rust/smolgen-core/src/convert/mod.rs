//! Writing a model file in the type a user asks for (`smolgen quantize IN OUT --type q4_k_m`):
//! from a Hugging Face directory or another GGUF, without llama.cpp's tools.
//!
//! The result is what llama.cpp's converter and `llama-quantize` write from the same weights:
//! the same metadata keys, the same per-tensor type mix ([`file_type`]), the same order, and
//! blocks in ggml's reference rounding. A tensor already in its target type is copied byte for
//! byte. The output is streamed one tensor at a time and renamed into place when complete.

pub mod file_type;
pub mod gguf_writer;
pub mod hf_metadata;
pub mod source;

use std::path::Path;

pub use file_type::{FileType, FILE_TYPES};

use crate::error::{Error, Result};
use crate::kernels::WeightKind;
use crate::load::gguf::Value;
use file_type::{tensor_order, MixPlan};
use gguf_writer::{GgufWriter, TensorEntry};
use source::Source;

/// ggml's `GGML_QNT_VERSION`: the block formats' revision, stored with every file.
const QUANTIZATION_VERSION: u32 = 2;

#[derive(Debug, Clone, Copy, Default)]
pub struct QuantizeOptions {
    /// Threads that quantize (0: one per core).
    pub threads: usize,
    /// Quantize tensors that are already quantized (the rounding errors compound).
    pub allow_requantize: bool,
}

/// What happened to one tensor.
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    /// Outermost first.
    pub shape: Vec<usize>,
    /// ggml's names of the type it was stored in and the one it is written in.
    pub from: &'static str,
    pub to: &'static str,
    pub bytes: usize,
}

#[derive(Debug, Clone)]
pub struct QuantizeReport {
    pub file_type: FileType,
    pub tensors: Vec<TensorReport>,
    /// The tensors' bytes in the source, and the written file's size.
    pub input_bytes: usize,
    pub output_bytes: usize,
}

/// Writes the model at `input` (a `.gguf` or a Hugging Face directory) to `output` as
/// `file_type`. `progress` hears of each tensor once it is written (its index, the count, and
/// what was done); an error from it stops the work and leaves no output.
pub fn quantize_model(
    input: &Path,
    output: &Path,
    file_type: FileType,
    options: QuantizeOptions,
    progress: &mut dyn FnMut(usize, usize, &TensorReport) -> Result<()>,
) -> Result<QuantizeReport> {
    refuse_same_file(input, output)?;
    let (source, cfg) = Source::open(input)?;
    let mut tensors = source.tensors()?;
    tensors.sort_by(|a, b| tensor_order(&a.name, &b.name));
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    let heads_per_kv_head = cfg.num_heads / cfg.num_kv_heads.max(1);
    let mut plan = MixPlan::new(file_type, &names, cfg.num_layers, heads_per_kv_head);

    let mut targets = Vec::with_capacity(tensors.len());
    let mut entries = Vec::with_capacity(tensors.len());
    let mut input_bytes = 0;
    for t in &tensors {
        let stored = WeightKind::for_ggml_type(t.ggml_type).ok_or_else(|| {
            Error::unsupported(format!(
                "tensor `{}` is stored as ggml type {}, which smolgen does not read",
                t.name, t.ggml_type
            ))
        })?;
        let target = match plan.tensor_type(&t.name, &t.shape) {
            Some(kind) => kind,
            // Vectors stay as they are in a GGUF; the converter writes them as f32.
            None if matches!(source, Source::Gguf(_)) => stored,
            None => WeightKind::by_name("f32")?,
        };
        if !stored.is_float() && target != stored && !options.allow_requantize {
            return Err(Error::invalid(format!(
                "{} is already quantized (`{}` is {}): quantizing it again compounds the rounding \
                 errors. Start from an F16, BF16 or F32 file or the Hugging Face weights, or \
                 allow requantizing",
                input.display(),
                t.name,
                stored.name
            )));
        }
        let elements: usize = t.shape.iter().product();
        let cols = t.shape.last().copied().unwrap_or(0);
        if !cols.is_multiple_of(target.block_elements) {
            return Err(Error::malformed(
                input,
                format!(
                    "`{}` rows of {cols} values are not whole {} blocks",
                    t.name, target.name
                ),
            ));
        }
        input_bytes += elements / stored.block_elements * stored.block_bytes;
        entries.push(TensorEntry {
            name: t.name.clone(),
            shape: t.shape.clone(),
            ggml_type: target.ggml_type,
            bytes: elements / target.block_elements * target.block_bytes,
        });
        targets.push((stored, target));
    }

    let mut metadata = source.metadata();
    metadata.push((
        "general.quantization_version".into(),
        Value::U32(QUANTIZATION_VERSION),
    ));
    metadata.push(("general.file_type".into(), Value::U32(file_type.id)));

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .build()
        .map_err(|e| Error::invalid(format!("cannot start {} threads: {e}", options.threads)))?;
    let mut writer = GgufWriter::create(output, &metadata, entries.clone())?;
    let mut reports = Vec::with_capacity(tensors.len());
    for (i, (t, (stored, target))) in tensors.iter().zip(targets).enumerate() {
        let copied = (stored == target)
            .then(|| source.stored_bytes(&t.name))
            .flatten();
        match copied {
            Some(bytes) => writer.write_tensor(&t.name, bytes)?,
            None => {
                let values = source.values(t, &cfg)?;
                let bytes = pool.install(|| target.quantize(&values))?;
                writer.write_tensor(&t.name, &bytes)?;
            }
        }
        let report = TensorReport {
            name: t.name.clone(),
            shape: t.shape.clone(),
            from: stored.name,
            to: target.name,
            bytes: entries[i].bytes,
        };
        progress(i, tensors.len(), &report)?;
        reports.push(report);
    }
    writer.finish()?;
    let output_bytes = std::fs::metadata(output)
        .map(|m| m.len() as usize)
        .unwrap_or(0);
    Ok(QuantizeReport {
        file_type,
        tensors: reports,
        input_bytes,
        output_bytes,
    })
}

/// Writing over the input while reading it would destroy it.
fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    if output.is_dir() {
        return Err(Error::invalid(format!(
            "{} is a directory; give the output file's name",
            output.display()
        )));
    }
    let same = match (input.canonicalize(), output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::invalid(format!(
            "the output {} is the input file",
            output.display()
        )));
    }
    Ok(())
}
