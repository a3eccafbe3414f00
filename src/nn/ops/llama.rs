//! Graph ops over the Llama kernel families: the linear layer through a quantized frozen
//! weight (`kernels::qgemm`), RMSNorm (`kernels::rmsnorm`), rotary embeddings
//! (`kernels::rope`) and SwiGLU (`kernels::swiglu`). Each passes the gradient to its input
//! (frozen weights get none), which is what adapters on later layers need.

use crate::kernels::rope::{self, Direction, RopeTable};
use crate::kernels::{qgemm, rmsnorm, swiglu};
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::quant::QuantTensor;
use crate::runtime::tensor::Tensor;

impl Graph {
    /// `x W^T` for `x [.., in]` through a frozen quantized `W [out, in]`; the gradient
    /// reaches `x` (`dY W`, decoded again in the backward GEMM).
    pub fn qlinear(&mut self, x: &Var, w: &QuantTensor) -> Result<Var> {
        let y = qgemm::forward(self.recorder(), x.value(), w)?;
        let (wv, ix) = (w.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, qgemm::backward(rec, dy, &wv)?)])
        }))
    }

    /// RMSNorm over the last dim with a frozen weight `w [n]` (gradient to `x` only).
    pub fn rms_norm(&mut self, x: &Var, w: &Tensor, eps: f32) -> Result<Var> {
        let (y, rstd) = rmsnorm::rms_norm(self.recorder(), x.value(), w, eps)?;
        let (xv, wv, ix) = (x.value().clone(), w.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            let dx = rmsnorm::rms_norm_backward(rec, &xv, &wv, &rstd, dy)?;
            Ok(vec![(ix, dx)])
        }))
    }

    /// Rotary embeddings of `x [..., T, H, D]` at the table's positions; the gradient is
    /// the inverse rotation.
    pub fn rope(&mut self, x: &Var, table: &RopeTable) -> Result<Var> {
        let y = rope::rope(self.recorder(), x.value(), table, Direction::Forward)?;
        let (t, ix) = (table.clone(), x.id());
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, rope::rope(rec, dy, &t, Direction::Backward)?)])
        }))
    }

    /// `silu(gate) * up`, with gradients to both.
    pub fn swiglu(&mut self, gate: &Var, up: &Var) -> Result<Var> {
        let y = swiglu::swiglu(self.recorder(), gate.value(), up.value())?;
        let (gv, uv) = (gate.value().clone(), up.value().clone());
        let (ig, iu, tg, tu) = (gate.id(), up.id(), gate.tracked(), up.tracked());
        Ok(self.record(y, &[gate, up], move |rec, dy| {
            let (dg, du) = swiglu::swiglu_backward(rec, &gv, &uv, dy)?;
            let mut c = Vec::new();
            if tg {
                c.push((ig, dg));
            }
            if tu {
                c.push((iu, du));
            }
            Ok(c)
        }))
    }
}
