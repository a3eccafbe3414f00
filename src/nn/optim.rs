//! Optimizers: AdamW with global gradient-norm clipping, a learning-rate schedule, and
//! state that saves and loads for an exact resume. The kernels it records are in
//! [`crate::kernels::optim`].
//!
//! The optimizer holds its parameter tensors and steps from a backward pass's
//! [`Gradients`], finding each parameter's gradient by identity (the tensor's storage), so
//! callers never collect gradient lists by hand. A step records its work and never reads
//! anything back; the per-step scalars (learning rate, bias corrections) are computed on
//! the host from the step counter.

use std::path::Path;

use crate::kernels::optim::{self as kernels, AdamStep};
use crate::nn::tape::Gradients;
use crate::runtime::error::{Error, Result, index_u32};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// The `format` metadata value of a saved optimizer state.
const FORMAT: &str = "capaboost.adamw";

/// How the learning rate moves after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
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
/// GPU, updating its parameters in place.
///
/// The optimizer keeps its parameter tensors (handles on the same storage as the model's)
/// and, at each [`AdamW::step`], takes each one's gradient from a backward pass's
/// [`Gradients`] by identity. A parameter the loss did not reach has no gradient and is
/// left as it is that step (no update, no weight decay), as `torch.optim` skips a
/// parameter whose `.grad` is `None`.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    /// The clip coefficient when clipping is off: multiplying by 1 is exact.
    one: Tensor,
    last_norm: Option<Tensor>,
}

impl std::fmt::Debug for AdamW {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shapes: Vec<&[usize]> = self.params.iter().map(|p| p.shape()).collect();
        f.debug_struct("AdamW")
            .field("config", &self.config)
            .field("shapes", &shapes)
            .field("step", &self.step)
            .finish()
    }
}

impl AdamW {
    /// An optimizer over `params` (the tensors themselves: the model's trainable
    /// parameters, updated in place), moments zero and step 0.
    pub fn new(gpu: &Gpu, config: AdamWConfig, params: &[Tensor]) -> Result<Self> {
        config.validate()?;
        let (m, v) = gpu.run(|rec| {
            let mut m = Vec::with_capacity(params.len());
            let mut v = Vec::with_capacity(params.len());
            for p in params {
                m.push(Tensor::zeros_in(rec, p.shape())?);
                v.push(Tensor::zeros_in(rec, p.shape())?);
            }
            Ok((m, v))
        })?;
        Self::from_parts(gpu, config, params, m, v, 0)
    }

