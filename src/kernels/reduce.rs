//! Reductions to a scalar (`shaders/reduce.wgsl`): sum, mean, MSE and cross-entropy losses
//! with their backward kernels, and f64 CPU references.
//!
//! Scalar results are `[1]` tensors that stay on the GPU, and backward kernels take the
//! upstream gradient as such a `[1]` tensor, so a training step never reads back.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::REDUCE;
use crate::runtime::tensor::{Indices, Tensor};

const WORKGROUP: usize = 256;
/// Elements folded into one partial by a sum stage (matches `CHUNK` in WGSL).
const CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    grid_x: u32,
    scale: f32,
    classes: u32,
}

fn u32_of(what: &str, v: usize) -> Result<u32> {
    crate::runtime::error::index_u32(what, v)
}

fn launch(
    rec: &mut Recorder,
    entry: &'static str,
    groups: usize,
    params: Params,
    bindings: &[(u32, &Binding)],
) -> Result<()> {
    rec.dispatch_groups(
        &REDUCE,
        entry,
        groups as u64,
        |grid_x| Params { grid_x, ..params },
        bindings,
    )
}

fn expect_scalar(op: &str, name: &str, t: &Tensor) -> Result<()> {
    if t.shape() != [1] {
        return Err(Error::shape(format!(
            "{op}: {name} has shape {:?} but must be a scalar of shape [1]",
            t.shape()
        )));
    }
    Ok(())
}

fn same_shape(op: &str, a_name: &str, a: &Tensor, b_name: &str, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(format!(
            "{op}: {a_name} has shape {:?} but {b_name} has shape {:?}",
            a.shape(),
            b.shape()
        )));
    }
    Ok(())
}

/// Sums `n` values already folded (or to be folded by `first`) into partials, stage by
/// stage, until one `[1]` value is left; `scale` is applied once, at the last stage.
fn reduce_stages(
    rec: &mut Recorder,
    n: usize,
    scale: f32,
    first: impl FnOnce(&mut Recorder, usize, f32, &Binding) -> Result<()>,
) -> Result<Tensor> {
    let gpu = rec.gpu().clone();
    let mut count = n.div_ceil(CHUNK);
    let out_of = |count: usize| Tensor::empty(&gpu, &[count]);
    let mut cur = out_of(count)?;
    first(
        rec,
        count,
        if count == 1 { scale } else { 1.0 },
        &cur.binding(),
    )?;
    while count > 1 {
        let next_count = count.div_ceil(CHUNK);
        let next = out_of(next_count)?;
        let params = Params {
            n: u32_of("partials", count)?,
            scale: if next_count == 1 { scale } else { 1.0 },
            ..Default::default()
        };
        let (bs, bd) = (cur.binding(), next.binding());
        launch(rec, "sum_stage", next_count, params, &[(1, &bs), (3, &bd)])?;
        cur = next;
        count = next_count;
    }
    Ok(cur)
}

fn scaled_sum(rec: &mut Recorder, op: &str, x: &Tensor, scale: f32) -> Result<Tensor> {
    let n = x.numel();
    let params = Params {
        n: u32_of(&format!("{op}: elements"), n)?,
        ..Default::default()
    };
    let bx = x.binding();
    reduce_stages(rec, n, scale, |rec, groups, s, out| {
        let p = Params { scale: s, ..params };
        launch(rec, "sum_stage", groups, p, &[(1, &bx), (3, out)])
    })
}

/// Sum of all elements as a `[1]` tensor (0 for an empty tensor), accumulated in stages of
/// 4096-element partials so that large inputs stay accurate in f32.
pub fn sum(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    if x.numel() == 0 {
        return Tensor::zeros_in(rec, &[1]);
    }
    scaled_sum(rec, "sum", x, 1.0)
}

/// Mean of all elements as a `[1]` tensor; an empty tensor is an error (no mean).
pub fn mean(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    if n == 0 {
        return Err(Error::shape(format!(
            "mean: x has shape {:?} and no elements",
            x.shape()
        )));
    }
    scaled_sum(rec, "mean", x, (1.0f64 / n as f64) as f32)
}

/// A tensor of `shape` with every element `scale * g[0]`: the backward of [`sum`]
/// (`scale = 1`) and [`mean`] (`scale = 1 / n`).
pub fn broadcast_scalar(
    rec: &mut Recorder,
    g: &Tensor,
    shape: &[usize],
    scale: f32,
) -> Result<Tensor> {
    expect_scalar("broadcast_scalar", "g", g)?;
    let out = Tensor::empty(rec.gpu(), shape)?;
    let n = out.numel();
    let params = Params {
        n: u32_of("broadcast_scalar: elements", n)?,
        scale,
        ..Default::default()
    };
    let (bg, bo) = (g.binding(), out.binding());
    launch(
        rec,
        "broadcast",
        n.div_ceil(WORKGROUP),
        params,
        &[(3, &bo), (4, &bg)],
    )?;
    Ok(out)
}

