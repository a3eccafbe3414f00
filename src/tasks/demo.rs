//! The built-in demo (`capaboost finetune` with no data): what CapaBoost buys and what it
//! does not, on a self-contained task.
//!
//! A frozen random MLP `x -> tanh(x W1^T) -> W2^T + b2` is the base (W1 a scaled random
//! orthogonal matrix, x Gaussian, so the features reaching W2 are isotropic and the MSE is
//! the Frobenius error of the learned update, up to a constant); the teacher adds a planted
//! update to W2. Students adapt W2 with LoRA r and with CapaBoost r, d = 2, 4, 8 (the
//! same stored parameter count) and learn from the same stream of random inputs with MSE.
//! Two planted updates: a flat spectrum of rank 4r (LoRA r plateaus at the best rank-r
//! error; CapaBoost's rank d r goes lower) and a fast-decaying spectrum (LoRA's optimal
//! truncation wins).

use std::time::Instant;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::kernels::capaboost::cpu;
use crate::nn::Graph;
use crate::nn::modules::{CapaBoostConfig, CapaBoostLinear, Linear};
use crate::nn::optim::{AdamW, AdamWConfig, Schedule};
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;

/// The spectrum of the planted update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Rank 4r, all singular values equal.
    Flat,
    /// Full rank, singular values decaying geometrically (0.6^k).
    Decaying,
}

/// Settings of a demo run.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// Width of every layer of the MLP.
    pub width: usize,
    /// LoRA rank r.
    pub r: usize,
    /// Branch counts to compare; 1 means LoRA.
    pub ds: Vec<u32>,
    /// Training steps per student.
    pub steps: u64,
    /// Inputs per step.
    pub batch: usize,
    /// Learning rate (AdamW, no weight decay, constant).
    pub lr: f32,
    /// Seed of the base, the planted updates, the masks and the input stream.
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            width: 64,
            r: 8,
            ds: vec![1, 2, 4, 8],
            steps: 500,
            batch: 64,
            lr: 1e-2,
            seed: 0,
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, Serialize)]
pub struct DemoRow {
    /// `flat` or `decaying`.
    pub scenario: Scenario,
    /// `lora` or `capaboost`.
    pub method: String,
    /// Rank r of the shared factors.
    pub r: usize,
    /// Branches d.
    pub d: u32,
    /// Numerical rank of the learned update.
    pub rank: usize,
    /// Stored trainable entries (the same for LoRA r and CapaBoost r).
    pub trainable_params: usize,
    /// Entries some mask lets through.
    pub used_params: usize,
    /// MSE on a held-out batch after training.
    pub final_loss: f64,
    /// `||delta_W - planted|| / ||planted||`.
    pub rel_error: f64,
    /// Training steps per second (wall clock, including the loss readbacks).
    pub steps_per_s: f64,
    /// Adapter the run used.
    pub device: String,
}

