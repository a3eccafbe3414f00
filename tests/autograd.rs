//! The tape: every op's backward against Richardson-extrapolated central differences of
//! the GPU forward (bar: 1e-3 of the largest gradient), inside a graph (random upstream
//! weights, then a scale, so a backward that ignores its incoming gradient fails);
//! accumulation across uses; no-grad; one submit per step; the training losses against
//! f64 formulas.

mod common;

use capaboost::kernels::capaboost::{Adapter, LayerMasks};
use capaboost::kernels::masks::{Factor, MaskConfig, MaskKind};
use capaboost::nn::{Graph, Var};
use capaboost::{Gpu, Indices, Result, Tensor};
use common::random_vec;
use rand::Rng;

type Build = dyn Fn(&mut Graph, &[Var]) -> Result<Var>;

/// `L = 0.7 * sum(f(inputs) * w)` with random `w`, read back as f64.
fn loss(
    gpu: &Gpu,
    inputs: &[(Vec<f32>, Vec<usize>)],
    w: &[f32],
    f: &Build,
    grad: bool,
) -> (f64, Vec<Option<Vec<f32>>>) {
    let tensors: Vec<Tensor> = inputs
        .iter()
        .map(|(d, s)| Tensor::from_slice(gpu, d, s).unwrap())
        .collect();
    // Always a training graph: dropout must be the same map in the differences.
    let mut g = Graph::new(gpu);
    let vars: Vec<Var> = tensors.iter().map(|t| g.param(t)).collect();
    let out = f(&mut g, &vars).unwrap();
    let wt = Tensor::from_slice(gpu, w, out.shape()).unwrap();
    let wv = g.input(&wt);
    let weighted = g.mul(&out, &wv).unwrap();
    let s = g.sum(&weighted).unwrap();
    let l = g.scale(&s, 0.7).unwrap();
    let grads = if grad {
        Some(g.backward(&l).unwrap())
    } else {
        None
    };
    g.submit().unwrap();
    let value = l.value().to_vec().unwrap()[0] as f64;
    let gs = tensors
        .iter()
        .map(|t| {
            grads
                .as_ref()
                .and_then(|gr| gr.of(t))
                .map(|x| x.to_vec().unwrap())
        })
        .collect();
    (value, gs)
}

/// Checks every input's gradient at a few entries against central differences.
fn gradcheck(name: &str, inputs: Vec<(Vec<f32>, Vec<usize>)>, f: &Build, h: f32) {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng(name);
    let out_numel = {
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|(d, s)| Tensor::from_slice(&gpu, d, s).unwrap())
            .collect();
        let mut g = Graph::no_grad(&gpu);
        let vars: Vec<Var> = tensors.iter().map(|t| g.param(t)).collect();
        f(&mut g, &vars).unwrap().value().numel()
    };
    let w = random_vec(&mut rng, out_numel, 1.0);
    let (_, grads) = loss(&gpu, &inputs, &w, f, true);
    let mut worst = 0.0f64;
    for (k, (data, _)) in inputs.iter().enumerate() {
        let grad = grads[k]
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no gradient for input {k}"));
        assert_eq!(grad.len(), data.len());
        let scale = grad.iter().fold(1e-3f32, |a, v| a.max(v.abs())) as f64;
        let probes: Vec<usize> = (0..5)
            .map(|_| rng.random_range(0..data.len()))
            .chain([0, data.len() - 1])
            .collect();
        for e in probes {
            // Central differences at steps h and 2h, combined by Richardson extrapolation
            // (4 D(h) - D(2h)) / 3: the h^2 truncation term cancels, leaving O(h^4) and the
            // f32 rounding of the loss, so the bar can be 1e-3 of the largest gradient
            // instead of the 2e-2 a plain f32 difference needed.
            let central = |step: f32| {
                let mut plus = inputs.clone();
                plus[k].0[e] += step;
                let mut minus = inputs.clone();
                minus[k].0[e] -= step;
                (loss(&gpu, &plus, &w, f, false).0 - loss(&gpu, &minus, &w, f, false).0)
                    / (2.0 * step as f64)
            };
            let fd = (4.0 * central(h) - central(2.0 * h)) / 3.0;
            let err = (fd - grad[e] as f64).abs() / scale;
            worst = worst.max(err);
            assert!(
                err < GRAD_TOL,
                "{name}: input {k}[{e}]: fd {fd} vs backward {} (err {err:.2e})",
                grad[e]
            );
        }
    }
    eprintln!("{name}: worst |fd - backward| / max |grad| = {worst:.2e}");
}

