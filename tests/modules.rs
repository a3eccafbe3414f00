//! Modules: exact LoRA, step-0 identity, merge round trip, adapters, parameter counting and
//! files, bounded memory over many steps, and exact resume of training.

mod common;

use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::nn::Graph;
use capaboost::nn::modules::{
    self, Activation, CapaBoostAdapter, CapaBoostConfig, CapaBoostLinear, Linear,
};
use capaboost::nn::optim::{AdamW, AdamWConfig, Schedule};
use capaboost::{Gpu, Tensor};
use common::{random_vec, rel_frobenius};
use rand::{SeedableRng, rngs::StdRng};

fn forward(gpu: &Gpu, layer: &CapaBoostLinear, x: &Tensor) -> Vec<f32> {
    let mut g = Graph::no_grad(gpu);
    let xv = g.input(x);
    let y = layer.forward(&mut g, &xv).unwrap();
    g.submit().unwrap();
    y.value().to_vec().unwrap()
}

#[test]
fn lora_config_is_exactly_lora() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("lora_config_is_exactly_lora");
    let (t, in_f, out_f, r) = (13, 17, 11, 4);
    let base = Linear::init(&gpu, in_f, out_f, false, &mut rng).unwrap();
    let layer = CapaBoostLinear::new(
        &gpu,
        base.clone(),
        CapaBoostConfig::lora(r, 8.0),
        3,
        &mut rng,
    )
    .unwrap();
    let b = random_vec(&mut rng, out_f * r, 1.0);
    layer.lora_b.write(&b).unwrap();
    let x = random_vec(&mut rng, t * in_f, 1.0);
    let got = forward(
        &gpu,
        &layer,
        &Tensor::from_slice(&gpu, &x, &[t, in_f]).unwrap(),
    );
    let (w, bias, a) = (
        base.weight.to_vec().unwrap(),
        base.bias.as_ref().unwrap().to_vec().unwrap(),
        layer.lora_a.to_vec().unwrap(),
    );
    let s = 8.0 / r as f64;
    let mut want = vec![0.0f64; t * out_f];
    for i in 0..t {
        for o in 0..out_f {
            let base: f64 = (0..in_f)
                .map(|c| x[i * in_f + c] as f64 * w[o * in_f + c] as f64)
                .sum();
            let lora: f64 = (0..r)
                .map(|j| {
                    b[o * r + j] as f64
                        * (0..in_f)
                            .map(|c| x[i * in_f + c] as f64 * a[j * in_f + c] as f64)
                            .sum::<f64>()
                })
                .sum();
            want[i * out_f + o] = base + bias[o] as f64 + s * lora;
        }
    }
    let e = rel_frobenius(&got, &want);
    assert!(e < 1e-5, "{e}");
    assert_eq!(layer.used_params().unwrap(), layer.stored_params());
}

#[test]
fn step_zero_output_is_the_base_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("step_zero_output_is_the_base_bit_for_bit");
    let (t, in_f, out_f) = (9, 20, 12);
    let base = Linear::init(&gpu, in_f, out_f, false, &mut rng).unwrap();
    let x = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * in_f, 1.0), &[t, in_f]).unwrap();
    let mut g = Graph::no_grad(&gpu);
    let xv = g.input(&x);
    let y_base = base.forward(&mut g, &xv).unwrap();
    g.submit().unwrap();
    let y_base = y_base.value().to_vec().unwrap();
    for config in [
        CapaBoostConfig::lora(4, 8.0),
        CapaBoostConfig::capaboost(4, 8.0, 4, 0.5, 1),
        CapaBoostConfig {
            dropout: 0.1,
            ..CapaBoostConfig::capaboost(4, 8.0, 2, 0.5, 1)
        },
    ] {
        let layer = CapaBoostLinear::new(&gpu, base.clone(), config.clone(), 0, &mut rng).unwrap();
        assert_eq!(forward(&gpu, &layer, &x), y_base, "{config:?}");
        // Also in a training graph (dropout active on the adapter path only).
        let mut g = Graph::new(&gpu);
        let xv = g.input(&x);
        let y = layer.forward(&mut g, &xv).unwrap();
        g.submit().unwrap();
        assert_eq!(
            y.value().to_vec().unwrap(),
            y_base,
            "{config:?} (training graph)"
        );
    }
}

