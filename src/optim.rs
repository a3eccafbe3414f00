//! Optimizer (`shaders/optim.wgsl`): AdamW on the GPU with global gradient-norm clipping,
//! a learning-rate schedule, and state that saves and loads for an exact resume.
//!
//! A step records its work and never reads anything back: the gradient norm and the clip
//! coefficient live in one-element GPU buffers that the update kernel reads, and the
//! per-step scalars (learning rate, bias corrections) are computed on the host from the
//! step counter.

use std::path::Path;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::io::{TensorFile, TensorWriter};
use crate::recorder::Recorder;
use crate::shaders::OPTIM;
use crate::tensor::Tensor;

const WORKGROUP: u64 = 256;
/// Elements one `sq_partial` workgroup covers (`WG * PER_THREAD` in the shader).
const SQ_CHUNK: u64 = 256 * 4;
/// The `format` metadata value of a saved optimizer state.
const FORMAT: &str = "capaboost.adamw";

fn count_u32(what: &str, n: usize) -> Result<u32> {
    crate::error::index_u32(what, n)
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SqParams {
    n: u32,
    grid_x: u32,
    offset: u32,
    groups: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    max_norm: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    n: u32,
    grid_x: u32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    _pad: [u32; 3],
}

/// The squared global L2 norm of `grads`, `sum_t sum_i grads[t][i]^2`, as a `[1]` tensor.
///
/// Each tensor is reduced to per-workgroup partial sums in one shared buffer, and a single
/// workgroup then adds those up, so the result never leaves the GPU.
pub fn grad_sq_norm(rec: &mut Recorder, grads: &[&Tensor]) -> Result<Tensor> {
    let groups: Vec<u64> = grads
        .iter()
        .map(|g| (g.numel() as u64).div_ceil(SQ_CHUNK))
        .collect();
    let total: u64 = groups.iter().sum();
    let total = count_u32("grad_sq_norm partial sums", total as usize)?;
    let out = Tensor::empty(rec.gpu(), &[1])?;
    if total == 0 {
        rec.clear(&out);
        return Ok(out);
    }
    let partials = Tensor::empty(rec.gpu(), &[total as usize])?;
    let bp = partials.binding();
    let mut offset = 0u32;
    for (i, (g, &n_groups)) in grads.iter().zip(&groups).enumerate() {
        if n_groups == 0 {
            continue;
        }
        let grid = rec.grid_1d(n_groups);
        let p = SqParams {
            n: count_u32(&format!("grad_sq_norm: gradient {i}"), g.numel())?,
            grid_x: grid[0],
            offset,
            groups: n_groups as u32,
        };
        let uniform = rec.uniform(bytemuck::bytes_of(&p));
        let bg = g.binding();
        rec.dispatch(
            &OPTIM,
            "sq_partial",
            &[],
            &[(0, &uniform), (1, &bg), (2, &bp)],
            grid,
        )?;
        offset += n_groups as u32;
    }
    let p = SqParams {
        n: total,
        grid_x: 1,
        offset: 0,
        groups: 1,
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let bo = out.binding();
    rec.dispatch(
        &OPTIM,
        "sum_partials",
        &[],
        &[(0, &uniform), (2, &bp), (3, &bo)],
        [1, 1, 1],
    )?;
    Ok(out)
}

/// How the learning rate moves after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Linear decay from the base rate to 0 at `total_steps`.
    Linear,
    /// Half-cosine decay from the base rate to 0 at `total_steps`.
    Cosine,
}

impl Schedule {
    /// The schedule's name: `constant`, `linear` or `cosine`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Linear => "linear",
            Self::Cosine => "cosine",
        }
    }

    /// Parses a name as given by [`Schedule::name`].
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(Error::InvalidArgument(format!(
                "unknown schedule {s:?}: expected constant, linear or cosine"
            ))),
        }
    }
}

