//! ggml block quantization of frozen base weights: the block formats GGUF files store
//! (Q4_0, Q4_1, Q8_0), their f64 reference dequantization, ggml's reference quantizers (to
//! build test weights), and [`QuantTensor`], a weight kept in its block format on the GPU
//! that `kernels::qgemm` dequantizes while loading tiles.
//!
//! A block holds 32 consecutive elements of a row (a row's length is a multiple of 32):
//!
//! | format | bytes | layout                                    | value of element `j`       |
//! |--------|-------|-------------------------------------------|----------------------------|
//! | Q4_0   | 18    | f16 `d`, 16 bytes of nibbles              | `(q_j - 8) d`              |
//! | Q4_1   | 20    | f16 `d`, f16 `m`, 16 bytes of nibbles     | `q_j d + m`                |
//! | Q8_0   | 34    | f16 `d`, 32 `i8`                          | `q_j d`                    |
//!
//! In the 4-bit formats byte `i` holds element `i` in its low nibble and `i + 16` in its high
//! nibble. 18- and 34-byte blocks are not 4-byte aligned, so the GPU copy is repacked on
//! upload into two word arrays in one buffer (see [`pack`]):
//!
//! - words `[0, blocks)`: block `b`'s scales, `d` in the low 16 bits and `m` (Q4_1; 0
//!   otherwise) in the high 16 bits, read with `unpack2x16float`;
//! - words `[blocks, blocks + blocks * w)`: block `b`'s quant bytes, unchanged and
//!   little-endian, at `blocks + b * w` (`w` = 4 words for the 4-bit formats, 8 for Q8_0).
//!
//! Bytes per 32 weights on the GPU: Q4_0 20 (file: 18), Q4_1 20 (20), Q8_0 36 (34).

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::half::{f16_bits, f16_value};
use crate::runtime::recorder::Binding;
use crate::runtime::tensor::Indices;

/// Elements per block in every format here.
pub const BLOCK: usize = 32;

/// A ggml block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// f16 scale, 4-bit quants offset by 8.
    Q4_0,
    /// f16 scale and minimum, 4-bit quants.
    Q4_1,
    /// f16 scale, 8-bit signed quants.
    Q8_0,
}

impl BlockFormat {
    /// Every format.
    pub const ALL: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

    /// ggml's name.
    pub fn name(self) -> &'static str {
        match self {
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q4_1 => "Q4_1",
            BlockFormat::Q8_0 => "Q8_0",
        }
    }

    /// Bytes of one block in a GGUF file.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// Bytes of the scales at the start of a block.
    fn scale_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_1 => 4,
            _ => 2,
        }
    }

    /// u32 words of quants per block in the GPU layout.
    pub fn quant_words(self) -> usize {
        (self.block_bytes() - self.scale_bytes()) / 4
    }

    /// The shader's format code (`FMT_*` in `shaders/qgemm.wgsl`).
    pub(crate) fn code(self) -> u32 {
        match self {
            BlockFormat::Q4_0 => 0,
            BlockFormat::Q4_1 => 1,
            BlockFormat::Q8_0 => 2,
        }
    }

    /// Bytes on the GPU of a `[rows, cols]` weight (see the module docs).
    pub fn gpu_bytes(self, rows: usize, cols: usize) -> u64 {
        let blocks = (rows * cols / BLOCK) as u64;
        blocks * 4 * (1 + self.quant_words() as u64)
    }
}

impl std::fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn f16_at(block: &[u8], at: usize) -> f64 {
    f16_value(u16::from_le_bytes([block[at], block[at + 1]])) as f64
}

/// The 32 values of one block (`block.len() == format.block_bytes()`), in f64.
pub fn block_values(format: BlockFormat, block: &[u8]) -> [f64; BLOCK] {
    let mut out = [0.0; BLOCK];
    let d = f16_at(block, 0);
    match format {
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let (m, qs) = match format {
                BlockFormat::Q4_1 => (f16_at(block, 2), &block[4..20]),
                _ => (0.0, &block[2..18]),
            };
            let offset = if format == BlockFormat::Q4_0 { 8 } else { 0 };
            for (i, &byte) in qs.iter().enumerate() {
                out[i] = ((byte & 15) as i32 - offset) as f64 * d + m;
                out[i + 16] = ((byte >> 4) as i32 - offset) as f64 * d + m;
            }
        }
        BlockFormat::Q8_0 => {
            for (o, &byte) in out.iter_mut().zip(&block[2..34]) {
                *o = byte as i8 as f64 * d;
            }
        }
    }
    out
}

