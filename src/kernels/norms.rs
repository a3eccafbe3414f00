//! Row-wise normalisations (`shaders/norms.wgsl`): LayerNorm and (masked) softmax, forward
//! and backward, with their f64 CPU references.
//!
//! A tensor `[..., n]` is treated as `numel / n` rows of `n`; each row gets one workgroup
//! with a workgroup tree reduction.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::NORMS;
use crate::runtime::tensor::Tensor;

/// Rows summed per workgroup in the first dgamma/dbeta stage (matches `CHUNK` in WGSL).
const CHUNK: usize = 256;
/// Columns per workgroup in the dgamma/dbeta stages.
const COLS_PER_GROUP: usize = 16;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    grid_x: u32,
    eps: f32,
    rpm: u32,
    has_mask: u32,
    chunks: u32,
    col_blocks: u32,
}

/// LayerNorm forward results; `mean` and `rstd` (`1 / sqrt(var + eps)`) are kept for the
/// backward pass.
#[derive(Clone, Debug)]
pub struct LayerNormOut {
    /// Normalised, scaled and shifted output, shaped like `x`.
    pub y: Tensor,
    /// Per-row mean, `[rows]`.
    pub mean: Tensor,
    /// Per-row reciprocal standard deviation, `[rows]`.
    pub rstd: Tensor,
}

/// LayerNorm gradients.
#[derive(Clone, Debug)]
pub struct LayerNormGrads {
    /// Gradient with respect to `x`, shaped like `x`.
    pub dx: Tensor,
    /// Gradient with respect to `gamma`, `[n]` (summed over all rows).
    pub dgamma: Tensor,
    /// Gradient with respect to `beta`, `[n]` (summed over all rows).
    pub dbeta: Tensor,
}

mod spread;
pub use spread::RowSpread;

fn u32_of(what: &str, v: usize) -> Result<u32> {
    crate::runtime::error::index_u32(what, v)
}

/// `(rows, n)` of a tensor read as rows of its last dimension.
fn rows_of(op: &str, name: &str, t: &Tensor) -> Result<(usize, usize)> {
    let Some(&n) = t.shape().last() else {
        return Err(Error::shape(format!(
            "{op}: {name} has shape {:?}; it needs at least one dimension",
            t.shape()
        )));
    };
    let rows = t.numel().checked_div(n).unwrap_or(0);
    Ok((rows, n))
}

fn expect_shape(op: &str, name: &str, t: &Tensor, want: &[usize], why: &str) -> Result<()> {
    if t.shape() != want {
        return Err(Error::shape(format!(
            "{op}: {name} has shape {:?} but {why} needs {want:?}",
            t.shape()
        )));
    }
    Ok(())
}

fn dispatch_rows(
    rec: &mut Recorder,
    entry: &'static str,
    groups: usize,
    params: Params,
    bindings: &[(u32, &Binding)],
) -> Result<()> {
    rec.dispatch_groups(
        &NORMS,
        entry,
        groups as u64,
        |grid_x| Params { grid_x, ..params },
        bindings,
    )
}

