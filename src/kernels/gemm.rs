//! General GEMM (`shaders/gemm.wgsl`): `C = alpha op(A) op(B) + beta C (+ bias)`, with
//! transposes and the CapaBoost masked-stacked views expressed by indexing.

use crate::kernels::masks::MaskBits;
use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::GEMM;
use crate::runtime::tensor::Tensor;

mod cache;
pub mod split;
pub mod template;
pub mod tune;

const TILE: u32 = 64;

/// Which kernel runs a GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `shaders/gemm.wgsl`: the 64x64 workgroup-memory tile (`CAPABOOST_AUTOTUNE=off`), and
    /// the reference every tuned choice is checked against.
    Reference,
    /// A generated register-only variant: the index of its shape in [`template::SHAPES`].
    Register(usize),
    /// Split-K ([`split`]): the register variant of shape `.0` computes `.1` partial
    /// products over slices of K, then one pass (`shaders/splitk.wgsl`) sums them in a
    /// fixed order and applies alpha, beta and the bias. Unbatched problems only.
    SplitK(usize, u32),
}

impl Kernel {
    /// A short name: `tiled64` or the register shape's label.
    pub fn label(&self) -> String {
        match self {
            Kernel::Reference => "tiled64".into(),
            Kernel::Register(s) => template::SHAPES[*s].label(),
            Kernel::SplitK(s, parts) => format!("{}s{parts}", template::SHAPES[*s].label()),
        }
    }

    /// The kernel a label names.
    pub fn from_label(label: &str) -> Option<Self> {
        if label == "tiled64" {
            return Some(Kernel::Reference);
        }
        if let Some((inner, parts)) = label.rsplit_once('s') {
            let shape = template::SHAPES.iter().position(|s| s.label() == inner)?;
            let parts: u32 = parts.parse().ok().filter(|&p| p >= 1)?;
            return Some(Kernel::SplitK(shape, parts));
        }
        template::SHAPES
            .iter()
            .position(|s| s.label() == label)
            .map(Kernel::Register)
    }
}

/// How the kernel reads an operand stored in a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// The tensor `[R, C]` as it is (optionally with a leading batch dimension).
    Plain,
    /// The transpose of a tensor stored `[C, R]`.
    Trans,
    /// `A_s = [A*M_1; ...; A*M_d]`, logical `[d r, in]`, from `A [r, in]` and its masks.
    AStacked,
    /// `A_s^T`, logical `[in, d r]`.
    AStackedT,
    /// `B_s = [B*N_1, ..., B*N_d]`, logical `[out, d r]`, from `B [out, r]` and its masks.
    BStacked,
    /// `B_s^T`, logical `[d r, out]`.
    BStackedT,
}

impl View {
    pub(crate) fn code(self) -> u32 {
        match self {
            View::Plain => 0,
            View::Trans => 1,
            View::AStacked => 2,
            View::AStackedT => 3,
            View::BStacked => 4,
            View::BStackedT => 5,
        }
    }

    pub(crate) fn stacked(self) -> bool {
        !matches!(self, View::Plain | View::Trans)
    }
}

/// One GEMM operand: a tensor, how to read it, and its masks for stacked views.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The stored tensor.
    pub tensor: &'a Tensor,
    /// How it is read.
    pub view: View,
    /// Mask bits, required by the stacked views.
    pub masks: Option<&'a MaskBits>,
}

impl<'a> Operand<'a> {
    /// The tensor as stored.
    pub fn plain(tensor: &'a Tensor) -> Self {
        Self {
            tensor,
            view: View::Plain,
            masks: None,
        }
    }

    /// The tensor transposed.
    pub fn trans(tensor: &'a Tensor) -> Self {
        Self {
            tensor,
            view: View::Trans,
            masks: None,
        }
    }

    /// A stacked masked view of a shared factor.
    pub fn stacked(tensor: &'a Tensor, view: View, masks: &'a MaskBits) -> Self {
        Self {
            tensor,
            view,
            masks: Some(masks),
        }
    }

