//! General GEMM (`shaders/gemm.wgsl`): `C = alpha op(A) op(B) + beta C (+ bias)`, with
//! transposes and the CapaBoost masked-stacked views expressed by indexing.

use crate::runtime::error::{Error, Result};
use crate::runtime::pipeline::Checks;
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::{GEMM, ShaderSource};
use crate::runtime::tensor::Tensor;
use smallvec::SmallVec;

/// A GEMM dispatch's override constants (three or four: no heap block per dispatch).
type Constants = SmallVec<[(&'static str, f64); 4]>;

mod cache;
mod candidates;
pub mod coop;
pub mod coop_twin;
mod kernel;
mod loads;
mod operand;
pub mod split;
pub mod template;
pub mod tiled;
mod trusted;
pub mod tune;

pub use kernel::Kernel;
pub use operand::{Operand, Storage, View};
pub use template::HalfRead;

const TILE: u32 = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    r: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    /// K offset per `z` (split-K: the slice length; else 0); the reference ignores it.
    kz: u32,
    alpha: f32,
    beta: f32,
    /// K extent from the offset (split-K: the slice length; else K).
    kl: u32,
    _pad: u32,
}

fn u32_of(n: usize, what: &str) -> Result<u32> {
    crate::runtime::error::index_u32(what, n)
}

/// The problem a GEMM call describes, checked: batch (and each operand's), `M`, `N`, `K`,
/// and the rank `r` of a stacked view (1 without one).
struct Dims {
    batch: usize,
    ba: usize,
    bb: usize,
    m: usize,
    n: usize,
    k: usize,
    r: u32,
}

/// Checks `op(a) op(b)` against each other, the output `c` and the bias.
fn check_dims(a: &Operand, b: &Operand, c: &Tensor, bias: Option<&Tensor>) -> Result<Dims> {
    let (ba, m, ka, ra) = a.logical("A")?;
    let (bb, kb, n, rb) = b.logical("B")?;
    if ka != kb {
        return Err(Error::shape(format!(
            "gemm: op(A) is [{m}, {ka}] but op(B) is [{kb}, {n}] ({:?} {:?} x {:?} {:?})",
            a.view,
            a.tensor.shape(),
            b.view,
            b.tensor.shape()
        )));
    }
    if ra != 0 && rb != 0 && ra != rb {
        return Err(Error::shape(format!(
            "gemm: stacked operands disagree on r ({ra} vs {rb})"
        )));
    }
    let batch = ba.max(bb);
    if (ba != 1 && ba != batch) || (bb != 1 && bb != batch) {
        return Err(Error::shape(format!(
            "gemm: batch sizes {ba} and {bb} differ"
        )));
    }
    let cs = c.shape();
    let c_batch: usize = cs[..cs.len().saturating_sub(2)].iter().product();
    if cs.len() < 2 || cs[cs.len() - 2..] != [m, n] || c_batch != batch {
        return Err(Error::shape(format!(
            "gemm: output has shape {cs:?}, expected {batch} x [{m}, {n}]"
        )));
    }
    if let Some(bias) = bias
        && bias.shape() != [n]
    {
        return Err(Error::shape(format!(
            "gemm: bias has shape {:?}, expected [{n}]",
            bias.shape()
        )));
    }
    Ok(Dims {
        batch,
        ba,
        bb,
        m,
        n,
        k: ka,
        r: ra.max(rb).max(1),
    })
}

/// `c = alpha * op(a) op(b) + beta * c + bias` into an existing `c` of shape `[.., M, N]`.
///
/// Batched when the dense operands carry a leading batch dimension (a batch of 1 is
/// broadcast). With `beta == 0` the old contents of `c` are never read. The kernel is the
/// autotuner's choice for this device and problem ([`tune`]; `CAPABOOST_AUTOTUNE=off` gives
/// [`Kernel::Reference`]).
pub fn gemm_into(
    rec: &mut Recorder,
    a: Operand,
    b: Operand,
    c: &Tensor,
    alpha: f32,
    beta: f32,
    bias: Option<&Tensor>,
) -> Result<()> {
    let dims = check_dims(&a, &b, c, bias)?;
    let may_tune = !rec.records_for_host();
    let kernel = tune::choose_with(rec.gpu(), &a, &b, [dims.m, dims.k, dims.n], may_tune)?;
    dispatch(rec, kernel, &a, &b, c, (alpha, beta), bias, &dims)
}

/// [`gemm_into`] with the kernel given instead of tuned.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into_with(
    rec: &mut Recorder,
    kernel: Kernel,
    a: Operand,
    b: Operand,
    c: &Tensor,
    alpha: f32,
    beta: f32,
    bias: Option<&Tensor>,
) -> Result<()> {
    let dims = check_dims(&a, &b, c, bias)?;
    dispatch(rec, kernel, &a, &b, c, (alpha, beta), bias, &dims)
}

