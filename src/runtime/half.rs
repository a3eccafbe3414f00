//! f16 storage of frozen base weights: the [`BaseDType`] setting, the host packing
//! (round-to-nearest-even f32 -> f16, two halves per u32, element `2i` in the low half) and
//! [`HalfTensor`], the packed tensor the GEMM reads as operand B (decoded in the shader with
//! `unpack2x16float`, accumulated in f32; see `kernels::gemm`).
//!
//! Overflow policy: a finite weight that rounds beyond the f16 range (|x| >= 65520) is an
//! error naming the tensor and the index, never a silent infinity nor a clamp: such a model
//! needs `--base-dtype f32`. Infinities and NaNs map to the f16 infinity / a quiet NaN.
//! Values below the smallest f16 subnormal round to (signed) zero, as IEEE rounding does.
//!
//! The conversion is the `half` crate's (already a dependency of naga), round to nearest,
//! ties to even; the tests below pin its bit patterns.

use half::f16;
use serde::{Deserialize, Serialize};

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Binding;
use crate::runtime::tensor::{Indices, Tensor};

/// How the frozen base weights of an encoder's projections are stored on the GPU.
/// Adapters, gradients, optimizer state, biases, LayerNorm, embeddings and heads stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum BaseDType {
    /// 4 bytes per weight (the checkpoint's values).
    #[default]
    F32,
    /// 2 bytes per weight, rounded to nearest even; f32 accumulation.
    F16,
}

impl BaseDType {
    /// The spelling of `--base-dtype` and `config.json` (`f32`, `f16`).
    pub fn name(self) -> &'static str {
        match self {
            BaseDType::F32 => "f32",
            BaseDType::F16 => "f16",
        }
    }
}

impl std::fmt::Display for BaseDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BaseDType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(BaseDType::F32),
            "f16" | "float16" | "half" => Ok(BaseDType::F16),
            other => Err(Error::InvalidArgument(format!(
                "base dtype '{other}': expected f32 or f16"
            ))),
        }
    }
}

/// The f16 bits of `x`, rounded to nearest, ties to even.
pub fn f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// The f32 value of f16 bits (exact).
pub fn f16_value(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

/// `x` rounded to the nearest f16 value, as f32 (what the GPU decodes).
pub fn round_f16(x: f32) -> f32 {
    f16_value(f16_bits(x))
}

/// Packs `data` two halves per word (element `2i` low, `2i + 1` high; an odd tail pads a
/// zero). A finite value beyond the f16 range is an error naming `name` and the index.
pub fn pack_f16(name: &str, data: &[f32]) -> Result<Vec<u32>> {
    let mut words = Vec::new();
    words
        .try_reserve_exact(data.len().div_ceil(2))
        .map_err(|e| Error::InvalidArgument(format!("packing '{name}' to f16: {e}")))?;
    for (i, pair) in data.chunks(2).enumerate() {
        let mut w = 0u32;
        for (j, &x) in pair.iter().enumerate() {
            let h = f16::from_f32(x);
            if x.is_finite() && h.is_infinite() {
                return Err(Error::InvalidArgument(format!(
                    "tensor '{name}' holds {x} at index {} beyond the f16 range (|x| <= 65504): \
                     use --base-dtype f32",
                    2 * i + j
                )));
            }
            w |= (h.to_bits() as u32) << (16 * j);
        }
        words.push(w);
    }
    Ok(words)
}

/// The `n` f32 values of packed words (the inverse of [`pack_f16`] on f16 values).
pub fn unpack_f16(words: &[u32], n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| f16_value((words[i / 2] >> (16 * (i % 2))) as u16))
        .collect()
}

/// A frozen f16 tensor on the GPU: logical f32 `shape`, stored packed two halves per u32.
#[derive(Clone)]
pub struct HalfTensor {
    words: Indices,
    shape: Vec<usize>,
}

impl std::fmt::Debug for HalfTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HalfTensor")
            .field("shape", &self.shape)
            .finish()
    }
}