/// Gradient check bar: |Richardson difference - backward| / max |backward|. Measured on
/// lavapipe: at most 1.0e-4 (cross_entropy), most ops 5e-6 to 3e-5 (was 2e-2 with a plain
/// f32 central difference).
const GRAD_TOL: f64 = 1e-3;

fn rand_input(rng: &mut rand::rngs::StdRng, shape: &[usize]) -> (Vec<f32>, Vec<usize>) {
    // Away from 0 so ReLU's kink and |x| never sit inside the difference step.
    let n = shape.iter().product();
    let v = random_vec(rng, n, 1.0)
        .into_iter()
        .map(|x| {
            if x.abs() < 0.05 {
                x + 0.1f32.copysign(x)
            } else {
                x
            }
        })
        .collect();
    (v, shape.to_vec())
}

#[test]
fn matmul_all_transposes_and_batched() {
    let mut rng = common::rng("matmul_inputs");
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = rand_input(&mut rng, if ta { &[7, 5] } else { &[5, 7] });
        let b = rand_input(&mut rng, if tb { &[3, 7] } else { &[7, 3] });
        gradcheck(
            &format!("matmul {ta} {tb}"),
            vec![a, b],
            &move |g, v| g.matmul(&v[0], ta, &v[1], tb),
            1e-2,
        );
    }
    let a = rand_input(&mut rng, &[2, 4, 5]);
    let b = rand_input(&mut rng, &[2, 3, 5]);
    gradcheck(
        "batched matmul",
        vec![a, b],
        &|g, v| g.matmul(&v[0], false, &v[1], true),
        1e-2,
    );
}

