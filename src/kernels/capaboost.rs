//! One CapaBoost-LoRA layer on the GPU: forward, backward and merge, composed from the
//! masked GEMMs and masked sums, with an f64 CPU reference written in the per-branch form
//! of the math (so the stacked GPU form is checked against an independent formulation).
//!
//! The math lives in one type, [`Adapter`]: the update `y += s (x A_s^T) B_s^T`, its
//! backward (the masked GEMMs and masked sums), `delta_W` and merge/unmerge. Everything
//! else goes through it: [`Layer`] (the adapter on a frozen base `W0`, `b0`), the tape ops
//! `Graph::capaboost_update` / `Graph::capaboost_linear`, the modules' merge, the
//! benchmark's adapter path and the [`naive`] baseline. The f64 twin has the same shape:
//! [`cpu::Adapter`] (per branch) reused by [`cpu::Layer`].
//!
//! PEFT layout: `x [T, in]`, `W0 [out, in]`, `b0 [out]`, `lora_A [r, in]`,
//! `lora_B [out, r]`, masks `M_i [r, in]`, `N_i [out, r]`, `s = alpha / r` (rsLoRA:
//! `alpha / sqrt(r)`), no division by d.

use crate::kernels::gemm::{Operand, View, gemm, gemm_into};
use crate::kernels::layout::swap_middle;
use crate::kernels::masked_sums::{StackedB, masked_sum_pair_as};
use crate::kernels::masks::{Factor, MaskBits, MaskConfig, masked_sum};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// How the update is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RankScaling {
    /// `s = alpha / r` (LoRA).
    #[default]
    Lora,
    /// `s = alpha / sqrt(r)` (rsLoRA).
    #[serde(rename = "rslora")]
    #[cfg_attr(feature = "tasks", value(name = "rslora"))]
    RsLora,
}

impl RankScaling {
    /// The scale `s` for `alpha` and rank `r`.
    pub fn scale(self, alpha: f32, r: usize) -> f32 {
        match self {
            Self::Lora => alpha / r as f32,
            Self::RsLora => alpha / (r as f32).sqrt(),
        }
    }
}

/// One 0/1 byte mask per branch.
pub type BranchMasks = Vec<Vec<u8>>;

/// The masks of one adapted matrix: `M_i` on `lora_A`, `N_i` on `lora_B`.
#[derive(Clone, Debug)]
pub struct LayerMasks {
    /// Masks of `lora_A [r, in]`.
    pub a: MaskBits,
    /// Masks of `lora_B [out, r]`.
    pub b: MaskBits,
}

impl LayerMasks {
    /// Generates both factors' masks on the GPU, keyed by (seed, module, factor, branch):
    /// `a` for `lora_A [r, in]`, `b` for `lora_B [out, r]`.
    pub fn generate(
        rec: &mut Recorder,
        config: &MaskConfig,
        module: u32,
        r: usize,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Ok(Self {
            a: MaskBits::generate(rec, &config.spec(module, Factor::A, r, in_features))?,
            b: MaskBits::generate(rec, &config.spec(module, Factor::B, out_features, r))?,
        })
    }

    /// Masks given as 0/1 bytes per branch (`a[i]` is `[r, in]`, `b[i]` is `[out, r]`).
    pub fn from_u8(
        gpu: &Gpu,
        a: &[Vec<u8>],
        b: &[Vec<u8>],
        r: usize,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        if a.is_empty() || a.len() != b.len() {
            return Err(Error::shape(format!(
                "{} masks for lora_A but {} for lora_B (need d >= 1 of each)",
                a.len(),
                b.len()
            )));
        }
        for (i, m) in a.iter().enumerate() {
            if m.len() != r * in_features {
                return Err(Error::shape(format!(
                    "mask_A.{i} has {} entries, expected [{r}, {in_features}]",
                    m.len()
                )));
            }
        }
        for (i, m) in b.iter().enumerate() {
            if m.len() != out_features * r {
                return Err(Error::shape(format!(
                    "mask_B.{i} has {} entries, expected [{out_features}, {r}]",
                    m.len()
                )));
            }
        }
        let d = a.len() as u32;
        Ok(Self {
            a: MaskBits::from_words(gpu, &crate::kernels::masks::pack(a), d, r, in_features)?,
            b: MaskBits::from_words(gpu, &crate::kernels::masks::pack(b), d, out_features, r)?,
        })
    }