fn check_len(format: BlockFormat, name: &str, bytes: usize, numel: usize) -> Result<()> {
    if !numel.is_multiple_of(BLOCK) || bytes != numel / BLOCK * format.block_bytes() {
        return Err(Error::shape(format!(
            "{format} tensor '{name}': {bytes} bytes do not hold {numel} elements in blocks \
             of {BLOCK} ({} bytes each)",
            format.block_bytes()
        )));
    }
    Ok(())
}

/// Every value of `bytes` (whole blocks of `numel` elements), in f64: the reference.
pub fn dequantize_f64(
    format: BlockFormat,
    name: &str,
    bytes: &[u8],
    numel: usize,
) -> Result<Vec<f64>> {
    check_len(format, name, bytes.len(), numel)?;
    Ok(bytes
        .chunks_exact(format.block_bytes())
        .flat_map(|b| block_values(format, b))
        .collect())
}

/// Every value of `bytes` as f32 (the f64 values rounded once).
pub fn dequantize(format: BlockFormat, name: &str, bytes: &[u8], numel: usize) -> Result<Vec<f32>> {
    check_len(format, name, bytes.len(), numel)?;
    Ok(bytes
        .chunks_exact(format.block_bytes())
        .flat_map(|b| block_values(format, b).map(|v| v as f32))
        .collect())
}

fn quantize_block(format: BlockFormat, x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    match format {
        BlockFormat::Q4_0 => {
            // ggml: the value of largest magnitude, with its sign, maps to -8.
            let max = x
                .iter()
                .copied()
                .fold(0.0f32, |a, v| if v.abs() > a.abs() { v } else { a });
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16_bits(d).to_le_bytes());
            let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
            out.extend((0..16).map(|i| q(x[i]) | (q(x[i + 16]) << 4)));
        }
        BlockFormat::Q4_1 => {
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (max - min) / 15.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16_bits(d).to_le_bytes());
            out.extend_from_slice(&f16_bits(min).to_le_bytes());
            let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
            out.extend((0..16).map(|i| q(x[i]) | (q(x[i + 16]) << 4)));
        }
        BlockFormat::Q8_0 => {
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16_bits(d).to_le_bytes());
            out.extend(
                x.iter()
                    .map(|&v| (v * id).round().clamp(-128.0, 127.0) as i8 as u8),
            );
        }
    }
}

/// `data` quantized with ggml's reference quantizer (for building test weights); the
/// length must be a multiple of 32.
pub fn quantize(format: BlockFormat, data: &[f32]) -> Result<Vec<u8>> {
    if !data.len().is_multiple_of(BLOCK) {
        return Err(Error::shape(format!(
            "quantizing to {format}: {} values are not whole blocks of {BLOCK}",
            data.len()
        )));
    }
    let mut out = Vec::with_capacity(data.len() / BLOCK * format.block_bytes());
    for x in data.chunks_exact(BLOCK) {
        quantize_block(format, x, &mut out);
    }
    Ok(out)
}

/// The GPU layout of `bytes` (see the module docs): scale words, then quant words.
pub fn pack(format: BlockFormat, name: &str, bytes: &[u8], numel: usize) -> Result<Vec<u32>> {
    check_len(format, name, bytes.len(), numel)?;
    let blocks = numel / BLOCK;
    let (sb, qw) = (format.scale_bytes(), format.quant_words());
    let mut words = vec![0u32; blocks * (1 + qw)];
    let (scales, quants) = words.split_at_mut(blocks);
    for (b, block) in bytes.chunks_exact(format.block_bytes()).enumerate() {
        let mut s = [0u8; 4];
        s[..sb].copy_from_slice(&block[..sb]);
        scales[b] = u32::from_le_bytes(s);
        for (w, q) in quants[b * qw..(b + 1) * qw]
            .iter_mut()
            .zip(block[sb..].chunks_exact(4))
        {
            *w = u32::from_le_bytes([q[0], q[1], q[2], q[3]]);
        }
    }
    Ok(words)
}

/// A frozen `[rows, cols]` weight on the GPU in a block format (rows of `cols` elements,
/// `cols` a multiple of 32), in the layout of [`pack`].
#[derive(Clone)]
pub struct QuantTensor {
    words: Indices,
    format: BlockFormat,
    shape: [usize; 2],
}

