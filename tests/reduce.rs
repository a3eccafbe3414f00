//! Scalar reductions and losses against their f64 references (up to 16.8 million elements,
//! three sum stages), their backward kernels against the references, the references
//! against central finite differences, out-of-range labels, and shape errors.

mod common;

use common::{fd_grad, rel_max_abs, to64};

use capaboost::kernels::reduce::{self, cpu};
use capaboost::{Error, Indices, Tensor};
use common::{max_rel_err, random_vec, rel_frobenius};
use rand::Rng;

/// Relative error allowed for the reductions and losses: staged f32 sums with at most 16
/// sequential adds per level and tree levels above them (a few ulps per level).
const TOL: f64 = 1e-5;
/// Finite differences in f64 with h = 1e-5 (truncation ~ h^2, cancellation ~ 1e-16 / h).
const FD_TOL: f64 = 1e-7;

/// Element counts: one, odd, just above one chunk (4096), two stages, and three stages
/// (more than 4096^2 elements, also more than 65535 workgroups of 256 for broadcast).
const SIZES: [usize; 6] = [1, 3, 4097, 70001, 1_000_003, 16_777_259];

fn scalar(gpu: &capaboost::Gpu, v: f32) -> Tensor {
    Tensor::from_slice(gpu, &[v], &[1]).unwrap()
}

/// A nonzero random upstream gradient.
fn random_g(rng: &mut rand::rngs::StdRng) -> f32 {
    let g: f32 = rng.random_range(0.5..2.0);
    if rng.random_bool(0.5) { g } else { -g }
}

#[test]
fn sum_and_mean_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("sum_and_mean_match_reference");
    for n in SIZES {
        // Offset by 0.25: a sum that cannot cancel to ~0, so a relative error is meaningful.
        let x: Vec<f32> = random_vec(&mut rng, n, 1.0)
            .iter()
            .map(|v| v + 0.25)
            .collect();
        let tx = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
        let (s, m) = gpu
            .run(|rec| Ok((reduce::sum(rec, &tx)?, reduce::mean(rec, &tx)?)))
            .unwrap();
        assert_eq!((s.shape(), m.shape()), (&[1][..], &[1][..]));
        let es = max_rel_err(&s.to_vec().unwrap(), &cpu::sum(&x), 1e-30);
        let em = max_rel_err(&m.to_vec().unwrap(), &cpu::mean(&x), 1e-30);
        eprintln!("n={n}: sum rel err {es:.2e}, mean rel err {em:.2e}");
        assert!(es <= TOL && em <= TOL, "n={n}");
    }
}

#[test]
fn zero_mean_sums_are_accurate_relative_to_the_absolute_sum() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("zero_mean_sums_are_accurate_relative_to_the_absolute_sum");
    for n in [70001, 1_000_003] {
        let x = random_vec(&mut rng, n, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
        let s = gpu
            .run(|rec| reduce::sum(rec, &tx))
            .unwrap()
            .to_vec()
            .unwrap()[0];
        // Cancellation makes the relative error of the result itself meaningless; the
        // error of a summation is bounded in terms of sum |x|.
        let abs_sum: f64 = x.iter().map(|v| v.abs() as f64).sum();
        let e = (s as f64 - cpu::sum(&x)[0]).abs() / abs_sum;
        eprintln!("n={n}: |err| / sum|x| = {e:.2e}");
        assert!(e <= 1e-6, "n={n}");
    }
}

#[test]
fn empty_sum_is_zero_and_empty_mean_is_an_error() {
    let Some(gpu) = common::gpu() else { return };
    let t = Tensor::from_slice(&gpu, &[], &[0, 3]).unwrap();
    let s = gpu.run(|rec| reduce::sum(rec, &t)).unwrap();
    assert_eq!(s.to_vec().unwrap(), vec![0.0]);
    let err = gpu.run(|rec| reduce::mean(rec, &t)).unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[0, 3]"),
        "{err}"
    );
}

