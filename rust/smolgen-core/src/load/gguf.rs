//! A validating GGUF reader.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>. candle's own reader trusts
//! the file: a wrong count or offset can make it panic or allocate without bound. This one
//! memory-maps the file and checks every count, length, dimension and offset against the bytes
//! that are really there before anything is allocated, so a truncated or hostile file becomes an
//! [`Error::MalformedModel`] naming the file and the problem.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Nesting depth of arrays inside arrays; real files use 1.
const MAX_ARRAY_DEPTH: usize = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// Any integer kind that fits a `u64` (GGUF writers disagree on u32 vs i32 vs u64).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: GgmlDType,
    /// Outermost first (row-major, as candle wants it); GGUF itself stores them innermost first.
    pub shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub size_in_bytes: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, validated GGUF file, memory-mapped.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    mmap: memmap2::Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mmap = map_file(&path)?;
        let (version, metadata, tensors) = parse(&mmap).map_err(|rejected| match rejected {
            Rejected::Malformed(reason) => Error::malformed(&path, reason),
            Rejected::Unsupported(reason) => Error::Unsupported {
                path: Some(path.clone()),
                reason,
            },
        })?;
        Ok(GgufFile {
            path,
            version,
            metadata,
            tensors,
            mmap,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A metadata key that must be there, as an unsigned integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .ok_or_else(|| self.malformed(format!("missing metadata key `{key}`")))?
            .as_u64()
            .ok_or_else(|| self.malformed(format!("metadata key `{key}` is not an integer")))
    }

    pub fn malformed(&self, reason: impl Into<String>) -> Error {
        Error::malformed(&self.path, reason)
    }

    /// Something in this well-formed file that smolgen does not implement.
    pub fn unsupported(&self, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            path: Some(self.path.clone()),
            reason: reason.into(),
        }
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, exactly as stored (blocks for quantized types).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        // In bounds: checked when the tensor table was parsed.
        &self.mmap[info.offset..info.offset + info.size_in_bytes]
    }

    /// The file's length in bytes.
    pub fn size(&self) -> usize {
        self.mmap.len()
    }

    /// `len` bytes at `offset` of the mapped file, if they lie inside it.
    pub fn bytes(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.mmap.get(offset..offset.checked_add(len)?)
    }

    /// Forgets the parsed metadata arrays (the tokenizer's vocabulary, merges and scores) and
    /// drops the header's pages from resident memory. For a loaded model whose tokenizer and
    /// config are built: nothing reads those again, and they hold several megabytes.
    pub fn shed_header(&mut self) {
        self.metadata
            .retain(|_, v| !matches!(v, Value::Array(items) if items.len() > 64));
        let header = self.tensors.iter().map(|t| t.offset).min().unwrap_or(0);
        self.release(0, header);
    }

    /// Drops this process's resident copy of the pages under `offset..offset + len`, once their
    /// bytes have been copied elsewhere, so resident memory holds them once. Only a hint: the
    /// bytes stay readable (a later read faults them back in from the file), so any page that
    /// the range shares with a neighbouring tensor is merely read again if that one is used.
    pub fn release(&self, offset: usize, len: usize) {
        release_mapped(&self.mmap, offset, len)
    }

    pub fn load_qtensor(&self, name: &str, device: &Device) -> Result<QTensor> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| self.malformed(format!("missing tensor `{name}`")))?;
        Ok(qtensor_from_ggml(
            info.dtype,
            self.tensor_bytes(info),
            info.shape.clone(),
            device,
        )?)
    }
}

