//! AdamW on the GPU against an f64 AdamW over several steps (clipping on and off, weight
//! decay, warmup and decay schedules), the global gradient norm against f64, the schedule
//! at its key points, and save / load giving a bit-exact resume.

mod common;

use capaboost::kernels::optim::{self, cpu as kcpu};
use capaboost::nn::Gradients;
use capaboost::nn::optim::{AdamW, AdamWConfig, Schedule, cpu, lr_at};
use capaboost::{Error, Gpu, Tensor};
use common::{max_rel_err, random_vec};
use rand::rngs::StdRng;

/// f32 rounding of a few operations per step, over 5 steps: relative errors near 1e-7.
const TOL: f64 = 1e-5;

fn shapes() -> Vec<Vec<usize>> {
    vec![vec![1], vec![67], vec![37, 5], vec![3, 385]]
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

struct Run {
    params: Vec<Tensor>,
}

fn upload(gpu: &Gpu, data: &[Vec<f32>], shapes: &[Vec<usize>]) -> Vec<Tensor> {
    data.iter()
        .zip(shapes)
        .map(|(d, s)| Tensor::from_slice(gpu, d, s).unwrap())
        .collect()
}

impl Run {
    fn step(&self, gpu: &Gpu, opt: &mut AdamW, grads: &[Vec<f32>], shapes: &[Vec<usize>]) {
        let mut gs = Gradients::new();
        for (p, g) in self.params.iter().zip(upload(gpu, grads, shapes)) {
            gs.insert(p, g).unwrap();
        }
        assert_eq!(
            gpu.run(|rec| opt.step(rec, &gs)).unwrap(),
            self.params.len()
        );
    }

    fn read(&self) -> Vec<Vec<f32>> {
        self.params.iter().map(|p| p.to_vec().unwrap()).collect()
    }
}

fn random_set(rng: &mut StdRng, shapes: &[Vec<usize>], scale: f32) -> Vec<Vec<f32>> {
    shapes
        .iter()
        .map(|s| random_vec(rng, numel(s), scale))
        .collect()
}

fn worst(got: &[Vec<f32>], want: &[Vec<f64>], floor: f64) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| max_rel_err(g, w, floor))
        .fold(0.0, f64::max)
}

fn read_all(ts: &[Tensor]) -> Vec<Vec<f32>> {
    ts.iter().map(|t| t.to_vec().unwrap()).collect()
}

/// Runs `steps` GPU steps and the f64 reference side by side; returns the worst relative
/// errors of params, m and v, and the last GPU grad norm with its f64 value.
fn compare(
    gpu: &Gpu,
    rng: &mut StdRng,
    config: AdamWConfig,
    grad_scale: f32,
    steps: usize,
) -> (f64, f64, f64, cpu::AdamWState) {
    let shapes = shapes();
    let init = random_set(rng, &shapes, 1.0);
    let run = Run {
        params: upload(gpu, &init, &shapes),
    };
    let mut opt = AdamW::new(gpu, config, &run.params).unwrap();
    let mut reference = cpu::AdamWState::new(&init);
    for step in 1..=steps {
        let grads = random_set(rng, &shapes, grad_scale);
        run.step(gpu, &mut opt, &grads, &shapes);
        reference.step(&config, &grads);
        if config.max_grad_norm.is_some() {
            let norm = opt.last_grad_norm().unwrap().to_vec().unwrap()[0] as f64;
            let refs: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
            let want = kcpu::grad_sq_norm(&refs).sqrt();
            assert!(
                (norm - want).abs() / want <= TOL,
                "step {step}: {norm} vs {want}"
            );
        } else {
            assert!(opt.last_grad_norm().is_none());
        }
    }
    assert_eq!(opt.step_count(), steps as u64);
    // Parameters are O(1); the moments are O(grad_scale) and m can cancel towards 0, so
    // both are compared relative to at least 1e-2 of their scale.
    let e_p = worst(&run.read(), &reference.params, 1e-2);
    let e_m = worst(
        &read_all(opt.first_moments()),
        &reference.m,
        1e-2 * grad_scale as f64,
    );
    let e_v = worst(
        &read_all(opt.second_moments()),
        &reference.v,
        1e-4 * (grad_scale as f64).powi(2),
    );
    (e_p, e_m, e_v, reference)
}

