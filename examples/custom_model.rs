//! A model written with the public tape API: two linear layers with CapaBoost adapters and
//! a GELU between them, trained on a toy regression, then merged for inference.
//! `cargo run --example custom_model [-- --smoke]`.

use capaboost::nn::modules::{CapaBoostConfig, CapaBoostLinear, Linear};
use capaboost::nn::optim::{AdamW, AdamWConfig, Schedule};
use capaboost::nn::{Graph, Var};
use capaboost::{Gpu, Result, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

struct TwoLayer {
    first: CapaBoostLinear,
    second: CapaBoostLinear,
}

impl TwoLayer {
    fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        let h = self.first.forward(g, x)?;
        let h = g.gelu(&h)?;
        self.second.forward(g, &h)
    }

    fn params(&self) -> Vec<Tensor> {
        self.first
            .params()
            .into_iter()
            .chain(self.second.params())
            .map(|(_, t)| t)
            .collect()
    }
}

fn batch(gpu: &Gpu, rng: &mut StdRng, rows: usize, n: usize) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..rows * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    // Target: a smooth function of the inputs the frozen base does not know.
    let y: Vec<f32> = x
        .chunks(n)
        .flat_map(|r| r.iter().map(|v| (2.0 * v).sin() * 0.5 + r[0] * 0.3))
        .collect();
    Ok((
        Tensor::from_slice(gpu, &x, &[rows, n])?,
        Tensor::from_slice(gpu, &y, &[rows, n])?,
    ))
}

fn main() -> Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let steps = if smoke { 10 } else { 400 };
    let gpu = Gpu::new()?;
    let mut rng = StdRng::seed_from_u64(7);
    let n = 16;
    let config = CapaBoostConfig::capaboost(4, 8.0, 4, 0.5, 11);
    let mut model = TwoLayer {
        first: CapaBoostLinear::new(
            &gpu,
            Linear::init(&gpu, n, 32, false, &mut rng)?,
            config.clone(),
            0,
            &mut rng,
        )?,
        second: CapaBoostLinear::new(
            &gpu,
            Linear::init(&gpu, 32, n, false, &mut rng)?,
            config,
            1,
            &mut rng,
        )?,
    };
    let params = model.params();
    let cfg = AdamWConfig {
        lr: 1e-2,
        warmup_steps: steps / 10,
        total_steps: steps,
        schedule: Schedule::Cosine,
        ..Default::default()
    };
    let mut opt = AdamW::new(&gpu, cfg, &params)?;
    for step in 0..steps {
        let (x, y) = batch(&gpu, &mut rng, 64, n)?;
        let mut g = Graph::new(&gpu);
        let (xv, yv) = (g.input(&x), g.input(&y));
        let out = model.forward(&mut g, &xv)?;
        let loss = g.mse(&out, &yv)?;
        let grads = g.backward(&loss)?;
        opt.step(g.recorder(), &grads)?;
        g.submit()?; // forward, backward and AdamW: one submit
        if step % (steps / 5).max(1) == 0 || step + 1 == steps {
            println!("step {step:>3}: mse {:.5}", loss.value().to_vec()?[0]);
        }
    }
    // Inference at the base model's cost: fold the updates into the frozen weights.
    let (x, _) = batch(&gpu, &mut rng, 8, n)?;
    let run = |m: &TwoLayer| -> Result<Vec<f32>> {
        let mut g = Graph::no_grad(&gpu);
        let xv = g.input(&x);
        let y = m.forward(&mut g, &xv)?;
        g.submit()?;
        y.value().to_vec()
    };
    let before = run(&model)?;
    model.first.merge(&gpu)?;
    model.second.merge(&gpu)?;
    let after = run(&model)?;
    let diff = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!("merged: max |difference| {diff:.2e}");
    assert!(diff < 1e-4);
    Ok(())
}