/// Drops this process's resident copy of the pages of `mmap` under `offset..offset + len` (see
/// [`GgufFile::release`]); nothing when the range is not inside the map.
pub(crate) fn release_mapped(mmap: &memmap2::Mmap, offset: usize, len: usize) {
    if offset.checked_add(len).is_none_or(|end| end > mmap.len()) {
        return;
    }
    #[cfg(unix)]
    {
        // SAFETY: the map is read-only, so no page holds changes that dropping it would lose:
        // every page dropped reads back with the file's bytes, and no reference into the map
        // ever sees anything else.
        let _ =
            unsafe { mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
    }
}

/// Memory-maps a model file read-only.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => Error::ModelNotFound(path.to_path_buf()),
        _ => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only; a file truncated under us while mapped is the one hazard
    // of every mmap-based loader (llama.cpp and safetensors accept it too).
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

/// ggml's type ids (ggml.h `enum ggml_type`) and candle's names for them.
const GGML_TYPES: [(u32, GgmlDType); 15] = [
    (0, GgmlDType::F32),
    (1, GgmlDType::F16),
    (2, GgmlDType::Q4_0),
    (3, GgmlDType::Q4_1),
    (6, GgmlDType::Q5_0),
    (7, GgmlDType::Q5_1),
    (8, GgmlDType::Q8_0),
    (9, GgmlDType::Q8_1),
    (10, GgmlDType::Q2K),
    (11, GgmlDType::Q3K),
    (12, GgmlDType::Q4K),
    (13, GgmlDType::Q5K),
    (14, GgmlDType::Q6K),
    (15, GgmlDType::Q8K),
    (30, GgmlDType::BF16),
];

/// ggml's names of its type ids (`enum ggml_type`; the gaps are ids ggml retired), for errors.
const GGML_NAMES: [&str; 40] = [
    "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K",
    "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S",
    "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0", "",
    "", "", "MXFP4",
];

/// ggml's name of a type id (`"Q4_K"`), or `"ggml type N"` for an id ggml does not define.
pub fn ggml_type_name(id: u32) -> String {
    match GGML_NAMES.get(id as usize) {
        Some(name) if !name.is_empty() => (*name).to_string(),
        _ => format!("ggml type {id}"),
    }
}

/// Whether ggml defines type `id`.
fn is_ggml_type(id: u32) -> bool {
    GGML_NAMES
        .get(id as usize)
        .is_some_and(|name| !name.is_empty())
}

/// Maps a ggml type id to candle's type.
pub fn ggml_dtype(id: u32) -> Option<GgmlDType> {
    GGML_TYPES.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
}

/// ggml's type id of a candle type.
pub fn ggml_type_id(dtype: GgmlDType) -> u32 {
    GGML_TYPES
        .iter()
        .find(|(_, t)| *t == dtype)
        .map_or(u32::MAX, |(i, _)| *i)
}

/// A bounds-checked little-endian cursor. Every read fails with a message instead of panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type ParseResult<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> ParseResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "file ends inside {what} (needs {n} bytes at offset {}, {} left)",
                self.pos,
                self.remaining()
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> ParseResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> ParseResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> ParseResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that will size a loop or allocation: each element needs at least `min_elem_bytes`
    /// of the file, which bounds the count by the file's own size.
    fn count(&mut self, min_elem_bytes: usize, what: &str) -> ParseResult<usize> {
        let n = self.u64(what)?;
        let max = (self.remaining() / min_elem_bytes.max(1)) as u64;
        if n > max {
            return Err(format!(
                "{what} is {n}, more than the {} bytes left in the file can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> ParseResult<String> {
        let len = self.count(1, what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, type_id: u32, depth: usize, what: &str) -> ParseResult<Value> {
        Ok(match type_id {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.array(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("{what}: boolean byte is {b}, not 0 or 1")),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    ));
                }
                let elem_type = self.u32(what)?;
                let min_size = match elem_type {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8, // a string or array is at least its u64 length
                    t => return Err(format!("{what}: unknown array element type {t}")),
                };
                let n = self.count(min_size, what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_type, depth + 1, what)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(format!("{what}: unknown value type {t}")),
        })
    }
}

type Parsed = (u32, BTreeMap<String, Value>, Vec<TensorInfo>);

/// Why a file was not read: it is corrupt, or it is a well-formed file in a format smolgen does
/// not read (a tensor of a ggml type it has no reader for).
#[derive(Debug)]
enum Rejected {
    Malformed(String),
    Unsupported(String),
}

fn parse(buf: &[u8]) -> std::result::Result<Parsed, Rejected> {
    let mut unreadable = None;
    let parsed = parse_table(buf, &mut unreadable).map_err(Rejected::Malformed)?;
    match unreadable {
        Some(reason) => Err(Rejected::Unsupported(reason)),
        None => Ok(parsed),
    }
}

/// The header and the tensor table, every count, length and offset checked. A tensor of a type
/// smolgen has no reader for is left out and named in `unreadable`.
fn parse_table(buf: &[u8], unreadable: &mut Option<String>) -> ParseResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c.take(4, "the magic number").map_err(|_| {
        format!(
            "not a GGUF file: {} bytes, too short for the magic number",
            buf.len()
        )
    })?;
    if magic != MAGIC {
        return Err(format!(
            "not a GGUF file: magic is {magic:02x?}, expected \"GGUF\""
        ));
    }
    let version = c.u32("the version")?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        ));
    }
    // A tensor-table entry is at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes,
    // a metadata entry 8 (key length) + 4 (type) + 1.
    let tensor_count = c.count(24, "the tensor count")?;
    let kv_count = c.count(13, "the metadata count")?;

    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string(&format!("metadata key #{i}"))?;
        let type_id = c.u32(&format!("the type of `{key}`"))?;
        let value = c.value(type_id, 0, &format!("metadata `{key}`"))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
            _ => return Err(format!("general.alignment is {v:?}, not a power of two")),
        },
    };

    let mut raw = Vec::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let name = c.string(&format!("the name of tensor #{i}"))?;
        let n_dims = c.u32(&format!("the rank of `{name}`"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1..=4 allowed)"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = c.u64(&format!("the shape of `{name}`"))?;
            if d == 0 {
                return Err(format!("tensor `{name}` has a zero dimension"));
            }
            dims.push(d);
        }
        let type_id = c.u32(&format!("the type of `{name}`"))?;
        let offset = c.u64(&format!("the offset of `{name}`"))?;
        if offset % alignment != 0 {
            return Err(format!(
                "tensor `{name}` offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        match ggml_dtype(type_id) {
            Some(dtype) => raw.push((name, dims, dtype, offset)),
            // A type ggml defines but smolgen has no reader for (the IQ and ternary types): the
            // rest of the file is still checked, so a corrupt file is called corrupt.
            None if is_ggml_type(type_id) => {
                unreadable.get_or_insert_with(|| {
                    format!(
                        "tensor `{name}` is stored as {}, a type smolgen does not read",
                        ggml_type_name(type_id)
                    )
                });
            }
            None => return Err(format!("tensor `{name}` has unknown ggml type {type_id}")),
        }
    }

    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    let mut tensors = Vec::with_capacity(raw.len());
    let mut names = std::collections::HashSet::new();
    for (name, mut dims, dtype, offset) in raw {
        if !names.insert(name.clone()) {
            return Err(format!("tensor `{name}` appears twice"));
        }
        let elems = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}` shape {dims:?} overflows"))?;
        let block = dtype.block_size() as u64;
        // The innermost dimension must hold whole blocks (ggml's own rule).
        if dims[0] % block != 0 {
            return Err(format!(
                "tensor `{name}` rows of {} elements are not whole {dtype:?} blocks of {block}",
                dims[0]
            ));
        }
        let size = (elems / block)
            .checked_mul(dtype.type_size() as u64)
            .ok_or_else(|| format!("tensor `{name}` size overflows"))?;
        let start = data_start
            .checked_add(offset)
            .ok_or_else(|| format!("tensor `{name}` offset overflows"))?;
        let end = start
            .checked_add(size)
            .ok_or_else(|| format!("tensor `{name}` size overflows"))?;
        if end > file_len {
            return Err(format!(
                "tensor `{name}` ({size} bytes at offset {start}) runs past the end of the file \
                 ({file_len} bytes): the file is truncated or corrupt"
            ));
        }
        dims.reverse();
        tensors.push(TensorInfo {
            name,
            dtype,
            shape: dims.into_iter().map(|d| d as usize).collect(),
            offset: start as usize,
            size_in_bytes: size as usize,
        });
    }
    Ok((version, metadata, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny GGUF writer for tests: one F32 tensor and a few metadata values.
    fn write_gguf(tensors: &[(&str, Vec<u64>, u32, u64)], kv: &[(&str, Value)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        for (k, v) in kv {
            put_str(&mut out, k);
            match v {
                Value::U32(x) => {
                    out.extend_from_slice(&4u32.to_le_bytes());
                    out.extend_from_slice(&x.to_le_bytes());
                }
                Value::String(s) => {
                    out.extend_from_slice(&8u32.to_le_bytes());
                    put_str(&mut out, s);
                }
                _ => unimplemented!(),
            }
        }
        let mut data_len = 0;
        for (name, dims, ty, off) in tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
            // Room for the data of sane tensors only: the absurd ones are what the tests try.
            let bytes = dims.iter().try_fold(4u64, |acc, &d| acc.checked_mul(d));
            if let Some(end) = bytes.and_then(|b| b.checked_add(*off)) {
                if end <= 1 << 20 {
                    data_len = data_len.max(end);
                }
            }
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.resize(out.len() + data_len as usize, 0);
        out
    }

    fn parse_err(buf: &[u8]) -> String {
        match parse(buf) {
            Ok(_) => panic!("expected an error"),
            Err(Rejected::Malformed(e)) => e,
            Err(Rejected::Unsupported(e)) => panic!("expected malformed, got unsupported: {e}"),
        }
    }

    #[test]
    fn parses_a_small_file() -> std::result::Result<(), Rejected> {
        let buf = write_gguf(
            &[("w", vec![8, 2], 0, 0)],
            &[("general.architecture", Value::String("llama".into()))],
        );
        let (version, md, tensors) = parse(&buf)?;
        assert_eq!(version, 3);
        assert_eq!(md["general.architecture"].as_str(), Some("llama"));
        assert_eq!(tensors[0].shape, vec![2, 8]);
        assert_eq!(tensors[0].size_in_bytes, 64);
        Ok(())
    }

    #[test]
    fn rejects_wrong_magic_and_truncation() {
        let buf = write_gguf(&[("w", vec![8, 2], 0, 0)], &[]);
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(parse_err(&bad).contains("not a GGUF file"));
        assert!(parse_err(&buf[..2]).contains("too short"));
        // Cut inside the tensor data.
        assert!(parse_err(&buf[..buf.len() - 1]).contains("past the end"));
        // Cut inside the header: every prefix is an error, none a panic.
        for n in 0..buf.len() - 64 {
            assert!(parse(&buf[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn rejects_absurd_counts_sizes_and_offsets() {
        let mut buf = write_gguf(&[("w", vec![8, 2], 0, 0)], &[]);
        buf[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
        assert!(parse_err(&buf).contains("tensor count"));

        let buf = write_gguf(&[("w", vec![u64::MAX, 4], 0, 0)], &[]);
        assert!(parse_err(&buf).contains("overflows"));

        let buf = write_gguf(&[("w", vec![8, 2], 0, 1 << 40)], &[]);
        assert!(parse_err(&buf).contains("past the end"));

        let buf = write_gguf(&[("w", vec![8, 2], 0, 3)], &[]);
        assert!(parse_err(&buf).contains("alignment"));

        let buf = write_gguf(&[("w", vec![8, 2], 77, 0)], &[]);
        assert!(parse_err(&buf).contains("unknown ggml type"));

        let buf = write_gguf(
            &[("w", vec![8, 2], 0, 0)],
            &[("general.alignment", Value::U32(0))],
        );
        assert!(parse_err(&buf).contains("alignment"));

        let buf = write_gguf(&[("w", vec![0], 0, 0)], &[]);
        assert!(parse_err(&buf).contains("zero dimension"));
    }

    /// The K-quants (256-element super-blocks) go through the same table checks as the rest.
    #[test]
    fn reads_k_quant_tensors_as_candle_writes_them() -> crate::Result<()> {
        use candle_core::quantized::gguf_file;
        use candle_core::Tensor;

        let dev = Device::Cpu;
        let src = Tensor::randn(0f32, 1.0, (4, 512), &dev)?;
        let dir = std::env::temp_dir().join(format!("smolgen-kq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        for dtype in [
            GgmlDType::Q4K,
            GgmlDType::Q6K,
            GgmlDType::Q2K,
            GgmlDType::Q8_0,
        ] {
            let q = QTensor::quantize(&src, dtype)?;
            let path = dir.join(format!("{dtype:?}.gguf"));
            let mut file = File::create(&path).map_err(|e| Error::Io {
                path: path.clone(),
                source: e,
            })?;
            let arch = gguf_file::Value::String("llama".into());
            gguf_file::write(&mut file, &[("general.architecture", &arch)], &[("w", &q)])?;
            drop(file);
            let g = GgufFile::open(&path)?;
            assert_eq!(g.tensors[0].dtype, dtype);
            assert_eq!(g.tensors[0].shape, vec![4, 512]);
            let ours = g.load_qtensor("w", &dev)?.dequantize(&dev)?;
            let diff = (ours - q.dequantize(&dev)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "{dtype:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    /// A type ggml defines and smolgen does not read is unsupported, not corrupt; one ggml does
    /// not define is corrupt.
    #[test]
    fn names_a_ggml_type_it_does_not_read() {
        let buf = write_gguf(&[("a", vec![8, 2], 0, 0), ("w", vec![256, 2], 16, 64)], &[]);
        match parse(&buf) {
            Err(Rejected::Unsupported(e)) => {
                assert!(e.contains("`w`") && e.contains("IQ2_XXS"), "{e}");
            }
            other => panic!("expected unsupported, got {other:?}"),
        }
        let buf = write_gguf(&[("w", vec![8, 2], 31, 0)], &[]);
        assert!(parse_err(&buf).contains("unknown ggml type 31"));
    }

    #[test]
    fn rejects_a_huge_string_length() {
        let mut buf = write_gguf(&[], &[("k", Value::String("v".into()))]);
        // The key length field sits right after the 24-byte header.
        buf[24..32].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(parse_err(&buf).contains("more than the"));
    }
}
