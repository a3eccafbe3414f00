//! Graph ops over the CapaBoost adapter (`kernels::capaboost`): the update on a base
//! output and the whole layer on a frozen base. Both run [`Adapter`]'s kernels; the
//! recorded closures call its backward, so the masked GEMM chain is written once.

use super::{as_rows, with_last};
use crate::kernels::capaboost::{Adapter, Dx, Layer, LayerMasks, Needs};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::tensor::Tensor;

impl<'a> Adapter<'a, Var> {
    /// The same adapter over the parameters' tensors.
    pub fn values(&self) -> Adapter<'a> {
        Adapter::new(self.a.value(), self.b.value(), self.masks, self.scale)
    }
}

/// What a backward closure keeps of an adapter (tensors and masks share their buffers).
struct Saved {
    a: Tensor,
    b: Tensor,
    masks: LayerMasks,
    scale: f32,
}

impl Saved {
    fn new(adapter: &Adapter<'_>) -> Self {
        Self {
            a: adapter.a.clone(),
            b: adapter.b.clone(),
            masks: adapter.masks.clone(),
            scale: adapter.scale,
        }
    }

    fn adapter(&self) -> Adapter<'_> {
        Adapter::new(&self.a, &self.b, &self.masks, self.scale)
    }
}

impl Graph {
    /// The CapaBoost-LoRA update added to a base output:
    /// `y_base + s (x A_s^T) B_s^T` ([`Adapter::update`]: the update accumulates into
    /// y_base's buffer, which must not be used elsewhere). Gradients: y_base (identity),
    /// x, A, B.
    pub fn capaboost_update(
        &mut self,
        y_base: &Var,
        x: &Var,
        adapter: Adapter<'_, Var>,
    ) -> Result<Var> {
        let (xs, rows, x2) = as_rows("capaboost", x)?;
        let out_f = *y_base.shape().last().unwrap_or(&0);
        let y2 = y_base.value().reshape(&[rows, out_f]).map_err(|_| {
            Error::shape(format!(
                "capaboost: base output {:?} does not fit x {:?}",
                y_base.shape(),
                xs
            ))
        })?;
        let h = adapter.values().update(self.recorder(), &x2, &y2)?;
        let saved = Saved::new(&adapter.values());
        let (iy, ix, ia, ib) = (y_base.id(), x.id(), adapter.a.id(), adapter.b.id());
        let (gy, gx) = (y_base.tracked(), x.tracked());
        let (ga, gb) = (adapter.a.tracked(), adapter.b.tracked());
        let inputs = [y_base, x, adapter.a, adapter.b];
        Ok(
            self.record(y_base.value().clone(), &inputs, move |rec, dy| {
                let dy2 = dy.reshape(&[rows, out_f])?;
                let needs = Needs {
                    a: ga,
                    b: gb,
                    x: if gx { Dx::New } else { Dx::Skip },
                };
                let g = saved.adapter().backward(rec, &x2, &h, &dy2, needs)?;
                let mut c = Vec::new();
                c.extend(g.db.map(|db| (ib, db)));
                c.extend(g.da.map(|da| (ia, da)));
                if let Some(dx) = g.dx {
                    c.push((ix, dx.reshape(&xs)?));
                }
                if gy {
                    c.push((iy, dy.clone()));
                }
                Ok(c)
            }),
        )
    }

    /// The whole CapaBoost-LoRA layer without dropout: `x W0^T + b0 + s (x A_s^T) B_s^T`
    /// through [`Layer`] (three forward GEMMs) on the frozen base `w0`, `b0`.
    pub fn capaboost_linear(
        &mut self,
        x: &Var,
        w0: &Tensor,
        b0: Option<&Tensor>,
        adapter: Adapter<'_, Var>,
    ) -> Result<Var> {
        let (xs, rows, x2) = as_rows("capaboost", x)?;
        let f = Layer::new(w0, b0, adapter.values()).forward(self.recorder(), &x2)?;
        let out_f = w0.shape()[0];
        let y = f.y.reshape(&with_last(&xs, out_f))?;
        let (w, saved, h) = (w0.clone(), Saved::new(&adapter.values()), f.h);
        let (ix, ia, ib) = (x.id(), adapter.a.id(), adapter.b.id());
        let (gx, ga, gb) = (x.tracked(), adapter.a.tracked(), adapter.b.tracked());
        Ok(self.record(y, &[x, adapter.a, adapter.b], move |rec, dy| {
            let dy2 = dy.reshape(&[rows, out_f])?;
            let layer = Layer::new(&w, None, saved.adapter());
            let g = layer.backward(rec, &x2, &h, &dy2, gx)?;
            let mut c = Vec::new();
            if ga {
                c.push((ia, g.da));
            }
            if gb {
                c.push((ib, g.db));
            }
            if let Some(dx) = g.dx {
                c.push((ix, dx.reshape(&xs)?));
            }
            Ok(c)
        }))
    }
}
