//! GGUF files (llama.cpp's model format, versions 2 and 3, little-endian): the header,
//! metadata key/values of every value type, tensor infos, alignment and data offsets, and
//! tensor data read by seeking (the header is parsed streaming; nothing is mapped).
//!
//! Tensor types read: F32, F16, Q4_0, Q4_1, Q8_0 (block formats in
//! [`crate::runtime::quant`]), Q4_K and Q6_K (super-blocks in [`crate::runtime::kquant`],
//! decoded on the CPU only). Other ggml types (Q5_0, Q5_K, IQ*, BF16, ...) are refused with
//! an error naming the tensor and the type. A corrupt or truncated file is an [`Error::File`]
//! naming the key or tensor involved; counts and lengths are checked against the bytes left
//! in the file before anything is allocated for them.
//!
//! Dimensions are ggml's `ne`, fastest-varying first: a weight `[out, in]` in row-major
//! order is stored with `dims = [in, out]`; [`TensorInfo::shape`] gives the row-major shape.

mod parse;
pub mod write;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::runtime::half::f16_value;
use crate::runtime::kquant::{self, KQuant, SUPER_BLOCK};
use crate::runtime::quant::{self, BLOCK, BlockFormat};

/// The file's first four bytes.
pub const MAGIC: [u8; 4] = *b"GGUF";

/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The type of a metadata value (GGUF's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ValueType {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    F32,
    Bool,
    String,
    Array,
    U64,
    I64,
    F64,
}

impl ValueType {
    /// The type of GGUF id `id`.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        [
            U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64,
        ]
        .get(id as usize)
        .copied()
    }

    /// GGUF's id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The fewest bytes a value of this type takes in the file.
    fn min_bytes(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// The element type and the elements (all of that type).
    Array(ValueType, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value's type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(..) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// An integer of any width as i128 (`None` for other types).
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float or an integer as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_int().map(|i| i as f64),
        }
    }

    /// The string, if a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(_, v) => Some(v),
            _ => None,
        }
    }
}

/// A tensor type: the ggml types this reader decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    /// 4-byte floats.
    F32,
    /// IEEE half floats.
    F16,
    /// A block format.
    Quant(BlockFormat),
    /// A k-quant super-block format (CPU decoding only).
    KQuant(KQuant),
}

/// ggml's type names by id, for errors about types this reader does not decode.
const GGML_NAMES: [&str; 31] = [
    "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
    "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
    "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
];

impl TensorType {
    /// The type of ggml id `id`, or an error naming `tensor` and the type.
    pub fn from_id(id: u32, tensor: &str) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Quant(BlockFormat::Q4_0),
            3 => TensorType::Quant(BlockFormat::Q4_1),
            8 => TensorType::Quant(BlockFormat::Q8_0),
            12 => TensorType::KQuant(KQuant::Q4K),
            14 => TensorType::KQuant(KQuant::Q6K),
            _ => {
                let name = GGML_NAMES.get(id as usize).unwrap_or(&"unknown");
                return Err(format!(
                    "tensor '{tensor}' has ggml type {name} (id {id}), which is not supported \
                     (supported: F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K)"
                ));
            }
        })
    }

    /// ggml's id.
    pub fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Quant(BlockFormat::Q4_0) => 2,
            TensorType::Quant(BlockFormat::Q4_1) => 3,
            TensorType::Quant(BlockFormat::Q8_0) => 8,
            TensorType::KQuant(KQuant::Q4K) => 12,
            TensorType::KQuant(KQuant::Q6K) => 14,
        }
    }

    /// ggml's name.
    pub fn name(self) -> &'static str {
        GGML_NAMES[self.id() as usize]
    }

    /// Bytes of `numel` elements whose rows are `row` long, or `None` when a block format's
    /// rows are not whole blocks (32, or 256 for the k-quants) or the size overflows.
    pub fn data_bytes(self, row: u64, numel: u64) -> Option<u64> {
        match self {
            TensorType::F32 => numel.checked_mul(4),
            TensorType::F16 => numel.checked_mul(2),
            TensorType::Quant(f) => row
                .is_multiple_of(BLOCK as u64)
                .then(|| (numel / BLOCK as u64).checked_mul(f.block_bytes() as u64))
                .flatten(),
            TensorType::KQuant(f) => row
                .is_multiple_of(SUPER_BLOCK as u64)
                .then(|| (numel / SUPER_BLOCK as u64).checked_mul(f.block_bytes() as u64))
                .flatten(),
        }
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// ggml's `ne`, fastest-varying first (1 to 4 entries).
    pub dims: Vec<u64>,
    /// Its type.
    pub ty: TensorType,
    /// Absolute offset of its data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl TensorInfo {
    /// The row-major shape (`dims` reversed): a weight `[out, in]` for `dims = [in, out]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }
}