#[test]
fn adamw_without_clipping_matches_f64_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("adamw_without_clipping_matches_f64_reference");
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.1,
        max_grad_norm: None,
        ..Default::default()
    };
    let (e_p, e_m, e_v, _) = compare(&gpu, &mut rng, config, 1.0, 5);
    eprintln!("no clip: rel err params {e_p:.2e} m {e_m:.2e} v {e_v:.2e}");
    assert!(e_p <= TOL && e_m <= TOL && e_v <= TOL);
}

#[test]
fn adamw_with_clipping_matches_f64_reference_and_clips() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("adamw_with_clipping_matches_f64_reference_and_clips");
    // Gradients of scale 10 over ~1.4k elements: the norm is ~200, far above 1.
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.05,
        max_grad_norm: Some(1.0),
        warmup_steps: 2,
        total_steps: 7,
        schedule: Schedule::Cosine,
        ..Default::default()
    };
    let (e_p, e_m, e_v, clipped) = compare(&gpu, &mut rng.clone(), config, 10.0, 5);
    eprintln!("clip: rel err params {e_p:.2e} m {e_m:.2e} v {e_v:.2e}");
    assert!(e_p <= TOL && e_m <= TOL && e_v <= TOL);
    // The same run without clipping (same seed, so the same inputs) has first moments of
    // the gradients' scale; the clipped ones are ~200 times smaller.
    let unclipped_config = AdamWConfig {
        max_grad_norm: None,
        ..config
    };
    let (.., unclipped) = compare(&gpu, &mut rng, unclipped_config, 10.0, 5);
    let max_abs = |v: &[Vec<f64>]| v.iter().flatten().fold(0.0f64, |a, &x| a.max(x.abs()));
    let (mc, mu) = (max_abs(&clipped.m), max_abs(&unclipped.m));
    eprintln!("max |m|: clipped {mc:.3e}, unclipped {mu:.3e}");
    assert!(mc * 50.0 < mu, "clipping had no effect: {mc} vs {mu}");
}

#[test]
fn adamw_with_linear_warmup_and_decay_matches_f64_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("adamw_with_linear_warmup_and_decay_matches_f64_reference");
    let config = AdamWConfig {
        lr: 3e-2,
        weight_decay: 0.01,
        max_grad_norm: Some(5.0),
        warmup_steps: 3,
        total_steps: 6,
        schedule: Schedule::Linear,
        ..Default::default()
    };
    let (e_p, e_m, e_v, _) = compare(&gpu, &mut rng, config, 0.1, 5);
    eprintln!("linear schedule: rel err params {e_p:.2e} m {e_m:.2e} v {e_v:.2e}");
    assert!(e_p <= TOL && e_m <= TOL && e_v <= TOL);
}

#[test]
fn grad_sq_norm_matches_f64() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("grad_sq_norm_matches_f64");
    let sizes = [1, 67, 100_003, 1024, 1025];
    let data: Vec<Vec<f32>> = sizes
        .iter()
        .map(|&n| random_vec(&mut rng, n, 3.0))
        .collect();
    let tensors: Vec<Tensor> = data
        .iter()
        .map(|d| Tensor::from_slice(&gpu, d, &[d.len()]).unwrap())
        .collect();
    let mut cases: Vec<Vec<usize>> = (0..sizes.len()).map(|i| vec![i]).collect();
    cases.push((0..sizes.len()).collect());
    cases.push(vec![2, 0, 2]);
    for case in cases {
        let ts: Vec<&Tensor> = case.iter().map(|&i| &tensors[i]).collect();
        let ds: Vec<&[f32]> = case.iter().map(|&i| data[i].as_slice()).collect();
        let got = gpu.run(|rec| optim::grad_sq_norm(rec, &ts)).unwrap();
        assert_eq!(got.shape(), &[1]);
        let got = got.to_vec().unwrap()[0] as f64;
        let want = kcpu::grad_sq_norm(&ds);
        let e = (got - want).abs() / want;
        let sizes: Vec<usize> = case.iter().map(|&i| sizes[i]).collect();
        eprintln!("grad_sq_norm {sizes:?}: rel err {e:.2e}");
        assert!(e <= TOL, "{sizes:?}: {got} vs {want}");
    }
    let empty = gpu.run(|rec| optim::grad_sq_norm(rec, &[])).unwrap();
    assert_eq!(empty.to_vec().unwrap(), vec![0.0]);
}

