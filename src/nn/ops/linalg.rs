//! Graph ops over the GEMM family (`kernels::gemm`): matmul, linear, and the product
//! with a masked-stacked view of a shared factor.

use super::{as_rows, with_last};
use crate::kernels::gemm::{self, Operand, View};
use crate::kernels::masks::{Factor, MaskBits, masked_sum};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::tensor::Tensor;

impl Graph {
    /// `op(a) op(b)` (2-D, or batched with equal batch dims).
    pub fn matmul(&mut self, a: &Var, ta: bool, b: &Var, tb: bool) -> Result<Var> {
        self.matmul_scaled(a, ta, b, tb, 1.0)
    }

    /// `alpha op(a) op(b)`: the scale applied in the GEMM's epilogue (forward and both
    /// gradients), one dispatch each instead of a separate `scale` pass (attention scores).
    pub fn matmul_scaled(
        &mut self,
        a: &Var,
        ta: bool,
        b: &Var,
        tb: bool,
        alpha: f32,
    ) -> Result<Var> {
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() != sb.len()
            || sa[..sa.len().saturating_sub(2)] != sb[..sb.len().saturating_sub(2)]
        {
            return Err(Error::shape(format!(
                "matmul: batch dims of {sa:?} and {sb:?} differ"
            )));
        }
        let out = gemm::gemm(
            self.recorder(),
            op(a.value(), ta),
            op(b.value(), tb),
            alpha,
            None,
        )?;
        let (av, bv) = (a.value().clone(), b.value().clone());
        let (ia, ib, ga, gb) = (a.id(), b.id(), a.tracked(), b.tracked());
        Ok(self.record(out, &[a, b], move |rec, dc| {
            let mut c = Vec::new();
            if ga {
                // d op(A) = dC op(B)^T; stored A^T when ta.
                let da = if ta {
                    gemm::gemm(rec, op(&bv, tb), Operand::trans(dc), alpha, None)?
                } else {
                    gemm::gemm(rec, Operand::plain(dc), op(&bv, !tb), alpha, None)?
                };
                c.push((ia, da));
            }
            if gb {
                // d op(B) = op(A)^T dC; stored B^T when tb.
                let db = if tb {
                    gemm::gemm(rec, Operand::trans(dc), op(&av, ta), alpha, None)?
                } else {
                    gemm::gemm(rec, op(&av, !ta), Operand::plain(dc), alpha, None)?
                };
                c.push((ib, db));
            }
            Ok(c)
        }))
    }

    /// `x W^T + bias` for `x [.., in]`, `W [out, in]`, `bias [out]` (nn.Linear); gradients
    /// flow to whichever of x, W, bias are tracked.
    pub fn linear(&mut self, x: &Var, w: &Var, bias: Option<&Var>) -> Result<Var> {
        let (xs, rows, x2) = as_rows("linear", x)?;
        let y = gemm::linear(self.recorder(), &x2, w.value(), bias.map(|b| b.value()))?;
        let out_f = y.shape()[1];
        let y = y.reshape(&with_last(&xs, out_f))?;
        let wv = w.value().clone();
        let (ix, iw, gx, gw) = (x.id(), w.id(), x.tracked(), w.tracked());
        let (ib, gbias) = bias.map_or((0, false), |b| (b.id(), b.tracked()));
        let mut inputs = vec![x, w];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(self.record(y, &inputs, move |rec, dy| {
            let dy2 = dy.reshape(&[rows, out_f])?;
            let mut c = Vec::new();
            if gx {
                let dx = gemm::gemm(rec, Operand::plain(&dy2), Operand::plain(&wv), 1.0, None)?;
                c.push((ix, dx.reshape(&xs)?));
            }
            if gw {
                c.push((
                    iw,
                    gemm::gemm(rec, Operand::trans(&dy2), Operand::plain(&x2), 1.0, None)?,
                ));
            }
            if gbias {
                c.push((ib, crate::kernels::activations::sum_rows(rec, &dy2)?));
            }
            Ok(c)
        }))
    }

    /// `x · V(f)`: a product with a masked-stacked view of a shared factor `f`.
    /// `Factor::A`: `f [r, in]`, `x [T, in]` → `x A_s^T [T, d r]`.
    /// `Factor::B`: `f [out, r]`, `x [T, d r]` → `x B_s^T [T, out]`.
    /// The factor's gradient is the masked sum over branches.
    pub fn masked_matmul(
        &mut self,
        x: &Var,
        f: &Var,
        masks: &MaskBits,
        factor: Factor,
    ) -> Result<Var> {
        let (fwd, bwd) = match factor {
            Factor::A => (View::AStackedT, View::AStacked),
            Factor::B => (View::BStackedT, View::BStacked),
        };
        let y = gemm::gemm(
            self.recorder(),
            Operand::plain(x.value()),
            Operand::stacked(f.value(), fwd, masks),
            1.0,
            None,
        )?;
        let (xv, fv, m) = (x.value().clone(), f.value().clone(), masks.clone());
        let (ix, iff, gx, gf) = (x.id(), f.id(), x.tracked(), f.tracked());
        Ok(self.record(y, &[x, f], move |rec, dy| {
            let mut c = Vec::new();
            if gx {
                c.push((
                    ix,
                    gemm::gemm(
                        rec,
                        Operand::plain(dy),
                        Operand::stacked(&fv, bwd, &m),
                        1.0,
                        None,
                    )?,
                ));
            }
            if gf {
                let stacked = gemm::gemm(rec, Operand::trans(dy), Operand::plain(&xv), 1.0, None)?;
                c.push((iff, masked_sum(rec, &m, factor, &stacked)?));
            }
            Ok(c)
        }))
    }
}

/// `t` as a GEMM operand, transposed when `trans`.
fn op(t: &Tensor, trans: bool) -> Operand<'_> {
    if trans {
        Operand::trans(t)
    } else {
        Operand::plain(t)
    }
}
