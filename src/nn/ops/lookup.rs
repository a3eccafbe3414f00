//! Graph ops over the embedding lookup (also picking rows of a tensor, with a gradient)
//! and masked mean pooling (`kernels::lookup`).

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

    /// Rows `rows` of `x [t, h]` as `[rows.len(), h]` (each row at most once); the
    /// gradient goes back to the rows it came from (the others get zero). Both directions
    /// are the lookup kernel: backward looks `dy` up by the inverse map, where a row no
    /// one picked reads the out-of-range id `n` and so a zero row.
    pub fn select_rows(&mut self, x: &Var, rows: &[u32]) -> Result<Var> {
        let (t, n) = (x.shape().first().copied().unwrap_or(0), rows.len());
        if x.shape().len() != 2 || n == 0 {
            return Err(Error::shape(format!(
                "select_rows: x {:?} must be [t, h] and at least one row picked",
                x.shape()
            )));
        }
        let mut inverse = vec![n as u32; t];
        for (i, &r) in rows.iter().enumerate() {
            match inverse.get_mut(r as usize) {
                Some(slot) if *slot == n as u32 => *slot = i as u32,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "select_rows: row {r} is out of range for {t} rows or picked twice"
                    )));
                }
            }
        }
        let gpu = self.gpu().clone();
        let idx = Indices::from_slice(&gpu, rows, &[n])?;
        let y = lookup::embedding(self.recorder(), x.value(), &idx)?;
        let inverse = Indices::from_slice(&gpu, &inverse, &[t])?;
        let ix = x.id();
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, lookup::embedding(rec, dy, &inverse)?)])
        }))
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