#[derive(Clone, Debug)]
enum Source {
    File(PathBuf),
    Memory(Arc<[u8]>),
}

/// A parsed GGUF header with the means to read tensor data.
#[derive(Clone, Debug)]
pub struct Gguf {
    name: String,
    source: Source,
    /// The format version (2 or 3).
    pub version: u32,
    /// Metadata key/values in file order.
    pub metadata: Vec<(String, Value)>,
    index: BTreeMap<String, usize>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: BTreeMap<String, usize>,
    /// Alignment of the data section and of every tensor's offset.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// File length in bytes.
    pub file_len: u64,
}

impl Gguf {
    /// Parses the header of the file at `path` (its data is read on demand).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let reader = std::io::BufReader::with_capacity(1 << 20, file);
        let name = path.display().to_string();
        parse::header(&name, reader, len, Source::File(path.to_path_buf()))
    }

    /// Parses a GGUF file held in memory; `name` stands for the path in errors.
    pub fn from_bytes(name: &str, bytes: impl Into<Arc<[u8]>>) -> Result<Self> {
        let bytes: Arc<[u8]> = bytes.into();
        let cursor = std::io::Cursor::new(bytes.clone());
        parse::header(name, cursor, bytes.len() as u64, Source::Memory(bytes))
    }

    /// The path (or the name given to [`Gguf::from_bytes`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> Error {
        Error::File {
            path: self.name.clone(),
            message: message.into(),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("metadata key '{key}' is missing")))
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        self.err(format!(
            "metadata key '{key}' should be {want}, got {:?}",
            v.value_type()
        ))
    }

    /// `key` as a non-negative integer that fits usize.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        v.as_int()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    /// `key` as a float (f32, f64 or an integer).
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))
    }

    /// `key` as a string.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    /// `key` as an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        match v {
            Value::Array(ValueType::String, items) => {
                Ok(items.iter().filter_map(Value::as_str).collect())
            }
            _ => Err(self.wrong(key, "an array of strings", v)),
        }
    }

    /// The entry of tensor `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_index
            .get(name)
            .map(|&i| &self.tensors[i])
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))
    }

    /// The raw bytes of tensor `name` (offsets and sizes were checked when parsing).
    pub fn raw(&self, name: &str) -> Result<Vec<u8>> {
        let info = self.tensor(name)?;
        let (start, n) = (info.offset as usize, info.bytes as usize);
        match &self.source {
            Source::Memory(bytes) => Ok(bytes[start..start + n].to_vec()),
            Source::File(path) => {
                let mut buf = vec![0u8; n];
                let read = (|| {
                    let mut f = std::fs::File::open(path)?;
                    f.seek(SeekFrom::Start(info.offset))?;
                    f.read_exact(&mut buf)
                })();
                read.map_err(|e| self.err(format!("reading tensor '{name}': {e}")))?;
                Ok(buf)
            }
        }
    }

    /// Tensor `name` decoded to f32 (block formats through the f64 reference).
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name)?;
        let raw = self.raw(name)?;
        Ok(match info.ty {
            TensorType::F32 => bytemuck::pod_collect_to_vec(&raw),
            TensorType::F16 => raw
                .chunks_exact(2)
                .map(|b| f16_value(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            TensorType::Quant(f) => quant::dequantize(f, name, &raw, info.numel())?,
            TensorType::KQuant(f) => kquant::dequantize_f64(f, name, &raw, info.numel())?
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        })
    }
}