impl HalfTensor {
    /// Rounds and packs `data` (named `name` in errors) as a tensor of `shape`.
    pub fn from_f32(gpu: &Gpu, name: &str, data: &[f32], shape: &[usize]) -> Result<Self> {
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::shape(format!("shape {shape:?} overflows usize")))?;
        if numel != data.len() {
            return Err(Error::shape(format!(
                "'{name}': shape {shape:?} holds {numel} elements but {} were given",
                data.len()
            )));
        }
        let words = pack_f16(name, data)?;
        let n = words.len();
        Ok(Self {
            words: Indices::from_slice(gpu, &words, &[n])?,
            shape: shape.to_vec(),
        })
    }

    /// An f32 tensor's values stored as f16 (reads it back; `name` for errors).
    pub fn from_tensor(name: &str, t: &Tensor) -> Result<Self> {
        Self::from_f32(t.gpu(), name, &t.to_vec()?, t.shape())
    }

    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes on the GPU (`4 * ceil(numel / 2)`).
    pub fn bytes(&self) -> u64 {
        self.words.numel() as u64 * 4
    }

    /// The GPU it lives on.
    pub fn gpu(&self) -> &Gpu {
        self.words.gpu()
    }

    /// The packed words as a dispatch binding.
    pub fn binding(&self) -> Binding {
        self.words.binding()
    }

    /// The values as f32 on the host (blocking).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(unpack_f16(&self.words.to_vec()?, self.numel()))
    }

    /// The values as a new f32 tensor.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Tensor::from_slice(self.gpu(), &self.to_vec()?, &self.shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bit_patterns() {
        let cases: [(f32, u16); 12] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),        // largest finite
            (6.103_515_6e-5, 0x0400), // smallest normal 2^-14
            (5.960_464_5e-8, 0x0001), // smallest subnormal 2^-24
            (2.980_232_2e-8, 0x0000), // half of it: tie to even (0)
            (8.940_697e-8, 0x0002),   // 1.5 x 2^-24: tie to even (2)
            (f32::INFINITY, 0x7c00),
            (f32::NEG_INFINITY, 0xfc00),
            (0.333_333_34, 0x3555),
        ];
        for (x, bits) in cases {
            assert_eq!(f16_bits(x), bits, "{x:e}");
        }
        assert!(f16_value(f16_bits(f32::NAN)).is_nan());
    }

    #[test]
    fn ties_round_to_even_and_others_to_nearest() {
        // Spacing of f16 in [1, 2) is 2^-10: 1 + 2^-11 is a tie between 0x3c00 (even) and
        // 0x3c01, 1 + 3 x 2^-11 a tie between 0x3c01 and 0x3c02 (even).
        let ulp = 2f32.powi(-10);
        assert_eq!(f16_bits(1.0 + ulp / 2.0), 0x3c00);
        assert_eq!(f16_bits(1.0 + 1.5 * ulp), 0x3c02);
        assert_eq!(f16_bits(1.0 + ulp / 2.0 + 1e-7), 0x3c01);
        assert_eq!(f16_bits(1.0 + ulp / 2.0 - 1e-7), 0x3c00);
        // 65519 rounds down to 65504; 65520 is the tie that rounds to infinity.
        assert_eq!(f16_bits(65519.0), 0x7bff);
        assert_eq!(f16_bits(65520.0), 0x7c00);
    }

    #[test]
    fn packing_orders_halves_and_pads_an_odd_tail() {
        let w = pack_f16("t", &[1.0, -2.0, 0.5]).unwrap();
        assert_eq!(w, vec![0xc000_3c00, 0x0000_3800]);
        assert_eq!(unpack_f16(&w, 3), vec![1.0, -2.0, 0.5]);
    }

    #[test]
    fn overflow_is_an_error_naming_the_tensor_and_index() {
        let err = pack_f16("encoder.layer.0.q.weight", &[1.0, 2.0, -70000.0]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("encoder.layer.0.q.weight"), "{msg}");
        assert!(msg.contains("index 2"), "{msg}");
        assert!(pack_f16("t", &[65519.0, f32::INFINITY]).is_ok());
    }

    #[test]
    fn round_trip_is_within_half_an_ulp() {
        let mut x = 1.234_567e-3f32;
        for _ in 0..200 {
            let r = round_f16(x);
            let ulp = 2f32.powi(x.abs().log2().floor() as i32 - 10);
            assert!((r - x).abs() <= ulp / 2.0, "{x} -> {r}");
            x *= -1.37;
            if x.abs() > 6e4 {
                x = 3.1e-4;
            }
        }
    }

    #[test]
    fn base_dtype_parses_once() {
        assert_eq!("F16".parse::<BaseDType>().unwrap(), BaseDType::F16);
        assert_eq!("f32".parse::<BaseDType>().unwrap(), BaseDType::F32);
        assert!("bf16".parse::<BaseDType>().is_err());
        assert_eq!(serde_json::to_string(&BaseDType::F16).unwrap(), "\"f16\"");
    }
}