#[test]
fn broadcast_scalar_matches_reference_and_finite_differences() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("broadcast_scalar_matches_reference_and_finite_differences");
    for shape in [vec![1], vec![3, 5], vec![37, 67], vec![16_777_259]] {
        let n: usize = shape.iter().product();
        let g = random_g(&mut rng);
        let scale = (1.0 / n as f64) as f32;
        let tg = scalar(&gpu, g);
        let (b1, bm) = gpu
            .run(|rec| {
                Ok((
                    reduce::broadcast_scalar(rec, &tg, &shape, 1.0)?,
                    reduce::broadcast_scalar(rec, &tg, &shape, scale)?,
                ))
            })
            .unwrap();
        assert_eq!(b1.shape(), &shape[..]);
        let e1 = max_rel_err(
            &b1.to_vec().unwrap(),
            &cpu::broadcast_scalar(g, n, 1.0),
            1e-30,
        );
        let em = max_rel_err(
            &bm.to_vec().unwrap(),
            &cpu::broadcast_scalar(g, n, scale),
            1e-30,
        );
        eprintln!("broadcast {shape:?}: {e1:.2e} {em:.2e}");
        assert!(e1 <= 1e-6 && em <= 1e-6, "{shape:?}");
    }
    // The references are the gradients of g * sum and g * mean.
    for n in [1, 3, 17] {
        let x = to64(&random_vec(&mut rng, n, 1.0));
        let g = random_g(&mut rng);
        let fd_sum = fd_grad(&x, |v| g as f64 * v.iter().sum::<f64>());
        let fd_mean = fd_grad(&x, |v| g as f64 * v.iter().sum::<f64>() / n as f64);
        let e1 = rel_max_abs(&cpu::broadcast_scalar(g, n, 1.0), &fd_sum);
        // scale 1/n as the f32 the kernels get: compare at f32 precision.
        let em = rel_max_abs(
            &cpu::broadcast_scalar(g, n, (1.0 / n as f64) as f32),
            &fd_mean,
        );
        eprintln!("broadcast FD n={n}: sum {e1:.2e} mean {em:.2e}");
        assert!(e1 <= FD_TOL && em <= 1e-7, "n={n}");
    }
}

#[test]
fn mse_forward_and_backward_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("mse_forward_and_backward_match_reference");
    for (i, n) in [1, 5, 385, 70001, 1_000_003].into_iter().enumerate() {
        // Odd shapes: a 2-D view where it divides.
        let shape = if n == 385 { vec![5, 77] } else { vec![n] };
        let pred = random_vec(&mut rng, n, 2.0);
        let target = random_vec(&mut rng, n, 2.0);
        let g = random_g(&mut rng);
        let tp = Tensor::from_slice(&gpu, &pred, &shape).unwrap();
        let tt = Tensor::from_slice(&gpu, &target, &shape).unwrap();
        let tg = scalar(&gpu, g);
        let (loss, grad) = gpu
            .run(|rec| {
                Ok((
                    reduce::mse(rec, &tp, &tt)?,
                    reduce::mse_backward(rec, &tp, &tt, &tg)?,
                ))
            })
            .unwrap();
        let el = max_rel_err(&loss.to_vec().unwrap(), &cpu::mse(&pred, &target), 1e-30);
        let eg = rel_frobenius(
            &grad.to_vec().unwrap(),
            &cpu::mse_backward(&pred, &target, g),
        );
        eprintln!("mse n={n}: loss {el:.2e} grad {eg:.2e} (case {i})");
        assert!(el <= TOL && eg <= TOL, "n={n}");
    }
}

#[test]
fn mse_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("mse_backward_reference_matches_finite_differences");
    for n in [1, 5, 23] {
        let pred = random_vec(&mut rng, n, 2.0);
        let target = random_vec(&mut rng, n, 2.0);
        let g = random_g(&mut rng);
        let t64 = to64(&target);
        let fd = fd_grad(&to64(&pred), |p| g as f64 * cpu::mse_f64(p, &t64));
        let e = rel_max_abs(&cpu::mse_backward(&pred, &target, g), &fd);
        eprintln!("mse FD n={n}: {e:.2e}");
        assert!(e <= FD_TOL, "n={n}");
    }
}

fn random_labels(rng: &mut rand::rngs::StdRng, rows: usize, classes: usize) -> Vec<u32> {
    (0..rows)
        .map(|_| rng.random_range(0..classes as u32))
        .collect()
}

/// Cross-entropy of `logits` (`[labels.len(), C]`) and its gradient scaled by `g`, read back.
fn cross_entropy_on_gpu(
    gpu: &capaboost::Gpu,
    logits: &[f32],
    labels: &[u32],
    g: f32,
) -> (Vec<f32>, Vec<f32>) {
    let rows = labels.len();
    let tl = Tensor::from_slice(gpu, logits, &[rows, logits.len() / rows]).unwrap();
    let ti = Indices::from_slice(gpu, labels, &[rows]).unwrap();
    let tg = scalar(gpu, g);
    let (loss, grad) = gpu
        .run(|rec| {
            Ok((
                reduce::cross_entropy(rec, &tl, &ti)?,
                reduce::cross_entropy_backward(rec, &tl, &ti, &tg)?,
            ))
        })
        .unwrap();
    (loss.to_vec().unwrap(), grad.to_vec().unwrap())
}

