//! Finiteness of a checkpoint: checked on the bytes a checkpoint save reads back anyway
//! (no extra readback), and on the files `eval`, `export` and `merge` load.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::file_err;
use crate::runtime::error::{Error, Result};

/// The first tensor of a safetensors buffer holding a NaN or an infinity, with the count
/// of such values; `None` when every value is finite. Only f32 tensors are checked.
pub fn first_non_finite(bytes: &[u8], file: &Path) -> Result<Option<(String, usize)>> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| file_err(file, format!("not a valid safetensors file: {e}")))?;
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in tensors {
        if view.dtype() != Dtype::F32 {
            continue;
        }
        let bad = view
            .data()
            .chunks_exact(4)
            .filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            .count();
        if bad > 0 {
            return Ok(Some((name, bad)));
        }
    }
    Ok(None)
}

/// Errors when the safetensors file at `path` holds a non-finite value, naming the tensor
/// (`eval`, `export` and `merge` refuse such a checkpoint).
pub fn check_finite_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    match first_non_finite(&bytes, path)? {
        None => Ok(()),
        Some((name, n)) => Err(file_err(
            path,
            format!(
                "tensor {name} holds {n} non-finite values (NaN or infinity); refusing to use this checkpoint"
            ),
        )),
    }
}
