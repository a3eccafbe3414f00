//! A linear layer's weight as stored on the GPU: f32, or (frozen base weights,
//! [`BaseDType::F16`]) packed f16 that the GEMM decodes with f32 accumulation.

use crate::runtime::error::{Error, Result};
use crate::runtime::half::{BaseDType, HalfTensor};
use crate::runtime::tensor::Tensor;

/// The weight `[out, in]` of a [`crate::nn::modules::Linear`].
#[derive(Clone, Debug)]
pub enum Weight {
    /// f32 (trainable or frozen).
    F32(Tensor),
    /// Packed f16 (frozen only).
    F16(HalfTensor),
}

impl Weight {
    /// The shape `[out, in]`.
    pub fn shape(&self) -> &[usize] {
        match self {
            Weight::F32(t) => t.shape(),
            Weight::F16(h) => h.shape(),
        }
    }

    /// Number of entries.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        match self {
            Weight::F32(t) => t.numel() as u64 * 4,
            Weight::F16(h) => h.bytes(),
        }
    }

    /// How it is stored.
    pub fn dtype(&self) -> BaseDType {
        match self {
            Weight::F32(_) => BaseDType::F32,
            Weight::F16(_) => BaseDType::F16,
        }
    }

    /// The values as f32 on the host (an f16 weight's rounded values).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        match self {
            Weight::F32(t) => t.to_vec(),
            Weight::F16(h) => h.to_vec(),
        }
    }

    /// The f32 tensor, if stored so.
    pub fn f32(&self) -> Option<&Tensor> {
        match self {
            Weight::F32(t) => Some(t),
            Weight::F16(_) => None,
        }
    }

    /// The values as an f32 tensor: the tensor itself (shared), or an f16 weight decoded
    /// into a new one (export and merge write f32).
    pub fn to_f32(&self) -> Result<Tensor> {
        match self {
            Weight::F32(t) => Ok(t.clone()),
            Weight::F16(h) => h.to_tensor(),
        }
    }

    /// The weight stored as `dtype` (`name` for errors: an f32 value beyond the f16 range
    /// is an error naming it).
    pub fn to_dtype(&self, name: &str, dtype: BaseDType) -> Result<Weight> {
        Ok(match (self, dtype) {
            (Weight::F32(t), BaseDType::F16) => Weight::F16(HalfTensor::from_tensor(name, t)?),
            (Weight::F16(h), BaseDType::F32) => Weight::F32(h.to_tensor()?),
            (w, _) => w.clone(),
        })
    }

    /// The f32 tensor, for what writes into the weight (merge); an f16 one is an error.
    pub(crate) fn require_f32(&self) -> Result<&Tensor> {
        self.f32().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "linear weight {:?} is f16 here; this needs it in f32",
                self.shape()
            ))
        })
    }
}
