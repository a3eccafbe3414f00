//! Activations, dropout, bias add and column sums against their f64 CPU references on odd
//! shapes; backward passes against the CPU backward and the CPU backward against central
//! finite differences of the CPU forward.

mod common;

use capaboost::kernels::activations::{self, cpu};
use capaboost::{Error, Gpu, Tensor};
use common::{max_rel_err, random_vec};
use rand::{Rng, rngs::StdRng};

/// Shapes with odd widths (1, 5, 67, 385) and row counts (1, 3, 37), plus a long vector.
const SHAPES: [&[usize]; 7] = [
    &[1],
    &[3, 5],
    &[37, 67],
    &[3, 385],
    &[2, 3, 67],
    &[37, 1],
    &[70_001],
];

/// One f32 rounding after a short f32 computation: a few units of 2^-24.
const TOL_ROUNDED: f64 = 1e-6;
/// Activations built from f32 polynomials and exp: erfc's fit is good to 1.2e-7, the
/// Gaussian factor is evaluated to a few ulp (exact split of x^2, Cody-Waite reduction),
/// and the rest is a handful of f32 roundings; measured up to ~7e-7, so 2e-6.
const TOL_ACT: f64 = 2e-6;
/// Finite differences in f64 with h = 1e-5: truncation ~h^2 f''' and rounding ~eps / h,
/// both well below 1e-7 of the gradient's scale.
const TOL_FD: f64 = 1e-7;
const H: f64 = 1e-5;

fn upload(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(gpu, data, shape).unwrap()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Random upstream gradients in ±[0.1, 2): never zero, so an ignored `dy` shows.
fn random_dy(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let m: f32 = rng.random_range(0.1..2.0);
            if rng.random::<bool>() { m } else { -m }
        })
        .collect()
}

/// Largest `|got - want| / scale` where `scale` is the size of the terms that were summed:
/// the right measure where the exact result cancels to (near) zero.
fn max_scaled_err(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .zip(scale)
        .map(|((&g, &w), &s)| (g as f64 - w).abs() / s.max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max)
}

/// Central difference of a scalar f64 function.
fn central(f: impl Fn(f64) -> f64, x: f64) -> f64 {
    (f(x + H) - f(x - H)) / (2.0 * H)
}

#[test]
fn gelu_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gelu_matches_reference");
    for shape in SHAPES {
        let x = random_vec(&mut rng, numel(shape), 8.0);
        let tx = upload(&gpu, &x, shape);
        let y = gpu.run(|rec| activations::gelu(rec, &tx)).unwrap();
        assert_eq!(y.shape(), shape);
        // The left tail underflows f32 near x = -13; a 1e-30 floor ignores denormals only.
        let err = max_rel_err(&y.to_vec().unwrap(), &cpu::gelu(&x), 1e-30);
        eprintln!("gelu {shape:?}: max rel err {err:.2e}");
        assert!(err <= TOL_ACT, "{shape:?}: {err:.2e}");
    }
}

#[test]
fn gelu_tails_and_special_points() {
    let Some(gpu) = common::gpu() else { return };
    // The far left tail (relative accuracy of erfc), the zero, the derivative's zero
    // near -0.7518, the right side where erf -> 1.
    let x: Vec<f32> = vec![
        -12.0, -11.0, -9.0, -7.5, -6.0, -4.0, -2.0, -0.7518, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 0.5,
        3.0, 6.0, 10.0, 1e4,
    ];
    let tx = upload(&gpu, &x, &[x.len()]);
    let y = gpu.run(|rec| activations::gelu(rec, &tx)).unwrap();
    let got = y.to_vec().unwrap();
    let want = cpu::gelu(&x);
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let rel = (g as f64 - w).abs() / w.abs().max(1e-30);
        eprintln!("gelu({}) = {g:e} want {w:e} rel {rel:.2e}", x[i]);
        assert!(rel <= TOL_ACT, "x = {}", x[i]);
    }
}