    /// Number of branches d.
    pub fn d(&self) -> usize {
        self.a.branches as usize
    }

    /// Reads both factors' masks back as 0/1 bytes per branch: `(M_i, N_i)`.
    pub fn to_u8(&self) -> Result<(BranchMasks, BranchMasks)> {
        let d = self.d();
        let a = crate::kernels::masks::unpack(&self.a.to_words()?, d, self.a.rows * self.a.cols);
        let b = crate::kernels::masks::unpack(&self.b.to_words()?, d, self.b.rows * self.b.cols);
        Ok((a, b))
    }

    /// Entries of `lora_A` plus entries of `lora_B` that some branch's mask lets through
    /// (reads the masks back once).
    pub fn used_entries(&self) -> Result<usize> {
        fn union(masks: &[Vec<u8>]) -> usize {
            let n = masks.first().map_or(0, Vec::len);
            (0..n).filter(|&e| masks.iter().any(|m| m[e] != 0)).count()
        }
        let (ma, mb) = self.to_u8()?;
        Ok(union(&ma) + union(&mb))
    }
}

/// A CapaBoost-LoRA adapter: the shared factors `lora_A [r, in]` and `lora_B [out, r]`, the
/// static masks of the d branches and the scale `s`.
///
/// It borrows: the factors belong to whoever trains them (a module, a checkpoint, a host
/// program's buffers), so an adapter is a free view built where it is used, never a second
/// owner to keep in sync. `P` is what holds a factor: a [`Tensor`] for the kernels below,
/// a tape `Var` for the graph ops (`Graph::capaboost_update` takes `Adapter<'_, Var>`).
#[derive(Debug)]
pub struct Adapter<'a, P = Tensor> {
    /// `lora_A`, `[r, in]`.
    pub a: &'a P,
    /// `lora_B`, `[out, r]`.
    pub b: &'a P,
    /// `M_i` on `lora_A`, `N_i` on `lora_B`.
    pub masks: &'a LayerMasks,
    /// `s = alpha / r` (rsLoRA: `alpha / sqrt(r)`).
    pub scale: f32,
}

impl<P> Clone for Adapter<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for Adapter<'_, P> {}

impl<'a, P> Adapter<'a, P> {
    /// The adapter of factors `a [r, in]`, `b [out, r]` under `masks`, scaled by `scale`.
    pub fn new(a: &'a P, b: &'a P, masks: &'a LayerMasks, scale: f32) -> Self {
        Self { a, b, masks, scale }
    }

    /// Number of branches d.
    pub fn d(&self) -> usize {
        self.masks.d()
    }
}

/// Which gradient of the adapter's input [`Adapter::backward`] produces.
#[derive(Clone, Copy, Debug)]
pub enum Dx<'t> {
    /// No input gradient.
    Skip,
    /// `dx = dH A_s` into a new tensor.
    New,
    /// `dx += dH A_s` into an existing `[T, in]` tensor (e.g. the base layer's `G W0`).
    AddTo(&'t Tensor),
}

/// What [`Adapter::backward`] computes.
#[derive(Clone, Copy, Debug)]
pub struct Needs<'t> {
    /// `dL/dlora_A`.
    pub a: bool,
    /// `dL/dlora_B`.
    pub b: bool,
    /// `dL/dx`.
    pub x: Dx<'t>,
}

impl<'t> Needs<'t> {
    /// Both factors' gradients, and `x`'s as given.
    pub fn all(x: Dx<'t>) -> Self {
        Self {
            a: true,
            b: true,
            x,
        }
    }
}

/// Gradients from [`Adapter::backward`]; `None` where not asked for.
#[derive(Clone, Debug, Default)]
pub struct AdapterGrads {
    /// `dL/dlora_A`, `[r, in]`.
    pub da: Option<Tensor>,
    /// `dL/dlora_B`, `[out, r]`.
    pub db: Option<Tensor>,
    /// `dH A_s`, `[T, in]`, for [`Dx::New`] (with [`Dx::AddTo`] the target holds it).
    pub dx: Option<Tensor>,
}

