//! Activations (`shaders/activations.wgsl`): GELU (exact erf form), tanh, ReLU and
//! seeded stateless dropout with their backward passes, the bias add and its gradient
//! (a column sum), with f64 CPU references in [`cpu`].

use crate::kernels::masks::mix32;
use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::ACTIVATIONS;
use crate::runtime::tensor::Tensor;

const WORKGROUP: u64 = 256;
/// Rows one `sum_rows` workgroup reduces per pass.
const SUM_CHUNK: usize = 256;
/// Columns one `sum_rows` workgroup covers.
const SUM_TILE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    grid_x: u32,
    width: u32,
    keep: u32,
    k0: u32,
    k1: u32,
    scale: f32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumParams {
    rows: u32,
    cols: u32,
    tiles: u32,
    chunks: u32,
    grid_x: u32,
    _pad: [u32; 3],
}

fn count_u32(n: usize) -> Result<u32> {
    crate::runtime::error::index_u32("elements", n)
}

/// Records one elementwise dispatch over `n` items; `params.n` and `params.grid_x` are
/// filled in here.
fn launch(
    rec: &mut Recorder,
    entry: &'static str,
    n: usize,
    mut params: Params,
    bindings: &[(u32, &Binding)],
) -> Result<()> {
    params.n = count_u32(n)?;
    let groups = (n as u64).div_ceil(WORKGROUP);
    rec.dispatch_groups(
        &ACTIVATIONS,
        entry,
        groups,
        |grid_x| Params { grid_x, ..params },
        bindings,
    )
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

fn unary(rec: &mut Recorder, entry: &'static str, x: &Tensor, params: Params) -> Result<Tensor> {
    let out = Tensor::empty(rec.gpu(), x.shape())?;
    let (bx, bo) = (x.binding(), out.binding());
    launch(rec, entry, x.numel(), params, &[(1, &bx), (4, &bo)])?;
    Ok(out)
}

fn with_grad(
    rec: &mut Recorder,
    entry: &'static str,
    (x_name, x): (&str, &Tensor),
    dy: &Tensor,
) -> Result<Tensor> {
    same_shape(entry, x_name, x, "dy", dy)?;
    let out = Tensor::empty(rec.gpu(), x.shape())?;
    let (bx, bd, bo) = (x.binding(), dy.binding(), out.binding());
    launch(
        rec,
        entry,
        x.numel(),
        Params::default(),
        &[(1, &bx), (2, &bd), (4, &bo)],
    )?;
    Ok(out)
}

/// GELU in the exact erf form BERT uses: `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "gelu_forward", x, Params::default())
}

/// Gradient of [`gelu`]: `dy * (Phi(x) + x phi(x))`.
pub fn gelu_backward(rec: &mut Recorder, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    with_grad(rec, "gelu_backward", ("x", x), dy)
}

/// `tanh(x)`, finite and accurate for every finite `x`.
pub fn tanh(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "tanh_forward", x, Params::default())
}

/// Gradient of [`tanh`] from its forward output `y`: `dy (1 - y^2)`.
pub fn tanh_backward(rec: &mut Recorder, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    with_grad(rec, "tanh_backward", ("y", y), dy)
}

/// `max(x, 0)`.
pub fn relu(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    unary(rec, "relu_forward", x, Params::default())
}

/// Gradient of [`relu`]: `dy` where `x > 0`, else 0 (so 0 at `x = 0`).
pub fn relu_backward(rec: &mut Recorder, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    with_grad(rec, "relu_backward", ("x", x), dy)
}

/// The dropout key of `(seed, stream)`: a hash chain with its own start value, so dropout
/// masks never coincide with CapaBoost masks built from the same seed.
fn dropout_key(seed: u64, stream: u32) -> [u32; 2] {
    let mut h: u32 = 0x1319_8a2e;
    for w in [seed as u32, (seed >> 32) as u32, stream] {
        h = mix32(h ^ w).wrapping_add(0x9e37_79b9);
    }
    [h, mix32(h ^ 0x5bd1_e995)]
}

/// The 24-bit keep threshold for drop probability `p`: keep iff `hash >> 8 < threshold`.
fn keep_threshold(p: f32) -> u32 {
    ((1.0 - p as f64) * (1u32 << 24) as f64).round() as u32
}

