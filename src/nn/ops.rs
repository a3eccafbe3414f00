//! Graph ops over the activation, normalisation, lookup and loss kernels: each runs its
//! forward kernel and records the matching backward kernel.

use crate::kernels::activations;
use crate::kernels::layout;
use crate::kernels::lookup;
use crate::kernels::norms;
use crate::kernels::reduce;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::tensor::{Indices, Tensor};

impl Graph {
    /// GELU (erf form).
    pub fn gelu(&mut self, x: &Var) -> Result<Var> {
        let y = activations::gelu(self.recorder(), x.value())?;
        let (xv, ix) = (x.value().clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, activations::gelu_backward(rec, &xv, dy)?)])
        }))
    }

    /// tanh.
    pub fn tanh(&mut self, x: &Var) -> Result<Var> {
        let y = activations::tanh(self.recorder(), x.value())?;
        let (yv, ix) = (y.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, activations::tanh_backward(rec, &yv, dy)?)])
        }))
    }

    /// ReLU.
    pub fn relu(&mut self, x: &Var) -> Result<Var> {
        let y = activations::relu(self.recorder(), x.value())?;
        let (xv, ix) = (x.value().clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, activations::relu_backward(rec, &xv, dy)?)])
        }))
    }

    /// Dropout with a stateless mask keyed by (seed, stream): the same key replays a step.
    /// In a no-grad graph (evaluation) it is the identity.
    pub fn dropout(&mut self, x: &Var, p: f32, seed: u64, stream: u32) -> Result<Var> {
        if !self.grad_enabled() || p == 0.0 {
            return Ok(x.clone());
        }
        let y = activations::dropout(self.recorder(), x.value(), p, seed, stream)?;
        let ix = x.id();
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(
                ix,
                activations::dropout_backward(rec, dy, p, seed, stream)?,
            )])
        }))
    }

    /// `x + bias` broadcast over the leading dims; the bias gradient sums over them.
    pub fn add_bias(&mut self, x: &Var, bias: &Var) -> Result<Var> {
        let y = activations::add_bias(self.recorder(), x.value(), bias.value())?;
        let (ix, ib, gx, gb) = (x.id(), bias.id(), x.tracked(), bias.tracked());
        Ok(self.record(y, &[x, bias], move |rec, dy| {
            let mut c = Vec::new();
            if gx {
                c.push((ix, dy.clone()));
            }
            if gb {
                c.push((ib, activations::sum_rows(rec, dy)?));
            }
            Ok(c)
        }))
    }

    /// Layer norm over the last dim with affine `gamma`, `beta`.
    pub fn layer_norm(&mut self, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let out = norms::layer_norm(self.recorder(), x.value(), gamma.value(), beta.value(), eps)?;
        let (xv, gv, mean, rstd) = (x.value().clone(), gamma.value().clone(), out.mean, out.rstd);
        let (ix, ig, ib) = (x.id(), gamma.id(), beta.id());
        let (tx, tg, tb) = (x.tracked(), gamma.tracked(), beta.tracked());
        Ok(self.record(out.y, &[x, gamma, beta], move |rec, dy| {
            let g = norms::layer_norm_backward(rec, &xv, &gv, &mean, &rstd, dy)?;
            let mut c = Vec::new();
            if tx {
                c.push((ix, g.dx));
            }
            if tg {
                c.push((ig, g.dgamma));
            }
            if tb {
                c.push((ib, g.dbeta));
            }
            Ok(c)
        }))
    }

    /// Softmax over the last dim, with an optional additive mask `[m, n]` applied to
    /// consecutive groups of `rows_per_mask_row` rows (no gradient into the mask).
    pub fn softmax(
        &mut self,
        x: &Var,
        mask: Option<&Tensor>,
        rows_per_mask_row: usize,
    ) -> Result<Var> {
        let y = norms::softmax(self.recorder(), x.value(), mask, rows_per_mask_row)?;
        let (yv, ix) = (y.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, norms::softmax_backward(rec, &yv, dy)?)])
        }))
    }

    /// Rows of a frozen table picked by ids (no gradient into the table).
    pub fn embedding(&mut self, table: &Tensor, ids: &Indices) -> Result<Var> {
        let y = lookup::embedding(self.recorder(), table, ids)?;
        Ok(self.input(&y))
    }

    /// Mean over the sequence of `x [B, S, H]` where `mask [B, S]` is 1.
    pub fn mean_pool(&mut self, x: &Var, mask: &Tensor) -> Result<Var> {
        let y = lookup::mean_pool(self.recorder(), x.value(), mask)?;
        let seq = x
            .shape()
            .get(1)
            .copied()
            .ok_or_else(|| Error::shape("mean_pool: x must be [B, S, H]"))?;
        let (m, ix) = (mask.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, lookup::mean_pool_backward(rec, &m, dy, seq)?)])
        }))
    }

    /// Mean cross-entropy of `logits [N, C]` against `labels [N]`, as `[1]`.
    pub fn cross_entropy(&mut self, logits: &Var, labels: &Indices) -> Result<Var> {
        let y = reduce::cross_entropy(self.recorder(), logits.value(), labels)?;
        let (lv, lab, il) = (logits.value().clone(), labels.clone(), logits.id());
        Ok(self.record(y, &[logits], move |rec, g| {
            Ok(vec![(
                il,
                reduce::cross_entropy_backward(rec, &lv, &lab, g)?,
            )])
        }))
    }

    /// Mean squared error `mean((pred - target)^2)`, as `[1]`; gradients to both sides.
    pub fn mse(&mut self, pred: &Var, target: &Var) -> Result<Var> {
        let y = reduce::mse(self.recorder(), pred.value(), target.value())?;
        let (pv, tv) = (pred.value().clone(), target.value().clone());
        let (ip, it, gp, gt) = (pred.id(), target.id(), pred.tracked(), target.tracked());
        Ok(self.record(y, &[pred, target], move |rec, g| {
            let dp = reduce::mse_backward(rec, &pv, &tv, g)?;
            let mut c = Vec::new();
            if gt {
                c.push((it, crate::kernels::elementwise::scale(rec, &dp, -1.0)?));
            }
            if gp {
                c.push((ip, dp));
            }
            Ok(c)
        }))
    }

    /// `[A, B, C, D] -> [A, C, B, D]` (attention head split and merge).
    pub fn swap_middle(&mut self, x: &Var) -> Result<Var> {
        let y = layout::swap_middle(self.recorder(), x.value())?;
        let ix = x.id();
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, layout::swap_middle(rec, dy)?)])
        }))
    }

    /// Sum of all elements, as `[1]`.
    pub fn sum(&mut self, x: &Var) -> Result<Var> {
        let y = reduce::sum(self.recorder(), x.value())?;
        let (shape, ix) = (x.shape().to_vec(), x.id());
        Ok(self.record(y, &[x], move |rec, g| {
            Ok(vec![(ix, reduce::broadcast_scalar(rec, g, &shape, 1.0)?)])
        }))
    }

    /// Mean of all elements, as `[1]`.
    pub fn mean(&mut self, x: &Var) -> Result<Var> {
        let y = reduce::mean(self.recorder(), x.value())?;
        let (shape, ix) = (x.shape().to_vec(), x.id());
        let n = x.value().numel().max(1) as f32;
        Ok(self.record(y, &[x], move |rec, g| {
            Ok(vec![(
                ix,
                reduce::broadcast_scalar(rec, g, &shape, 1.0 / n)?,
            )])
        }))
    }
}
