//! ggml's k-quant super-blocks Q4_K and Q6_K (256 elements each), dequantized on the CPU in
//! f64 (the GGUF reader decodes them; the GPU GEMMs of `kernels::qgemm` do not read them).
//!
//! - Q4_K, 144 bytes: f16 `d`, f16 `dmin`, 12 bytes of eight 6-bit scale/min pairs, 128
//!   bytes of nibbles. Sub-block `s` (32 elements) is `d sc_s q - dmin m_s`; each 32 bytes
//!   of nibbles hold sub-blocks `2j` (low nibbles) and `2j + 1` (high).
//! - Q6_K, 210 bytes: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 `i8`
//!   scales, f16 `d`. Element value `d sc (q - 32)` with 6-bit `q`.

use crate::runtime::error::{Error, Result};
use crate::runtime::half::f16_value;

/// Elements per super-block.
pub const SUPER_BLOCK: usize = 256;

/// A k-quant format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KQuant {
    /// 4-bit quants, 6-bit scales and minimums.
    Q4K,
    /// 6-bit quants, 8-bit scales.
    Q6K,
}

impl KQuant {
    /// ggml's name.
    pub fn name(self) -> &'static str {
        match self {
            KQuant::Q4K => "Q4_K",
            KQuant::Q6K => "Q6_K",
        }
    }

    /// Bytes of one super-block.
    pub fn block_bytes(self) -> usize {
        match self {
            KQuant::Q4K => 144,
            KQuant::Q6K => 210,
        }
    }
}

fn f16_at(b: &[u8], at: usize) -> f64 {
    f16_value(u16::from_le_bytes([b[at], b[at + 1]])) as f64
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and minimum of sub-block `j`.
fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn q4k(b: &[u8], out: &mut Vec<f64>) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (j, q) in qs.chunks_exact(32).enumerate() {
        for (half, shift) in [(0, 0), (1, 4)] {
            let (sc, m) = scale_min(2 * j + half, scales);
            let (d1, m1) = (d * sc as f64, dmin * m as f64);
            out.extend(q.iter().map(|&v| d1 * ((v >> shift) & 0xF) as f64 - m1));
        }
    }
}

fn q6k(b: &[u8], out: &mut Vec<f64>) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for n in 0..2 {
        let (ql, qh, sc) = (&ql[64 * n..], &qh[32 * n..], &sc[8 * n..]);
        let mut y = [0.0; 128];
        for l in 0..32 {
            let is = l / 16;
            let q = [
                (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, &qk) in q.iter().enumerate() {
                let scale = sc[is + 2 * k] as i8 as f64;
                y[l + 32 * k] = d * scale * (qk as i32 - 32) as f64;
            }
        }
        out.extend_from_slice(&y);
    }
}

/// Every value of `bytes` (whole super-blocks of `numel` elements) in f64; `name` for errors.
pub fn dequantize_f64(format: KQuant, name: &str, bytes: &[u8], numel: usize) -> Result<Vec<f64>> {
    if !numel.is_multiple_of(SUPER_BLOCK)
        || bytes.len() != numel / SUPER_BLOCK * format.block_bytes()
    {
        return Err(Error::shape(format!(
            "{} tensor '{name}': {} bytes do not hold {numel} elements in super-blocks of \
             {SUPER_BLOCK} ({} bytes each)",
            format.name(),
            bytes.len(),
            format.block_bytes()
        )));
    }
    let mut out = Vec::with_capacity(numel);
    for b in bytes.chunks_exact(format.block_bytes()) {
        match format {
            KQuant::Q4K => q4k(b, &mut out),
            KQuant::Q6K => q6k(b, &mut out),
        }
    }
    Ok(out)
}