impl<'a> Adapter<'a> {
    /// `(r, in, out)` after checking the factors against each other and the masks.
    pub fn dims(&self) -> Result<(usize, usize, usize)> {
        let [r, in_f] = dims2("lora_A", self.a)?;
        let [out_f, br] = dims2("lora_B", self.b)?;
        if br != r {
            return Err(Error::shape(format!(
                "lora_B is [{out_f}, {br}], expected [{out_f}, {r}]"
            )));
        }
        let m = self.masks;
        if (m.a.rows, m.a.cols) != (r, in_f) || (m.b.rows, m.b.cols) != (out_f, r) {
            return Err(Error::shape("masks do not match lora_A / lora_B"));
        }
        Ok((r, in_f, out_f))
    }

    /// `A_s^T` (`AStackedT`), `A_s` (`AStacked`) and the `B` views as GEMM operands.
    fn a_view(&self, view: View) -> Operand<'a> {
        Operand::stacked(self.a, view, &self.masks.a)
    }

    fn b_view(&self, view: View) -> Operand<'a> {
        Operand::stacked(self.b, view, &self.masks.b)
    }

    /// `y += s H B_s^T` with `H = x A_s^T` for `x [T, in]` and `y [T, out]` (two GEMMs,
    /// masks applied on load, and a small transpose); returns `H^T = A_s x^T [d r, T]`,
    /// which the backward needs. The narrow products are computed transposed: with
    /// `d r` as their N (`x A_s^T`, `G^T H`, `G B_s`) they cost 2-3x their transposed twins
    /// on llvmpipe (BENCHMARKS.md, 2026-12-02).
    pub fn update(&self, rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.check_rows(x, "output", y)?;
        let ht = gemm(
            rec,
            self.a_view(View::AStacked),
            Operand::trans(x),
            1.0,
            None,
        )?;
        let h = transpose(rec, &ht)?;
        gemm_into(
            rec,
            Operand::plain(&h),
            self.b_view(View::BStackedT),
            y,
            self.scale,
            1.0,
            None,
        )?;
        Ok(ht)
    }

    /// Checks `x [T, in]` and an output-side tensor `[T, out]` (named `name` in errors);
    /// returns `T`.
    fn check_rows(&self, x: &Tensor, name: &str, y: &Tensor) -> Result<usize> {
        let (_, in_f, out_f) = self.dims()?;
        let [t, xin] = dims2("x", x)?;
        if xin != in_f {
            return Err(Error::shape(format!(
                "x is [{t}, {xin}] but lora_A has in = {in_f}"
            )));
        }
        if y.shape() != [t, out_f] {
            return Err(Error::shape(format!(
                "{name} is {:?}, expected [{t}, {out_f}]",
                y.shape()
            )));
        }
        Ok(t)
    }

    /// Checks the backward's inputs: `x [T, in]`, saved `ht [d r, T]`, `g [T, out]`.
    fn check_backward(&self, x: &Tensor, ht: &Tensor, g: &Tensor) -> Result<()> {
        let t = self.check_rows(x, "grad_y", g)?;
        let (r, _, _) = self.dims()?;
        let dr = self.d() * r;
        if ht.shape() != [dr, t] {
            return Err(Error::shape(format!(
                "saved H^T is {:?}, expected [{dr}, {t}]",
                ht.shape()
            )));
        }
        Ok(())
    }

    /// The backward of [`Adapter::update`] for `G = dL/dy` and the saved `H^T`:
    /// `dB = s sum_i N_i (G^T H_i)`, `dH = s G B_s`, `dA = sum_i M_i (dH_i^T x)`,
    /// `dx (+)= dH A_s`, each only when `needs` asks for it (`dH` when `dA` or `dx` is).
    /// The narrow products run transposed (`H^T G`, `dH^T = s B_s^T G^T`).
    pub fn backward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        ht: &Tensor,
        g: &Tensor,
        needs: Needs<'_>,
    ) -> Result<AdapterGrads> {
        self.check_backward(x, ht, g)?;
        let s = self.scale;
        let mut out = AdapterGrads::default();
        if needs.b && !needs.a {
            let sb = gemm(rec, Operand::trans(g), Operand::trans(ht), s, None)?;
            out.db = Some(masked_sum(rec, &self.masks.b, Factor::B, &sb)?);
        }
        if !needs.a && matches!(needs.x, Dx::Skip) {
            return Ok(out);
        }
        let b_st = self.b_view(View::BStackedT);
        let dht = gemm(rec, b_st, Operand::trans(g), s, None)?;
        if needs.a {
            let sa = gemm(rec, Operand::plain(&dht), Operand::plain(x), 1.0, None)?;
            if needs.b {
                // S_B^T = s H^T G [d r, out], folded with dA's stack in one dispatch.
                let sbt = gemm(rec, Operand::plain(ht), Operand::plain(g), s, None)?;
                let (da, db) = masked_sum_pair_as(rec, self.masks, &sa, (&sbt, StackedB::Rows))?;
                (out.da, out.db) = (Some(da), Some(db));
            } else {
                out.da = Some(masked_sum(rec, &self.masks.a, Factor::A, &sa)?);
            }
        }
        let target = match needs.x {
            Dx::Skip => return Ok(out),
            t => t,
        };
        let dh = transpose(rec, &dht)?;
        let (dh, a_s) = (Operand::plain(&dh), self.a_view(View::AStacked));
        match target {
            Dx::AddTo(dx) => gemm_into(rec, dh, a_s, dx, 1.0, 1.0, None)?,
            _ => out.dx = Some(gemm(rec, dh, a_s, 1.0, None)?),
        }
        Ok(out)
    }

    /// `delta_W = s sum_i (B*N_i)(A*M_i) = s B_s A_s`, `[out, in]`.
    pub fn delta_weight(&self, rec: &mut Recorder) -> Result<Tensor> {
        self.dims()?;
        gemm(
            rec,
            self.b_view(View::BStacked),
            self.a_view(View::AStacked),
            self.scale,
            None,
        )
    }

    /// `W0 += delta_W` in place, for inference at the base model's cost.
    pub fn merge(&self, rec: &mut Recorder, w0: &Tensor) -> Result<()> {
        self.fold(rec, w0, self.scale)
    }

    /// `W0 -= delta_W` in place: undoes [`Adapter::merge`] (up to f32 rounding).
    pub fn unmerge(&self, rec: &mut Recorder, w0: &Tensor) -> Result<()> {
        self.fold(rec, w0, -self.scale)
    }

    fn fold(&self, rec: &mut Recorder, w0: &Tensor, s: f32) -> Result<()> {
        let (_, in_f, out_f) = self.dims()?;
        if w0.shape() != [out_f, in_f] {
            return Err(Error::shape(format!(
                "weight is {:?}, expected [{out_f}, {in_f}]",
                w0.shape()
            )));
        }
        gemm_into(
            rec,
            self.b_view(View::BStacked),
            self.a_view(View::AStacked),
            w0,
            s,
            1.0,
            None,
        )
    }
}