fn lr_at_f64(base_lr: f32, step: u64, warmup_steps: u64, total_steps: u64, s: Schedule) -> f64 {
    let base = base_lr as f64;
    let decays = s != Schedule::Constant && total_steps > 0;
    if decays && step >= total_steps {
        return 0.0;
    }
    if step < warmup_steps {
        return base * step as f64 / warmup_steps as f64;
    }
    if !decays {
        return base;
    }
    let span = total_steps.saturating_sub(warmup_steps).max(1) as f64;
    let progress = ((step - warmup_steps) as f64 / span).clamp(0.0, 1.0);
    match s {
        Schedule::Constant => base,
        Schedule::Linear => base * (1.0 - progress),
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// The learning rate of optimizer step `step` (counted from 1): a linear warmup from 0 to
/// `base_lr` over `warmup_steps` (reached at `step == warmup_steps`), then constant, or a
/// linear or cosine decay that reaches 0 at `total_steps` and stays there. `total_steps ==
/// 0` means no decay.
pub fn lr_at(
    base_lr: f32,
    step: u64,
    warmup_steps: u64,
    total_steps: u64,
    schedule: Schedule,
) -> f32 {
    lr_at_f64(base_lr, step, warmup_steps, total_steps, schedule) as f32
}

/// AdamW hyperparameters (PyTorch's defaults, except weight decay 0.01 and clipping at 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// Base learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// Decoupled weight decay: `p -= lr * weight_decay * p` each step.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this; `None` turns clipping off.
    pub max_grad_norm: Option<f32>,
    /// Steps of linear warmup.
    pub warmup_steps: u64,
    /// Step at which a decaying schedule reaches 0; 0 means no decay.
    pub total_steps: u64,
    /// Learning-rate schedule after warmup.
    pub schedule: Schedule,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            warmup_steps: 0,
            total_steps: 0,
            schedule: Schedule::Constant,
        }
    }
}

impl AdamWConfig {
    /// Rejects values that would make the update meaningless (NaN, betas outside [0, 1),
    /// negative eps, a non-positive clip norm).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f32| {
            Err(Error::InvalidArgument(format!(
                "AdamW {what} = {v} is invalid"
            )))
        };
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr);
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(name, b);
            }
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", self.eps);
        }
        if !self.weight_decay.is_finite() {
            return bad("weight_decay", self.weight_decay);
        }
        if let Some(c) = self.max_grad_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("max_grad_norm", c);
        }
        Ok(())
    }
}

/// AdamW (decoupled weight decay, `torch.optim.AdamW` semantics) with its moments on the
/// GPU, updating parameters in place.
pub struct AdamW {
    config: AdamWConfig,
    shapes: Vec<Vec<usize>>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    /// The clip coefficient when clipping is off: multiplying by 1 is exact.
    one: Tensor,
    last_norm: Option<Tensor>,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdamW")
            .field("config", &self.config)
            .field("shapes", &self.shapes)
            .field("step", &self.step)
            .finish()
    }
}

impl AdamW {
    /// An optimizer for parameters of `param_shapes`, moments zero and step 0.
    pub fn new(gpu: &Gpu, config: AdamWConfig, param_shapes: &[Vec<usize>]) -> Result<Self> {
        config.validate()?;
        let (m, v) = gpu.run(|rec| {
            let mut m = Vec::with_capacity(param_shapes.len());
            let mut v = Vec::with_capacity(param_shapes.len());
            for shape in param_shapes {
                m.push(Tensor::zeros_in(rec, shape)?);
                v.push(Tensor::zeros_in(rec, shape)?);
            }
            Ok((m, v))
        })?;
        Self::from_parts(gpu, config, param_shapes, m, v, 0)
    }