#[test]
fn gelu_backward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gelu_backward_matches_reference");
    for shape in SHAPES {
        let n = numel(shape);
        let x = random_vec(&mut rng, n, 8.0);
        let dy = random_dy(&mut rng, n);
        let (tx, tdy) = (upload(&gpu, &x, shape), upload(&gpu, &dy, shape));
        let dx = gpu
            .run(|rec| activations::gelu_backward(rec, &tx, &tdy))
            .unwrap();
        // Phi(x) + x phi(x) crosses zero near x = -0.75: measure the error against the
        // size of the two terms that cancel there.
        let scale: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &d)| {
                let v = v as f64;
                (d as f64).abs() * (cpu::phi_cdf(v) + (v * cpu::phi_pdf(v)).abs())
            })
            .collect();
        let got = dx.to_vec().unwrap();
        let want = cpu::gelu_backward(&x, &dy);
        let err = max_scaled_err(&got, &want, &scale);
        let plain = max_rel_err(&got, &want, 1e-30);
        eprintln!("gelu_backward {shape:?}: max scaled err {err:.2e} (plain rel {plain:.2e})");
        assert!(err <= TOL_ACT, "{shape:?}: {err:.2e}");
    }
}

#[test]
fn gelu_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("gelu_backward_reference_matches_finite_differences");
    let x = random_vec(&mut rng, 4001, 6.0);
    let dy = random_dy(&mut rng, x.len());
    let grad = cpu::gelu_backward(&x, &dy);
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let fd = dy[i] as f64 * central(cpu::gelu_f64, x[i] as f64);
        // GELU's derivative is O(1) at its largest; scale by |dy| so zeros of the
        // derivative do not blow up the relative error.
        let e = (grad[i] - fd).abs() / (dy[i] as f64).abs();
        worst = worst.max(e);
    }
    eprintln!("gelu FD: max err {worst:.2e}");
    assert!(worst <= TOL_FD, "{worst:.2e}");
}

#[test]
fn tanh_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("tanh_matches_reference");
    for shape in SHAPES {
        let mut x = random_vec(&mut rng, numel(shape), 4.0);
        // Both sides of the series / exp switch at |x| = 0.3, and tiny arguments.
        for v in x.iter_mut().step_by(3) {
            *v *= 0.1;
        }
        for v in x.iter_mut().skip(1).step_by(7) {
            *v *= 1e-4;
        }
        let tx = upload(&gpu, &x, shape);
        let y = gpu.run(|rec| activations::tanh(rec, &tx)).unwrap();
        let err = max_rel_err(&y.to_vec().unwrap(), &cpu::tanh(&x), 1e-30);
        eprintln!("tanh {shape:?}: max rel err {err:.2e}");
        assert!(err <= TOL_ACT, "{shape:?}: {err:.2e}");
    }
}

#[test]
fn tanh_is_finite_and_saturates_for_large_arguments() {
    let Some(gpu) = common::gpu() else { return };
    let x: Vec<f32> = vec![
        -3e38, -1e6, -100.0, -20.0, -15.0, -9.0, -0.3, -0.29999, 0.0, 0.29999, 0.3, 9.0, 15.0,
        20.0, 100.0, 1e6, 3e38,
    ];
    let tx = upload(&gpu, &x, &[x.len()]);
    let y = gpu.run(|rec| activations::tanh(rec, &tx)).unwrap();
    let got = y.to_vec().unwrap();
    let err = max_rel_err(&got, &cpu::tanh(&x), 1e-30);
    eprintln!("tanh special points: {got:?}, max rel err {err:.2e}");
    assert!(got.iter().all(|v| v.is_finite()));
    assert!(err <= TOL_ACT, "{err:.2e}");
}

