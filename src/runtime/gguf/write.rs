//! A small GGUF writer (version 3): for tests, which build tiny and deliberately broken
//! files in memory, and for tiny model configs. Everything is public so a test can set a
//! raw type id or a bad offset.

use std::path::Path;

use super::{DEFAULT_ALIGNMENT, MAGIC, TensorType, Value};
use crate::runtime::error::{Error, Result};
use crate::runtime::io::write_atomic;

/// One tensor to write.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    /// Name.
    pub name: String,
    /// ggml's `ne`, fastest-varying first.
    pub dims: Vec<u64>,
    /// The raw ggml type id.
    pub type_id: u32,
    /// The data, as stored.
    pub data: Vec<u8>,
    /// The relative data offset to write instead of the computed one.
    pub offset: Option<u64>,
}

/// A GGUF file under construction.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    /// The version written (3 unless changed).
    pub version: u32,
    /// Metadata in order.
    pub metadata: Vec<(String, Value)>,
    /// Tensors in order.
    pub tensors: Vec<TensorEntry>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::Array(ty, items) => {
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

impl Writer {
    /// An empty version-3 file.
    pub fn new() -> Self {
        Self {
            version: 3,
            ..Default::default()
        }
    }

    /// Adds a metadata key.
    pub fn kv(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor of type `ty` with row-major `shape` (written as reversed dims); the
    /// data size must match the type and shape.
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: TensorType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let numel = dims.iter().product();
        if ty.data_bytes(dims[0], numel) != Some(data.len() as u64) {
            return Err(Error::shape(format!(
                "gguf writer: tensor '{name}' {shape:?} of type {ty} cannot hold {} bytes",
                data.len()
            )));
        }
        self.tensors.push(TensorEntry {
            name: name.to_string(),
            dims,
            type_id: ty.id(),
            data,
            offset: None,
        });
        Ok(self)
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_int())
            .filter(|&a| a > 0)
            .map_or(DEFAULT_ALIGNMENT, |a| a as u64)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut placed = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&t.offset.unwrap_or(offset).to_le_bytes());
            placed.push(offset);
            offset = (offset + t.data.len() as u64).next_multiple_of(align);
        }
        let data_start = (out.len() as u64).next_multiple_of(align);
        out.resize(data_start as usize, 0);
        for (t, at) in self.tensors.iter().zip(placed) {
            out.resize((data_start + at) as usize, 0);
            out.extend_from_slice(&t.data);
        }
        out
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes())
    }
}
