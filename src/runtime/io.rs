//! Files: safetensors reading with errors that name the tensor, and atomic writes
//! (temporary name, then rename) so a crash never leaves a half-written file behind.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::runtime::error::{Error, Result};

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// A tensor read from a safetensors file: dtype, shape and raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian data.
    pub data: Vec<u8>,
}

/// All tensors of a safetensors file, by name.
#[derive(Debug)]
pub struct TensorFile {
    path: String,
    tensors: BTreeMap<String, RawTensor>,
    metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Reads and parses `path`; a missing file or a corrupt header is a clear error.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, v)| {
                let t = RawTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                };
                (name, t)
            })
            .collect();
        let metadata = SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        Ok(Self {
            path: path.display().to_string(),
            tensors,
            metadata,
        })
    }

    fn err(&self, message: String) -> Error {
        Error::File {
            path: self.path.clone(),
            message,
        }
    }

    /// The file's `__metadata__` string map (empty where it has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A tensor as stored, any dtype.
    pub fn raw(&self, name: &str) -> Option<&RawTensor> {
        self.tensors.get(name)
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// An f32 tensor: its shape and values. Missing or non-f32 is an error naming it.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))?;
        if t.dtype != Dtype::F32 {
            return Err(self.err(format!(
                "tensor '{name}' has dtype {:?}, expected F32",
                t.dtype
            )));
        }
        Ok((t.shape.clone(), bytemuck::pod_collect_to_vec(&t.data)))
    }

    /// A 0/1 mask stored as u8 or bool, checked against `shape`.
    pub fn mask(&self, name: &str, shape: &[usize]) -> Result<Vec<u8>> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))?;
        if !matches!(t.dtype, Dtype::U8 | Dtype::BOOL) {
            return Err(self.err(format!(
                "mask '{name}' has dtype {:?}, expected U8",
                t.dtype
            )));
        }
        if t.shape != shape {
            return Err(self.err(format!(
                "mask '{name}' has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        if let Some(v) = t.data.iter().find(|&&v| v > 1) {
            return Err(self.err(format!("mask '{name}' holds {v}; masks are 0 or 1")));
        }
        Ok(t.data.clone())
    }
}

/// Tensors to write: name, dtype, shape, little-endian bytes.
#[derive(Default)]
pub struct TensorWriter {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: BTreeMap<String, String>,
}

impl TensorWriter {
    /// Adds an f32 tensor.
    pub fn f32(&mut self, name: impl Into<String>, shape: &[usize], data: &[f32]) {
        self.tensors.push((
            name.into(),
            Dtype::F32,
            shape.to_vec(),
            bytemuck::cast_slice(data).to_vec(),
        ));
    }

    /// Adds a u8 tensor.
    pub fn u8(&mut self, name: impl Into<String>, shape: &[usize], data: &[u8]) {
        self.tensors
            .push((name.into(), Dtype::U8, shape.to_vec(), data.to_vec()));
    }

    /// Adds a tensor as read from another file, any dtype.
    pub fn raw(&mut self, name: impl Into<String>, t: &RawTensor) {
        self.tensors
            .push((name.into(), t.dtype, t.shape.clone(), t.data.clone()));
    }

    /// Whether a tensor of that name was added.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.iter().any(|(n, ..)| n == name)
    }

    /// Sets a `__metadata__` entry (a later call with the same key replaces it).
    pub fn metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// Serializes and writes atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let views = self
            .tensors
            .iter()
            .map(|(n, dt, s, d)| {
                TensorView::new(*dt, s.clone(), d)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| Error::InvalidArgument(format!("tensor '{n}': {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata =
            (!self.metadata.is_empty()).then(|| self.metadata.clone().into_iter().collect());
        let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        write_atomic(path, &bytes)
    }
}