#[test]
fn tanh_backward_matches_reference_and_finite_differences() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("tanh_backward_matches_reference_and_finite_differences");
    for shape in SHAPES {
        let n = numel(shape);
        let x = random_vec(&mut rng, n, 5.0);
        // The forward output as the training step would hold it: tanh rounded to f32, many
        // values close to ±1 where 1 - y^2 cancels.
        let y: Vec<f32> = x.iter().map(|&v| (v as f64).tanh() as f32).collect();
        let dy = random_dy(&mut rng, n);
        let (ty, tdy) = (upload(&gpu, &y, shape), upload(&gpu, &dy, shape));
        let dx = gpu
            .run(|rec| activations::tanh_backward(rec, &ty, &tdy))
            .unwrap();
        let err = max_rel_err(&dx.to_vec().unwrap(), &cpu::tanh_backward(&y, &dy), 1e-30);
        eprintln!("tanh_backward {shape:?}: max rel err {err:.2e}");
        assert!(err <= TOL_ROUNDED, "{shape:?}: {err:.2e}");
    }
    // The reference against finite differences, all in f64 (y = tanh(x) unrounded).
    let x = random_vec(&mut rng, 4001, 4.0);
    let dy = random_dy(&mut rng, x.len());
    let mut worst = 0.0f64;
    for (&v, &d) in x.iter().zip(&dy) {
        let v = v as f64;
        let grad = cpu::tanh_backward_f64(v.tanh(), d as f64);
        let fd = d as f64 * central(f64::tanh, v);
        worst = worst.max((grad - fd).abs() / (grad.abs().max(1e-300)));
    }
    eprintln!("tanh FD: max rel err {worst:.2e}");
    assert!(worst <= 1e-6, "{worst:.2e}");
}

#[test]
fn relu_and_backward_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("relu_and_backward_match_reference");
    for shape in SHAPES {
        let n = numel(shape);
        let mut x = random_vec(&mut rng, n, 3.0);
        if n > 4 {
            // The kink itself: gradient 0 at x = 0 (and at -0).
            x[1] = 0.0;
            x[3] = -0.0;
        }
        let dy = random_dy(&mut rng, n);
        let (tx, tdy) = (upload(&gpu, &x, shape), upload(&gpu, &dy, shape));
        let (y, dx) = gpu
            .run(|rec| {
                Ok((
                    activations::relu(rec, &tx)?,
                    activations::relu_backward(rec, &tx, &tdy)?,
                ))
            })
            .unwrap();
        let e_f = max_rel_err(&y.to_vec().unwrap(), &cpu::relu(&x), 1e-30);
        let e_b = max_rel_err(&dx.to_vec().unwrap(), &cpu::relu_backward(&x, &dy), 1e-30);
        eprintln!("relu {shape:?}: forward err {e_f:.2e}, backward err {e_b:.2e}");
        assert!(e_f == 0.0 && e_b == 0.0, "{shape:?}");
    }
    // The reference against finite differences away from the kink.
    let x: Vec<f32> = random_vec(&mut rng, 4001, 3.0)
        .into_iter()
        .filter(|v| v.abs() > 1e-3)
        .collect();
    let dy = random_dy(&mut rng, x.len());
    let grad = cpu::relu_backward(&x, &dy);
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let fd = dy[i] as f64 * central(cpu::relu_f64, x[i] as f64);
        worst = worst.max((grad[i] - fd).abs() / (dy[i] as f64).abs());
    }
    eprintln!("relu FD: max err {worst:.2e}");
    assert!(worst <= TOL_FD, "{worst:.2e}");
}

/// Inputs with no zeros, so a kept element is exactly a non-zero output.
fn nonzero_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    random_dy(rng, n)
}

#[test]
fn dropout_mask_matches_cpu_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("dropout_mask_matches_cpu_bit_for_bit");
    for (shape, p) in SHAPES.iter().zip([0.1f32, 0.5, 0.9, 0.3, 0.25, 0.7, 0.1]) {
        let n = numel(shape);
        let x = nonzero_vec(&mut rng, n);
        let dy = nonzero_vec(&mut rng, n);
        let seed: u64 = rng.random();
        let stream: u32 = rng.random();
        let (tx, tdy) = (upload(&gpu, &x, shape), upload(&gpu, &dy, shape));
        let (y, dx) = gpu
            .run(|rec| {
                Ok((
                    activations::dropout(rec, &tx, p, seed, stream)?,
                    activations::dropout_backward(rec, &tdy, p, seed, stream)?,
                ))
            })
            .unwrap();
        let (y, dx) = (y.to_vec().unwrap(), dx.to_vec().unwrap());
        let scale = (1.0 / (1.0 - p as f64)) as f32;
        for e in 0..n {
            let keep = activations::dropout_keep_cpu(seed, stream, e as u32, p);
            let want_y = if keep { x[e] * scale } else { 0.0 };
            let want_dx = if keep { dy[e] * scale } else { 0.0 };
            assert_eq!(y[e].to_bits(), want_y.to_bits(), "{shape:?} p={p} e={e}");
            assert_eq!(dx[e].to_bits(), want_dx.to_bits(), "{shape:?} p={p} e={e}");
        }
        let e_f = max_rel_err(&y, &cpu::dropout(&x, p, seed, stream), 1e-30);
        let e_b = max_rel_err(&dx, &cpu::dropout_backward(&dy, p, seed, stream), 1e-30);
        eprintln!("dropout {shape:?} p={p}: forward err {e_f:.2e}, backward err {e_b:.2e}");
        assert!(e_f <= TOL_ROUNDED && e_b <= TOL_ROUNDED);
    }
}