#[test]
fn cross_entropy_forward_and_backward_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("cross_entropy_forward_and_backward_match_reference");
    // 70001 rows: a 2-D grid of row workgroups; 1000 classes: several per thread.
    // Scale 8: confident rows whose loss log(1 + rest) is as small as 1e-7 and whose
    // label gradient -rest / (1 + rest) would cancel if computed as softmax - 1.
    for (rows, classes, scale) in [
        (1, 1, 4.0),
        (1, 2, 4.0),
        (1, 2, 8.0),
        (3, 5, 4.0),
        (9, 3, 8.0),
        (37, 67, 4.0),
        (5, 385, 4.0),
        (4, 1000, 4.0),
        (70001, 3, 4.0),
    ] {
        let logits = random_vec(&mut rng, rows * classes, scale);
        let labels = random_labels(&mut rng, rows, classes);
        reduce::check_labels(&labels, classes).unwrap();
        let g = random_g(&mut rng);
        let (got_loss, got_grad) = cross_entropy_on_gpu(&gpu, &logits, &labels, g);
        let want_loss = cpu::cross_entropy(&logits, &labels, classes);
        let want_grad = cpu::cross_entropy_backward(&logits, &labels, classes, g);
        let el = max_rel_err(&got_loss, &want_loss, 1e-30);
        let eg = rel_frobenius(&got_grad, &want_grad);
        eprintln!("cross_entropy [{rows}, {classes}]: loss {el:.2e} grad {eg:.2e}");
        if classes == 1 {
            // log(1) - x = 0 and softmax = onehot: both exactly 0.
            assert_eq!(got_loss, vec![0.0]);
            assert!(got_grad.iter().all(|&v| v == 0.0));
        } else {
            assert!(el <= TOL && eg <= TOL, "[{rows}, {classes}]");
        }
    }
}

#[test]
fn confident_rows_keep_relative_precision() {
    let Some(gpu) = common::gpu() else { return };
    // One row per margin, the label on the max: loss = log(1 + e^-margin) down to 2e-9,
    // and gradients +-e^-margin / (1 + e^-margin): each element checked relatively.
    // Margins stop at 20 because lavapipe's exp itself loses relative precision beyond
    // (measured: 5e-6 at e^-22, 6e-5 at e^-26), which no loss kernel can undo.
    for margin in [0.5f32, 3.0, 7.0, 12.5, 20.0] {
        let logits = [1.25 + margin, 1.25];
        let labels = [0u32];
        let (loss, grad) = cross_entropy_on_gpu(&gpu, &logits, &labels, 1.0);
        let el = max_rel_err(&loss, &cpu::cross_entropy(&logits, &labels, 2), 1e-300);
        let eg = max_rel_err(
            &grad,
            &cpu::cross_entropy_backward(&logits, &labels, 2, 1.0),
            1e-300,
        );
        eprintln!("margin {margin}: loss {el:.2e} grad {eg:.2e}");
        assert!(
            el <= TOL && eg <= TOL,
            "margin {margin}: loss {el:.2e} grad {eg:.2e}"
        );
    }
}

#[test]
fn cross_entropy_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("cross_entropy_backward_reference_matches_finite_differences");
    for (rows, classes) in [(1, 2), (3, 5), (4, 11)] {
        let logits = random_vec(&mut rng, rows * classes, 3.0);
        let mut labels = random_labels(&mut rng, rows, classes);
        if rows == 4 {
            labels[2] = classes as u32 + 3; // out of range: no loss, no gradient
        }
        let g = random_g(&mut rng);
        let fd = fd_grad(&to64(&logits), |l| {
            g as f64 * cpu::cross_entropy_f64(l, &labels, classes)
        });
        let e = rel_max_abs(
            &cpu::cross_entropy_backward(&logits, &labels, classes, g),
            &fd,
        );
        eprintln!("cross_entropy FD [{rows}, {classes}]: {e:.2e}");
        assert!(e <= FD_TOL, "[{rows}, {classes}]");
    }
}

