//! RMSNorm (`shaders/rmsnorm.wgsl`), Llama's normalisation: `y = x r w` with
//! `r = 1 / sqrt(mean(x^2) + eps)` over the last dimension, and the gradient with respect to
//! `x` through a frozen weight `w`, with f64 twins in [`cpu`].

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::RMSNORM;
use crate::runtime::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    grid_x: u32,
    eps: f32,
}

fn dims(op: &str, x: &Tensor, w: &Tensor) -> Result<(usize, usize)> {
    let n = *x.shape().last().unwrap_or(&0);
    if n == 0 || w.shape() != [n] {
        return Err(Error::shape(format!(
            "{op}: x {:?} and weight {:?} must be [..., n] and [n] with n > 0",
            x.shape(),
            w.shape()
        )));
    }
    Ok((x.numel() / n, n))
}

/// The normalised `x [..., n]` and each row's `r` (`[rows]`, for the backward).
pub fn rms_norm(rec: &mut Recorder, x: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let (rows, n) = dims("rms_norm", x, w)?;
    let y = Tensor::empty(rec.gpu(), x.shape())?;
    let rstd = Tensor::empty(rec.gpu(), &[rows])?;
    let p = Params {
        rows: crate::runtime::error::index_u32("rms_norm rows", rows)?,
        n: n as u32,
        grid_x: 0,
        eps,
    };
    let (bx, bw, by, br) = (x.binding(), w.binding(), y.binding(), rstd.binding());
    let bindings = [(1, &bx), (2, &bw), (3, &by), (4, &br)];
    let params = |grid_x| Params { grid_x, ..p };
    rec.dispatch_groups(&RMSNORM, "rms_norm_fwd", rows as u64, params, &bindings)?;
    Ok((y, rstd))
}

/// `dL/dx` of [`rms_norm`] for `dy [..., n]`, from the forward's `x` and `rstd`.
pub fn rms_norm_backward(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let (rows, n) = dims("rms_norm_backward", x, w)?;
    if dy.shape() != x.shape() || rstd.shape() != [rows] {
        return Err(Error::shape(format!(
            "rms_norm_backward: dy {:?} must match x {:?} and rstd {:?} be [{rows}]",
            dy.shape(),
            x.shape(),
            rstd.shape()
        )));
    }
    let dx = Tensor::empty(rec.gpu(), x.shape())?;
    let p = Params {
        rows: rows as u32,
        n: n as u32,
        grid_x: 0,
        eps: 0.0,
    };
    let (bx, bw, br, bdy, bdx) = (
        x.binding(),
        w.binding(),
        rstd.binding(),
        dy.binding(),
        dx.binding(),
    );
    let bindings = [(1, &bx), (2, &bw), (5, &br), (6, &bdy), (7, &bdx)];
    let params = |grid_x| Params { grid_x, ..p };
    rec.dispatch_groups(&RMSNORM, "rms_norm_bwd", rows as u64, params, &bindings)?;
    Ok(dx)
}

/// f64 CPU references on row-major `[rows, n]` data.
pub mod cpu {
    fn r(row: &[f64], eps: f64) -> f64 {
        1.0 / (row.iter().map(|v| v * v).sum::<f64>() / row.len() as f64 + eps).sqrt()
    }

    /// `x r w` per row.
    pub fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
        x.chunks_exact(w.len())
            .flat_map(|row| {
                let r = r(row, eps);
                row.iter().zip(w).map(move |(v, g)| v * r * g)
            })
            .collect()
    }

    /// `dL/dx` of [`rms_norm`].
    pub fn rms_norm_backward(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> Vec<f64> {
        let n = w.len();
        x.chunks_exact(n)
            .zip(dy.chunks_exact(n))
            .flat_map(|(row, g)| {
                let r = r(row, eps);
                let s: f64 = (0..n).map(|j| g[j] * w[j] * row[j]).sum();
                let c = s * r * r * r / n as f64;
                (0..n).map(move |k| r * w[k] * g[k] - c * row[k])
            })
            .collect()
    }
}