#[test]
fn dropout_keeps_the_right_fraction_and_depends_on_seed_and_stream() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("dropout_keeps_the_right_fraction");
    let n = 100_000;
    let x = nonzero_vec(&mut rng, n);
    let tx = upload(&gpu, &x, &[n]);
    let seed: u64 = rng.random();
    let mask = |p: f32, seed: u64, stream: u32| -> Vec<bool> {
        let y = gpu
            .run(|rec| activations::dropout(rec, &tx, p, seed, stream))
            .unwrap();
        y.to_vec().unwrap().iter().map(|&v| v != 0.0).collect()
    };
    for p in [0.1f32, 0.5, 0.9] {
        let m = mask(p, seed, 0);
        let kept = m.iter().filter(|&&k| k).count() as f64 / n as f64;
        eprintln!("p={p}: kept fraction {kept:.4} (want {:.4})", 1.0 - p);
        assert!((kept - (1.0 - p as f64)).abs() <= 0.01, "p={p}: {kept}");
        // Another seed, another stream: different masks, each with the right fraction.
        for (s2, st2) in [(seed ^ 1, 0), (seed.wrapping_add(1 << 32), 0), (seed, 1)] {
            let m2 = mask(p, s2, st2);
            let differ = m.iter().zip(&m2).filter(|(a, b)| a != b).count() as f64 / n as f64;
            // Independent masks differ on 2 p (1 - p) of the elements.
            let expect = 2.0 * p as f64 * (1.0 - p as f64);
            eprintln!("  seed {s2} stream {st2}: differs on {differ:.4} (expect {expect:.4})");
            assert!(
                (differ - expect).abs() <= 0.01,
                "p={p} seed {s2} stream {st2}"
            );
        }
        // Same (seed, stream): the same mask (a replayed step).
        assert_eq!(mask(p, seed, 0), m);
    }
}

#[test]
fn dropout_with_p_zero_is_a_copy_and_bad_p_is_an_error() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("dropout_with_p_zero_is_a_copy");
    let x = random_vec(&mut rng, 1001, 5.0);
    let tx = upload(&gpu, &x, &[7, 143]);
    let y = gpu
        .run(|rec| activations::dropout(rec, &tx, 0.0, 42, 3))
        .unwrap();
    assert_eq!(y.shape(), &[7, 143]);
    assert_eq!(y.to_vec().unwrap(), x);
    // A copy, not the input itself: overwriting the input leaves it unchanged.
    tx.write(&vec![0.0; x.len()]).unwrap();
    assert_eq!(y.to_vec().unwrap(), x);
    for p in [1.0f32, 1.5, -0.1, f32::NAN] {
        let err = gpu
            .run(|rec| activations::dropout(rec, &tx, p, 42, 3))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "p={p}: {err}");
        let err = gpu
            .run(|rec| activations::dropout_backward(rec, &tx, p, 42, 3))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "p={p}: {err}");
    }
}

#[test]
fn dropout_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("dropout_backward_reference_matches_finite_differences");
    let n = 2001;
    let x = random_vec(&mut rng, n, 3.0);
    let dy = random_dy(&mut rng, n);
    let (p, seed, stream) = (0.3f32, rng.random::<u64>(), 5u32);
    let grad = cpu::dropout_backward(&dy, p, seed, stream);
    let scale = 1.0 / (1.0 - p as f64);
    let mut worst = 0.0f64;
    for i in 0..n {
        // Loss L = sum dy * dropout(x); perturb x_i alone (dropout is elementwise).
        let keep = activations::dropout_keep_cpu(seed, stream, i as u32, p);
        let f = |v: f64| if keep { v * scale } else { 0.0 };
        let fd = dy[i] as f64 * central(f, x[i] as f64);
        worst = worst.max((grad[i] - fd).abs() / (dy[i] as f64).abs());
    }
    eprintln!("dropout FD: max err {worst:.2e}");
    assert!(worst <= TOL_FD, "{worst:.2e}");
}