/// LayerNorm over the last dimension: `y = (x - mean) * rstd * gamma + beta` with the
/// biased variance (as PyTorch and BERT), computed in two passes (mean, then the variance
/// of `x - mean`) so that rows with a large mean keep their accuracy.
pub fn layer_norm(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<LayerNormOut> {
    let spread = RowSpread::for_device(rec.gpu());
    Ok(layer_norm_with(rec, (x, None), (gamma, beta), eps, spread)?.0)
}

/// `LayerNorm(a + b)` (a residual connection and the norm after it) in one dispatch:
/// `(a + b, LayerNormOut)`. The sum is the f32 `a + b` of `elementwise::add` and the norm
/// that of [`layer_norm`] on it, so both equal the two separate dispatches bit for bit.
pub fn layer_norm_add(
    rec: &mut Recorder,
    a: &Tensor,
    b: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    eps: f32,
) -> Result<(Tensor, LayerNormOut)> {
    expect_shape("layer_norm_add", "b", b, a.shape(), "a")?;
    let spread = RowSpread::for_device(rec.gpu());
    let (out, sum) = layer_norm_with(rec, (a, Some(b)), (gamma, beta), eps, spread)?;
    let sum = sum.ok_or_else(|| Error::InvalidArgument("layer_norm_add: no sum".into()))?;
    Ok((sum, out))
}

/// The forward of [`layer_norm`] on `x`, or on `x + residual` (then also returned), with
/// the row spread chosen by the caller (tests run both on one device).
pub fn layer_norm_with(
    rec: &mut Recorder,
    (x, residual): (&Tensor, Option<&Tensor>),
    (gamma, beta): (&Tensor, &Tensor),
    eps: f32,
    spread: RowSpread,
) -> Result<(LayerNormOut, Option<Tensor>)> {
    let op = "layer_norm";
    let (rows, n) = rows_of(op, "x", x)?;
    if n == 0 {
        return Err(Error::shape(format!(
            "{op}: x has shape {:?}; the normalised (last) dimension is empty",
            x.shape()
        )));
    }
    expect_shape(op, "gamma", gamma, &[n], "x's last dimension")?;
    expect_shape(op, "beta", beta, &[n], "x's last dimension")?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::InvalidArgument(format!(
            "{op}: eps = {eps} must be finite and >= 0"
        )));
    }
    let y = Tensor::empty(rec.gpu(), x.shape())?;
    let mean = Tensor::empty(rec.gpu(), &[rows])?;
    let rstd = Tensor::empty(rec.gpu(), &[rows])?;
    let params = Params {
        rows: u32_of("rows", rows)?,
        n: u32_of("n", n)?,
        eps,
        ..Default::default()
    };
    let (bx, bg, bb, by, bm, br) = (
        x.binding(),
        gamma.binding(),
        beta.binding(),
        y.binding(),
        mean.binding(),
        rstd.binding(),
    );
    let mut bindings = vec![(1, &bx), (2, &bg), (3, &bb), (4, &by), (5, &bm), (6, &br)];
    let sum = residual
        .map(|_| Tensor::empty(rec.gpu(), x.shape()))
        .transpose()?;
    let (bres, bsum) = (
        residual.map(Tensor::binding),
        sum.as_ref().map(Tensor::binding),
    );
    let entry = match (&bres, &bsum) {
        (Some(r), Some(s)) => {
            bindings.extend([(17, r), (18, s)]);
            "layer_norm_add_fwd"
        }
        _ => "layer_norm_fwd",
    };
    let (entry, groups) = spread.plan(entry, rows);
    dispatch_rows(rec, entry, groups, params, &bindings)?;
    Ok((LayerNormOut { y, mean, rstd }, sum))
}

