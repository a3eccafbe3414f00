//! Graph ops over GELU, tanh, ReLU, dropout and the broadcast bias add (`kernels::activations`).

use crate::kernels::activations;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;

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
}
