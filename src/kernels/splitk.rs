//! The split-K reduction (`shaders/splitk.wgsl`): `C = alpha sum_s P[s] + beta C (+ bias)`
//! over partial products `P [S, M, N]`, summed in the fixed order `s = 0, 1, ..` (so two
//! runs are bit-identical), with its f64 CPU twin. The split-K GEMM
//! ([`crate::kernels::gemm::split`]) records it after the partials; it is public so that
//! it can be tested on its own.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::SPLITK;
use crate::runtime::tensor::Tensor;

const WORKGROUP: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    n: u32,
    splits: u32,
    grid_x: u32,
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad: u32,
}

/// `[S, M, N]` of the partials after checking them against `c` and `bias`.
fn check(parts: &Tensor, c: &Tensor, bias: Option<&Tensor>) -> Result<[usize; 3]> {
    let [s, m, n] = match parts.shape() {
        &[s, m, n] if s >= 1 => [s, m, n],
        other => {
            return Err(Error::shape(format!(
                "split-K reduction: partials must be [S >= 1, M, N], got {other:?}"
            )));
        }
    };
    let cs = c.shape();
    if cs.len() < 2 || cs[cs.len() - 2..] != [m, n] || c.numel() != m * n {
        return Err(Error::shape(format!(
            "split-K reduction: output is {cs:?} but the partials are {:?} (expected [{m}, {n}])",
            parts.shape()
        )));
    }
    if let Some(b) = bias
        && b.shape() != [n]
    {
        return Err(Error::shape(format!(
            "split-K reduction: bias is {:?}, expected [{n}]",
            b.shape()
        )));
    }
    Ok([s, m, n])
}

/// Records `c = alpha * sum_s parts[s] + beta * c (+ bias)` for `parts [S, M, N]` and `c`
/// of `M N` elements ending in `[M, N]`; with `beta == 0` the old `c` is never read. One
/// dispatch, nothing read back.
pub fn reduce_into(
    rec: &mut Recorder,
    parts: &Tensor,
    c: &Tensor,
    (alpha, beta): (f32, f32),
    bias: Option<&Tensor>,
) -> Result<()> {
    let [s, m, n] = check(parts, c, bias)?;
    let u = |what: &str, v: usize| crate::runtime::error::index_u32(what, v);
    u("split-K partial elements", parts.numel())?;
    let params = Params {
        count: u("split-K outputs", m * n)?,
        n: u("split-K columns", n)?,
        splits: u("split-K partials", s)?,
        grid_x: 0,
        alpha,
        beta,
        has_bias: bias.is_some() as u32,
        _pad: 0,
    };
    let dummy = rec.gpu().dummy()?;
    let bias_b = bias.map_or(dummy, |t| t.binding());
    rec.dispatch_groups(
        &SPLITK,
        "reduce_splits",
        ((m * n) as u64).div_ceil(WORKGROUP),
        |grid_x| Params { grid_x, ..params },
        &[(1, &parts.binding()), (2, &c.binding()), (3, &bias_b)],
    )
}

/// Compiles the reduction's pipeline (so that timing a split-K GEMM measures the kernels).
pub(crate) fn prepare(gpu: &crate::Gpu) -> Result<()> {
    gpu.pipelines().get(&SPLITK, "reduce_splits", &[]).map(drop)
}

/// f64 CPU twin.
pub mod cpu {
    /// `alpha * sum_s parts[s] + beta * c (+ bias)` for `parts [S, M, N]`, in f64 (the
    /// partials summed in the order `s = 0, 1, ..` like the kernel; `c` is not read when
    /// `beta == 0`).
    pub fn reduce(
        parts: &[f64],
        [s, m, n]: [usize; 3],
        c: &[f64],
        (alpha, beta): (f64, f64),
        bias: Option<&[f64]>,
    ) -> Vec<f64> {
        let count = m * n;
        (0..count)
            .map(|i| {
                let acc: f64 = (0..s).map(|k| parts[k * count + i]).sum();
                let mut v = alpha * acc;
                if beta != 0.0 {
                    v += beta * c[i];
                }
                if let Some(b) = bias {
                    v += b[i % n];
                }
                v
            })
            .collect()
    }
}