/// Mean squared error `mean((pred - target)^2)` as a `[1]` tensor.
pub fn mse(rec: &mut Recorder, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    let op = "mse";
    same_shape(op, "pred", pred, "target", target)?;
    let n = pred.numel();
    if n == 0 {
        return Err(Error::shape(format!(
            "{op}: pred has shape {:?} and no elements",
            pred.shape()
        )));
    }
    let params = Params {
        n: u32_of("mse: elements", n)?,
        ..Default::default()
    };
    let (bp, bt) = (pred.binding(), target.binding());
    reduce_stages(rec, n, (1.0f64 / n as f64) as f32, |rec, groups, s, out| {
        let p = Params { scale: s, ..params };
        launch(
            rec,
            "sq_diff_stage",
            groups,
            p,
            &[(1, &bp), (2, &bt), (3, out)],
        )
    })
}

/// Gradient of [`mse`] with respect to `pred`: `g * 2 (pred - target) / n`, `g` a `[1]`
/// upstream gradient on the GPU.
pub fn mse_backward(
    rec: &mut Recorder,
    pred: &Tensor,
    target: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let op = "mse_backward";
    same_shape(op, "pred", pred, "target", target)?;
    expect_scalar(op, "g", g)?;
    let n = pred.numel();
    let out = Tensor::empty(rec.gpu(), pred.shape())?;
    if n == 0 {
        return Ok(out);
    }
    let params = Params {
        n: u32_of("mse_backward: elements", n)?,
        scale: (2.0f64 / n as f64) as f32,
        ..Default::default()
    };
    let (bp, bt, bg, bo) = (pred.binding(), target.binding(), g.binding(), out.binding());
    launch(
        rec,
        "mse_bwd",
        n.div_ceil(WORKGROUP),
        params,
        &[(1, &bp), (2, &bt), (3, &bo), (4, &bg)],
    )?;
    Ok(out)
}

fn check_logits(op: &str, logits: &Tensor, labels: &Indices) -> Result<(usize, usize)> {
    let &[rows, classes] = logits.shape() else {
        return Err(Error::shape(format!(
            "{op}: logits have shape {:?} but must be [N, C]",
            logits.shape()
        )));
    };
    if labels.shape() != [rows] {
        return Err(Error::shape(format!(
            "{op}: labels have shape {:?} but logits {:?} need [{rows}]",
            labels.shape(),
            logits.shape()
        )));
    }
    if rows == 0 || classes == 0 {
        return Err(Error::shape(format!(
            "{op}: logits have shape {:?}; N and C must be at least 1",
            logits.shape()
        )));
    }
    Ok((rows, classes))
}

/// Checks on the host that every label is a class index below `classes`. The kernels
/// cannot report a bad label (it lives on the GPU, and a step never reads back), so call
/// this before uploading labels.
pub fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    match labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        Some((i, &l)) => Err(Error::InvalidArgument(format!(
            "label {l} at index {i} is out of range for {classes} classes"
        ))),
        None => Ok(()),
    }
}

/// Cross-entropy `mean over rows of (logsumexp(row) - row[label])` of `logits` `[N, C]`
/// with `labels` `[N]`, as a `[1]` tensor.
///
/// A label `>= C` cannot be reported from the GPU: its row contributes 0 loss (and 0
/// gradient in [`cross_entropy_backward`]) while the mean still divides by `N`. Validate
/// labels with [`check_labels`] before uploading them.
pub fn cross_entropy(rec: &mut Recorder, logits: &Tensor, labels: &Indices) -> Result<Tensor> {
    let op = "cross_entropy";
    let (rows, classes) = check_logits(op, logits, labels)?;
    let per_row = Tensor::empty(rec.gpu(), &[rows])?;
    let params = Params {
        n: u32_of("cross_entropy: rows", rows)?,
        classes: u32_of("cross_entropy: classes", classes)?,
        scale: 1.0,
        ..Default::default()
    };
    u32_of("cross_entropy: elements", logits.numel())?;
    let (bl, bi, br) = (logits.binding(), labels.binding(), per_row.binding());
    launch(
        rec,
        "cross_entropy_rows",
        rows,
        params,
        &[(1, &bl), (3, &br), (5, &bi)],
    )?;
    scaled_sum(rec, op, &per_row, (1.0f64 / rows as f64) as f32)
}