    fn from_parts(
        gpu: &Gpu,
        config: AdamWConfig,
        param_shapes: &[Vec<usize>],
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        step: u64,
    ) -> Result<Self> {
        Ok(Self {
            config,
            shapes: param_shapes.to_vec(),
            m,
            v,
            step,
            one: Tensor::from_slice(gpu, &[1.0], &[1])?,
            last_norm: None,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Steps taken so far (the next step is `step_count() + 1`).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The learning rate the next step will use.
    pub fn next_lr(&self) -> f32 {
        let c = &self.config;
        lr_at(
            c.lr,
            self.step + 1,
            c.warmup_steps,
            c.total_steps,
            c.schedule,
        )
    }

    /// First moments, one per parameter.
    pub fn first_moments(&self) -> &[Tensor] {
        &self.m
    }

    /// Second moments, one per parameter.
    pub fn second_moments(&self) -> &[Tensor] {
        &self.v
    }

    /// The global gradient norm (`[1]`, before clipping) computed by the last step; `None`
    /// before the first step or when clipping is off (the norm is then never computed).
    /// Reading it back waits for the step's work, so do it only when logging.
    pub fn last_grad_norm(&self) -> Option<Tensor> {
        self.last_norm.clone()
    }

    fn check(&self, params: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
        if params.len() != self.shapes.len() || grads.len() != self.shapes.len() {
            return Err(Error::shape(format!(
                "AdamW::step: {} params and {} grads given for an optimizer of {} parameters",
                params.len(),
                grads.len(),
                self.shapes.len()
            )));
        }
        for (i, ((p, g), s)) in params.iter().zip(grads).zip(&self.shapes).enumerate() {
            if p.shape() != s.as_slice() || g.shape() != s.as_slice() {
                return Err(Error::shape(format!(
                    "AdamW::step: parameter {i} has shape {:?} and gradient {:?}, but its \
                     optimizer state is {s:?}",
                    p.shape(),
                    g.shape()
                )));
            }
            count_u32(&format!("AdamW::step: parameter {i}"), p.numel())?;
        }
        Ok(())
    }

    /// Records one AdamW step: optional global-norm clipping, then one fused update per
    /// parameter, writing into `params` in place.
    pub fn step(
        &mut self,
        rec: &mut Recorder,
        params: &[&Tensor],
        grads: &[&Tensor],
    ) -> Result<()> {
        self.check(params, grads)?;
        let c = self.config;
        let t = self.step + 1;
        let lr = lr_at_f64(c.lr, t, c.warmup_steps, c.total_steps, c.schedule);
        // Host scalars in f64, rounded once to f32, as PyTorch computes them in Python floats.
        let bc1 = 1.0 - (c.beta1 as f64).powf(t as f64);
        let bc2 = 1.0 - (c.beta2 as f64).powf(t as f64);

        let clip = match c.max_grad_norm {
            Some(max_norm) => {
                let sq = grad_sq_norm(rec, grads)?;
                let norm = Tensor::empty(rec.gpu(), &[1])?;
                let clip = Tensor::empty(rec.gpu(), &[1])?;
                let p = ClipParams {
                    max_norm,
                    _pad: [0; 3],
                };
                let uniform = rec.uniform(bytemuck::bytes_of(&p));
                let (bs, bn, bc) = (sq.binding(), norm.binding(), clip.binding());
                rec.dispatch(
                    &OPTIM,
                    "clip_coef",
                    &[],
                    &[(4, &uniform), (3, &bs), (5, &bn), (6, &bc)],
                    [1, 1, 1],
                )?;
                self.last_norm = Some(norm);
                clip
            }
            None => {
                self.last_norm = None;
                self.one.clone()
            }
        };
        let bclip = clip.binding();
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let n = p.numel();
            if n == 0 {
                continue;
            }
            let grid = rec.grid_1d((n as u64).div_ceil(WORKGROUP));
            let ap = AdamParams {
                n: n as u32,
                grid_x: grid[0],
                beta2: c.beta2,
                one_minus_beta1: (1.0 - c.beta1 as f64) as f32,
                one_minus_beta2: (1.0 - c.beta2 as f64) as f32,
                eps: c.eps,
                decay: (1.0 - lr * c.weight_decay as f64) as f32,
                step_size: (lr / bc1) as f32,
                bc2_sqrt: bc2.sqrt() as f32,
                _pad: [0; 3],
            };
            let uniform = rec.uniform(bytemuck::bytes_of(&ap));
            let (bp, bg, bm, bv) = (
                p.binding(),
                g.binding(),
                self.m[i].binding(),
                self.v[i].binding(),
            );
            rec.dispatch(
                &OPTIM,
                "adamw",
                &[],
                &[
                    (7, &uniform),
                    (8, &bp),
                    (9, &bg),
                    (10, &bm),
                    (11, &bv),
                    (12, &bclip),
                ],
                grid,
            )?;
        }
        self.step = t;
        Ok(())
    }

    /// Writes the step counter, the configuration (as safetensors metadata) and all moments
    /// (`m.{i}`, `v.{i}`) to `path`, atomically. Reads the moments back, so submit the
    /// recorder holding the last step first.
    pub fn save(&self, path: &Path) -> Result<()> {
        let c = &self.config;
        let mut w = TensorWriter::default();
        w.metadata("format", FORMAT);
        w.metadata("version", "1");
        w.metadata("step", self.step.to_string());
        w.metadata("params", self.shapes.len().to_string());
        w.metadata("lr", c.lr.to_string());
        w.metadata("beta1", c.beta1.to_string());
        w.metadata("beta2", c.beta2.to_string());
        w.metadata("eps", c.eps.to_string());
        w.metadata("weight_decay", c.weight_decay.to_string());
        w.metadata(
            "max_grad_norm",
            c.max_grad_norm
                .map_or("none".to_string(), |x| x.to_string()),
        );
        w.metadata("warmup_steps", c.warmup_steps.to_string());
        w.metadata("total_steps", c.total_steps.to_string());
        w.metadata("schedule", c.schedule.name());
        for (i, ((m, v), s)) in self.m.iter().zip(&self.v).zip(&self.shapes).enumerate() {
            w.f32(format!("m.{i}"), s, &m.to_vec()?);
            w.f32(format!("v.{i}"), s, &v.to_vec()?);
        }
        w.write(path)
    }

    /// Loads a state written by [`AdamW::save`] for parameters of `param_shapes`. A missing
    /// or corrupt file, missing metadata or moments, and a count or shape that differs from
    /// `param_shapes` are errors naming the file and what is wrong.
    pub fn load(gpu: &Gpu, path: &Path, param_shapes: &[Vec<usize>]) -> Result<Self> {
        let file = TensorFile::read(path)?;
        let shown = path.display().to_string();
        let file_err = |message: String| Error::File {
            path: shown.clone(),
            message,
        };
        let md = file.metadata();
        let get = |key: &str| {
            md.get(key)
                .map(String::as_str)
                .ok_or_else(|| file_err(format!("optimizer state: metadata '{key}' is missing")))
        };
        if get("format")? != FORMAT {
            return Err(file_err(format!(
                "not an AdamW state (format {:?}, expected {FORMAT:?})",
                get("format")?
            )));
        }
        fn parse<T: std::str::FromStr>(
            key: &str,
            raw: &str,
            err: &dyn Fn(String) -> Error,
        ) -> Result<T> {
            raw.parse().map_err(|_| {
                err(format!(
                    "optimizer state: metadata '{key}' = {raw:?} is invalid"
                ))
            })
        }
        let num = |key: &str| -> Result<f32> { parse(key, get(key)?, &file_err) };
        let int = |key: &str| -> Result<u64> { parse(key, get(key)?, &file_err) };
        let config = AdamWConfig {
            lr: num("lr")?,
            beta1: num("beta1")?,
            beta2: num("beta2")?,
            eps: num("eps")?,
            weight_decay: num("weight_decay")?,
            max_grad_norm: match get("max_grad_norm")? {
                "none" => None,
                _ => Some(num("max_grad_norm")?),
            },
            warmup_steps: int("warmup_steps")?,
            total_steps: int("total_steps")?,
            schedule: Schedule::parse(get("schedule")?)
                .map_err(|e| file_err(format!("optimizer state: {e}")))?,
        };
        config
            .validate()
            .map_err(|e| file_err(format!("optimizer state: {e}")))?;
        let step = int("step")?;
        let count = int("params")?;
        if count != param_shapes.len() as u64 {
            return Err(Error::shape(format!(
                "{shown}: optimizer state holds {count} parameters but {} shapes were given",
                param_shapes.len()
            )));
        }
        let mut m = Vec::with_capacity(param_shapes.len());
        let mut v = Vec::with_capacity(param_shapes.len());
        for (i, want) in param_shapes.iter().enumerate() {
            for (kind, out) in [("m", &mut m), ("v", &mut v)] {
                let name = format!("{kind}.{i}");
                let (shape, data) = file.f32(&name)?;
                if &shape != want {
                    return Err(Error::shape(format!(
                        "{shown}: parameter {i}: '{name}' has shape {shape:?}, expected {want:?}"
                    )));
                }
                out.push(Tensor::from_slice(gpu, &data, want)?);
            }
        }
        Self::from_parts(gpu, config, param_shapes, m, v, step)
    }
}

/// f64 CPU references for the kernels above.
pub mod cpu {
    /// Squared global L2 norm.
    pub fn grad_sq_norm(grads: &[&[f32]]) -> f64 {
        grads
            .iter()
            .flat_map(|g| g.iter())
            .map(|&x| (x as f64) * (x as f64))
            .sum()
    }

    /// AdamW state in f64: parameters and both moments.
    #[derive(Clone, Debug)]
    pub struct AdamWState {
        /// Parameters.
        pub params: Vec<Vec<f64>>,
        /// First moments.
        pub m: Vec<Vec<f64>>,
        /// Second moments.
        pub v: Vec<Vec<f64>>,
        /// Steps taken.
        pub step: u64,
    }

    impl AdamWState {
        /// Parameters from f32, moments zero.
        pub fn new(params: &[Vec<f32>]) -> Self {
            let widen = |p: &Vec<f32>| p.iter().map(|&x| x as f64).collect::<Vec<_>>();
            Self {
                params: params.iter().map(widen).collect(),
                m: params.iter().map(|p| vec![0.0; p.len()]).collect(),
                v: params.iter().map(|p| vec![0.0; p.len()]).collect(),
                step: 0,
            }
        }

        /// One step: clip by the global norm where set, then
        /// `p -= lr (mhat / (sqrt(vhat) + eps) + wd p)` with the schedule's lr.
        pub fn step(&mut self, config: &super::AdamWConfig, grads: &[Vec<f32>]) {
            let c = config;
            self.step += 1;
            let t = self.step;
            let lr = super::lr_at_f64(c.lr, t, c.warmup_steps, c.total_steps, c.schedule);
            let clip = match c.max_grad_norm {
                Some(max) => {
                    let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                    let norm = grad_sq_norm(&refs).sqrt();
                    (max as f64 / (norm + 1e-6)).min(1.0)
                }
                None => 1.0,
            };
            let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
            let (eps, wd) = (c.eps as f64, c.weight_decay as f64);
            let bc1 = 1.0 - b1.powf(t as f64);
            let bc2 = 1.0 - b2.powf(t as f64);
            for (k, g) in grads.iter().enumerate() {
                for (j, &gj) in g.iter().enumerate() {
                    let g = clip * gj as f64;
                    let m = b1 * self.m[k][j] + (1.0 - b1) * g;
                    let v = b2 * self.v[k][j] + (1.0 - b2) * g * g;
                    self.m[k][j] = m;
                    self.v[k][j] = v;
                    let p = self.params[k][j];
                    let update = (m / bc1) / ((v / bc2).sqrt() + eps) + wd * p;
                    self.params[k][j] = p - lr * update;
                }
            }
        }
    }
}