/// `matmul_scaled` (the attention scores' `1/sqrt(dh)` in the GEMM's alpha): both
/// gradients by finite differences on odd shapes, every transpose and batched, and the
/// forward against `scale(matmul)` (the same f32 product times alpha: equal to 1e-6).
#[test]
fn matmul_scaled_all_transposes_and_batched() {
    let mut rng = common::rng("matmul_scaled_inputs");
    let alpha = -0.37f32;
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = rand_input(&mut rng, if ta { &[7, 5] } else { &[5, 7] });
        let b = rand_input(&mut rng, if tb { &[3, 7] } else { &[7, 3] });
        gradcheck(
            &format!("matmul_scaled {ta} {tb}"),
            vec![a, b],
            &move |g, v| g.matmul_scaled(&v[0], ta, &v[1], tb, alpha),
            1e-2,
        );
    }
    let (a, b) = (
        rand_input(&mut rng, &[3, 5, 9]),
        rand_input(&mut rng, &[3, 7, 9]),
    );
    gradcheck(
        "batched matmul_scaled",
        vec![a.clone(), b.clone()],
        &move |g, v| g.matmul_scaled(&v[0], false, &v[1], true, alpha),
        1e-2,
    );
    let Some(gpu) = common::gpu() else { return };
    let ta = Tensor::from_slice(&gpu, &a.0, &a.1).unwrap();
    let tb = Tensor::from_slice(&gpu, &b.0, &b.1).unwrap();
    let mut g = Graph::no_grad(&gpu);
    let (va, vb) = (g.input(&ta), g.input(&tb));
    let fused = g.matmul_scaled(&va, false, &vb, true, alpha).unwrap();
    let plain = g.matmul(&va, false, &vb, true).unwrap();
    let two = g.scale(&plain, alpha).unwrap();
    g.submit().unwrap();
    let (f, t) = (
        fused.value().to_vec().unwrap(),
        two.value().to_vec().unwrap(),
    );
    for (x, y) in f.iter().zip(&t) {
        assert!((x - y).abs() <= 1e-6 * y.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn linear_add_mul_scale_reshape() {
    let mut rng = common::rng("linear_inputs");
    let (x, w, b) = (
        rand_input(&mut rng, &[2, 3, 6]),
        rand_input(&mut rng, &[5, 6]),
        rand_input(&mut rng, &[5]),
    );
    gradcheck(
        "linear",
        vec![x, w, b],
        &|g, v| g.linear(&v[0], &v[1], Some(&v[2])),
        1e-2,
    );
    let (a, b) = (rand_input(&mut rng, &[4, 5]), rand_input(&mut rng, &[4, 5]));
    // x*y + x + 0.5 x: x used three times, gradients accumulate.
    gradcheck(
        "add mul scale",
        vec![a, b],
        &|g, v| {
            let p = g.mul(&v[0], &v[1])?;
            let q = g.add(&p, &v[0])?;
            let s = g.scale(&v[0], 0.5)?;
            let r = g.add(&q, &s)?;
            g.reshape(&r, &[20])
        },
        1e-2,
    );
    // x used seven times (x*y, then six scaled copies of x added in): contributions are
    // summed four at a time, then the rest, so a fold that drops or repeats one fails.
    let (a, b) = (rand_input(&mut rng, &[3, 7]), rand_input(&mut rng, &[3, 7]));
    gradcheck(
        "seven uses",
        vec![a, b],
        &|g, v| {
            let mut acc = g.mul(&v[0], &v[1])?;
            for k in 1..=6 {
                let s = g.scale(&v[0], 0.25 * k as f32)?;
                acc = g.add(&acc, &s)?;
            }
            Ok(acc)
        },
        1e-2,
    );
}

#[test]
fn activations_and_bias() {
    let mut rng = common::rng("activation_inputs");
    let x = rand_input(&mut rng, &[3, 7]);
    let b = rand_input(&mut rng, &[7]);
    gradcheck("gelu", vec![x.clone()], &|g, v| g.gelu(&v[0]), 1e-2);
    gradcheck("tanh", vec![x.clone()], &|g, v| g.tanh(&v[0]), 1e-2);
    gradcheck("relu", vec![x.clone()], &|g, v| g.relu(&v[0]), 1e-2);
    gradcheck(
        "add_bias",
        vec![x.clone(), b],
        &|g, v| g.add_bias(&v[0], &v[1]),
        1e-2,
    );
    // A fixed seed makes dropout a fixed linear map, so differences apply.
    gradcheck(
        "dropout",
        vec![x],
        &|g, v| g.dropout(&v[0], 0.3, 42, 1),
        1e-2,
    );
}

#[test]
fn norms_softmax_pooling_losses() {
    let mut rng = common::rng("norm_inputs");
    let (x, gamma, beta) = (
        rand_input(&mut rng, &[4, 9]),
        rand_input(&mut rng, &[9]),
        rand_input(&mut rng, &[9]),
    );
    gradcheck(
        "layer_norm",
        vec![x.clone(), gamma.clone(), beta.clone()],
        &|g, v| g.layer_norm(&v[0], &v[1], &v[2], 1e-5),
        1e-2,
    );
    let (a, b) = (rand_input(&mut rng, &[5, 7]), rand_input(&mut rng, &[5, 7]));
    let (g7, b7) = (rand_input(&mut rng, &[7]), rand_input(&mut rng, &[7]));
    gradcheck(
        "add_layer_norm",
        vec![a.clone(), b.clone(), g7.clone(), b7.clone()],
        &|g, v| g.add_layer_norm((&v[0], &v[1]), &v[2], &v[3], 1e-5),
        1e-2,
    );
    gradcheck(
        "add_layer_norm frozen affine",
        vec![a, b],
        &move |g, v| {
            let tg = Tensor::from_slice(g.gpu(), &g7.0, &g7.1)?;
            let tb = Tensor::from_slice(g.gpu(), &b7.0, &b7.1)?;
            let (vg, vb) = (g.input(&tg), g.input(&tb));
            g.add_layer_norm((&v[0], &v[1]), &vg, &vb, 1e-5)
        },
        1e-2,
    );
    // Frozen gamma and beta (inputs, not parameters): the dx-only backward.
    gradcheck(
        "layer_norm frozen affine",
        vec![x.clone()],
        &move |g, v| {
            let tg = Tensor::from_slice(g.gpu(), &gamma.0, &gamma.1)?;
            let tb = Tensor::from_slice(g.gpu(), &beta.0, &beta.1)?;
            let (vg, vb) = (g.input(&tg), g.input(&tb));
            g.layer_norm(&v[0], &vg, &vb, 1e-5)
        },
        1e-2,
    );
    let Some(gpu) = common::gpu() else { return };
    let mask_data: Vec<f32> = (0..18)
        .map(|i| if i % 5 == 4 { -1e9 } else { 0.0 })
        .collect();
    let mask = Tensor::from_slice(&gpu, &mask_data, &[2, 9]).unwrap();
    gradcheck(
        "softmax",
        vec![x.clone()],
        &move |g, v| g.softmax(&v[0], Some(&mask), 2),
        1e-2,
    );
    let seq = rand_input(&mut rng, &[2, 3, 4]);
    let pad = Tensor::from_slice(&gpu, &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0], &[2, 3]).unwrap();
    gradcheck(
        "mean_pool",
        vec![seq],
        &move |g, v| g.mean_pool(&v[0], &pad),
        1e-2,
    );
    let labels = Indices::from_slice(&gpu, &[2, 0, 8, 5], &[4]).unwrap();
    gradcheck(
        "cross_entropy",
        vec![x.clone()],
        &move |g, v| g.cross_entropy(&v[0], &labels),
        1e-2,
    );
    let t = rand_input(&mut rng, &[4, 9]);
    gradcheck("mse", vec![x.clone(), t], &|g, v| g.mse(&v[0], &v[1]), 1e-2);
    gradcheck("mean", vec![x], &|g, v| g.mean(&v[0]), 1e-2);
}

#[test]
fn capaboost_ops() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("capaboost_inputs");
    let (t, in_f, out_f, r, d) = (5, 7, 6, 2, 3);
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, d, 0.5, 9),
                0,
                r,
                in_f,
                out_f,
            )
        })
        .unwrap();
    let (x, a, b) = (
        rand_input(&mut rng, &[t, in_f]),
        rand_input(&mut rng, &[r, in_f]),
        rand_input(&mut rng, &[out_f, r]),
    );
    let w0 = Tensor::from_slice(
        &gpu,
        &random_vec(&mut rng, out_f * in_f, 1.0),
        &[out_f, in_f],
    )
    .unwrap();
    let b0 = Tensor::from_slice(&gpu, &random_vec(&mut rng, out_f, 1.0), &[out_f]).unwrap();
    let (m1, w1, bb1) = (masks.clone(), w0.clone(), b0.clone());
    gradcheck(
        "capaboost_linear",
        vec![x.clone(), a.clone(), b.clone()],
        &move |g, v| {
            g.capaboost_linear(&v[0], &w1, Some(&bb1), Adapter::new(&v[1], &v[2], &m1, 2.0))
        },
        1e-2,
    );
    let m2 = masks.clone();
    gradcheck(
        "capaboost_update",
        vec![x.clone(), a.clone(), b.clone()],
        &move |g, v| {
            let w = g.input(&w0);
            let base = g.linear(&v[0], &w, None)?;
            g.capaboost_update(&base, &v[0], Adapter::new(&v[1], &v[2], &m2, 2.0))
        },
        1e-2,
    );
    let m3 = masks.clone();
    gradcheck(
        "masked_matmul A then B",
        vec![x, a, b],
        &move |g, v| {
            let h = g.masked_matmul(&v[0], &v[1], &m3.a, Factor::A)?;
            let h = g.tanh(&h)?;
            g.masked_matmul(&h, &v[2], &m3.b, Factor::B)
        },
        1e-2,
    );
}