/// LayerNorm backward from the forward's `mean` and `rstd`; `dgamma` and `dbeta` are summed
/// over rows in two stages (chunks of 256 rows, then the chunks) with short sequential runs,
/// so that they stay accurate for many rows.
pub fn layer_norm_backward(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<LayerNormGrads> {
    let spread = RowSpread::for_device(rec.gpu());
    let (dx, params) = backward_dx(rec, (x, gamma), (mean, rstd), dy, spread)?;
    let gpu = rec.gpu().clone();
    let n = params.n as usize;
    let dgamma = Tensor::empty(&gpu, &[n])?;
    let dbeta = Tensor::empty(&gpu, &[n])?;
    if params.rows == 0 {
        rec.clear(&dgamma);
        rec.clear(&dbeta);
        return Ok(LayerNormGrads { dx, dgamma, dbeta });
    }
    let (bx, bm, br, bdy) = (x.binding(), mean.binding(), rstd.binding(), dy.binding());
    let saved = [(1, &bx), (7, &bm), (8, &br), (9, &bdy)];
    layer_norm_param_grads(rec, params, &saved, &dgamma, &dbeta)?;
    Ok(LayerNormGrads { dx, dgamma, dbeta })
}

/// The `dx` of [`layer_norm_backward`] alone (one dispatch), for a frozen gamma and beta:
/// the same kernel and values, without the two parameter-gradient dispatches.
pub fn layer_norm_backward_dx(
    rec: &mut Recorder,
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<Tensor> {
    let spread = RowSpread::for_device(rec.gpu());
    Ok(backward_dx(rec, (x, gamma), (mean, rstd), dy, spread)?.0)
}

/// [`layer_norm_backward_dx`] with the row spread chosen by the caller.
pub fn layer_norm_backward_dx_with(
    rec: &mut Recorder,
    (x, gamma): (&Tensor, &Tensor),
    (mean, rstd): (&Tensor, &Tensor),
    dy: &Tensor,
    spread: RowSpread,
) -> Result<Tensor> {
    Ok(backward_dx(rec, (x, gamma), (mean, rstd), dy, spread)?.0)
}

/// Checks the backward's inputs and records `dx`; returns it with the kernel parameters.
fn backward_dx(
    rec: &mut Recorder,
    (x, gamma): (&Tensor, &Tensor),
    (mean, rstd): (&Tensor, &Tensor),
    dy: &Tensor,
    spread: RowSpread,
) -> Result<(Tensor, Params)> {
    let op = "layer_norm_backward";
    let (rows, n) = rows_of(op, "x", x)?;
    if n == 0 {
        return Err(Error::shape(format!(
            "{op}: x has shape {:?}; the normalised (last) dimension is empty",
            x.shape()
        )));
    }
    expect_shape(op, "gamma", gamma, &[n], "x's last dimension")?;
    expect_shape(op, "mean", mean, &[rows], "x's row count")?;
    expect_shape(op, "rstd", rstd, &[rows], "x's row count")?;
    expect_shape(op, "dy", dy, x.shape(), "x")?;
    let dx = Tensor::empty(rec.gpu(), x.shape())?;
    let chunks = rows.div_ceil(CHUNK);
    let col_blocks = n.div_ceil(COLS_PER_GROUP);
    let params = Params {
        rows: u32_of("rows", rows)?,
        n: u32_of("n", n)?,
        chunks: u32_of("row chunks", chunks)?,
        col_blocks: u32_of("column blocks", col_blocks)?,
        ..Default::default()
    };
    if rows == 0 {
        return Ok((dx, params));
    }
    let (bx, bm, br, bdy) = (x.binding(), mean.binding(), rstd.binding(), dy.binding());
    let (entry, groups) = spread.plan("layer_norm_bwd_dx", rows);
    dispatch_rows(
        rec,
        entry,
        groups,
        params,
        &[
            (1, &bx),
            (2, &gamma.binding()),
            (7, &bm),
            (8, &br),
            (9, &bdy),
            (10, &dx.binding()),
        ],
    )?;
    Ok((dx, params))
}

/// `dgamma`, `dbeta` of [`layer_norm_backward`] in two stages: per chunk of rows into
/// partial sums, then over the chunks. `saved` binds x, mean, rstd and dy.
fn layer_norm_param_grads(
    rec: &mut Recorder,
    params: Params,
    saved: &[(u32, &Binding); 4],
    dgamma: &Tensor,
    dbeta: &Tensor,
) -> Result<()> {
    let (chunks, col_blocks) = (params.chunks as usize, params.col_blocks as usize);
    let n = params.n as usize;
    let part_g = Tensor::empty(rec.gpu(), &[chunks, n])?;
    let part_b = Tensor::empty(rec.gpu(), &[chunks, n])?;
    let (bpg, bpb) = (part_g.binding(), part_b.binding());
    let groups = chunks.checked_mul(col_blocks).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "layer_norm_backward: {chunks} x {col_blocks} workgroups overflow"
        ))
    })?;
    u32_of("dgamma workgroups", groups)?;
    let mut partial = saved.to_vec();
    partial.extend([(11, &bpg), (12, &bpb)]);
    dispatch_rows(
        rec,
        "layer_norm_bwd_params_partial",
        groups,
        params,
        &partial,
    )?;
    dispatch_rows(
        rec,
        "layer_norm_bwd_params_final",
        col_blocks,
        params,
        &[
            (11, &bpg),
            (12, &bpb),
            (13, &dgamma.binding()),
            (14, &dbeta.binding()),
        ],
    )
}

