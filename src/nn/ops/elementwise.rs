//! Graph ops over the elementwise family (`kernels::elementwise`): add, mul, scale, and
//! reshape (no kernel).

use crate::kernels::elementwise;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;

impl Graph {
    /// `a + b` (same shapes).
    pub fn add(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::add(self.recorder(), a.value(), b.value())?;
        let (ia, ib, ga, gb) = (a.id(), b.id(), a.tracked(), b.tracked());
        Ok(self.record(y, &[a, b], move |_, dy| {
            let mut c = Vec::new();
            if ga {
                c.push((ia, dy.clone()));
            }
            if gb {
                c.push((ib, dy.clone()));
            }
            Ok(c)
        }))
    }

    /// `a * b` elementwise (same shapes).
    pub fn mul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::mul(self.recorder(), a.value(), b.value())?;
        let (av, bv) = (a.value().clone(), b.value().clone());
        let (ia, ib, ga, gb) = (a.id(), b.id(), a.tracked(), b.tracked());
        Ok(self.record(y, &[a, b], move |rec, dy| {
            let mut c = Vec::new();
            if ga {
                c.push((ia, elementwise::mul(rec, dy, &bv)?));
            }
            if gb {
                c.push((ib, elementwise::mul(rec, dy, &av)?));
            }
            Ok(c)
        }))
    }

    /// `alpha * a`.
    pub fn scale(&mut self, a: &Var, alpha: f32) -> Result<Var> {
        let y = elementwise::scale(self.recorder(), a.value(), alpha)?;
        let ia = a.id();
        Ok(self.record(y, &[a], move |rec, dy| {
            Ok(vec![(ia, elementwise::scale(rec, dy, alpha)?)])
        }))
    }

    /// The same values under another shape.
    pub fn reshape(&mut self, a: &Var, shape: &[usize]) -> Result<Var> {
        let y = a.value().reshape(shape)?;
        let (ia, old) = (a.id(), a.shape().to_vec());
        Ok(self.record(y, &[a], move |_, dy| Ok(vec![(ia, dy.reshape(&old)?)])))
    }
}