impl std::fmt::Debug for QuantTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantTensor")
            .field("format", &self.format)
            .field("shape", &self.shape)
            .finish()
    }
}

impl QuantTensor {
    /// Uploads `bytes`, the GGUF blocks of a `[rows, cols]` weight (`name` for errors).
    pub fn from_blocks(
        gpu: &Gpu,
        name: &str,
        format: BlockFormat,
        bytes: &[u8],
        [rows, cols]: [usize; 2],
    ) -> Result<Self> {
        if !cols.is_multiple_of(BLOCK) || rows == 0 {
            return Err(Error::shape(format!(
                "{format} weight '{name}' [{rows}, {cols}]: rows must be whole blocks of {BLOCK}"
            )));
        }
        let words = pack(format, name, bytes, rows * cols)?;
        Ok(Self {
            words: Indices::from_slice(gpu, &words, &[words.len()])?,
            format,
            shape: [rows, cols],
        })
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The block format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Blocks stored.
    pub fn blocks(&self) -> usize {
        self.shape[0] * self.shape[1] / BLOCK
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        self.format.gpu_bytes(self.shape[0], self.shape[1])
    }

    /// The GPU it lives on.
    pub fn gpu(&self) -> &Gpu {
        self.words.gpu()
    }

    /// As a dispatch binding.
    pub fn binding(&self) -> Binding {
        self.words.binding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_0_nibble_order_and_offset() {
        // d = 0.5: byte i = (i & 15) | ((15 - i) << 4).
        let mut block = f16_bits(0.5).to_le_bytes().to_vec();
        block.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        let v = block_values(BlockFormat::Q4_0, &block);
        for i in 0..16 {
            assert_eq!(v[i], (i as f64 - 8.0) * 0.5);
            assert_eq!(v[i + 16], ((15 - i) as f64 - 8.0) * 0.5);
        }
    }

    #[test]
    fn q4_1_and_q8_0_values() {
        let mut block = f16_bits(0.25).to_le_bytes().to_vec();
        block.extend_from_slice(&f16_bits(-1.0).to_le_bytes());
        block.extend((0..16u8).map(|i| (i % 16) | (3 << 4)));
        let v = block_values(BlockFormat::Q4_1, &block);
        assert_eq!(v[5], 5.0 * 0.25 - 1.0);
        assert_eq!(v[20], 3.0 * 0.25 - 1.0);
        let mut block = f16_bits(2.0).to_le_bytes().to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = block_values(BlockFormat::Q8_0, &block);
        assert_eq!(v[0], -32.0);
        assert_eq!(v[31], 30.0);
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 64) as f32 - 30.0) / 7.0)
            .collect();
        for f in BlockFormat::ALL {
            let q = quantize(f, &x).unwrap();
            let y = dequantize_f64(f, "x", &q, 64).unwrap();
            // Half a quantization step of the widest block (|x| <= 33/7, range 63/7),
            // plus 0.01 for the f16 rounding of the scales.
            let step = match f {
                BlockFormat::Q4_0 => 33.0 / 7.0 / 8.0 / 2.0,
                BlockFormat::Q4_1 => 63.0 / 7.0 / 15.0 / 2.0,
                BlockFormat::Q8_0 => 33.0 / 7.0 / 127.0 / 2.0,
            } + 0.01;
            for (a, b) in x.iter().zip(&y) {
                assert!((*a as f64 - b).abs() <= step, "{f}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn pack_splits_scales_and_quants() {
        let x: Vec<f32> = (0..64).map(|i| i as f32 / 9.0 - 3.0).collect();
        for f in BlockFormat::ALL {
            let q = quantize(f, &x).unwrap();
            let w = pack(f, "x", &q, 64).unwrap();
            assert_eq!(w.len() as u64 * 4, f.gpu_bytes(2, 32));
            assert_eq!(
                w[1] & 0xffff,
                u16::from_le_bytes([q[f.block_bytes()], q[f.block_bytes() + 1]]) as u32
            );
            let sb = f.scale_bytes();
            assert_eq!(w[2].to_le_bytes(), q[sb..sb + 4]);
        }
        assert!(
            pack(BlockFormat::Q4_0, "w", &[0; 17], 32)
                .unwrap_err()
                .to_string()
                .contains("'w'")
        );
    }
}