/// Softmax over the last dimension of `x` (`[..., n]`, rows = numel / n), stable (the row
/// maximum is subtracted).
///
/// `mask`, when given, is ADDITIVE and shaped `[m, n]`: row `i` of `x` gets mask row
/// `i / rows_per_mask_row` added first, and `rows` must equal `m * rows_per_mask_row`
/// (attention scores `[B, H, Sq, Sk]` with a `[B, Sk]` mask use `H * Sq`). Without a mask
/// `rows_per_mask_row` is ignored.
///
/// Masks as negative as `f32::MIN` (what BERT uses) or `-1e9` never produce NaN: the
/// kernel works on `x/2 + mask/2`, which cannot overflow. A fully masked row gives the
/// softmax of its masked values as rounded in f32, which is a uniform distribution (up to
/// that rounding) for such masks; it never gives zeros or NaN. Infinite inputs are clamped
/// to the f32 range first (on IEEE hardware, where `clamp(-inf)` is `-f32::MAX`), so a
/// `-inf` mask behaves like `f32::MIN`; NaN inputs propagate.
pub fn softmax(
    rec: &mut Recorder,
    x: &Tensor,
    mask: Option<&Tensor>,
    rows_per_mask_row: usize,
) -> Result<Tensor> {
    let spread = RowSpread::for_device(rec.gpu());
    softmax_with(rec, x, (mask, rows_per_mask_row), spread)
}

/// [`softmax`] with the row spread chosen by the caller (tests run both on one device).
pub fn softmax_with(
    rec: &mut Recorder,
    x: &Tensor,
    (mask, rows_per_mask_row): (Option<&Tensor>, usize),
    spread: RowSpread,
) -> Result<Tensor> {
    let op = "softmax";
    let (rows, n) = rows_of(op, "x", x)?;
    let mut params = Params {
        rows: u32_of("rows", rows)?,
        n: u32_of("n", n)?,
        rpm: 1,
        ..Default::default()
    };
    if let Some(mask) = mask {
        if mask.shape().len() != 2 || mask.shape()[1] != n {
            return Err(Error::shape(format!(
                "{op}: mask has shape {:?} but x has shape {:?}; the mask must be [m, {n}]",
                mask.shape(),
                x.shape()
            )));
        }
        let m = mask.shape()[0];
        if rows_per_mask_row == 0 || m.checked_mul(rows_per_mask_row) != Some(rows) {
            return Err(Error::shape(format!(
                "{op}: x has shape {:?} ({rows} rows) but mask {:?} with {rows_per_mask_row} \
                 rows per mask row covers {} rows",
                x.shape(),
                mask.shape(),
                m.saturating_mul(rows_per_mask_row)
            )));
        }
        params.rpm = u32_of("rows_per_mask_row", rows_per_mask_row)?;
        params.has_mask = 1;
    }
    let y = Tensor::empty(rec.gpu(), x.shape())?;
    if n == 0 {
        return Ok(y);
    }
    let (bx, by) = (x.binding(), y.binding());
    // The entry points statically use the mask binding: without one, x is bound there, unread.
    let bm = mask.map_or_else(|| bx.clone(), |m| m.binding());
    let (entry, groups) = spread.plan("softmax_fwd", rows);
    dispatch_rows(rec, entry, groups, params, &[(1, &bx), (4, &by), (15, &bm)])?;
    Ok(y)
}

/// Softmax backward from the forward OUTPUT `y`: `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(rec: &mut Recorder, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let spread = RowSpread::for_device(rec.gpu());
    softmax_backward_with(rec, y, dy, spread)
}

/// [`softmax_backward`] with the row spread chosen by the caller.
pub fn softmax_backward_with(
    rec: &mut Recorder,
    y: &Tensor,
    dy: &Tensor,
    spread: RowSpread,
) -> Result<Tensor> {
    let op = "softmax_backward";
    let (rows, n) = rows_of(op, "y", y)?;
    expect_shape(op, "dy", dy, y.shape(), "y")?;
    let dx = Tensor::empty(rec.gpu(), y.shape())?;
    if n == 0 {
        return Ok(dx);
    }
    let params = Params {
        rows: u32_of("rows", rows)?,
        n: u32_of("n", n)?,
        ..Default::default()
    };
    let (by, bdy, bdx) = (y.binding(), dy.binding(), dx.binding());
    let (entry, groups) = spread.plan("softmax_bwd", rows);
    dispatch_rows(
        rec,
        entry,
        groups,
        params,
        &[(9, &bdy), (10, &bdx), (16, &by)],
    )?;
    Ok(dx)
}

/// f64 CPU references for the kernels above. The `*_f64` helpers take f64 inputs so that
/// tests can take central finite differences without f32 rounding.
pub mod cpu {
    /// LayerNorm of rows of `n` in f64: `(y, mean, rstd)`.
    pub fn layer_norm(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        n: usize,
        eps: f32,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        layer_norm_f64(&to64(x), &to64(gamma), &to64(beta), n, eps as f64)
    }