#[test]
fn add_bias_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("add_bias_matches_reference");
    for shape in SHAPES {
        let width = *shape.last().unwrap();
        let x = random_vec(&mut rng, numel(shape), 4.0);
        let b = random_vec(&mut rng, width, 4.0);
        let (tx, tb) = (upload(&gpu, &x, shape), upload(&gpu, &b, &[width]));
        let y = gpu.run(|rec| activations::add_bias(rec, &tx, &tb)).unwrap();
        assert_eq!(y.shape(), shape);
        // One rounded add; measured against the summands' size since x + b may cancel.
        let want = cpu::add_bias(&x, &b);
        let scale: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| (v.abs() + b[i % width].abs()) as f64)
            .collect();
        let err = max_scaled_err(&y.to_vec().unwrap(), &want, &scale);
        eprintln!("add_bias {shape:?}: max scaled err {err:.2e}");
        assert!(err <= TOL_ROUNDED, "{shape:?}: {err:.2e}");
    }
}

/// Column sums: error per column relative to the sum of |g| over that column (the sum's
/// condition-free scale), plus the plain relative error where the sum does not cancel.
fn check_sum_rows(gpu: &Gpu, rng: &mut StdRng, shape: &[usize], tol: f64) {
    let n = *shape.last().unwrap();
    let g = random_vec(rng, numel(shape), 2.0);
    let tg = upload(gpu, &g, shape);
    let s = gpu.run(|rec| activations::sum_rows(rec, &tg)).unwrap();
    assert_eq!(s.shape(), &[n]);
    let got = s.to_vec().unwrap();
    let want = cpu::sum_rows(&g, n);
    let abs_sum = {
        let mut a = vec![0.0f64; n];
        for (i, &v) in g.iter().enumerate() {
            a[i % n] += (v as f64).abs();
        }
        a
    };
    let scaled = max_scaled_err(&got, &want, &abs_sum);
    let plain = max_rel_err(&got, &want, 1e-30);
    eprintln!("sum_rows {shape:?}: max err / sum|g| {scaled:.2e}, plain max rel {plain:.2e}");
    assert!(scaled <= tol, "{shape:?}: {scaled:.2e}");
}

#[test]
fn sum_rows_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("sum_rows_matches_reference");
    // A tree of chunks of 256 with 64-long serial runs: a few units of 2^-24 of sum |g|.
    for shape in [
        &[70_001, 5][..],
        &[3, 385],
        &[1, 67],
        &[37, 1],
        &[2, 3, 67],
        &[5],
        &[257, 65],
        &[65_537, 1],
        &[300_007, 3],
    ] {
        check_sum_rows(&gpu, &mut rng, shape, 1e-6);
    }
}

#[test]
fn sum_rows_is_the_bias_gradient_by_finite_differences() {
    let mut rng = common::rng("sum_rows_is_the_bias_gradient_by_finite_differences");
    let (rows, n) = (37, 67);
    let x = random_vec(&mut rng, rows * n, 2.0);
    let b = random_vec(&mut rng, n, 2.0);
    let dy = random_dy(&mut rng, rows * n);
    let grad = cpu::sum_rows(&dy, n);
    // L(b) = sum dy * (x + b) in f64.
    let loss = |b: &[f64]| -> f64 {
        x.iter()
            .zip(&dy)
            .enumerate()
            .map(|(i, (&v, &d))| d as f64 * (v as f64 + b[i % n]))
            .sum()
    };
    let b64: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    let mut worst = 0.0f64;
    for j in 0..n {
        let (mut bp, mut bm) = (b64.clone(), b64.clone());
        bp[j] += H;
        bm[j] -= H;
        let fd = (loss(&bp) - loss(&bm)) / (2.0 * H);
        let col_abs: f64 = (0..rows).map(|r| (dy[r * n + j] as f64).abs()).sum();
        worst = worst.max((grad[j] - fd).abs() / col_abs);
    }
    eprintln!("bias gradient FD: max err / sum|dy| {worst:.2e}");
    // The loss sums ~2500 terms of size ~4, so its f64 rounding (~1e-12) over 2h dominates.
    assert!(worst <= 1e-6, "{worst:.2e}");
}