#[test]
fn no_grad_records_nothing_and_frozen_inputs_get_no_gradient() {
    let Some(gpu) = common::gpu() else { return };
    let x = Tensor::full(&gpu, &[3, 4], 0.5).unwrap();
    let w = Tensor::full(&gpu, &[2, 4], 0.25).unwrap();
    let mut g = Graph::no_grad(&gpu);
    let xv = g.param(&x);
    let wv = g.input(&w);
    let y = g.linear(&xv, &wv, None).unwrap();
    let y = g.gelu(&y).unwrap();
    assert_eq!(g.tape_len(), 0);
    assert!(!y.tracked());
    let mut g = Graph::new(&gpu);
    let xv = g.input(&x);
    let wv = g.param(&w);
    let y = g.linear(&xv, &wv, None).unwrap();
    let l = g.sum(&y).unwrap();
    let grads = g.backward(&l).unwrap();
    assert!(grads.of(&w).is_some() && grads.of(&x).is_none());
    assert_eq!(grads.len(), 1);
    assert_eq!(g.tape_len(), 0);
    assert!(g.backward(&y).is_err(), "a non-scalar loss is an error");
    g.submit().unwrap();
    // dL/dW = column sums of x = 3 * 0.5 per entry.
    assert_eq!(grads.of(&w).unwrap().to_vec().unwrap(), vec![1.5; 8]);
}