/// How a kernel runs on one problem: its grid, its source and its module's checks.
#[derive(Clone, Copy)]
struct Plan {
    grid: [u32; 3],
    shader: &'static ShaderSource,
    checks: Checks,
}

/// The plan of `kernel` on this problem: a trusted kernel gets the trusted module only
/// where [`trusted::proven`] holds.
fn plan(
    gpu: &crate::Gpu,
    kernel: Kernel,
    (a, b): (&Operand, &Operand),
    (c, bias): (&Tensor, Option<&Tensor>),
    d: &Dims,
) -> Result<Plan> {
    let (av, bv, mkn) = (a.view.code(), b.view.code(), [d.m, d.k, d.n]);
    let half = b.tensor.is_f16();
    let (rows, cols, shader, aligned) = match kernel.checked() {
        Kernel::Register(_) | Kernel::SplitK(..) if half && half_read(gpu).is_none() => {
            return Err(Error::InvalidArgument(format!(
                "gemm: {} reads f16 as f16 (SHADER_F16) or with unpack2x16float \
                 (SHADER_F16_IN_F32), which this device lacks; the reference kernel reads \
                 f16 everywhere",
                kernel.label()
            )));
        }
        Kernel::Tiled(_) | Kernel::Coop(_) if half => {
            return Err(Error::InvalidArgument(format!(
                "gemm: {} does not read an f16 operand; the reference and the register \
                 kernels do",
                kernel.label()
            )));
        }
        Kernel::Register(s) | Kernel::SplitK(s, _) => {
            let mut spec = template::spec_for(s, av, bv, mkn);
            if let (true, Some(read)) = (half, half_read(gpu)) {
                spec.b = spec.b.half(read);
            }
            let shape = template::SHAPES[s];
            (shape.rows(), shape.cols(), spec.source(), spec.aligned)
        }
        Kernel::Coop(c) => {
            let block = coop::CONFIGS[c].block();
            (block, block, coop::Spec::on(gpu, c).source(), false)
        }
        Kernel::Tiled(t) => {
            let tile = tiled::TILES[t];
            tiled::fits(&tile, gpu)?;
            let spec = tiled::spec_for(t, av, bv, mkn);
            (tile.bm, tile.bn, spec.source(), spec.aligned)
        }
        _ => (TILE, TILE, &GEMM, false),
    };
    let checks = if kernel.trusted() && trusted::proven(aligned, (a, b), c, bias, d) {
        Checks::Trusted
    } else {
        Checks::Checked
    };
    let grid = [
        u32_of(d.n.div_ceil(cols as usize), "gemm column tiles")?,
        u32_of(d.m.div_ceil(rows as usize), "gemm row tiles")?,
        u32_of(d.batch, "gemm batch")?,
    ];
    Ok(Plan {
        grid,
        shader,
        checks,
    })
}