    /// Logical `[batch, rows, cols]` and the rank `r` of a stacked view.
    fn logical(&self, name: &str) -> Result<(usize, usize, usize, u32)> {
        let s = self.tensor.shape();
        if s.len() < 2 {
            return Err(Error::shape(format!(
                "gemm operand {name} must have at least 2 dims, got {s:?}"
            )));
        }
        let (rows, cols) = (s[s.len() - 2], s[s.len() - 1]);
        let batch: usize = s[..s.len() - 2].iter().product();
        if !self.view.stacked() {
            if self.masks.is_some() {
                return Err(Error::InvalidArgument(format!(
                    "gemm operand {name}: masks given for a dense view"
                )));
            }
            return Ok(match self.view {
                View::Plain => (batch, rows, cols, 0),
                _ => (batch, cols, rows, 0),
            });
        }
        let m = self.masks.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "gemm operand {name}: view {:?} needs masks",
                self.view
            ))
        })?;
        if batch != 1 {
            return Err(Error::shape(format!(
                "gemm operand {name}: stacked views take one 2-D factor, got {s:?}"
            )));
        }
        if (m.rows, m.cols) != (rows, cols) {
            return Err(Error::shape(format!(
                "gemm operand {name}: masks are [{}, {}] but the factor is {s:?}",
                m.rows, m.cols
            )));
        }
        let d = m.branches as usize;
        Ok(match self.view {
            View::AStacked => (1, d * rows, cols, rows as u32),
            View::AStackedT => (1, cols, d * rows, rows as u32),
            View::BStacked => (1, rows, d * cols, cols as u32),
            _ => (1, d * cols, rows, cols as u32),
        })
    }
}

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

/// The grid and the shader of `kernel` on this problem.
fn plan(
    kernel: Kernel,
    a: &Operand,
    b: &Operand,
    d: &Dims,
) -> Result<([u32; 3], &'static crate::runtime::shaders::ShaderSource)> {
    let (rows, cols, shader) = match kernel {
        Kernel::Reference => (TILE, TILE, &GEMM),
        Kernel::Register(s) | Kernel::SplitK(s, _) => {
            let spec = template::spec_for(s, a.view.code(), b.view.code(), [d.m, d.k, d.n]);
            let shape = template::SHAPES[s];
            (shape.rows(), shape.cols(), spec.source())
        }
    };
    let grid = [
        u32_of(d.n.div_ceil(cols as usize), "gemm column tiles")?,
        u32_of(d.m.div_ceil(rows as usize), "gemm row tiles")?,
        u32_of(d.batch, "gemm batch")?,
    ];
    Ok((grid, shader))
}

/// Compiles the pipeline `kernel` would use on this problem (so that timing it measures
/// the kernel, not the compiler).
fn prepare(gpu: &crate::Gpu, kernel: Kernel, a: &Operand, b: &Operand, c: &Tensor) -> Result<()> {
    let d = check_dims(a, b, c, None)?;
    let (_, shader) = plan(kernel, a, b, &d)?;
    if let Kernel::SplitK(..) = kernel {
        split::prepare(gpu)?;
    }
    let constants = [
        ("A_MODE", a.view.code() as f64),
        ("B_MODE", b.view.code() as f64),
        ("HAS_BIAS", 0.0),
    ];
    gpu.pipelines().get(shader, "gemm", &constants).map(drop)
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
    let (grid, shader) = plan(kernel, a, b, d)?;
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
        return split::dispatch(rec, parts, (a, b), c, p, bias, (shader, grid));
    }
    launch(rec, shader, grid, &p, (a, b), c, bias)
}

/// Records one GEMM dispatch of `shader` over `grid` with parameters `p` into `c`.
fn launch(
    rec: &mut Recorder,
    shader: &'static crate::runtime::shaders::ShaderSource,
    grid: [u32; 3],
    p: &Params,
    (a, b): (&Operand, &Operand),
    c: &Tensor,
    bias: Option<&Tensor>,
) -> Result<()> {
    let gpu = rec.gpu().clone();
    let uniform = rec.uniform(bytemuck::bytes_of(p));
    let dummy = dummy_binding(&gpu)?;
    let a_bits = a.masks.map_or(dummy.clone(), |m| m.binding());
    let b_bits = b.masks.map_or(dummy.clone(), |m| m.binding());
    let bias_b = bias.map_or(dummy.clone(), |t| t.binding());
    let constants = [
        ("A_MODE", a.view.code() as f64),
        ("B_MODE", b.view.code() as f64),
        ("HAS_BIAS", bias.is_some() as u32 as f64),
    ];
    rec.dispatch(
        shader,
        "gemm",
        &constants,
        &[
            (0, &uniform),
            (1, &a.tensor.binding()),
            (2, &a_bits),
            (3, &b.tensor.binding()),
            (4, &b_bits),
            (5, &c.binding()),
            (6, &bias_b),
        ],
        grid,
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