/// The training losses as the tasks build them (`Graph::cross_entropy` on a head's logits,
/// `Graph::mse` on regression scores), their values and their gradients, against f64
/// formulas written out here from the logits (not the crate's CPU twins, which a shared
/// mistake such as a flipped label would pass): mean over rows of
/// `logsumexp(z) - z[y]` with gradient `(softmax(z) - onehot(y)) / N`, and
/// `mean((p - t)^2)` with gradients `±2 (p - t) / n`. The loss is scaled by 0.7 before the
/// backward pass, so an ignored upstream gradient fails.
///
/// Measured (lavapipe): loss relative error <= 1.3e-7, gradient max abs error / max |grad|
/// <= 7.1e-8. Asserted: 1e-6 both (f32 rounding of a few ops; a wrong label, sign, factor
/// or missing 1/N is off by O(1)).
#[test]
fn training_losses_match_f64_formulas() {
    let Some(gpu) = common::gpu() else { return };
    let value = |i: usize, s: f64| ((i as f64 * 0.731).sin() * s) as f32;
    let run = |build: &dyn Fn(&mut Graph, &[Var]) -> Var, inputs: &[(Vec<f32>, Vec<usize>)]| {
        let tensors: Vec<Tensor> = inputs
            .iter()
            .map(|(d, s)| Tensor::from_slice(&gpu, d, s).unwrap())
            .collect();
        let mut g = Graph::new(&gpu);
        let vars: Vec<Var> = tensors.iter().map(|t| g.param(t)).collect();
        let l = build(&mut g, &vars);
        let l = g.scale(&l, 0.7).unwrap();
        let grads = g.backward(&l).unwrap();
        g.submit().unwrap();
        let loss = l.value().to_vec().unwrap()[0] as f64 / 0.7;
        let gs: Vec<Vec<f64>> = tensors
            .iter()
            .map(|t| {
                let v = grads.of(t).expect("no gradient").to_vec().unwrap();
                v.iter().map(|&x| x as f64 / 0.7).collect()
            })
            .collect();
        (loss, gs)
    };
    let check = |name: &str, loss: f64, want: f64, grad: &[f64], want_grad: &[f64]| {
        let el = (loss - want).abs() / want.abs();
        let eg = common::rel_max_abs(grad, want_grad);
        eprintln!("{name}: loss {loss:.6} (rel err {el:.1e}), grad rel err {eg:.1e}");
        assert!(el < 1e-6, "{name}: loss {loss} vs f64 {want}");
        assert!(eg < 1e-6, "{name}: gradient {grad:?} vs f64 {want_grad:?}");
    };
    // Cross-entropy: 2 classes (SST-2's head), 3 classes (MNLI), and large logits.
    for (rows, classes, s) in [(6, 2, 2.0), (5, 3, 3.0), (4, 2, 40.0)] {
        let z: Vec<f32> = (0..rows * classes).map(|i| value(i + classes, s)).collect();
        let labels: Vec<u32> = (0..rows).map(|i| ((i * 7 + 1) % classes) as u32).collect();
        let li = Indices::from_slice(&gpu, &labels, &[rows]).unwrap();
        let (loss, gs) = run(
            &|g, v| g.cross_entropy(&v[0], &li).unwrap(),
            &[(z.clone(), vec![rows, classes])],
        );
        let mut want = 0.0;
        let mut want_grad = vec![0.0; rows * classes];
        for (r, &y) in labels.iter().enumerate() {
            let row: Vec<f64> = z[r * classes..(r + 1) * classes]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            want += (lse - row[y as usize]) / rows as f64;
            for c in 0..classes {
                let onehot = if c == y as usize { 1.0 } else { 0.0 };
                want_grad[r * classes + c] = ((row[c] - lse).exp() - onehot) / rows as f64;
            }
        }
        check(
            &format!("cross_entropy [{rows}, {classes}] x{s}"),
            loss,
            want,
            &gs[0],
            &want_grad,
        );
    }
    // MSE on regression scores [N, 1] (STS-B's head), gradients to prediction and target.
    let n = 7;
    let p: Vec<f32> = (0..n).map(|i| value(i, 2.5) + 2.5).collect();
    let t: Vec<f32> = (0..n).map(|i| (i as f32 * 0.7) % 5.0).collect();
    let (loss, gs) = run(
        &|g, v| g.mse(&v[0], &v[1]).unwrap(),
        &[(p.clone(), vec![n, 1]), (t.clone(), vec![n, 1])],
    );
    let d: Vec<f64> = p
        .iter()
        .zip(&t)
        .map(|(&a, &b)| a as f64 - b as f64)
        .collect();
    let want = d.iter().map(|x| x * x).sum::<f64>() / n as f64;
    let dp: Vec<f64> = d.iter().map(|x| 2.0 * x / n as f64).collect();
    let dt: Vec<f64> = dp.iter().map(|x| -x).collect();
    check("mse pred", loss, want, &gs[0], &dp);
    check("mse target", loss, want, &gs[1], &dt);
}

