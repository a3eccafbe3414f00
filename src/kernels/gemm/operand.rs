//! GEMM operands: a tensor (f32 or packed f16), how the kernel reads it ([`View`]) and the
//! masks of the CapaBoost stacked views.

use crate::kernels::masks::MaskBits;
use crate::runtime::error::{Error, Result};
use crate::runtime::half::HalfTensor;
use crate::runtime::recorder::Binding;
use crate::runtime::tensor::Tensor;

/// How the kernel reads an operand stored in a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The tensor `[R, C]` as it is (optionally with a leading batch dimension).
    Plain,
    /// The transpose of a tensor stored `[C, R]`.
    Trans,
    /// `A_s = [A*M_1; ...; A*M_d]`, logical `[d r, in]`, from `A [r, in]` and its masks.
    AStacked,
    /// `A_s^T`, logical `[in, d r]`.
    AStackedT,
    /// `B_s = [B*N_1, ..., B*N_d]`, logical `[out, d r]`, from `B [out, r]` and its masks.
    BStacked,
    /// `B_s^T`, logical `[d r, out]`.
    BStackedT,
}

impl View {
    pub(crate) fn code(self) -> u32 {
        match self {
            View::Plain => 0,
            View::Trans => 1,
            View::AStacked => 2,
            View::AStackedT => 3,
            View::BStacked => 4,
            View::BStackedT => 5,
        }
    }

    pub(crate) fn stacked(self) -> bool {
        !matches!(self, View::Plain | View::Trans)
    }
}

/// What an operand reads: an f32 tensor, or (operand B, dense views only) f16 weights
/// packed two per u32 and decoded in the kernel with f32 accumulation.
#[derive(Clone, Copy, Debug)]
pub enum Storage<'a> {
    /// f32.
    F32(&'a Tensor),
    /// Packed f16 ([`HalfTensor`]).
    F16(&'a HalfTensor),
}

impl Storage<'_> {
    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Storage::F32(t) => t.shape(),
            Storage::F16(h) => h.shape(),
        }
    }

    /// Logical elements (the product of the shape; f16 storage packs two per word).
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the elements are packed f16.
    pub fn is_f16(&self) -> bool {
        matches!(self, Storage::F16(_))
    }

    pub(super) fn binding(&self) -> Binding {
        match self {
            Storage::F32(t) => t.binding(),
            Storage::F16(h) => h.binding(),
        }
    }
}

impl<'a> From<&'a Tensor> for Storage<'a> {
    fn from(t: &'a Tensor) -> Self {
        Storage::F32(t)
    }
}

/// One GEMM operand: a tensor, how to read it, and its masks for stacked views.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The stored tensor.
    pub tensor: Storage<'a>,
    /// How it is read.
    pub view: View,
    /// Mask bits, required by the stacked views.
    pub masks: Option<&'a MaskBits>,
}

impl<'a> Operand<'a> {
    /// The tensor as stored.
    pub fn plain(tensor: &'a Tensor) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view: View::Plain,
            masks: None,
        }
    }

    /// The tensor transposed.
    pub fn trans(tensor: &'a Tensor) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view: View::Trans,
            masks: None,
        }
    }

    /// A stacked masked view of a shared factor.
    pub fn stacked(tensor: &'a Tensor, view: View, masks: &'a MaskBits) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view,
            masks: Some(masks),
        }
    }

    /// Packed f16 weights read through a dense view ([`View::Plain`] or [`View::Trans`]);
    /// only operand B may be f16 (checked by the GEMM).
    pub fn f16(tensor: &'a HalfTensor, view: View) -> Self {
        Self {
            tensor: Storage::F16(tensor),
            view,
            masks: None,
        }
    }

    /// Logical `[batch, rows, cols]` and the rank `r` of a stacked view.
    pub(super) fn logical(&self, name: &str) -> Result<(usize, usize, usize, u32)> {
        let s = self.tensor.shape();
        if s.len() < 2 {
            return Err(Error::shape(format!(
                "gemm operand {name} must have at least 2 dims, got {s:?}"
            )));
        }
        let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
        let batch: usize = s[..s.len() - 2].iter().product();
        if self.tensor.is_f16() && (self.view.stacked() || name != "B") {
            return Err(Error::InvalidArgument(format!(
                "gemm operand {name}: f16 storage is read only as a dense operand B, got {:?}",
                self.view
            )));
        }
        if !self.view.stacked() {
            if self.masks.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "gemm operand {name}: masks given for a dense view"
                )));
            }
            return Ok(match self.view {
                View::Plain => (batch, rows, cols, 0),
                _ => (batch, cols, rows, 0),
            });
        }
        let m = self.masks.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "gemm operand {name}: view {:?} needs masks",
                self.view
            ))
        })?;
        if batch != 1 {
            return Err(Error::shape(format!(
                "gemm operand {name}: stacked views take one 2-D factor, got {s:?}"
            )));
        }
        if (m.rows, m.cols) != (rows, cols) {
            return Err(Error::shape(format!(
                "gemm operand {name}: masks are [{}, {}] but the factor is {s:?}",
                m.rows, m.cols
            )));
        }
        let d = m.branches as usize;
        Ok(match self.view {
            View::AStacked => (1, d * rows, cols, rows as u32),
            View::AStackedT => (1, cols, d * rows, rows as u32),
            View::BStacked => (1, rows, d * cols, cols as u32),
            _ => (1, d * cols, rows, cols as u32),
        })
    }
}