/// `[R, C] -> [C, R]` (one small copy kernel): the narrow products' outputs are read
/// again as the A operand of a K = d r product, which on llvmpipe runs several times
/// slower through a transposed view than from a row-major copy.
fn transpose(rec: &mut Recorder, t: &Tensor) -> Result<Tensor> {
    let [r, c] = dims2("transposed", t)?;
    swap_middle(rec, &t.reshape(&[1, r, c, 1])?)?.reshape(&[c, r])
}

fn dims2(name: &str, t: &Tensor) -> Result<[usize; 2]> {
    match t.shape() {
        &[a, b] => Ok([a, b]),
        s => Err(Error::shape(format!("{name} must be 2-D, got {s:?}"))),
    }
}

/// A whole layer: the frozen base `W0 [out, in]`, `b0 [out]` plus an [`Adapter`].
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// The frozen base weight `[out, in]`.
    pub w0: &'a Tensor,
    /// The frozen base bias `[out]`.
    pub b0: Option<&'a Tensor>,
    /// The adapter on top.
    pub adapter: Adapter<'a>,
}

/// The forward's outputs: `y` and the activation `H = x A_s^T` (stored transposed) the
/// backward needs.
#[derive(Clone, Debug)]
pub struct Forward {
    /// `x W0^T + b0 + s H B_s^T`, `[T, out]`.
    pub y: Tensor,
    /// `H^T = A_s x^T`, `[d r, T]`.
    pub h: Tensor,
}

