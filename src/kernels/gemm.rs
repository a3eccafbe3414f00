//! General GEMM (`shaders/gemm.wgsl`): `C = alpha op(A) op(B) + beta C (+ bias)`, with
//! transposes and the CapaBoost masked-stacked views expressed by indexing.

use crate::kernels::masks::MaskBits;
use crate::runtime::error::{Error, Result};
use crate::runtime::half::HalfTensor;
use crate::runtime::pipeline::Checks;
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::{GEMM, ShaderSource};
use crate::runtime::tensor::Tensor;

mod cache;
pub mod coop;
pub mod coop_twin;
pub mod template;
pub mod tiled;
mod trusted;
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
    /// The cooperative-matrix GEMM: the index of its configuration in [`coop::CONFIGS`];
    /// only on a device that lists it ([`coop::candidates`]).
    Coop(usize),
    /// [`Kernel::Register`] as a trusted module (no runtime checks) on problems whose
    /// indexing the host proves in range (`trusted`), the checked module elsewhere.
    RegisterTrusted(usize),
    /// A generated workgroup-memory variant: the index of its tile in [`tiled::TILES`].
    Tiled(usize),
    /// [`Kernel::Tiled`] as a trusted module where proven in range, checked elsewhere.
    TiledTrusted(usize),
}

/// What a trusted kernel's label ends with.
const TRUSTED: &str = "-trusted";

impl Kernel {
    /// A short name: `tiled64` (the reference), a register shape's label (`r8x8w8x8`) or a
    /// tile's (`t128x128k8`), trusted ones followed by `-trusted`.
    pub fn label(&self) -> String {
        match self {
            Kernel::Reference => "tiled64".into(),
            Kernel::Register(s) => template::SHAPES[*s].label(),
            Kernel::Coop(c) => coop::CONFIGS[*c].label(),
            Kernel::Tiled(t) => tiled::TILES[*t].label(),
            Kernel::RegisterTrusted(_) | Kernel::TiledTrusted(_) => {
                format!("{}{TRUSTED}", self.checked().label())
            }
        }
    }

    /// Largest relative Frobenius difference from [`Kernel::Reference`] the autotuner's
    /// check accepts: [`tune::CHECK_TOL`] for f32 arithmetic, looser for f16 inputs
    /// ([`coop::F16_CHECK_TOL`]).
    pub fn check_tol(&self) -> f64 {
        match self {
            Kernel::Coop(c) => coop::check_tol(coop::CONFIGS[*c]),
            _ => tune::CHECK_TOL,
        }
    }

    /// The kernel a label names.
    pub fn from_label(label: &str) -> Option<Self> {
        if label == "tiled64" {
            return Some(Kernel::Reference);
        }
        let (base, trusted) = match label.strip_suffix(TRUSTED) {
            Some(base) => (base, true),
            None => (label, false),
        };
        let register = template::SHAPES.iter().position(|s| s.label() == base);
        let tile = tiled::TILES.iter().position(|t| t.label() == base);
        match (register, tile, trusted) {
            (Some(s), _, false) => Some(Kernel::Register(s)),
            (Some(s), _, true) => Some(Kernel::RegisterTrusted(s)),
            (None, Some(t), false) => Some(Kernel::Tiled(t)),
            (None, Some(t), true) => Some(Kernel::TiledTrusted(t)),
            (None, None, false) => coop::CONFIGS
                .iter()
                .position(|c| c.label() == base)
                .map(Kernel::Coop),
            (None, None, true) => None,
        }
    }

    /// Whether this kernel runs as a trusted module where the host proves it in range.
    pub fn trusted(&self) -> bool {
        matches!(self, Kernel::RegisterTrusted(_) | Kernel::TiledTrusted(_))
    }

    /// The same kernel with its runtime checks kept.
    pub fn checked(self) -> Self {
        match self {
            Kernel::RegisterTrusted(s) => Kernel::Register(s),
            Kernel::TiledTrusted(t) => Kernel::Tiled(t),
            k => k,
        }
    }

    /// The trusted form of a generated kernel (the reference has none: itself).
    pub fn trusted_form(self) -> Self {
        match self {
            Kernel::Register(s) => Kernel::RegisterTrusted(s),
            Kernel::Tiled(t) => Kernel::TiledTrusted(t),
            k => k,
        }
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

/// What an operand reads: an f32 tensor, or (operand B, dense views only) f16 weights
/// packed two per u32 and decoded in the kernel with f32 accumulation.
#[derive(Clone, Copy, Debug)]
pub enum Storage<'a> {
    /// f32.
    F32(&'a Tensor),
    /// Packed f16 ([`HalfTensor`]).
    F16(&'a HalfTensor),
}

impl Storage<'_> {
    /// The logical shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Storage::F32(t) => t.shape(),
            Storage::F16(h) => h.shape(),
        }
    }

    /// Logical elements (the product of the shape; f16 storage packs two per word).
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the elements are packed f16.
    pub fn is_f16(&self) -> bool {
        matches!(self, Storage::F16(_))
    }

    fn binding(&self) -> Binding {
        match self {
            Storage::F32(t) => t.binding(),
            Storage::F16(h) => h.binding(),
        }
    }
}

impl<'a> From<&'a Tensor> for Storage<'a> {
    fn from(t: &'a Tensor) -> Self {
        Storage::F32(t)
    }
}