fn check_p(p: f32) -> Result<()> {
    // Written so that NaN fails too.
    if !(0.0..1.0).contains(&p) {
        return Err(Error::InvalidArgument(format!(
            "dropout probability {p} is outside [0, 1)"
        )));
    }
    Ok(())
}

/// Whether dropout with `(seed, stream, p)` keeps element `e`: the CPU twin of the GPU
/// mask, bit for bit.
pub fn dropout_keep_cpu(seed: u64, stream: u32, e: u32, p: f32) -> bool {
    let k = dropout_key(seed, stream);
    let h = mix32(mix32(e ^ k[0]).wrapping_add(k[1]));
    (h >> 8) < keep_threshold(p)
}

fn dropout_apply(rec: &mut Recorder, x: &Tensor, p: f32, seed: u64, stream: u32) -> Result<Tensor> {
    check_p(p)?;
    let k = dropout_key(seed, stream);
    let params = Params {
        keep: keep_threshold(p),
        k0: k[0],
        k1: k[1],
        scale: (1.0 / (1.0 - p as f64)) as f32,
        ..Params::default()
    };
    unary(rec, "dropout", x, params)
}

/// Inverted dropout: element `e` is kept iff a hash of `(seed, stream, e)` passes a 24-bit
/// threshold for keep probability `1 - p`, and kept values are scaled by `1 / (1 - p)`.
/// Stateless, so [`dropout_backward`] with the same arguments replays the same mask.
/// `p` must be in `[0, 1)`; `p = 0` returns a copy.
pub fn dropout(rec: &mut Recorder, x: &Tensor, p: f32, seed: u64, stream: u32) -> Result<Tensor> {
    dropout_apply(rec, x, p, seed, stream)
}

/// Gradient of [`dropout`] with the same `(p, seed, stream)`: the same mask and scale
/// applied to `dy`.
pub fn dropout_backward(
    rec: &mut Recorder,
    dy: &Tensor,
    p: f32,
    seed: u64,
    stream: u32,
) -> Result<Tensor> {
    dropout_apply(rec, dy, p, seed, stream)
}

/// `x + bias` for `x` of shape `[..., n]` (at least 1-D) and `bias` of shape `[n]`,
/// broadcast over the leading dimensions.
pub fn add_bias(rec: &mut Recorder, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let Some(&n) = x.shape().last() else {
        return Err(Error::shape(format!(
            "add_bias: x must be at least 1-D, got shape {:?} (bias {:?})",
            x.shape(),
            bias.shape()
        )));
    };
    if bias.shape() != [n] {
        return Err(Error::shape(format!(
            "add_bias: bias must have shape [{n}] to match x {:?}, got {:?}",
            x.shape(),
            bias.shape()
        )));
    }
    let out = Tensor::empty(rec.gpu(), x.shape())?;
    let (bx, bb, bo) = (x.binding(), bias.binding(), out.binding());
    let params = Params {
        width: count_u32(n)?,
        ..Params::default()
    };
    launch(
        rec,
        "add_bias",
        x.numel(),
        params,
        &[(1, &bx), (3, &bb), (4, &bo)],
    )?;
    Ok(out)
}

/// For `g` of shape `[..., n]` (at least 1-D), the `[n]` sum over all leading dimensions:
/// the gradient of [`add_bias`] with respect to the bias.
///
/// A tree of passes, each summing chunks of 256 rows, so the f32 error stays near that of
/// a pairwise sum however many rows there are.
pub fn sum_rows(rec: &mut Recorder, g: &Tensor) -> Result<Tensor> {
    let Some(&n) = g.shape().last() else {
        return Err(Error::shape(format!(
            "sum_rows: g must be at least 1-D, got shape {:?}",
            g.shape()
        )));
    };
    let numel = g.numel();
    count_u32(numel)?;
    if n == 0 {
        return Tensor::empty(rec.gpu(), &[0]);
    }
    let mut rows = numel / n;
    if rows == 0 {
        return Tensor::zeros_in(rec, &[n]);
    }
    let tiles = n.div_ceil(SUM_TILE);
    let mut src = g.clone();
    loop {
        let chunks = rows.div_ceil(SUM_CHUNK);
        let shape: &[usize] = if chunks == 1 { &[n] } else { &[chunks, n] };
        let dst = Tensor::empty(rec.gpu(), shape)?;
        let grid = rec.grid_1d(tiles as u64 * chunks as u64);
        let params = SumParams {
            rows: count_u32(rows)?,
            cols: count_u32(n)?,
            tiles: count_u32(tiles)?,
            chunks: count_u32(chunks)?,
            grid_x: grid[0],
            _pad: [0; 3],
        };
        let uniform = rec.uniform(bytemuck::bytes_of(&params));
        let (bs, bd) = (src.binding(), dst.binding());
        rec.dispatch(
            &ACTIVATIONS,
            "sum_rows",
            &[],
            &[(5, &uniform), (6, &bs), (7, &bd)],
            grid,
        )?;
        if chunks == 1 {
            return Ok(dst);
        }
        src = dst;
        rows = chunks;
    }
}

