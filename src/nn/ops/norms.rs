//! Graph ops over layer norm and softmax (`kernels::norms`).

use crate::kernels::norms;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::tensor::Tensor;

impl Graph {
    /// Layer norm over the last dim with affine `gamma`, `beta`.
    pub fn layer_norm(&mut self, x: &Var, gamma: &Var, beta: &Var, eps: f32) -> Result<Var> {
        let out = norms::layer_norm(self.recorder(), x.value(), gamma.value(), beta.value(), eps)?;
        let (xv, gv, mean, rstd) = (x.value().clone(), gamma.value().clone(), out.mean, out.rstd);
        let (ix, ig, ib) = (x.id(), gamma.id(), beta.id());
        let (tx, tg, tb) = (x.tracked(), gamma.tracked(), beta.tracked());
        Ok(self.record(out.y, &[x, gamma, beta], move |rec, dy| {
            if !tg && !tb {
                // Frozen gamma and beta (the encoders' norms): dx only, one dispatch.
                let dx = norms::layer_norm_backward_dx(rec, &xv, &gv, &mean, &rstd, dy)?;
                return Ok(if tx { vec![(ix, dx)] } else { Vec::new() });
            }
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

    /// `LayerNorm(a + b)`: a residual connection and the norm after it in one forward
    /// dispatch (`norms::layer_norm_add`, equal to `add` then `layer_norm` bit for bit).
    /// `a` and `b` both get the gradient of the sum.
    pub fn add_layer_norm(
        &mut self,
        (a, b): (&Var, &Var),
        gamma: &Var,
        beta: &Var,
        eps: f32,
    ) -> Result<Var> {
        let pair = (gamma.value(), beta.value());
        let (sum, out) = norms::layer_norm_add(self.recorder(), a.value(), b.value(), pair, eps)?;
        let (gv, mean, rstd) = (gamma.value().clone(), out.mean, out.rstd);
        let (ia, ib, ig, ibeta) = (a.id(), b.id(), gamma.id(), beta.id());
        let (ta, tb) = (a.tracked(), b.tracked());
        let (tg, tbeta) = (gamma.tracked(), beta.tracked());
        Ok(self.record(out.y, &[a, b, gamma, beta], move |rec, dy| {
            let mut c = Vec::new();
            let dx = if !tg && !tbeta {
                norms::layer_norm_backward_dx(rec, &sum, &gv, &mean, &rstd, dy)?
            } else {
                let g = norms::layer_norm_backward(rec, &sum, &gv, &mean, &rstd, dy)?;
                c.extend(tg.then_some((ig, g.dgamma)));
                c.extend(tbeta.then_some((ibeta, g.dbeta)));
                g.dx
            };
            c.extend(ta.then_some((ia, dx.clone())));
            c.extend(tb.then_some((ib, dx)));
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
}