#[test]
fn schedule_values_at_key_points() {
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-7 * b.abs().max(1e-3);
    let lr = 0.5f32;
    // Constant, no warmup: the base rate from the first step on, whatever total_steps is.
    for t in [1, 2, 100] {
        assert_eq!(lr_at(lr, t, 0, 0, Schedule::Constant), lr);
        assert_eq!(lr_at(lr, t, 0, 10, Schedule::Constant), lr);
    }
    // Warmup over 4 steps: step 1 is a quarter, step 4 the full rate.
    for (t, want) in [
        (0, 0.0),
        (1, 0.125),
        (2, 0.25),
        (3, 0.375),
        (4, 0.5),
        (9, 0.5),
    ] {
        assert!(close(lr_at(lr, t, 4, 0, Schedule::Constant), want), "t={t}");
    }
    // Linear: warmup 4, total 14: halfway through the decay (step 9) is half the rate.
    for (t, want) in [
        (2, 0.25),
        (4, 0.5),
        (9, 0.25),
        (13, 0.05),
        (14, 0.0),
        (20, 0.0),
    ] {
        let got = lr_at(lr, t, 4, 14, Schedule::Linear);
        assert!(close(got, want), "linear t={t}: {got} vs {want}");
    }
    // Cosine: half the rate at the midpoint, 0 at the end, and the cosine in between.
    // Step 6 is 2 of the 10 decay steps in.
    let mid = 0.5 * (1.0 + (std::f64::consts::PI * 0.2).cos()) * 0.5;
    for (t, want) in [
        (2, 0.25),
        (4, 0.5),
        (9, 0.25),
        (14, 0.0),
        (15, 0.0),
        (6, mid as f32),
    ] {
        let got = lr_at(lr, t, 4, 14, Schedule::Cosine);
        assert!(close(got, want), "cosine t={t}: {got} vs {want}");
    }
    // No warmup, decay from the first step.
    assert!(close(lr_at(lr, 5, 0, 10, Schedule::Linear), 0.25));
    assert!(close(lr_at(lr, 5, 0, 10, Schedule::Cosine), 0.25));
    assert_eq!(lr_at(lr, 10, 0, 10, Schedule::Cosine), 0.0);
    // Schedules never go negative or above the base rate.
    for t in 0..40 {
        for s in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            let v = lr_at(lr, t, 5, 30, s);
            assert!((0.0..=lr).contains(&v), "{s:?} t={t}: {v}");
        }
    }
    let d = AdamWConfig::default();
    assert_eq!(
        (
            d.lr,
            d.beta1,
            d.beta2,
            d.eps,
            d.weight_decay,
            d.max_grad_norm
        ),
        (1e-3, 0.9, 0.999, 1e-8, 0.01, Some(1.0))
    );
    assert_eq!(
        (d.warmup_steps, d.total_steps, d.schedule),
        (0, 0, Schedule::Constant)
    );
}

