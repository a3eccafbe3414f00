//! The frozen projection over f16 base weights: `x W16^T + bias` with `W16` packed f16
//! ([`HalfTensor`]), accumulated in f32. The weight is frozen, so the backward pass makes
//! only `dx = dy W16` (the same packed operand through the plain view) and, when the bias
//! is tracked, its column sum.

use super::{as_rows, with_last};
use crate::kernels::gemm::{self, Operand, View};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::half::HalfTensor;

impl Graph {
    /// `x W^T + bias` for `x [.., in]`, frozen f16 `W [out, in]`, `bias [out]`.
    pub fn linear_f16(&mut self, x: &Var, w: &HalfTensor, bias: Option<&Var>) -> Result<Var> {
        let [out_f, in_f] = *w.shape() else {
            return Err(Error::shape(format!(
                "linear_f16: weight must be 2-D, got {:?}",
                w.shape()
            )));
        };
        let (xs, rows, x2) = as_rows("linear_f16", x)?;
        if xs.last() != Some(&in_f) {
            return Err(Error::shape(format!(
                "linear_f16: x is {xs:?} but the weight is [{out_f}, {in_f}]"
            )));
        }
        let y = gemm::gemm(
            self.recorder(),
            Operand::plain(&x2),
            Operand::f16(w, View::Trans),
            1.0,
            bias.map(|b| b.value()),
        )?;
        let y = y.reshape(&with_last(&xs, out_f))?;
        let wv = w.clone();
        let (ix, gx) = (x.id(), x.tracked());
        let (ib, gbias) = bias.map_or((0, false), |b| (b.id(), b.tracked()));
        let mut inputs = vec![x];
        inputs.extend(bias);
        Ok(self.record(y, &inputs, move |rec, dy| {
            let dy2 = dy.reshape(&[rows, out_f])?;
            let mut c = Vec::new();
            if gx {
                let w16 = Operand::f16(&wv, View::Plain);
                let dx = gemm::gemm(rec, Operand::plain(&dy2), w16, 1.0, None)?;
                c.push((ix, dx.reshape(&xs)?));
            }
            if gbias {
                c.push((ib, crate::kernels::activations::sum_rows(rec, &dy2)?));
            }
            Ok(c)
        }))
    }
}