/// The attention core built from the separate ops, as models/common.rs had it before the
/// fused op: splits, scaled scores, masked softmax, weighted values, merge.
fn attention_by_parts(
    g: &mut Graph,
    [q, k, v]: [&Var; 3],
    mask: Option<&Tensor>,
    (b, s, heads): (usize, usize, usize),
) -> Result<Var> {
    let h = q.shape()[1];
    let dh = h / heads;
    let split = |g: &mut Graph, t: &Var| -> Result<Var> {
        let t = g.reshape(t, &[b, s, heads, dh])?;
        let t = g.swap_middle(&t)?;
        g.reshape(&t, &[b * heads, s, dh])
    };
    let (q, k, v) = (split(g, q)?, split(g, k)?, split(g, v)?);
    let scores = g.matmul_scaled(&q, false, &k, true, 1.0 / (dh as f32).sqrt())?;
    let probs = g.softmax(&scores, mask, heads * s)?;
    let ctx = g.matmul(&probs, false, &v, false)?;
    let ctx = g.reshape(&ctx, &[b, heads, s, dh])?;
    let ctx = g.swap_middle(&ctx)?;
    g.reshape(&ctx, &[b * s, h])
}

/// An additive mask `[2, 3]` with the last key of the second sequence padded.
fn attention_mask(gpu: &Gpu) -> Tensor {
    Tensor::from_slice(gpu, &[0.0, 0.0, 0.0, 0.0, 0.0, f32::MIN], &[2, 3]).unwrap()
}

#[test]
fn attention_op_gradients() {
    let mut rng = common::rng("attention_op_gradients");
    let qkv: Vec<_> = (0..3).map(|_| rand_input(&mut rng, &[6, 4])).collect();
    gradcheck(
        "attention",
        qkv,
        &|g, v| {
            let mask = attention_mask(g.recorder().gpu());
            g.attention([&v[0], &v[1], &v[2]], Some(&mask), (2, 3, 2))
        },
        1e-2,
    );
}

#[test]
fn attention_op_has_the_bits_of_the_separate_ops() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("attention_op_has_the_bits_of_the_separate_ops");
    let (b, s, heads, hidden) = (2, 3, 2, 8);
    let data: Vec<Vec<f32>> = (0..4)
        .map(|_| random_vec(&mut rng, b * s * hidden, 1.0))
        .collect();
    let ts: Vec<Tensor> = data
        .iter()
        .map(|d| Tensor::from_slice(&gpu, d, &[b * s, hidden]).unwrap())
        .collect();
    let mask = attention_mask(&gpu);
    // `frozen`: the input (0, 1, 2 for q, k, v; 3 for none) taken as an untracked input,
    // as the first layer's key is when only query and value carry adapters.
    let run = |fused: bool, frozen: usize| -> Vec<Vec<u32>> {
        let mut g = Graph::new(&gpu);
        let v: Vec<Var> = ts[..3]
            .iter()
            .enumerate()
            .map(|(i, t)| if i == frozen { g.input(t) } else { g.param(t) })
            .collect();
        let qkv = [&v[0], &v[1], &v[2]];
        let out = if fused {
            g.attention(qkv, Some(&mask), (b, s, heads))
        } else {
            attention_by_parts(&mut g, qkv, Some(&mask), (b, s, heads))
        }
        .unwrap();
        let w = g.input(&ts[3]);
        let weighted = g.mul(&out, &w).unwrap();
        let l = g.sum(&weighted).unwrap();
        let grads = g.backward(&l).unwrap();
        g.submit().unwrap();
        let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|x| x.to_bits()).collect();
        let mut all = vec![bits(out.value())];
        all.extend(ts[..3].iter().map(|t| grads.of(t).map_or(Vec::new(), bits)));
        all
    };
    for frozen in [3, 0, 1, 2] {
        let fused = run(true, frozen);
        assert_eq!(fused, run(false, frozen), "input {frozen} frozen");
        let missing = fused[1..].iter().filter(|g| g.is_empty()).count();
        assert_eq!(missing, usize::from(frozen < 3));
    }
    // A hidden size that does not split into the heads is an error, not a panic.
    let mut g = Graph::new(&gpu);
    let v = g.param(&ts[0]);
    assert!(g.attention([&v, &v, &v], None, (b, s, 3)).is_err());
}