    /// [`layer_norm`] on f64 inputs.
    pub fn layer_norm_f64(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        n: usize,
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut y = Vec::with_capacity(x.len());
        let (mut means, mut rstds) = (Vec::new(), Vec::new());
        for row in x.chunks(n) {
            let mean = row.iter().sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + eps).sqrt();
            y.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, v)| (v - mean) * rstd * gamma[j] + beta[j]),
            );
            means.push(mean);
            rstds.push(rstd);
        }
        (y, means, rstds)
    }

    /// LayerNorm backward in f64 (statistics recomputed from `x`): `(dx, dgamma, dbeta)`.
    pub fn layer_norm_backward(
        x: &[f32],
        gamma: &[f32],
        dy: &[f32],
        n: usize,
        eps: f32,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        layer_norm_backward_f64(&to64(x), &to64(gamma), &to64(dy), n, eps as f64)
    }

    /// [`layer_norm_backward`] on f64 inputs.
    pub fn layer_norm_backward_f64(
        x: &[f64],
        gamma: &[f64],
        dy: &[f64],
        n: usize,
        eps: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (_, means, rstds) = layer_norm_f64(x, gamma, &vec![0.0; n], n, eps);
        let mut dx = Vec::with_capacity(x.len());
        let (mut dgamma, mut dbeta) = (vec![0.0; n], vec![0.0; n]);
        for (r, (row, drow)) in x.chunks(n).zip(dy.chunks(n)).enumerate() {
            let (mean, rstd) = (means[r], rstds[r]);
            let xhat: Vec<f64> = row.iter().map(|v| (v - mean) * rstd).collect();
            let g: Vec<f64> = drow.iter().zip(gamma).map(|(d, ga)| d * ga).collect();
            let mg = g.iter().sum::<f64>() / n as f64;
            let mgx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n as f64;
            for j in 0..n {
                dx.push(rstd * (g[j] - mg - xhat[j] * mgx));
                dgamma[j] += drow[j] * xhat[j];
                dbeta[j] += drow[j];
            }
        }
        (dx, dgamma, dbeta)
    }

    /// Softmax over rows of `n`, with an optional additive `[m, n]` mask (row `i` uses mask
    /// row `i / rows_per_mask_row`).
    pub fn softmax(
        x: &[f32],
        mask: Option<&[f32]>,
        n: usize,
        rows_per_mask_row: usize,
    ) -> Vec<f64> {
        let mask64 = mask.map(to64);
        softmax_f64(&to64(x), mask64.as_deref(), n, rows_per_mask_row)
    }

    /// [`softmax`] on f64 inputs.
    pub fn softmax_f64(
        x: &[f64],
        mask: Option<&[f64]>,
        n: usize,
        rows_per_mask_row: usize,
    ) -> Vec<f64> {
        let mut y = Vec::with_capacity(x.len());
        for (r, row) in x.chunks(n).enumerate() {
            let v: Vec<f64> = match mask {
                Some(m) => {
                    let mrow = &m[(r / rows_per_mask_row) * n..][..n];
                    row.iter().zip(mrow).map(|(a, b)| a + b).collect()
                }
                None => row.to_vec(),
            };
            let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = v.iter().map(|a| (a - max).exp()).collect();
            let s: f64 = e.iter().sum();
            y.extend(e.iter().map(|a| a / s));
        }
        y
    }

    /// Softmax backward from the output `y`: `dx = y * (dy - sum(dy * y))` per row.
    pub fn softmax_backward(y: &[f32], dy: &[f32], n: usize) -> Vec<f64> {
        softmax_backward_f64(&to64(y), &to64(dy), n)
    }

    /// [`softmax_backward`] on f64 inputs.
    pub fn softmax_backward_f64(y: &[f64], dy: &[f64], n: usize) -> Vec<f64> {
        let mut dx = Vec::with_capacity(y.len());
        for (yr, dr) in y.chunks(n).zip(dy.chunks(n)) {
            let dot: f64 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
            dx.extend(yr.iter().zip(dr).map(|(a, b)| a * (b - dot)));
        }
        dx
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| a as f64).collect()
    }
}