/// One GEMM operand: a tensor, how to read it, and its masks for stacked views.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    /// The stored tensor.
    pub tensor: Storage<'a>,
    /// How it is read.
    pub view: View,
    /// Mask bits, required by the stacked views.
    pub masks: Option<&'a MaskBits>,
}

impl<'a> Operand<'a> {
    /// The tensor as stored.
    pub fn plain(tensor: &'a Tensor) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view: View::Plain,
            masks: None,
        }
    }

    /// The tensor transposed.
    pub fn trans(tensor: &'a Tensor) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view: View::Trans,
            masks: None,
        }
    }

    /// A stacked masked view of a shared factor.
    pub fn stacked(tensor: &'a Tensor, view: View, masks: &'a MaskBits) -> Self {
        Self {
            tensor: Storage::F32(tensor),
            view,
            masks: Some(masks),
        }
    }

    /// Packed f16 weights read through a dense view ([`View::Plain`] or [`View::Trans`]);
    /// only operand B may be f16 (checked by the GEMM).
    pub fn f16(tensor: &'a HalfTensor, view: View) -> Self {
        Self {
            tensor: Storage::F16(tensor),
            view,
            masks: None,
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
        if self.tensor.is_f16() && (self.view.stacked() || name != "B") {
            return Err(Error::InvalidArgument(format!(
                "gemm operand {name}: f16 storage is read only as a dense operand B, got {:?}",
                self.view
            )));
        }
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
    _pad0: u32,
    alpha: f32,
    beta: f32,
    _pad1: [u32; 2],
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
        Kernel::Register(_) if half && !f16_variants(gpu) => {
            return Err(Error::InvalidArgument(format!(
                "gemm: {} reads f16 with unpack2x16float, which this device lacks (no \
                 SHADER_F16); the reference kernel reads f16 everywhere",
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
        Kernel::Register(s) => {
            let mut spec = template::spec_for(s, av, bv, mkn);
            if half {
                spec.b = spec.b.f16();
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

/// Whether the generated variants may read packed f16 B on `gpu`: their
/// `unpack2x16float` needs wgpu's `SHADER_F16_IN_F32`, which every backend has where the
/// device has `SHADER_F16` (llvmpipe has it only then); elsewhere only the reference
/// kernel (integer decode) runs f16.
pub fn f16_variants(gpu: &crate::Gpu) -> bool {
    gpu.features().contains(wgpu::Features::SHADER_F16)
}

/// Compiles the pipeline `kernel` would use on this problem (so that timing it measures
/// the kernel, not the compiler).
fn prepare(gpu: &crate::Gpu, kernel: Kernel, a: &Operand, b: &Operand, c: &Tensor) -> Result<()> {
    let d = check_dims(a, b, c, None)?;
    let pl = plan(gpu, kernel, (a, b), (c, None), &d)?;
    let constants = constants(kernel, a, b, false);
    gpu.pipelines()
        .get_with(pl.shader, "gemm", &constants, pl.checks)
        .map(drop)
}

/// The override constants of `kernel`: the views, the bias, and (the reference kernel,
/// whose `B_HALF` picks the packed f16 binding) the storage of B; a generated kernel reads
/// f16 through its own B load kind instead.
fn constants(kernel: Kernel, a: &Operand, b: &Operand, bias: bool) -> Vec<(&'static str, f64)> {
    let mut c = vec![
        ("A_MODE", a.view.code() as f64),
        ("B_MODE", b.view.code() as f64),
        ("HAS_BIAS", bias as u32 as f64),
    ];
    if kernel == Kernel::Reference {
        c.push(("B_HALF", b.tensor.is_f16() as u32 as f64));
    }
    c
}

/// Operand B's bindings: `(3, b)` for an f32 operand or a generated kernel (whose `b`
/// is declared packed for f16); the reference kernel also takes `(7, b_half)`, with a
/// dummy in whichever of the two it does not read.
fn b_bindings(kernel: Kernel, b: &Operand, dummy: &Binding) -> Vec<(u32, Binding)> {
    if kernel != Kernel::Reference {
        return vec![(3, b.tensor.binding())];
    }
    if b.tensor.is_f16() {
        vec![(3, dummy.clone()), (7, b.tensor.binding())]
    } else {
        vec![(3, b.tensor.binding()), (7, dummy.clone())]
    }
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
    let gpu = rec.gpu().clone();
    let pl = plan(&gpu, kernel, (a, b), (c, bias), d)?;
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
        _pad0: 0,
        alpha,
        beta,
        _pad1: [0; 2],
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let dummy = dummy_binding(&gpu)?;
    let a_bits = a.masks.map_or(dummy.clone(), |m| m.binding());
    let b_bits = b.masks.map_or(dummy.clone(), |m| m.binding());
    let bias_b = bias.map_or(dummy.clone(), |t| t.binding());
    let constants = constants(kernel, a, b, bias.is_some());
    let (a_b, c_b) = (a.tensor.binding(), c.binding());
    let b_b = b_bindings(kernel, b, &dummy);
    let mut bindings = vec![
        (0, &uniform),
        (1, &a_b),
        (2, &a_bits),
        (4, &b_bits),
        (5, &c_b),
        (6, &bias_b),
    ];
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