/// Orthonormal columns (n x k) by Gram-Schmidt on random vectors.
fn orthonormal(rng: &mut StdRng, n: usize, k: usize) -> Vec<Vec<f64>> {
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(k);
    while cols.len() < k {
        let mut v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            cols.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    cols
}

/// The planted update `U diag(sigma) V^T`, `[n, n]` row-major.
pub fn planted_update(scenario: Scenario, n: usize, r: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let sigma: Vec<f64> = match scenario {
        Scenario::Flat => vec![1.0; (4 * r).min(n)],
        Scenario::Decaying => (0..n).map(|k| 2.0 * 0.6f64.powi(k as i32)).collect(),
    };
    let (u, v) = (
        orthonormal(&mut rng, n, sigma.len()),
        orthonormal(&mut rng, n, sigma.len()),
    );
    let mut w = vec![0.0; n * n];
    for (k, s) in sigma.iter().enumerate() {
        for i in 0..n {
            for j in 0..n {
                w[i * n + j] += s * u[k][i] * v[k][j];
            }
        }
    }
    w
}

struct Mlp {
    l1: Linear,
    l2: Linear,
}

impl Mlp {
    fn forward_base(&self, g: &mut Graph, x: &crate::nn::Var) -> Result<crate::nn::Var> {
        let h = self.l1.forward(g, x)?;
        g.tanh(&h)
    }
}

/// Standard normal inputs (Box-Muller).
fn batch(gpu: &Gpu, rng: &mut StdRng, rows: usize, width: usize) -> Result<Tensor> {
    let data: Vec<f32> = (0..rows * width)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    Tensor::from_slice(gpu, &data, &[rows, width])
}

/// A random orthogonal `[n, n]` matrix times `gain`, with a zero bias: the first layer.
fn orthogonal_layer(gpu: &Gpu, rng: &mut StdRng, n: usize, gain: f64) -> Result<Linear> {
    let q = orthonormal(rng, n, n);
    let w: Vec<f32> = (0..n * n)
        .map(|e| (gain * q[e / n][e % n]) as f32)
        .collect();
    Linear::new(
        Tensor::from_slice(gpu, &w, &[n, n])?,
        Some(Tensor::zeros(gpu, &[n])?),
        false,
    )
}

/// A student's adapter settings: plain LoRA for `d = 1`, else CapaBoost at density 0.5.
fn student_config(cfg: &DemoConfig, d: u32) -> CapaBoostConfig {
    if d == 1 {
        CapaBoostConfig::lora(cfg.r, 2.0 * cfg.r as f32)
    } else {
        CapaBoostConfig::capaboost(cfg.r, 2.0 * cfg.r as f32, d, 0.5, cfg.seed)
    }
}

/// Trains one student on the teacher's outputs; returns it with its steps per second.
fn train_student(
    gpu: &Gpu,
    cfg: &DemoConfig,
    mlp: &Mlp,
    teacher: &Linear,
    d: u32,
) -> Result<(CapaBoostLinear, f64)> {
    let mut init_rng = StdRng::seed_from_u64(cfg.seed ^ 0x1a17);
    let student = CapaBoostLinear::new(
        gpu,
        mlp.l2.clone(),
        student_config(cfg, d),
        0,
        &mut init_rng,
    )?;
    let params: Vec<Tensor> = student.params().into_iter().map(|(_, t)| t).collect();
    let opt_cfg = AdamWConfig {
        lr: cfg.lr,
        weight_decay: 0.0,
        max_grad_norm: None,
        schedule: Schedule::Constant,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(gpu, opt_cfg, &params)?;
    // The same input stream for every student.
    let mut data_rng = StdRng::seed_from_u64(cfg.seed ^ 0xda7a);
    let start = Instant::now();
    for _ in 0..cfg.steps {
        let x = batch(gpu, &mut data_rng, cfg.batch, cfg.width)?;
        let mut g = Graph::new(gpu);
        let xv = g.input(&x);
        let h = mlp.forward_base(&mut g, &xv)?;
        let target = teacher.forward(&mut g, &h)?;
        let y = student.forward(&mut g, &h)?;
        let loss = g.mse(&y, &target)?;
        let grads = g.backward(&loss)?;
        opt.step(g.recorder(), &grads)?;
        g.submit()?;
    }
    gpu.wait()?;
    Ok((student, cfg.steps as f64 / start.elapsed().as_secs_f64()))
}

/// The student's loss against the teacher on `eval_x`.
fn eval_loss(
    gpu: &Gpu,
    mlp: &Mlp,
    teacher: &Linear,
    student: &CapaBoostLinear,
    eval_x: &Tensor,
) -> Result<f64> {
    let mut g = Graph::no_grad(gpu);
    let xv = g.input(eval_x);
    let h = mlp.forward_base(&mut g, &xv)?;
    let target = teacher.forward(&mut g, &h)?;
    let y = student.forward(&mut g, &h)?;
    let loss = g.mse(&y, &target)?;
    g.submit()?;
    Ok(loss.value().to_vec()?[0] as f64)
}

/// Runs every (scenario, student) pair and returns the report rows; `log` receives one
/// line per finished student.
pub fn run(gpu: &Gpu, cfg: &DemoConfig, mut log: impl FnMut(&DemoRow)) -> Result<Vec<DemoRow>> {
    let n = cfg.width;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mlp = Mlp {
        l1: orthogonal_layer(gpu, &mut rng, n, 1.0)?,
        l2: Linear::init(gpu, n, n, false, &mut rng)?,
    };
    let w2 = mlp.l2.weight.to_vec()?;
    let mut rows = Vec::new();
    for scenario in [Scenario::Flat, Scenario::Decaying] {
        let planted = planted_update(scenario, n, cfg.r, cfg.seed);
        let teacher_w: Vec<f32> = w2
            .iter()
            .zip(&planted)
            .map(|(&w, &p)| (w as f64 + p) as f32)
            .collect();
        let teacher = Linear::new(
            Tensor::from_slice(gpu, &teacher_w, &[n, n])?,
            mlp.l2.bias.clone(),
            false,
        )?;
        let mut eval_rng = StdRng::seed_from_u64(cfg.seed ^ 0xe7a1);
        let eval_x = batch(gpu, &mut eval_rng, 512, n)?;
        for &d in &cfg.ds {
            let (student, steps_per_s) = train_student(gpu, cfg, &mlp, &teacher, d)?;
            let final_loss = eval_loss(gpu, &mlp, &teacher, &student, &eval_x)?;
            let dw = crate::tasks::adapters::delta_weight(gpu, &student)?;
            let dw: Vec<f64> = dw.to_vec()?.iter().map(|&v| v as f64).collect();
            let num: f64 = dw.iter().zip(&planted).map(|(a, b)| (a - b).powi(2)).sum();
            let den: f64 = planted.iter().map(|b| b * b).sum();
            let row = DemoRow {
                scenario,
                method: if d == 1 { "lora" } else { "capaboost" }.into(),
                r: cfg.r,
                d,
                rank: cpu::rank(&dw, n, n, 1e-3),
                trainable_params: student.stored_params(),
                used_params: student.used_params()?,
                final_loss,
                rel_error: (num / den).sqrt(),
                steps_per_s,
                device: gpu.adapter_info().name.clone(),
            };
            log(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The rows as an aligned text table, one per scenario.
pub fn table(rows: &[DemoRow]) -> String {
    let mut out = String::new();
    for scenario in [Scenario::Flat, Scenario::Decaying] {
        let what = match scenario {
            Scenario::Flat => "flat spectrum, rank 4r: LoRA r plateaus, CapaBoost reaches rank d r",
            Scenario::Decaying => "decaying spectrum: LoRA's rank-r truncation is near optimal",
        };
        out.push_str(&format!("\nscenario {scenario:?} ({what})\n"));
        out.push_str(&format!(
            "{:<10} {:>2} {:>2} {:>5} {:>10} {:>8} {:>12} {:>9} {:>9}  {}\n",
            "method",
            "r",
            "d",
            "rank",
            "trainable",
            "used",
            "final_loss",
            "rel_err",
            "steps/s",
            "device"
        ));
        for r in rows.iter().filter(|r| r.scenario == scenario) {
            out.push_str(&format!(
                "{:<10} {:>2} {:>2} {:>5} {:>10} {:>8} {:>12.6} {:>9.4} {:>9.1}  {}\n",
                r.method,
                r.r,
                r.d,
                r.rank,
                r.trainable_params,
                r.used_params,
                r.final_loss,
                r.rel_error,
                r.steps_per_s,
                r.device
            ));
        }
    }
    out
}