#[test]
fn merge_unmerge_round_trip() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("merge_unmerge_round_trip");
    let (t, in_f, out_f) = (7, 33, 21);
    let base = Linear::init(&gpu, in_f, out_f, false, &mut rng).unwrap();
    let w_before = base.weight.to_vec().unwrap();
    let mut layer = CapaBoostLinear::new(
        &gpu,
        base,
        CapaBoostConfig::capaboost(3, 6.0, 3, 0.5, 2),
        1,
        &mut rng,
    )
    .unwrap();
    layer
        .lora_b
        .write(&random_vec(&mut rng, out_f * 3, 1.0))
        .unwrap();
    let x = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * in_f, 1.0), &[t, in_f]).unwrap();
    let unmerged = forward(&gpu, &layer, &x);
    layer.merge(&gpu).unwrap();
    assert!(layer.is_merged());
    let merged = forward(&gpu, &layer, &x);
    let u64v: Vec<f64> = unmerged.iter().map(|&v| v as f64).collect();
    assert!(rel_frobenius(&merged, &u64v) < 1e-5);
    layer.unmerge(&gpu).unwrap();
    let w0: Vec<f64> = w_before.iter().map(|&v| v as f64).collect();
    assert!(rel_frobenius(&layer.base.weight.to_vec().unwrap(), &w0) < 1e-6);
    assert!(rel_frobenius(&forward(&gpu, &layer, &x), &u64v) < 1e-5);
}

#[test]
fn parameter_counts() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("parameter_counts");
    let base = Linear::init(&gpu, 64, 48, false, &mut rng).unwrap();
    for d in [1u32, 2, 4, 8] {
        let layer = CapaBoostLinear::new(
            &gpu,
            base.clone(),
            CapaBoostConfig::capaboost(8, 16.0, d, 0.5, 3),
            0,
            &mut rng,
        )
        .unwrap();
        assert_eq!(layer.stored_params(), 8 * (64 + 48));
        let used = layer.used_params().unwrap() as f64 / layer.stored_params() as f64;
        let want = 1.0 - 0.5f64.powi(d as i32);
        assert!(
            (used - want).abs() < 0.05,
            "d={d}: used fraction {used} vs {want}"
        );
    }
    let masks = MaskConfig::new(MaskKind::Exact, 2, 0.5, 1);
    let adapter =
        CapaBoostAdapter::new(&gpu, 32, 8, &masks, 0, Activation::Relu, &mut rng).unwrap();
    assert_eq!(adapter.stored_params(), 8 * 32 * 2 + 8 + 32);
    assert!(adapter.used_params().unwrap() < adapter.stored_params());
}

