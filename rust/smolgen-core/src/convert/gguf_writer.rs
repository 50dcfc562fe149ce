//! A GGUF writer: metadata, the tensor table, then each tensor's bytes, streamed.
//!
//! The whole header is written first, since every tensor's size is known from its type and
//! shape before its values are computed; each tensor's bytes are then appended as they are
//! produced, so writing a model holds one tensor in memory at a time. The file is written
//! beside its destination and renamed into place only once complete: an error or an interrupt
//! never leaves a half-written model under the destination's name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::load::gguf::Value;

const MAGIC: &[u8; 4] = b"GGUF";
const VERSION: u32 = 3;
/// ggml's `GGUF_DEFAULT_ALIGNMENT`: tensor data starts and is padded on this boundary.
pub const ALIGNMENT: usize = 32;

/// One tensor's entry in the table: its shape outermost first (as the reader reports it),
/// ggml's type id and its size in bytes.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub ggml_type: u32,
    pub bytes: usize,
}

/// A GGUF file being written; [`GgufWriter::finish`] puts it in place.
pub struct GgufWriter {
    out: BufWriter<File>,
    partial: PathBuf,
    destination: PathBuf,
    /// The entries still to be written, in order.
    pending: std::collections::VecDeque<TensorEntry>,
    finished: bool,
}

impl GgufWriter {
    /// Starts `destination` with `metadata` and the table of `tensors`, whose bytes follow
    /// through [`GgufWriter::write_tensor`] in the same order.
    pub fn create(
        destination: &Path,
        metadata: &[(String, Value)],
        tensors: Vec<TensorEntry>,
    ) -> Result<Self> {
        let name = destination.file_name().ok_or_else(|| {
            Error::invalid(format!("{} is not a file name", destination.display()))
        })?;
        let mut partial_name = std::ffi::OsString::from(".");
        partial_name.push(name);
        partial_name.push(".partial");
        let partial = destination.with_file_name(partial_name);
        let file = File::create(&partial).map_err(|e| io_error(&partial, e))?;
        let mut writer = GgufWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            partial,
            destination: destination.to_path_buf(),
            pending: tensors.into(),
            finished: false,
        };
        let header = header_bytes(metadata, writer.pending.make_contiguous())?;
        writer.put(&header)?;
        Ok(writer)
    }

    /// The next tensor's bytes: exactly the size its table entry announced.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let entry = self
            .pending
            .pop_front()
            .ok_or_else(|| Error::invalid(format!("tensor `{name}` is not in the table")))?;
        if entry.name != name || entry.bytes != bytes.len() {
            return Err(Error::invalid(format!(
                "expected `{}` ({} bytes) next, got `{name}` ({} bytes)",
                entry.name,
                entry.bytes,
                bytes.len()
            )));
        }
        self.put(bytes)?;
        self.put(&[0u8; ALIGNMENT][..padding(bytes.len())])
    }

    /// Flushes the file to disk and renames it to its destination.
    pub fn finish(mut self) -> Result<()> {
        if let Some(entry) = self.pending.front() {
            return Err(Error::invalid(format!(
                "tensor `{}` was never written",
                entry.name
            )));
        }
        self.out.flush().map_err(|e| io_error(&self.partial, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| io_error(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.destination)
            .map_err(|e| io_error(&self.destination, e))?;
        self.finished = true;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| io_error(&self.partial, e))
    }
}

impl Drop for GgufWriter {
    /// An unfinished file is removed: no partial model stays behind.
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn padding(len: usize) -> usize {
    len.next_multiple_of(ALIGNMENT) - len
}

/// Magic, version, counts, metadata and the tensor table, padded to where data starts.
fn header_bytes(metadata: &[(String, Value)], tensors: &[TensorEntry]) -> Result<Vec<u8>> {
    let mut h = Vec::new();
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut h, key);
        h.extend_from_slice(&type_id(value).to_le_bytes());
        put_value(&mut h, value)?;
    }
    let mut offset = 0usize;
    for t in tensors {
        put_string(&mut h, &t.name);
        h.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
        // GGUF stores dimensions innermost first.
        for &d in t.shape.iter().rev() {
            h.extend_from_slice(&(d as u64).to_le_bytes());
        }
        h.extend_from_slice(&t.ggml_type.to_le_bytes());
        h.extend_from_slice(&(offset as u64).to_le_bytes());
        offset += t.bytes + padding(t.bytes);
    }
    h.resize(h.len() + padding(h.len()), 0);
    Ok(h)
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// GGUF's value type ids (`enum gguf_type`).
fn type_id(value: &Value) -> u32 {
    match value {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_value(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::Array(items) => {
            // An empty array's element type is not recoverable from the reader; any will do.
            let elem = items.first().map_or(type_id(&Value::U8(0)), type_id);
            if items.iter().any(|v| type_id(v) != elem) {
                return Err(Error::invalid("a GGUF array holds values of one type"));
            }
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::load::gguf::GgufFile;

    #[test]
    fn what_it_writes_reads_back() {
        let dir = std::env::temp_dir().join(format!("smolgen-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tiny.gguf");
        let metadata = vec![
            (
                "general.architecture".to_string(),
                Value::String("llama".into()),
            ),
            ("llama.block_count".to_string(), Value::U32(2)),
            (
                "general.alignment".to_string(),
                Value::U32(ALIGNMENT as u32),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
            ("x.f".to_string(), Value::F32(0.5)),
        ];
        let values: Vec<u8> = (0..3 * 5).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let table = || {
            vec![
                TensorEntry {
                    name: "norm".into(),
                    shape: vec![5],
                    ggml_type: 0,
                    bytes: 20,
                },
                TensorEntry {
                    name: "matrix".into(),
                    shape: vec![3, 5],
                    ggml_type: 0,
                    bytes: 60,
                },
            ]
        };
        let mut w = GgufWriter::create(&path, &metadata, table()).unwrap();
        assert!(w.write_tensor("matrix", &values).is_err(), "out of order");
        drop(w);
        assert!(!path.exists() && std::fs::read_dir(&dir).unwrap().next().is_none());

        let mut w = GgufWriter::create(&path, &metadata, table()).unwrap();
        w.write_tensor("norm", &values[..20]).unwrap();
        w.write_tensor("matrix", &values).unwrap();
        w.finish().unwrap();

        let g = GgufFile::open(&path).unwrap();
        for (k, v) in &metadata {
            assert_eq!(g.get(k), Some(v), "{k}");
        }
        let m = g.tensor_info("matrix").unwrap();
        assert_eq!(m.shape, vec![3, 5]);
        assert_eq!(g.tensor_bytes(m), &values[..]);
        assert_eq!(
            g.tensor_bytes(g.tensor_info("norm").unwrap()),
            &values[..20]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
