//! The streaming header parser: every count and length is checked against the bytes left in
//! the file before it is allocated or read, and every error names the key or tensor.

use std::collections::BTreeMap;
use std::io::Read;

use super::{DEFAULT_ALIGNMENT, Gguf, MAGIC, Source, TensorInfo, TensorType, Value, ValueType};
use crate::runtime::error::{Error, Result};

/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: u32 = 3;

struct Input<R> {
    r: R,
    pos: u64,
    len: u64,
    name: String,
}

impl<R: Read> Input<R> {
    fn err(&self, message: String) -> Error {
        Error::File {
            path: self.name.clone(),
            message,
        }
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    /// Fails unless `n` more bytes are in the file.
    fn need(&self, n: u64, what: &str) -> Result<()> {
        if n > self.left() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} left",
                self.pos,
                self.left()
            )));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        self.need(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.r
            .read_exact(&mut buf)
            .map_err(|e| self.err(format!("reading {what} at offset {}: {e}", self.pos)))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.bytes(N as u64, what)?;
        Ok(b.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b).map_err(|e| self.err(format!("{what} is not UTF-8: {e}")))
    }

    /// A count of items that take at least `min` bytes each, checked against the file.
    fn count(&mut self, min: u64, what: &str) -> Result<u64> {
        let n = self.u64(what)?;
        if n.checked_mul(min).is_none_or(|b| b > self.left()) {
            return Err(self.err(format!(
                "{what}: {n} entries of at least {min} bytes cannot fit in the {} bytes left",
                self.left()
            )));
        }
        Ok(n)
    }

    fn value_type(&mut self, what: &str) -> Result<ValueType> {
        let id = self.u32(what)?;
        ValueType::from_id(id)
            .ok_or_else(|| self.err(format!("{what} has unknown value type {id}")))
    }

    fn value(&mut self, ty: ValueType, what: &str, depth: u32) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(what)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(what)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            ValueType::U32 => Value::U32(self.u32(what)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            ValueType::U64 => Value::U64(self.u64(what)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            ValueType::Bool => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            ValueType::String => Value::String(self.string(what)?),
            ValueType::Array => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(format!("{what}: arrays nested deeper than {MAX_DEPTH}")));
                }
                let elem = self.value_type(what)?;
                let n = self.count(elem.min_bytes(), what)?;
                // Grown as elements are read, so a count the file cannot back costs nothing.
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(elem, what, depth + 1)?);
                }
                Value::Array(elem, items)
            }
        })
    }

    fn tensor_info(&mut self, i: u64) -> Result<(TensorInfo, u64)> {
        let name = self.string(&format!("the name of tensor #{i}"))?;
        let what = format!("tensor '{name}'");
        let n_dims = self.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.err(format!("{what} has {n_dims} dimensions (1 to {MAX_DIMS})")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&what)?);
        }
        let numel = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let ty = TensorType::from_id(self.u32(&what)?, &name).map_err(|m| self.err(m))?;
        let offset = self.u64(&what)?;
        let bytes = numel
            .filter(|&n| n > 0 && n <= isize::MAX as u64)
            .and_then(|n| ty.data_bytes(dims[0], n))
            .ok_or_else(|| {
                self.err(format!(
                    "{what}: dims {dims:?} of type {ty} give no valid size (rows of a block \
                     format must be whole blocks of 32, of a k-quant of 256)"
                ))
            })?;
        let info = TensorInfo {
            name,
            dims,
            ty,
            offset: 0,
            bytes,
        };
        Ok((info, offset))
    }
}

fn alignment(metadata: &[(String, Value)], err: impl Fn(String) -> Error) -> Result<u64> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match v.as_int() {
        Some(a) if a > 0 && (a as u64).is_power_of_two() && a <= 1 << 30 => Ok(a as u64),
        _ => Err(err(format!(
            "metadata key 'general.alignment' = {v:?} is not a power of two"
        ))),
    }
}

fn preamble<R: Read>(input: &mut Input<R>) -> Result<u32> {
    let magic = input.array::<4>("the magic")?;
    if magic != MAGIC {
        return Err(input.err(format!(
            "not a GGUF file: the magic is {magic:?}, expected {MAGIC:?} (\"GGUF\")"
        )));
    }
    let version = input.u32("the version")?;
    match version {
        2 | 3 => Ok(version),
        1 => Err(input.err("GGUF version 1 is not supported (versions 2 and 3 are)".into())),
        v if v.swap_bytes() <= 3 => Err(input.err(format!(
            "GGUF version {v} looks big-endian; only little-endian files are supported"
        ))),
        v => Err(input.err(format!("unknown GGUF version {v} (2 and 3 are supported)"))),
    }
}

fn metadata<R: Read>(input: &mut Input<R>, n: u64) -> Result<Vec<(String, Value)>> {
    let mut out = Vec::with_capacity(n as usize);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..n {
        let key = input.string(&format!("metadata key #{i}"))?;
        let what = format!("metadata key '{key}'");
        let ty = input.value_type(&what)?;
        let v = input.value(ty, &what, 0)?;
        if !seen.insert(key.clone()) {
            return Err(input.err(format!("{what} appears twice")));
        }
        out.push((key, v));
    }
    Ok(out)
}

/// Parses the header from `r` (positioned at the start of a file of `len` bytes).
pub(super) fn header<R: Read>(name: &str, r: R, len: u64, source: Source) -> Result<Gguf> {
    let mut input = Input {
        r,
        pos: 0,
        len,
        name: name.to_string(),
    };
    let version = preamble(&mut input)?;
    let n_tensors = input.count(32, "the tensor count")?;
    let n_kv = input.count(13, "the metadata count")?;
    let metadata = metadata(&mut input, n_kv)?;
    let alignment = alignment(&metadata, |m| input.err(m))?;
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = BTreeMap::new();
    let mut offsets = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let (info, offset) = input.tensor_info(i)?;
        if tensor_index
            .insert(info.name.clone(), tensors.len())
            .is_some()
        {
            return Err(input.err(format!("tensor '{}' appears twice", info.name)));
        }
        tensors.push(info);
        offsets.push(offset);
    }
    let data_offset = input.pos.next_multiple_of(alignment);
    for (t, rel) in tensors.iter_mut().zip(offsets) {
        let end = data_offset
            .checked_add(rel)
            .and_then(|s| s.checked_add(t.bytes));
        if rel % alignment != 0 {
            return Err(input.err(format!(
                "tensor '{}': data offset {rel} is not a multiple of the alignment {alignment}",
                t.name
            )));
        }
        if end.is_none_or(|e| e > len) {
            return Err(input.err(format!(
                "tensor '{}': {} bytes at data offset {rel} run past the end of the file \
                 ({len} bytes, data from {data_offset})",
                t.name, t.bytes
            )));
        }
        t.offset = data_offset + rel;
    }
    let index = metadata
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    Ok(Gguf {
        name: name.to_string(),
        source,
        version,
        metadata,
        index,
        tensors,
        tensor_index,
        alignment,
        data_offset,
        file_len: len,
    })
}