/// f64 CPU references for the kernels above, with scalar f64 helpers for finite
/// differences.
pub mod cpu {
    use std::f64::consts::{FRAC_1_SQRT_2, PI};

    /// Standard normal CDF, via erfc so the left tail keeps its relative accuracy.
    pub fn phi_cdf(x: f64) -> f64 {
        0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
    }

    /// Standard normal density.
    pub fn phi_pdf(x: f64) -> f64 {
        (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
    }

    /// GELU of one f64: `x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))`.
    pub fn gelu_f64(x: f64) -> f64 {
        x * phi_cdf(x)
    }

    /// Derivative of [`gelu_f64`]: `Phi(x) + x phi(x)`.
    pub fn gelu_grad_f64(x: f64) -> f64 {
        phi_cdf(x) + x * phi_pdf(x)
    }

    /// `dy (1 - y^2)` for one f64 forward output `y`.
    pub fn tanh_backward_f64(y: f64, dy: f64) -> f64 {
        dy * (1.0 - y * y)
    }

    /// ReLU of one f64.
    pub fn relu_f64(x: f64) -> f64 {
        if x > 0.0 { x } else { 0.0 }
    }

    /// GELU.
    pub fn gelu(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| gelu_f64(v as f64)).collect()
    }

    /// GELU gradient times `dy`.
    pub fn gelu_backward(x: &[f32], dy: &[f32]) -> Vec<f64> {
        x.iter()
            .zip(dy)
            .map(|(&v, &d)| d as f64 * gelu_grad_f64(v as f64))
            .collect()
    }

    /// tanh.
    pub fn tanh(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| (v as f64).tanh()).collect()
    }

    /// tanh gradient from the forward output `y`.
    pub fn tanh_backward(y: &[f32], dy: &[f32]) -> Vec<f64> {
        y.iter()
            .zip(dy)
            .map(|(&v, &d)| tanh_backward_f64(v as f64, d as f64))
            .collect()
    }

    /// ReLU.
    pub fn relu(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| relu_f64(v as f64)).collect()
    }

    /// ReLU gradient: `dy` where `x > 0`.
    pub fn relu_backward(x: &[f32], dy: &[f32]) -> Vec<f64> {
        x.iter()
            .zip(dy)
            .map(|(&v, &d)| if v > 0.0 { d as f64 } else { 0.0 })
            .collect()
    }

    /// Dropout with the same mask as the GPU ([`super::dropout_keep_cpu`]); `p` must be
    /// in `[0, 1)`.
    pub fn dropout(x: &[f32], p: f32, seed: u64, stream: u32) -> Vec<f64> {
        let scale = 1.0 / (1.0 - p as f64);
        x.iter()
            .enumerate()
            .map(|(e, &v)| {
                if super::dropout_keep_cpu(seed, stream, e as u32, p) {
                    v as f64 * scale
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// Dropout gradient: the forward mask and scale applied to `dy`.
    pub fn dropout_backward(dy: &[f32], p: f32, seed: u64, stream: u32) -> Vec<f64> {
        dropout(dy, p, seed, stream)
    }

    /// `x + bias` broadcast over rows of width `bias.len()`.
    pub fn add_bias(x: &[f32], bias: &[f32]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| v as f64 + bias[i % bias.len()] as f64)
            .collect()
    }

    /// Column sums of `g` viewed as rows of width `n`.
    pub fn sum_rows(g: &[f32], n: usize) -> Vec<f64> {
        let mut out = vec![0.0f64; n];
        for (i, &v) in g.iter().enumerate() {
            out[i % n] += v as f64;
        }
        out
    }
}
