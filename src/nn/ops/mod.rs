//! The ops recorded on the tape, as inherent methods of [`Graph`](crate::nn::Graph), one
//! file per kernel family (the same stem as in `kernels/` and `shaders/`): each runs its
//! forward kernels and records a closure with the matching backward kernels.
//!
//! - [`linalg`] holds `matmul`, `linear`, `masked_matmul` (GEMM);
//! - [`capaboost`] holds `capaboost_update`, `capaboost_linear` (the CapaBoost adapter);
//! - [`elementwise`] holds `add`, `mul`, `scale`, `reshape`;
//! - [`activations`] holds `gelu`, `tanh`, `relu`, `dropout`, `add_bias`;
//! - [`norms`] holds `layer_norm`, `softmax`;
//! - [`lookup`] holds `embedding`, `mean_pool`;
//! - [`reduce`] holds `sum`, `mean`, `cross_entropy`, `mse`;
//! - [`layout`] holds `swap_middle`;
//! - [`attention`] holds `attention` (head split, scores, softmax, values, merge as one op);
//! - [`llama`] holds `qlinear`, `rms_norm`, `rope`, `swiglu` (the decoder's kernels).

use crate::nn::Var;
use crate::runtime::error::{Error, Result};
use crate::runtime::tensor::Tensor;

pub mod activations;
pub mod attention;
pub mod capaboost;
pub mod elementwise;
pub mod half;
pub mod layout;
pub mod linalg;
pub mod llama;
pub mod lookup;
pub mod norms;
pub mod reduce;

/// `x [.., in]` viewed as `[rows, in]`: its full shape, the row count, and the 2-D view.
pub(crate) fn as_rows(op: &str, x: &Var) -> Result<(Vec<usize>, usize, Tensor)> {
    let xs = x.shape().to_vec();
    let in_f = *xs
        .last()
        .ok_or_else(|| Error::shape(format!("{op}: x is 0-D")))?;
    let rows = x.value().numel() / in_f.max(1);
    let x2 = x.value().reshape(&[rows, in_f])?;
    Ok((xs, rows, x2))
}

/// `shape` with its last dimension replaced by `last`.
pub(crate) fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}