/// Gradient of [`cross_entropy`] with respect to the logits:
/// `g * (softmax(row) - onehot(label)) / N`; rows with an out-of-range label get 0.
pub fn cross_entropy_backward(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Indices,
    g: &Tensor,
) -> Result<Tensor> {
    let op = "cross_entropy_backward";
    let (rows, classes) = check_logits(op, logits, labels)?;
    expect_scalar(op, "g", g)?;
    u32_of("cross_entropy_backward: elements", logits.numel())?;
    let out = Tensor::empty(rec.gpu(), logits.shape())?;
    let params = Params {
        n: u32_of("cross_entropy_backward: rows", rows)?,
        classes: u32_of("cross_entropy_backward: classes", classes)?,
        scale: (1.0f64 / rows as f64) as f32,
        ..Default::default()
    };
    let (bl, bi, bg, bo) = (
        logits.binding(),
        labels.binding(),
        g.binding(),
        out.binding(),
    );
    launch(
        rec,
        "cross_entropy_bwd",
        rows,
        params,
        &[(1, &bl), (3, &bo), (4, &bg), (5, &bi)],
    )?;
    Ok(out)
}

/// f64 CPU references for the kernels above; the `*_f64` helpers take f64 inputs so that
/// tests can take central finite differences without f32 rounding.
pub mod cpu {
    /// Sum, as a one-element vector.
    pub fn sum(x: &[f32]) -> Vec<f64> {
        vec![x.iter().map(|&v| v as f64).sum()]
    }

    /// Mean, as a one-element vector.
    pub fn mean(x: &[f32]) -> Vec<f64> {
        vec![sum(x)[0] / x.len() as f64]
    }

    /// `n` copies of `scale * g`.
    pub fn broadcast_scalar(g: f32, n: usize, scale: f32) -> Vec<f64> {
        vec![scale as f64 * g as f64; n]
    }

    /// `mean((pred - target)^2)`, as a one-element vector.
    pub fn mse(pred: &[f32], target: &[f32]) -> Vec<f64> {
        vec![mse_f64(&to64(pred), &to64(target))]
    }

    /// [`mse`] on f64 inputs.
    pub fn mse_f64(pred: &[f64], target: &[f64]) -> f64 {
        let s: f64 = pred.iter().zip(target).map(|(p, t)| (p - t).powi(2)).sum();
        s / pred.len() as f64
    }

    /// `g * 2 (pred - target) / n`.
    pub fn mse_backward(pred: &[f32], target: &[f32], g: f32) -> Vec<f64> {
        let n = pred.len() as f64;
        pred.iter()
            .zip(target)
            .map(|(&p, &t)| g as f64 * 2.0 * (p as f64 - t as f64) / n)
            .collect()
    }

    /// Mean cross-entropy of `logits` `[N, classes]`, as a one-element vector; rows with a
    /// label `>= classes` contribute 0 (the mean still divides by N), as on the GPU.
    pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize) -> Vec<f64> {
        vec![cross_entropy_f64(&to64(logits), labels, classes)]
    }

    /// [`cross_entropy`] on f64 logits.
    pub fn cross_entropy_f64(logits: &[f64], labels: &[u32], classes: usize) -> f64 {
        let rows = labels.len();
        let mut total = 0.0;
        for (row, &label) in logits.chunks(classes).zip(labels) {
            if (label as usize) < classes {
                total += logsumexp(row) - row[label as usize];
            }
        }
        total / rows as f64
    }

    /// `g * (softmax(row) - onehot(label)) / N`; zero rows for out-of-range labels.
    pub fn cross_entropy_backward(
        logits: &[f32],
        labels: &[u32],
        classes: usize,
        g: f32,
    ) -> Vec<f64> {
        let rows = labels.len() as f64;
        let mut out = Vec::with_capacity(logits.len());
        for (row, &label) in logits.chunks(classes).zip(labels) {
            let row = to64(row);
            let lse = logsumexp(&row);
            let valid = (label as usize) < classes;
            out.extend(row.iter().enumerate().map(|(j, &v)| {
                if !valid {
                    return 0.0;
                }
                let onehot = if j == label as usize { 1.0 } else { 0.0 };
                g as f64 * ((v - lse).exp() - onehot) / rows
            }));
        }
        out
    }

    fn logsumexp(row: &[f64]) -> f64 {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    }

    fn to64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&a| a as f64).collect()
    }
}