#[test]
fn adapter_starts_as_identity_and_its_gradients_match_differences() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("adapter_gradients");
    let (t, in_f, m) = (5, 12, 3);
    for act in [Activation::Relu, Activation::Gelu] {
        let masks = MaskConfig::new(MaskKind::Exact, 3, 0.5, 4);
        let adapter = CapaBoostAdapter::new(&gpu, in_f, m, &masks, 2, act, &mut rng).unwrap();
        let x = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * in_f, 1.0), &[t, in_f]).unwrap();
        let run = |grad: bool| {
            let mut g = Graph::new(&gpu);
            let xv = g.input(&x);
            let y = adapter.forward(&mut g, &xv).unwrap();
            let out = y.value().clone();
            let w = Tensor::from_slice(
                &gpu,
                &(0..t * in_f)
                    .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
                    .collect::<Vec<_>>(),
                &[t, in_f],
            )
            .unwrap();
            let wv = g.input(&w);
            let p = g.mul(&y, &wv).unwrap();
            let l = g.sum(&p).unwrap();
            let grads = if grad {
                Some(g.backward(&l).unwrap())
            } else {
                None
            };
            g.submit().unwrap();
            let gs = grads.map(|gr| {
                adapter
                    .params()
                    .iter()
                    .map(|(_, t)| gr.of(t).unwrap().to_vec().unwrap())
                    .collect::<Vec<_>>()
            });
            (l.value().to_vec().unwrap()[0] as f64, out, gs)
        };
        let (_, y0, _) = run(false);
        assert_eq!(
            y0.to_vec().unwrap(),
            x.to_vec().unwrap(),
            "identity at init"
        );
        adapter
            .up
            .write(&random_vec(&mut rng, in_f * m, 1.0))
            .unwrap();
        adapter
            .down_bias
            .write(&random_vec(&mut rng, m, 0.5))
            .unwrap();
        let (_, _, grads) = run(true);
        let grads = grads.unwrap();
        let mut total_checked = 0;
        let mut worst = 0.0f64;
        for (k, (name, tensor)) in adapter.params().iter().enumerate() {
            let orig = tensor.to_vec().unwrap();
            let scale = grads[k].iter().fold(1e-3f32, |a, v| a.max(v.abs())) as f64;
            let l0 = run(false).0;
            let mut checked = 0;
            let mut probes: Vec<usize> = (0..5).map(|k| k * (orig.len() - 1) / 4).collect();
            probes.dedup();
            for &e in &probes {
                let h = 1e-2f32;
                let at = |step: f32| {
                    let mut p = orig.clone();
                    p[e] += step;
                    tensor.write(&p).unwrap();
                    let l = run(false).0;
                    tensor.write(&orig).unwrap();
                    l
                };
                let (lp, lm) = (at(h), at(-h));
                let fd = if act == Activation::Relu {
                    // ReLU is piecewise linear: without a kink inside the step the two
                    // one-sided differences agree up to rounding and the central difference
                    // is exact; a kink changes the slope by O(gradient): skip the probe.
                    if ((lp - l0) - (l0 - lm)).abs() / h as f64 > 1e-3 * scale {
                        continue;
                    }
                    (lp - lm) / (2.0 * h as f64)
                } else {
                    // GELU: Richardson extrapolation of the central differences at h and 2h
                    // cancels the h^2 truncation term.
                    let d1 = (lp - lm) / (2.0 * h as f64);
                    let d2 = (at(2.0 * h) - at(-2.0 * h)) / (4.0 * h as f64);
                    (4.0 * d1 - d2) / 3.0
                };
                checked += 1;
                let err = (fd - grads[k][e] as f64).abs() / scale;
                worst = worst.max(err);
                assert!(
                    // Measured on lavapipe: 1.0e-5 (ReLU, 16 usable probes), 3.3e-5 (GELU).
                    err < 1e-3,
                    "{act:?} {name}[{e}]: fd {fd} vs {} (err {err:.2e})",
                    grads[k][e]
                );
            }
            if act == Activation::Gelu {
                assert_eq!(
                    checked,
                    probes.len(),
                    "{name}: GELU is smooth, every probe counts"
                );
            }
            total_checked += checked;
        }
        eprintln!(
            "{act:?}: {total_checked} probes, worst |fd - backward| / max |grad| {worst:.2e}"
        );
        // Most ReLU probes sit away from kinks: a backward that is wrong everywhere fails.
        assert!(
            total_checked >= 8,
            "{act:?}: only {total_checked} probes were usable"
        );
    }
}

