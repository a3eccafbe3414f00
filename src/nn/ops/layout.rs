//! Graph ops over layout changes: the attention head split and merge (`kernels::layout`).

use crate::kernels::layout;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;

impl Graph {
    /// `[A, B, C, D] -> [A, C, B, D]` (attention head split and merge).
    pub fn swap_middle(&mut self, x: &Var) -> Result<Var> {
        let y = layout::swap_middle(self.recorder(), x.value())?;
        let ix = x.id();
        Ok(self.record(y, &[x], move |rec, dy| {
            Ok(vec![(ix, layout::swap_middle(rec, dy)?)])
        }))
    }
}