/// Gradients of a layer.
#[derive(Clone, Debug)]
pub struct Grads {
    /// `dL/dx`, `[T, in]` (`None` when not asked for).
    pub dx: Option<Tensor>,
    /// `dL/dlora_A`, `[r, in]`.
    pub da: Tensor,
    /// `dL/dlora_B`, `[out, r]`.
    pub db: Tensor,
}

impl<'a> Layer<'a> {
    /// The layer `x W0^T + b0 + adapter(x)`.
    pub fn new(w0: &'a Tensor, b0: Option<&'a Tensor>, adapter: Adapter<'a>) -> Self {
        Self { w0, b0, adapter }
    }

    /// Checks every tensor of the layer and the input `x` against the others; errors name
    /// the tensor.
    pub fn check(&self, x: &Tensor) -> Result<()> {
        let [out_f, in_f] = dims2("weight", self.w0)?;
        let [t, xin] = dims2("x", x)?;
        let [r, ain] = dims2("lora_A", self.adapter.a)?;
        let [bout, br] = dims2("lora_B", self.adapter.b)?;
        if xin != in_f {
            return Err(Error::shape(format!(
                "x is [{t}, {xin}] but weight is [{out_f}, {in_f}]"
            )));
        }
        if ain != in_f {
            return Err(Error::shape(format!(
                "lora_A is [{r}, {ain}] but weight has in = {in_f}"
            )));
        }
        if bout != out_f || br != r {
            return Err(Error::shape(format!(
                "lora_B is [{bout}, {br}], expected [{out_f}, {r}]"
            )));
        }
        if let Some(b) = self.b0
            && b.shape() != [out_f]
        {
            return Err(Error::shape(format!(
                "bias is {:?}, expected [{out_f}]",
                b.shape()
            )));
        }
        self.adapter.dims().map(drop)
    }

    /// `y = x W0^T + b0 + s (x A_s^T) B_s^T`: three GEMMs (masks applied on load) and a
    /// small transpose ([`Adapter::update`]).
    pub fn forward(&self, rec: &mut Recorder, x: &Tensor) -> Result<Forward> {
        self.check(x)?;
        let y = gemm(
            rec,
            Operand::plain(x),
            Operand::trans(self.w0),
            1.0,
            self.b0,
        )?;
        let h = self.adapter.update(rec, x, &y)?;
        Ok(Forward { y, h })
    }

    /// The backward of [`Layer::forward`] for `G = dL/dy` and the saved `h` (`H^T`): the
    /// adapter's gradients, and `dx = G W0 + dH A_s` when `want_dx`.
    pub fn backward(
        &self,
        rec: &mut Recorder,
        x: &Tensor,
        h: &Tensor,
        g: &Tensor,
        want_dx: bool,
    ) -> Result<Grads> {
        self.check(x)?;
        self.adapter.check_backward(x, h, g)?;
        let dx = if want_dx {
            Some(gemm(
                rec,
                Operand::plain(g),
                Operand::plain(self.w0),
                1.0,
                None,
            )?)
        } else {
            None
        };
        let target = dx.as_ref().map_or(Dx::Skip, Dx::AddTo);
        let grads = self.adapter.backward(rec, x, h, g, Needs::all(target))?;
        let asked = |t: Option<Tensor>| {
            t.ok_or_else(|| Error::InvalidArgument("adapter gradient missing".into()))
        };
        Ok(Grads {
            dx,
            da: asked(grads.da)?,
            db: asked(grads.db)?,
        })
    }
}

pub mod cpu;
pub mod naive;
