//! Graph ops over the embedding lookup and masked mean pooling (`kernels::lookup`).

use crate::kernels::lookup;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::tensor::{Indices, Tensor};

impl Graph {
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
}
