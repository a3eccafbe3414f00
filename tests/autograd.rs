//! The tape: every op's backward against central finite differences of the GPU forward,
//! inside a graph (random upstream weights, then a scale, so a backward that ignores its
//! incoming gradient fails); accumulation across uses; no-grad; one submit per step.

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
            let mut plus = inputs.clone();
            plus[k].0[e] += h;
            let mut minus = inputs.clone();
            minus[k].0[e] -= h;
            let fd = (loss(&gpu, &plus, &w, f, false).0 - loss(&gpu, &minus, &w, f, false).0)
                / (2.0 * h as f64);
            let err = (fd - grad[e] as f64).abs() / scale;
            assert!(
                err < 2e-2,
                "{name}: input {k}[{e}]: fd {fd} vs backward {} (err {err:.2e})",
                grad[e]
            );
        }
    }
}

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
        vec![x.clone(), gamma, beta],
        &|g, v| g.layer_norm(&v[0], &v[1], &v[2], 1e-5),
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