#[test]
fn save_and_load_resume_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("save_and_load_resume_bit_for_bit");
    let shapes = shapes();
    let config = AdamWConfig {
        lr: 1e-2,
        weight_decay: 0.02,
        max_grad_norm: Some(0.5),
        warmup_steps: 2,
        total_steps: 10,
        schedule: Schedule::Cosine,
        ..Default::default()
    };
    let init = random_set(&mut rng, &shapes, 1.0);
    let grads: Vec<_> = (0..6).map(|_| random_set(&mut rng, &shapes, 2.0)).collect();

    let straight = Run {
        params: upload(&gpu, &init, &shapes),
    };
    let mut opt_a = AdamW::new(&gpu, config, &straight.params).unwrap();
    for g in &grads {
        straight.step(&gpu, &mut opt_a, g, &shapes);
    }

    let resumed = Run {
        params: upload(&gpu, &init, &shapes),
    };
    let mut opt_b = AdamW::new(&gpu, config, &resumed.params).unwrap();
    for g in &grads[..3] {
        resumed.step(&gpu, &mut opt_b, g, &shapes);
    }
    let dir = std::env::temp_dir().join(format!("capaboost-optim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adamw.safetensors");
    opt_b.save(&path).unwrap();
    drop(opt_b);
    let mut opt_c = AdamW::load(&gpu, &path, &resumed.params).unwrap();
    assert_eq!(opt_c.step_count(), 3);
    assert_eq!(*opt_c.config(), config);
    for g in &grads[3..] {
        resumed.step(&gpu, &mut opt_c, g, &shapes);
    }

    let bits = |v: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        v.iter()
            .map(|x| x.iter().map(|f| f.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(straight.read()), bits(resumed.read()), "parameters");
    assert_eq!(
        bits(read_all(opt_a.first_moments())),
        bits(read_all(opt_c.first_moments())),
        "first moments"
    );
    assert_eq!(
        bits(read_all(opt_a.second_moments())),
        bits(read_all(opt_c.second_moments())),
        "second moments"
    );
    assert_eq!(opt_a.step_count(), opt_c.step_count());

    // A config without clipping round-trips too.
    let plain = AdamWConfig {
        max_grad_norm: None,
        ..config
    };
    let path2 = dir.join("plain.safetensors");
    AdamW::new(&gpu, plain, &straight.params)
        .unwrap()
        .save(&path2)
        .unwrap();
    let loaded = AdamW::load(&gpu, &path2, &straight.params).unwrap();
    assert_eq!(*loaded.config(), plain);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_errors_are_clear() {
    let Some(gpu) = common::gpu() else { return };
    let shapes = shapes();
    let params = zeros(&gpu, &shapes);
    let dir = std::env::temp_dir().join(format!("capaboost-optim-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.safetensors");
    let err = AdamW::load(&gpu, &missing, &params).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing.safetensors"), "{err}");

    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let err = AdamW::load(&gpu, &corrupt, &params).unwrap_err();
    assert!(matches!(err, Error::File { .. }), "{err}");

    // A valid safetensors file that is not an optimizer state.
    let other = dir.join("other.safetensors");
    let mut w = capaboost::runtime::io::TensorWriter::default();
    w.f32("weight", &[2], &[1.0, 2.0]);
    w.write(&other).unwrap();
    let err = AdamW::load(&gpu, &other, &params).unwrap_err();
    assert!(err.to_string().contains("format"), "{err}");

    let good = dir.join("good.safetensors");
    AdamW::new(&gpu, AdamWConfig::default(), &params)
        .unwrap()
        .save(&good)
        .unwrap();
    let mut wrong = shapes.clone();
    wrong[2] = vec![5, 37];
    let err = AdamW::load(&gpu, &good, &zeros(&gpu, &wrong)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape(_)), "{msg}");
    assert!(
        msg.contains("parameter 2") && msg.contains("[37, 5]") && msg.contains("[5, 37]"),
        "{msg}"
    );
    let err = AdamW::load(&gpu, &good, &params[..3]).unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("4 parameters"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn zeros(gpu: &Gpu, shapes: &[Vec<usize>]) -> Vec<Tensor> {
    shapes
        .iter()
        .map(|s| Tensor::zeros(gpu, s).unwrap())
        .collect()
}

#[test]
fn step_takes_gradients_by_identity_and_skips_missing() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("step_takes_gradients_by_identity_and_skips_missing");
    let shapes = shapes();
    let init = random_set(&mut rng, &shapes, 1.0);
    let params = upload(&gpu, &init, &shapes);
    let mut opt = AdamW::new(&gpu, AdamWConfig::default(), &params).unwrap();
    // A gradient of the wrong shape is refused, naming both shapes.
    let mut grads = Gradients::new();
    let err = grads
        .insert(&params[1], Tensor::zeros(&gpu, &[68]).unwrap())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Shape(_)), "{msg}");
    assert!(msg.contains("[68]") && msg.contains("[67]"), "{msg}");
    // Gradients for parameters 2 and 0 only, inserted out of order: those two move, the
    // others (no gradient) are left exactly as they were.
    let g = random_set(&mut rng, &shapes, 1.0);
    for i in [2, 0] {
        let t = Tensor::from_slice(&gpu, &g[i], &shapes[i]).unwrap();
        grads.insert(&params[i], t).unwrap();
    }
    assert_eq!(gpu.run(|rec| opt.step(rec, &grads)).unwrap(), 2);
    assert_eq!(opt.step_count(), 1);
    for (i, p) in params.iter().enumerate() {
        let now = p.to_vec().unwrap();
        assert_eq!(now != init[i], i == 0 || i == 2, "parameter {i}");
    }
    let bad = AdamWConfig {
        beta2: 1.0,
        ..Default::default()
    };
    assert!(matches!(
        AdamW::new(&gpu, bad, &params),
        Err(Error::InvalidArgument(_))
    ));
}

/// A resume that extends the run: 3 steps of a 10-step schedule, saved and loaded, then
/// the schedule set to 20 steps (steps 4 on at the 20-step rates), ends bit for bit where
/// one optimizer given the new length after step 3 does.
#[test]
fn extending_the_schedule_on_resume_matches_a_run_started_longer() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("extending_the_schedule_on_resume");
    let shapes = shapes();
    let long = AdamWConfig {
        lr: 1e-2,
        warmup_steps: 2,
        total_steps: 20,
        schedule: Schedule::Linear,
        ..Default::default()
    };
    let short = AdamWConfig {
        total_steps: 10,
        ..long
    };
    let init = random_set(&mut rng, &shapes, 1.0);
    let grads: Vec<_> = (0..6).map(|_| random_set(&mut rng, &shapes, 2.0)).collect();
    let straight = Run {
        params: upload(&gpu, &init, &shapes),
    };
    let mut opt_a = AdamW::new(&gpu, short, &straight.params).unwrap();
    for (i, g) in grads.iter().enumerate() {
        if i == 3 {
            opt_a.set_schedule_length(2, 20).unwrap();
        }
        straight.step(&gpu, &mut opt_a, g, &shapes);
    }
    let resumed = Run {
        params: upload(&gpu, &init, &shapes),
    };
    let mut opt_b = AdamW::new(&gpu, short, &resumed.params).unwrap();
    for g in &grads[..3] {
        resumed.step(&gpu, &mut opt_b, g, &shapes);
    }
    let dir = std::env::temp_dir().join(format!("capaboost-optim-ext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("adamw.safetensors");
    opt_b.save(&path).unwrap();
    let mut opt_c = AdamW::load(&gpu, &path, &resumed.params).unwrap();
    assert!(
        opt_c.set_schedule_length(30, 20).is_err(),
        "warmup past the end"
    );
    opt_c.set_schedule_length(2, 20).unwrap();
    assert_eq!(*opt_c.config(), long);
    assert_eq!(opt_c.next_lr(), lr_at(1e-2, 4, 2, 20, Schedule::Linear));
    for g in &grads[3..] {
        resumed.step(&gpu, &mut opt_c, g, &shapes);
    }
    let bits = |v: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        v.iter()
            .map(|x| x.iter().map(|f| f.to_bits()).collect())
            .collect()
    };
    assert_eq!(bits(straight.read()), bits(resumed.read()), "parameters");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Odd sizes around the kernels' workgroup chunks (256 for AdamW, 1024 for the norm's
/// partial sums), an empty tensor among them.
const MULTI_SIZES: [usize; 11] = [1, 255, 0, 257, 1023, 1025, 3, 4097, 700, 2, 1500];

fn multi_tensors(gpu: &Gpu, rng: &mut StdRng, scale: f32) -> (Vec<Vec<f32>>, Vec<Tensor>) {
    let data: Vec<Vec<f32>> = MULTI_SIZES
        .iter()
        .map(|&n| random_vec(rng, n, scale))
        .collect();
    let ts = data
        .iter()
        .map(|d| Tensor::from_slice(gpu, d, &[d.len()]).unwrap())
        .collect();
    (data, ts)
}

#[test]
fn multi_tensor_norm_gives_the_same_bits_for_every_count() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("multi_tensor_norm_gives_the_same_bits_for_every_count");
    // Every WebGPU device binds at least 8 storage buffers per stage: 7 gradients and the
    // partial sums, so the multi-tensor path runs wherever this test does.
    assert!(optim::multi::sq_slots(&gpu) >= 7);
    let (data, ts) = multi_tensors(&gpu, &mut rng, 2.0);
    let refs: Vec<&Tensor> = ts.iter().collect();
    let norm = |per: usize| {
        let t = gpu
            .run(|rec| optim::grad_sq_norm_in(rec, &refs, per))
            .unwrap();
        t.to_vec().unwrap()[0]
    };
    let one = norm(1);
    let ds: Vec<&[f32]> = data.iter().map(|d| d.as_slice()).collect();
    let want = kcpu::grad_sq_norm(&ds);
    assert!((one as f64 - want).abs() <= TOL * want, "{one} vs {want}");
    let most = optim::multi::SQ_SLOTS;
    for per in [2, 3, 4, 7, most] {
        assert_eq!(
            norm(per).to_bits(),
            one.to_bits(),
            "{per} tensors per dispatch"
        );
    }
}

#[test]
fn multi_tensor_adamw_gives_the_same_bits_for_every_count() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("multi_tensor_adamw_gives_the_same_bits_for_every_count");
    let (p0, _) = multi_tensors(&gpu, &mut rng, 1.0);
    let (g, gs) = multi_tensors(&gpu, &mut rng, 0.5);
    let (m0, _) = multi_tensors(&gpu, &mut rng, 0.1);
    let v0: Vec<Vec<f32>> = multi_tensors(&gpu, &mut rng, 0.1)
        .0
        .iter()
        .map(|v| v.iter().map(|x| x * x).collect())
        .collect();
    let clip = Tensor::from_slice(&gpu, &[0.75], &[1]).unwrap();
    let s = optim::AdamStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        lr: 3e-3,
        weight_decay: 0.01,
        t: 3,
    };
    let run = |per: usize| {
        let up = |d: &[Vec<f32>]| upload(&gpu, d, &MULTI_SIZES.map(|n| vec![n]));
        let (p, m, v) = (up(&p0), up(&m0), up(&v0));
        let states: Vec<[&Tensor; 4]> = (0..p.len())
            .map(|i| [&p[i], &gs[i], &m[i], &v[i]])
            .collect();
        gpu.run(|rec| optim::adamw_update_many_in(rec, &states, &clip, (&s, per)))
            .unwrap();
        [read_all(&p), read_all(&m), read_all(&v)]
    };
    let one = run(1);
    eprintln!(
        "AdamW parameters per dispatch here: {}",
        optim::multi::adam_slots(&gpu)
    );
    // The single-tensor path against f64 (one step from the given moments).
    for i in 0..p0.len() {
        let wide = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        let (mut p, mut m, mut v) = (wide(&p0[i]), wide(&m0[i]), wide(&v0[i]));
        kcpu::adamw_update(&mut p, &mut m, &mut v, &g[i], 0.75, &s);
        assert!(worst(&one[0][i..=i], &[p], 1e-3) <= TOL, "parameter {i}");
    }
    let bits = |r: &[Vec<Vec<f32>>; 3]| -> Vec<u32> {
        r.iter().flatten().flatten().map(|x| x.to_bits()).collect()
    };
    for per in [2, 3, optim::multi::ADAM_SLOTS] {
        assert_eq!(bits(&run(per)), bits(&one), "{per} parameters per dispatch");
    }
}
