//! SwiGLU (`shaders/swiglu.wgsl`), the gate of Llama's MLP: `y = silu(g) u` and its
//! gradients with respect to `g` and `u`, with f64 twins in [`cpu`].

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::SWIGLU;
use crate::runtime::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    grid_x: u32,
    _pad: [u32; 2],
}

fn launch(rec: &mut Recorder, entry: &'static str, n: usize, b: &[(u32, &Binding)]) -> Result<()> {
    let p = Params {
        n: crate::runtime::error::index_u32("swiglu elements", n)?,
        ..Default::default()
    };
    let groups = (n as u64).div_ceil(256);
    rec.dispatch_groups(&SWIGLU, entry, groups, |grid_x| Params { grid_x, ..p }, b)
}

fn same(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        )));
    }
    Ok(())
}

/// `silu(gate) * up`, elementwise.
pub fn swiglu(rec: &mut Recorder, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    same("swiglu", gate, up)?;
    let y = Tensor::empty(rec.gpu(), gate.shape())?;
    let (bg, bu, by) = (gate.binding(), up.binding(), y.binding());
    launch(rec, "forward", y.numel(), &[(1, &bg), (2, &bu), (3, &by)])?;
    Ok(y)
}

/// `(dL/dgate, dL/dup)` of [`swiglu`] for `dy`.
pub fn swiglu_backward(
    rec: &mut Recorder,
    gate: &Tensor,
    up: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor)> {
    same("swiglu_backward", gate, up)?;
    same("swiglu_backward", gate, dy)?;
    let dg = Tensor::empty(rec.gpu(), gate.shape())?;
    let du = Tensor::empty(rec.gpu(), gate.shape())?;
    let (bg, bu, bdy) = (gate.binding(), up.binding(), dy.binding());
    let (bdg, bdu) = (dg.binding(), du.binding());
    let b = [(1, &bg), (2, &bu), (4, &bdy), (5, &bdg), (6, &bdu)];
    launch(rec, "backward", dg.numel(), &b)?;
    Ok((dg, du))
}

/// f64 CPU references.
pub mod cpu {
    fn silu(g: f64) -> f64 {
        g / (1.0 + (-g).exp())
    }

    /// `silu(g) u`.
    pub fn swiglu(g: &[f64], u: &[f64]) -> Vec<f64> {
        g.iter().zip(u).map(|(&a, &b)| silu(a) * b).collect()
    }

    /// `(dg, du)`.
    pub fn swiglu_backward(g: &[f64], u: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let mut dg = Vec::with_capacity(g.len());
        let mut du = Vec::with_capacity(g.len());
        for ((&a, &b), &d) in g.iter().zip(u).zip(dy) {
            let s = 1.0 / (1.0 + (-a).exp());
            dg.push(d * b * s * (1.0 + a * (1.0 - s)));
            du.push(d * silu(a));
        }
        (dg, du)
    }
}