    fn from_parts(
        gpu: &Gpu,
        config: AdamWConfig,
        params: &[Tensor],
        m: Vec<Tensor>,
        v: Vec<Tensor>,
        step: u64,
    ) -> Result<Self> {
        for (i, p) in params.iter().enumerate() {
            index_u32(&format!("AdamW: parameter {i}"), p.numel())?;
        }
        Ok(Self {
            config,
            params: params.to_vec(),
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

    /// Sets the schedule's length: `warmup_steps` and `total_steps` (where a linear or
    /// cosine decay reaches 0) from the next step on, as if the optimizer had been created
    /// with them. A resumed run whose length was changed calls this, so that its steps
    /// past the old end do not train at a decayed rate of 0. Errors when the warmup is
    /// longer than the schedule.
    pub fn set_schedule_length(&mut self, warmup_steps: u64, total_steps: u64) -> Result<()> {
        if total_steps > 0 && warmup_steps > total_steps {
            return Err(Error::InvalidArgument(format!(
                "warmup of {warmup_steps} steps is longer than the schedule's {total_steps}"
            )));
        }
        self.config.warmup_steps = warmup_steps;
        self.config.total_steps = total_steps;
        Ok(())
    }

    /// The parameters this optimizer updates, in the order of its state.
    pub fn params(&self) -> &[Tensor] {
        &self.params
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

    /// Each parameter's gradient in `grads` (by identity), checked against its shape.
    fn gradients<'g>(&self, grads: &'g Gradients) -> Result<Vec<Option<&'g Tensor>>> {
        let mut out = Vec::with_capacity(self.params.len());
        for (i, p) in self.params.iter().enumerate() {
            let g = grads.of(p);
            if let Some(g) = g
                && g.shape() != p.shape()
            {
                return Err(Error::shape(format!(
                    "AdamW::step: parameter {i} has shape {:?} but its gradient is {:?}",
                    p.shape(),
                    g.shape()
                )));
            }
            out.push(g);
        }
        Ok(out)
    }

    /// Records one AdamW step from a backward pass's gradients: optional global-norm
    /// clipping over the gradients present, then the fused update of each parameter that
    /// has a gradient, in place (several per dispatch: `kernels::optim::adamw_update_many`). Returns how many parameters were updated.
    pub fn step(&mut self, rec: &mut Recorder, grads: &Gradients) -> Result<usize> {
        let found = self.gradients(grads)?;
        let c = self.config;
        let t = self.step + 1;
        let present: Vec<&Tensor> = found.iter().flatten().copied().collect();
        let clip = match c.max_grad_norm {
            Some(max_norm) => {
                let sq = kernels::grad_sq_norm(rec, &present)?;
                let (norm, clip) = kernels::clip_coef(rec, &sq, max_norm)?;
                self.last_norm = Some(norm);
                clip
            }
            None => {
                self.last_norm = None;
                self.one.clone()
            }
        };
        let s = adam_step(&c, t);
        let states: Vec<[&Tensor; 4]> = found
            .iter()
            .enumerate()
            .filter_map(|(i, g)| Some([&self.params[i], (*g)?, &self.m[i], &self.v[i]]))
            .collect();
        kernels::adamw_update_many(rec, &states, &clip, &s)?;
        self.step = t;
        Ok(present.len())
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
        w.metadata("params", self.params.len().to_string());
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
        for (i, ((m, v), p)) in self.m.iter().zip(&self.v).zip(&self.params).enumerate() {
            w.f32(format!("m.{i}"), p.shape(), &m.to_vec()?);
            w.f32(format!("v.{i}"), p.shape(), &v.to_vec()?);
        }
        w.write(path)
    }

    /// Loads a state written by [`AdamW::save`] for `params` (the same parameters, in the
    /// same order). A missing or corrupt file, missing metadata or moments, and a count or
    /// shape that differs from `params` are errors naming the file and what is wrong.
    pub fn load(gpu: &Gpu, path: &Path, params: &[Tensor]) -> Result<Self> {
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
        if count != params.len() as u64 {
            return Err(Error::shape(format!(
                "{shown}: optimizer state holds {count} parameters but {} shapes were given",
                params.len()
            )));
        }
        let mut m = Vec::with_capacity(params.len());
        let mut v = Vec::with_capacity(params.len());
        for (i, want) in params.iter().map(|p| p.shape()).enumerate() {
            for (kind, out) in [("m", &mut m), ("v", &mut v)] {
                let name = format!("{kind}.{i}");
                let (shape, data) = file.f32(&name)?;
                if shape != want {
                    return Err(Error::shape(format!(
                        "{shown}: parameter {i}: '{name}' has shape {shape:?}, expected {want:?}"
                    )));
                }
                out.push(Tensor::from_slice(gpu, &data, want)?);
            }
        }
        Self::from_parts(gpu, config, params, m, v, step)
    }
}

/// The kernel scalars of step `t` under `c`.
fn adam_step(c: &AdamWConfig, t: u64) -> AdamStep {
    AdamStep {
        beta1: c.beta1 as f64,
        beta2: c.beta2 as f64,
        eps: c.eps as f64,
        lr: lr_at_f64(c.lr, t, c.warmup_steps, c.total_steps, c.schedule),
        weight_decay: c.weight_decay as f64,
        t,
    }
}

/// f64 CPU reference of the optimizer, built on the kernels' twins.
pub mod cpu {
    use crate::kernels::optim::cpu as kernels;

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
            self.step += 1;
            let s = super::adam_step(config, self.step);
            let clip = match config.max_grad_norm {
                Some(max) => {
                    let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                    kernels::clip_coef(kernels::grad_sq_norm(&refs).sqrt(), max as f64)
                }
                None => 1.0,
            };
            for (k, g) in grads.iter().enumerate() {
                let (p, m, v) = (&mut self.params[k], &mut self.m[k], &mut self.v[k]);
                kernels::adamw_update(p, m, v, g, clip, &s);
            }
        }
    }
}