#[test]
fn elementwise_kernels_cover_more_than_65535_workgroups() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("elementwise_kernels_cover_more_than_65535_workgroups");
    let width = 67;
    let rows = (65_535 * 256) / width + 1000;
    let n = rows * width;
    assert!(n > 65_535 * 256);
    let x = nonzero_vec(&mut rng, n);
    let b = random_vec(&mut rng, width, 1.0);
    let tx = upload(&gpu, &x, &[rows, width]);
    let tb = upload(&gpu, &b, &[width]);
    let (seed, stream, p) = (rng.random::<u64>(), 9u32, 0.4f32);
    let (r, d) = gpu
        .run(|rec| {
            Ok((
                activations::relu(rec, &tx)?,
                activations::dropout(rec, &tx, p, seed, stream)?,
            ))
        })
        .unwrap();
    let r = r.to_vec().unwrap();
    assert!(r.iter().zip(&x).all(|(&g, &v)| g == v.max(0.0)));
    drop(r);
    let d = d.to_vec().unwrap();
    let scale = (1.0 / (1.0 - p as f64)) as f32;
    for e in (0..n).step_by(7).chain(n - 300..n) {
        let keep = activations::dropout_keep_cpu(seed, stream, e as u32, p);
        assert_eq!(d[e], if keep { x[e] * scale } else { 0.0 }, "e={e}");
    }
    drop(d);
    let a = gpu
        .run(|rec| activations::add_bias(rec, &tx, &tb))
        .unwrap()
        .to_vec()
        .unwrap();
    assert!((0..n).all(|i| a[i] == x[i] + b[i % width]));
}

#[test]
fn shape_errors_name_both_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let a = upload(&gpu, &[1.0; 6], &[2, 3]);
    let b = upload(&gpu, &[1.0; 6], &[3, 2]);
    type Backward = fn(&mut capaboost::Recorder, &Tensor, &Tensor) -> capaboost::Result<Tensor>;
    let backwards: [(&str, Backward); 3] = [
        ("gelu_backward", activations::gelu_backward),
        ("tanh_backward", activations::tanh_backward),
        ("relu_backward", activations::relu_backward),
    ];
    for (name, f) in backwards {
        let err = gpu.run(|rec| f(rec, &a, &b)).unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{name}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("[2, 3]") && msg.contains("[3, 2]") && msg.contains(name),
            "{msg}"
        );
    }
    // Bias of the wrong length, of the wrong rank, and a 0-D x.
    let bias4 = upload(&gpu, &[1.0; 4], &[4]);
    let bias23 = upload(&gpu, &[1.0; 6], &[2, 3]);
    let scalar = upload(&gpu, &[1.0], &[]);
    for (x, bias) in [(&a, &bias4), (&a, &bias23), (&scalar, &bias4)] {
        let err = gpu
            .run(|rec| activations::add_bias(rec, x, bias))
            .unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{:?}", x.shape()))
                && msg.contains(&format!("{:?}", bias.shape())),
            "{msg}"
        );
    }
    let err = gpu
        .run(|rec| activations::sum_rows(rec, &scalar))
        .unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
}

#[test]
fn empty_inputs() {
    let Some(gpu) = common::gpu() else { return };
    let e = Tensor::empty(&gpu, &[0, 5]).unwrap();
    let bias = upload(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0], &[5]);
    let (g, s, y) = gpu
        .run(|rec| {
            Ok((
                activations::gelu(rec, &e)?,
                activations::sum_rows(rec, &e)?,
                activations::add_bias(rec, &e, &bias)?,
            ))
        })
        .unwrap();
    assert_eq!(g.shape(), &[0, 5]);
    assert_eq!(y.shape(), &[0, 5]);
    // No rows: the bias gradient is zero, not garbage from a reused buffer.
    assert_eq!(s.to_vec().unwrap(), vec![0.0; 5]);
}