#[test]
fn params_save_and_load() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("params_save_and_load");
    let base = Linear::init(&gpu, 10, 6, false, &mut rng).unwrap();
    let layer = CapaBoostLinear::new(
        &gpu,
        base.clone(),
        CapaBoostConfig::capaboost(2, 4.0, 2, 0.5, 1),
        0,
        &mut rng,
    )
    .unwrap();
    layer.lora_b.write(&random_vec(&mut rng, 12, 1.0)).unwrap();
    let dir = std::env::temp_dir().join(format!("capaboost-params-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adapter.safetensors");
    modules::save_params(&path, &layer.params()).unwrap();
    let other = CapaBoostLinear::new(
        &gpu,
        base,
        CapaBoostConfig::capaboost(2, 4.0, 2, 0.5, 1),
        0,
        &mut rng,
    )
    .unwrap();
    modules::load_params(&path, &other.params()).unwrap();
    for ((_, a), (_, b)) in layer.params().iter().zip(other.params().iter()) {
        assert_eq!(a.to_vec().unwrap(), b.to_vec().unwrap());
    }
    let wrong = Linear::init(&gpu, 11, 6, false, &mut rng).unwrap();
    let wrong = CapaBoostLinear::new(
        &gpu,
        wrong,
        CapaBoostConfig::capaboost(2, 4.0, 2, 0.5, 1),
        0,
        &mut rng,
    )
    .unwrap();
    let err = modules::load_params(&path, &wrong.params()).unwrap_err();
    assert!(err.to_string().contains("lora_A.weight"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A small regression model: CapaBoost layer -> GELU -> trainable head.
struct Model {
    layer: CapaBoostLinear,
    head: Linear,
}

impl Model {
    fn new(gpu: &Gpu, seed: u64) -> Model {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = Linear::init(gpu, 24, 16, false, &mut rng).unwrap();
        let config = CapaBoostConfig {
            dropout: 0.1,
            ..CapaBoostConfig::capaboost(4, 8.0, 2, 0.5, 7)
        };
        Model {
            layer: CapaBoostLinear::new(gpu, base, config, 0, &mut rng).unwrap(),
            head: Linear::init(gpu, 16, 3, true, &mut rng).unwrap(),
        }
    }

    fn params(&self) -> Vec<Tensor> {
        self.layer
            .params()
            .into_iter()
            .chain(self.head.params())
            .map(|(_, t)| t)
            .collect()
    }

    /// One training step recorded into one submit; returns the loss tensor (not read).
    fn step(&self, gpu: &Gpu, opt: &mut AdamW, step: u64) -> Tensor {
        let mut rng = StdRng::seed_from_u64(1000 + step);
        let x = Tensor::from_slice(gpu, &random_vec(&mut rng, 32 * 24, 1.0), &[32, 24]).unwrap();
        let y = Tensor::from_slice(gpu, &random_vec(&mut rng, 32 * 3, 1.0), &[32, 3]).unwrap();
        let mut g = Graph::new(gpu);
        g.set_seed(step);
        let xv = g.input(&x);
        let yv = g.input(&y);
        let h = self.layer.forward(&mut g, &xv).unwrap();
        let h = g.gelu(&h).unwrap();
        let out = self.head.forward(&mut g, &h).unwrap();
        let loss = g.mse(&out, &yv).unwrap();
        let grads = g.backward(&loss).unwrap();
        assert_eq!(g.tape_len(), 0, "the tape is cleared by backward");
        assert_eq!(opt.step(g.recorder(), &grads).unwrap(), self.params().len());
        g.submit().unwrap();
        loss.value().clone()
    }
}

fn optimizer(gpu: &Gpu, model: &Model) -> AdamW {
    let cfg = AdamWConfig {
        lr: 1e-2,
        warmup_steps: 3,
        total_steps: 20,
        schedule: Schedule::Cosine,
        ..AdamWConfig::default()
    };
    AdamW::new(gpu, cfg, &model.params()).unwrap()
}

#[test]
fn memory_stays_flat_over_many_steps() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let model = Model::new(&gpu, 1);
    let mut opt = optimizer(&gpu, &model);
    let first = model.step(&gpu, &mut opt, 0).to_vec().unwrap()[0];
    gpu.wait().unwrap();
    let after_warmup = gpu.pool_stats();
    let mut last = first;
    for step in 1..60 {
        let submits = gpu.submit_count();
        let loss = model.step(&gpu, &mut opt, step);
        assert_eq!(
            gpu.submit_count(),
            submits + 1,
            "one submit per training step"
        );
        if step % 20 == 0 {
            last = loss.to_vec().unwrap()[0];
        }
        drop(loss);
        let s = gpu.pool_stats();
        assert_eq!(
            s.live_bytes, after_warmup.live_bytes,
            "live bytes grew at step {step}"
        );
        assert!(
            s.created_count <= after_warmup.created_count + 8,
            "buffers keep being created: {s:?}"
        );
    }
    let end = gpu.pool_stats();
    assert_eq!(end.created_count, gpu.pool_stats().created_count);
    eprintln!("pool after 60 steps: {end:?}; loss {first} -> {last}");
    assert!(last.is_finite());
}

#[test]
fn resume_equals_uninterrupted() {
    let Some(gpu) = common::gpu() else { return };
    let n = 10;
    let straight = Model::new(&gpu, 5);
    let mut opt = optimizer(&gpu, &straight);
    for step in 0..n {
        straight.step(&gpu, &mut opt, step);
    }
    let dir = std::env::temp_dir().join(format!("capaboost-resume-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let first_half = Model::new(&gpu, 5);
    let mut opt1 = optimizer(&gpu, &first_half);
    for step in 0..n / 2 {
        first_half.step(&gpu, &mut opt1, step);
    }
    let named: Vec<(String, Tensor)> = first_half
        .params()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("p{i}"), t))
        .collect();
    modules::save_params(&dir.join("params.safetensors"), &named).unwrap();
    opt1.save(&dir.join("optim.safetensors")).unwrap();
    drop((first_half, opt1));

    let resumed = Model::new(&gpu, 5);
    let named: Vec<(String, Tensor)> = resumed
        .params()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("p{i}"), t))
        .collect();
    modules::load_params(&dir.join("params.safetensors"), &named).unwrap();
    let mut opt2 = AdamW::load(&gpu, &dir.join("optim.safetensors"), &resumed.params()).unwrap();
    for step in n / 2..n {
        resumed.step(&gpu, &mut opt2, step);
    }
    for (a, b) in straight.params().iter().zip(resumed.params().iter()) {
        assert_eq!(
            a.to_vec().unwrap(),
            b.to_vec().unwrap(),
            "resumed parameters differ"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