#[test]
fn out_of_range_labels_contribute_nothing() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("out_of_range_labels_contribute_nothing");
    let (rows, classes) = (7, 5);
    let logits = random_vec(&mut rng, rows * classes, 3.0);
    let mut labels = random_labels(&mut rng, rows, classes);
    labels[1] = classes as u32;
    labels[4] = u32::MAX;
    let err = reduce::check_labels(&labels, classes).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("label 5 at index 1"), "{err}");
    let g = random_g(&mut rng);
    let tl = Tensor::from_slice(&gpu, &logits, &[rows, classes]).unwrap();
    let ti = Indices::from_slice(&gpu, &labels, &[rows]).unwrap();
    let tg = scalar(&gpu, g);
    let (loss, grad) = gpu
        .run(|rec| {
            Ok((
                reduce::cross_entropy(rec, &tl, &ti)?,
                reduce::cross_entropy_backward(rec, &tl, &ti, &tg)?,
            ))
        })
        .unwrap();
    let got = loss.to_vec().unwrap();
    let want = cpu::cross_entropy(&logits, &labels, classes);
    let el = max_rel_err(&got, &want, 1e-30);
    let grad = grad.to_vec().unwrap();
    let eg = rel_frobenius(
        &grad,
        &cpu::cross_entropy_backward(&logits, &labels, classes, g),
    );
    eprintln!("out-of-range labels: loss {el:.2e} grad {eg:.2e}");
    assert!(got[0].is_finite() && el <= TOL && eg <= TOL);
    for r in [1, 4] {
        assert!(
            grad[r * classes..(r + 1) * classes]
                .iter()
                .all(|&v| v == 0.0)
        );
    }
    // Valid rows sum to zero gradient but are not zero.
    assert!(grad[..classes].iter().any(|&v| v != 0.0));
}

#[test]
fn losses_chain_into_backward_without_readback() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("losses_chain_into_backward_without_readback");
    // d(mean(x))/dx via a [1] gradient produced on the GPU by another reduction: the
    // upstream gradient is sum(w), so every element must be sum(w) / n.
    let (n, m) = (1001, 37);
    let x = random_vec(&mut rng, n, 1.0);
    let w: Vec<f32> = random_vec(&mut rng, m, 1.0)
        .iter()
        .map(|v| v + 1.5)
        .collect();
    let tx = Tensor::from_slice(&gpu, &x, &[n]).unwrap();
    let tw = Tensor::from_slice(&gpu, &w, &[m]).unwrap();
    let grad = gpu
        .run(|rec| {
            let _loss = reduce::mean(rec, &tx)?;
            let g = reduce::sum(rec, &tw)?;
            reduce::broadcast_scalar(rec, &g, tx.shape(), (1.0 / n as f64) as f32)
        })
        .unwrap();
    let want = vec![cpu::sum(&w)[0] / n as f64; n];
    let e = max_rel_err(&grad.to_vec().unwrap(), &want, 1e-30);
    eprintln!("chained gradient: {e:.2e}");
    assert!(e <= TOL);
}

#[test]
fn shape_errors_name_both_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let t = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(&gpu, &vec![0.5; n], shape).unwrap()
    };
    let idx = |n: usize| Indices::from_slice(&gpu, &vec![0; n], &[n]).unwrap();
    let shape_err = |r: capaboost::Result<Tensor>, needles: &[&str]| {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{err}");
        for s in needles {
            assert!(err.to_string().contains(s), "{err} lacks {s}");
        }
    };
    let g = scalar(&gpu, 1.0);
    shape_err(
        gpu.run(|rec| reduce::mse(rec, &t(&[3, 4]), &t(&[4, 3]))),
        &["pred", "target", "[3, 4]", "[4, 3]"],
    );
    shape_err(
        gpu.run(|rec| reduce::mse_backward(rec, &t(&[3]), &t(&[4]), &g)),
        &["[3]", "[4]"],
    );
    shape_err(
        gpu.run(|rec| reduce::mse_backward(rec, &t(&[3]), &t(&[3]), &t(&[2]))),
        &["g", "[2]", "[1]"],
    );
    shape_err(
        gpu.run(|rec| reduce::broadcast_scalar(rec, &t(&[1, 1]), &[4], 1.0)),
        &["g", "[1, 1]"],
    );
    shape_err(
        gpu.run(|rec| reduce::mse(rec, &t(&[0]), &t(&[0]))),
        &["[0]"],
    );
    shape_err(
        gpu.run(|rec| reduce::cross_entropy(rec, &t(&[12]), &idx(12))),
        &["logits", "[12]", "[N, C]"],
    );
    shape_err(
        gpu.run(|rec| reduce::cross_entropy(rec, &t(&[3, 4]), &idx(4))),
        &["labels", "[4]", "[3, 4]", "[3]"],
    );
    shape_err(
        gpu.run(|rec| reduce::cross_entropy(rec, &t(&[3, 0]), &idx(3))),
        &["[3, 0]"],
    );
    shape_err(
        gpu.run(|rec| reduce::cross_entropy_backward(rec, &t(&[3, 4]), &idx(3), &t(&[3]))),
        &["g", "[3]", "[1]"],
    );
    shape_err(
        gpu.run(|rec| reduce::cross_entropy_backward(rec, &t(&[3, 4]), &idx(2), &g)),
        &["labels", "[2]", "[3, 4]"],
    );
    assert!(reduce::check_labels(&[0, 4, 2], 5).is_ok());
    assert!(reduce::check_labels(&[], 0).is_ok());
}