/// Whether `kernel` would run `c = op(a) op(b) (+ bias)` as a trusted module (no runtime
/// checks): a trusted kernel on a problem the host proves in range (`trusted`).
pub fn runs_trusted(
    gpu: &crate::Gpu,
    kernel: Kernel,
    (a, b): (Operand, Operand),
    c: &Tensor,
    bias: Option<&Tensor>,
) -> Result<bool> {
    let d = check_dims(&a, &b, c, bias)?;
    Ok(plan(gpu, kernel, (&a, &b), (c, bias), &d)?.checks == Checks::Trusted)
}

/// How the generated variants read an f16 B on `gpu`: as native `f16` where the device
/// has `SHADER_F16`, else through `unpack2x16float` where the adapter has the downlevel
/// flag `SHADER_F16_IN_F32` (the GL backend); `None` elsewhere, where only the reference
/// kernel (integer decode, any device) runs f16.
pub fn half_read(gpu: &crate::Gpu) -> Option<HalfRead> {
    if gpu.features().contains(wgpu::Features::SHADER_F16) {
        Some(HalfRead::Native)
    } else if gpu.has_f16_in_f32() {
        Some(HalfRead::Unpack)
    } else {
        None
    }
}

/// Whether the generated variants may read an f16 B on `gpu` (see [`half_read`]).
pub fn f16_variants(gpu: &crate::Gpu) -> bool {
    half_read(gpu).is_some()
}

/// Compiles the pipeline `kernel` would use on this problem (so that timing it measures
/// the kernel, not the compiler).
fn prepare(gpu: &crate::Gpu, kernel: Kernel, a: &Operand, b: &Operand, c: &Tensor) -> Result<()> {
    let d = check_dims(a, b, c, None)?;
    let pl = plan(gpu, kernel, (a, b), (c, None), &d)?;
    if let Kernel::SplitK(..) = kernel {
        split::prepare(gpu)?;
    }
    let constants = constants(kernel, a, b, false);
    gpu.pipelines()
        .get_with(pl.shader, "gemm", &constants, pl.checks)
        .map(drop)
}

/// The override constants of `kernel`: the views, the bias, and (the reference kernel,
/// whose `B_HALF` picks the packed f16 binding) the storage of B; a generated kernel reads
/// f16 through its own B load kind instead.
fn constants(kernel: Kernel, a: &Operand, b: &Operand, bias: bool) -> Constants {
    let mut c = Constants::new();
    c.extend([
        ("A_MODE", a.view.code() as f64),
        ("B_MODE", b.view.code() as f64),
        ("HAS_BIAS", bias as u32 as f64),
    ]);
    if kernel == Kernel::Reference {
        c.push(("B_HALF", b.tensor.is_f16() as u32 as f64));
    }
    c
}

