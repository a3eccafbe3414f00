//! Graph ops over the reductions and losses: sum, mean, cross-entropy, MSE (`kernels::reduce`).

use crate::kernels::reduce;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::tensor::Indices;

impl Graph {
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