/// Operand B's bindings: `(3, b)` for an f32 operand or a generated kernel (whose `b`
/// is declared packed for f16); the reference kernel also takes `(7, b_half)`, with a
/// dummy in whichever of the two it does not read.
fn b_bindings(kernel: Kernel, b: &Operand, dummy: &Binding) -> SmallVec<[(u32, Binding); 2]> {
    let mut out = SmallVec::new();
    if kernel != Kernel::Reference {
        out.push((3, b.tensor.binding()));
    } else if b.tensor.is_f16() {
        out.extend([(3, dummy.clone()), (7, b.tensor.binding())]);
    } else {
        out.extend([(3, b.tensor.binding()), (7, dummy.clone())]);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    rec: &mut Recorder,
    kernel: Kernel,
    a: &Operand,
    b: &Operand,
    c: &Tensor,
    (alpha, beta): (f32, f32),
    bias: Option<&Tensor>,
    d: &Dims,
) -> Result<()> {
    let pl = plan(rec.gpu(), kernel, (a, b), (c, bias), d)?;
    if d.m == 0 || d.n == 0 {
        return Ok(());
    }
    let (m, n, ka) = (d.m, d.n, d.k);
    let p = Params {
        m: u32_of(m, "M")?,
        n: u32_of(n, "N")?,
        k: u32_of(ka, "K")?,
        r: d.r,
        stride_a: if d.ba == 1 {
            0
        } else {
            u32_of(m * ka, "A batch stride")?
        },
        stride_b: if d.bb == 1 {
            0
        } else {
            u32_of(ka * n, "B batch stride")?
        },
        stride_c: u32_of(m * n, "C batch stride")?,
        kz: 0,
        alpha,
        beta,
        kl: u32_of(ka, "K")?,
        _pad: 0,
    };
    if let Kernel::SplitK(_, parts) = kernel {
        return split::dispatch(rec, (kernel, parts, pl), (a, b), c, p, bias);
    }
    launch(rec, (kernel, pl), &p, (a, b), c, bias)
}

/// Records one GEMM dispatch of `kernel` as planned, with parameters `p`, into `c`.
fn launch(
    rec: &mut Recorder,
    (kernel, pl): (Kernel, Plan),
    p: &Params,
    (a, b): (&Operand, &Operand),
    c: &Tensor,
    bias: Option<&Tensor>,
) -> Result<()> {
    let uniform = rec.uniform(bytemuck::bytes_of(p));
    let dummy = dummy_binding(rec.gpu())?;
    // Each binding is a reference-counted handle: the absent ones borrow the dummy.
    let (a_bits, b_bits) = (a.masks.map(|m| m.binding()), b.masks.map(|m| m.binding()));
    let bias_b = bias.map(|t| t.binding());
    let constants = constants(kernel, a, b, bias.is_some());
    let (a_b, c_b) = (a.tensor.binding(), c.binding());
    let b_b = b_bindings(kernel, b, &dummy);
    let mut bindings: SmallVec<[(u32, &Binding); 8]> = SmallVec::new();
    bindings.extend([
        (0, &uniform),
        (1, &a_b),
        (2, a_bits.as_ref().unwrap_or(&dummy)),
        (4, b_bits.as_ref().unwrap_or(&dummy)),
        (5, &c_b),
        (6, bias_b.as_ref().unwrap_or(&dummy)),
    ]);
    bindings.extend(b_b.iter().map(|(i, x)| (*i, x)));
    rec.dispatch_with(
        pl.shader,
        ("gemm", pl.checks),
        &constants,
        &bindings,
        pl.grid,
    )
}

/// A 16-byte buffer bound where a kernel's optional input is absent; one per device.
fn dummy_binding(gpu: &crate::Gpu) -> Result<Binding> {
    gpu.dummy()
}

/// `alpha * op(a) op(b) (+ bias)` into a new tensor.
pub fn gemm(
    rec: &mut Recorder,
    a: Operand,
    b: Operand,
    alpha: f32,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let (ba, m, _, _) = a.logical("A")?;
    let (bb, _, n, _) = b.logical("B")?;
    let batch = ba.max(bb);
    let shape: Vec<usize> = if batch > 1 {
        let lead = if ba > 1 {
            a.tensor.shape()
        } else {
            b.tensor.shape()
        };
        let mut s = lead[..lead.len() - 2].to_vec();
        s.extend([m, n]);
        s
    } else {
        vec![m, n]
    };
    let c = Tensor::empty(rec.gpu(), &shape)?;
    gemm_into(rec, a, b, &c, alpha, 0.0, bias)?;
    Ok(c)
}

/// `op(a) op(b)` for dense tensors; `ta`/`tb` transpose.
pub fn matmul(rec: &mut Recorder, a: &Tensor, ta: bool, b: &Tensor, tb: bool) -> Result<Tensor> {
    let oa = if ta {
        Operand::trans(a)
    } else {
        Operand::plain(a)
    };
    let ob = if tb {
        Operand::trans(b)
    } else {
        Operand::plain(b)
    };
    gemm(rec, oa, ob, 1.0, None)
}

/// `x W^T + bias` for `x [T, in]`, `W [out, in]` (nn.Linear).
pub fn linear(rec: &mut Recorder, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    gemm(rec, Operand::plain(x), Operand::trans(w), 1.0, bias)
}

pub mod cpu;
