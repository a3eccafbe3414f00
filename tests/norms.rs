//! LayerNorm and softmax kernels against their f64 references on odd shapes, the backward
//! references against central finite differences of the forward references, masking with
//! huge negative values, and shape errors.

mod common;

use common::{fd_grad, rel_max_abs, to64};

use capaboost::kernels::norms::{self, RowSpread, cpu};
use capaboost::{Error, Tensor};
use common::{max_rel_err, random_vec, rel_frobenius};
use rand::Rng;

/// Relative Frobenius error allowed against the f64 references: f32 rounding of a few
/// operations per element plus tree reductions over at most a few hundred terms per row.
const TOL: f64 = 1e-5;
/// Finite differences in f64 with h = 1e-5: truncation O(h^2) ~ 1e-10 and cancellation
/// ~ 1e-16 / h ~ 1e-11 relative to the gradients; 1e-7 leaves margin.
const FD_TOL: f64 = 1e-7;
const EPS: f32 = 1e-5;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Shapes of x: (shape, rows, n). Includes n = 1, widths 5, 67, 385, 1000 (several values
/// per thread), and 70001 rows (a 2-D grid of workgroups).
fn ln_shapes() -> Vec<Vec<usize>> {
    vec![
        vec![1],
        vec![3, 5],
        vec![37, 67],
        vec![2, 3, 67],
        vec![5, 385],
        vec![3, 1000],
        vec![1, 1],
        vec![70001, 3],
    ]
}

#[test]
fn layer_norm_forward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("layer_norm_forward_matches_reference");
    for shape in ln_shapes() {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        // An offset of 3 makes the mean matter (the two-pass variance is exercised).
        let x: Vec<f32> = random_vec(&mut rng, numel, 2.0)
            .iter()
            .map(|v| v + 3.0)
            .collect();
        let gamma = random_vec(&mut rng, n, 1.5);
        let beta = random_vec(&mut rng, n, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tg = Tensor::from_slice(&gpu, &gamma, &[n]).unwrap();
        let tb = Tensor::from_slice(&gpu, &beta, &[n]).unwrap();
        let (y, mean, rstd) = cpu::layer_norm(&x, &gamma, &beta, n, EPS);
        for spread in SPREADS {
            let out = gpu
                .run(|rec| norms::layer_norm_with(rec, (&tx, None), (&tg, &tb), EPS, spread))
                .unwrap()
                .0;
            assert_eq!(out.y.shape(), &shape[..]);
            assert_eq!(out.mean.shape(), &[numel / n]);
            let ey = rel_frobenius(&out.y.to_vec().unwrap(), &y);
            let em = max_rel_err(&out.mean.to_vec().unwrap(), &mean, 1e-30);
            let er = max_rel_err(&out.rstd.to_vec().unwrap(), &rstd, 1e-30);
            eprintln!("layer_norm {spread:?} {shape:?}: y {ey:.2e} mean {em:.2e} rstd {er:.2e}");
            assert!(ey <= TOL && em <= TOL && er <= TOL, "{spread:?} {shape:?}");
        }
    }
}

/// Rows of `n` uniform in [offset - 2, offset + 2), each redrawn until its standard
/// deviation is at least 0.3 (for n >= 2). LayerNorm's backward is ill-conditioned for
/// near-constant rows: the f32 `x - mean` has relative error ~ 2^-24 |x| / std, and rstd
/// scales the gradient by 1 / std, so among 70001 random rows of 3 a few would dominate
/// the error with std ~ 1e-2 and push it past 1e-5 through conditioning, not the kernel.
fn spread_rows(rng: &mut rand::rngs::StdRng, numel: usize, n: usize, offset: f32) -> Vec<f32> {
    let mut x = Vec::with_capacity(numel);
    for _ in 0..numel / n {
        loop {
            let row: Vec<f32> = random_vec(rng, n, 2.0).iter().map(|v| v + offset).collect();
            let r64 = to64(&row);
            let mean = r64.iter().sum::<f64>() / n as f64;
            let var = r64.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            if n == 1 || var.sqrt() >= 0.3 {
                x.extend(row);
                break;
            }
        }
    }
    x
}

#[test]
fn layer_norm_backward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("layer_norm_backward_matches_reference");
    let mut shapes = ln_shapes();
    // dgamma/dbeta summed over 20001 rows: the staged column reduction.
    shapes.push(vec![20001, 7]);
    shapes.push(vec![1000, 385]);
    for shape in shapes {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = spread_rows(&mut rng, numel, n, -1.0);
        let gamma = random_vec(&mut rng, n, 1.5);
        let beta = random_vec(&mut rng, n, 1.0);
        let dy = random_vec(&mut rng, numel, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tg = Tensor::from_slice(&gpu, &gamma, &[n]).unwrap();
        let tb = Tensor::from_slice(&gpu, &beta, &[n]).unwrap();
        let tdy = Tensor::from_slice(&gpu, &dy, &shape).unwrap();
        let grads = gpu
            .run(|rec| {
                let out = norms::layer_norm(rec, &tx, &tg, &tb, EPS)?;
                norms::layer_norm_backward(rec, &tx, &tg, &out.mean, &out.rstd, &tdy)
            })
            .unwrap();
        let (dx, dgamma, dbeta) = cpu::layer_norm_backward(&x, &gamma, &dy, n, EPS);
        let edx = rel_frobenius(&grads.dx.to_vec().unwrap(), &dx);
        let edg = rel_frobenius(&grads.dgamma.to_vec().unwrap(), &dgamma);
        let edb = rel_frobenius(&grads.dbeta.to_vec().unwrap(), &dbeta);
        eprintln!("layer_norm_backward {shape:?}: dx {edx:.2e} dgamma {edg:.2e} dbeta {edb:.2e}");
        // n = 1: y = beta exactly, dx = 0 in both (the reference is exactly 0 and so is
        // the GPU result), so the relative error is 0/0 -> 0 by rel_frobenius' floor.
        assert!(edx <= TOL && edg <= TOL && edb <= TOL, "{shape:?}");
    }
}

/// `layer_norm_backward_dx` (frozen gamma and beta: one dispatch) gives `layer_norm_backward`'s
/// dx bit for bit and the f64 twin's to `TOL`, on odd shapes with fresh random inputs.
#[test]
fn layer_norm_backward_dx_alone_matches_full_backward() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("layer_norm_backward_dx_alone");
    for shape in [vec![7, 13], vec![3, 5, 385], vec![257, 33], vec![2, 1]] {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = spread_rows(&mut rng, numel, n, -1.0);
        let gamma = random_vec(&mut rng, n, 1.5);
        let beta = random_vec(&mut rng, n, 1.0);
        let dy = random_vec(&mut rng, numel, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tg = Tensor::from_slice(&gpu, &gamma, &[n]).unwrap();
        let tb = Tensor::from_slice(&gpu, &beta, &[n]).unwrap();
        let tdy = Tensor::from_slice(&gpu, &dy, &shape).unwrap();
        let (full, alone) = gpu
            .run(|rec| {
                let out = norms::layer_norm(rec, &tx, &tg, &tb, EPS)?;
                let full = norms::layer_norm_backward(rec, &tx, &tg, &out.mean, &out.rstd, &tdy)?;
                let alone =
                    norms::layer_norm_backward_dx(rec, &tx, &tg, &out.mean, &out.rstd, &tdy)?;
                Ok((full, alone))
            })
            .unwrap();
        let alone = alone.to_vec().unwrap();
        assert_eq!(alone, full.dx.to_vec().unwrap(), "{shape:?}");
        let (dx, _, _) = cpu::layer_norm_backward(&x, &gamma, &dy, n, EPS);
        let err = rel_frobenius(&alone, &dx);
        assert!(err <= TOL, "{shape:?}: {err:.2e}");
        // Both row spreads, whichever the device picks above.
        for spread in SPREADS {
            let got = gpu
                .run(|rec| {
                    let out = norms::layer_norm_with(rec, (&tx, None), (&tg, &tb), EPS, spread)?.0;
                    let stats = (&out.mean, &out.rstd);
                    norms::layer_norm_backward_dx_with(rec, (&tx, &tg), stats, &tdy, spread)
                })
                .unwrap()
                .to_vec()
                .unwrap();
            let err = rel_frobenius(&got, &dx);
            eprintln!("layer_norm_backward_dx {spread:?} {shape:?}: {err:.2e}");
            assert!(err <= TOL, "{spread:?} {shape:?}: {err:.2e}");
        }
    }
}

/// `layer_norm_add` (`layer_norm_add_fwd`: a residual add and the norm in one dispatch)
/// against the f64 twin of LayerNorm(a + b) to `TOL` on odd shapes with fresh random
/// inputs, and bit for bit against `add` then `layer_norm` (sum, y, mean, rstd).
#[test]
fn layer_norm_add_matches_twin_and_separate_dispatches() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("layer_norm_add");
    for shape in [
        vec![7, 13],
        vec![3, 5, 385],
        vec![257, 33],
        vec![2, 1],
        vec![1, 1000],
    ] {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let a = spread_rows(&mut rng, numel, n, -1.0);
        let b = random_vec(&mut rng, numel, 2.0);
        let gamma = random_vec(&mut rng, n, 1.5);
        let beta = random_vec(&mut rng, n, 1.0);
        let t = |v: &[f32], s: &[usize]| Tensor::from_slice(&gpu, v, s).unwrap();
        let (ta, tb, tg, tbeta) = (
            t(&a, &shape),
            t(&b, &shape),
            t(&gamma, &[n]),
            t(&beta, &[n]),
        );
        let x64: Vec<f64> = a.iter().zip(&b).map(|(p, q)| (p + q) as f64).collect();
        let (want, _, _) = cpu::layer_norm_f64(&x64, &to64(&gamma), &to64(&beta), n, EPS as f64);
        for spread in SPREADS {
            let ((fused, sum), (plain, sum2)) = gpu
                .run(|rec| {
                    let fused =
                        norms::layer_norm_with(rec, (&ta, Some(&tb)), (&tg, &tbeta), EPS, spread)?;
                    let sum2 = capaboost::kernels::elementwise::add(rec, &ta, &tb)?;
                    let plain =
                        norms::layer_norm_with(rec, (&sum2, None), (&tg, &tbeta), EPS, spread)?.0;
                    Ok((fused, (plain, sum2)))
                })
                .unwrap();
            let sum = sum.expect("the fused form returns the sum");
            let v = |x: &Tensor| x.to_vec().unwrap();
            assert_eq!(v(&sum), v(&sum2), "{spread:?} {shape:?}: sum");
            assert_eq!(v(&fused.y), v(&plain.y), "{spread:?} {shape:?}: y");
            assert_eq!(v(&fused.mean), v(&plain.mean), "{spread:?} {shape:?}: mean");
            assert_eq!(v(&fused.rstd), v(&plain.rstd), "{spread:?} {shape:?}: rstd");
            let err = rel_frobenius(&v(&fused.y), &want);
            assert!(err <= TOL, "{spread:?} {shape:?}: {err:.2e}");
        }
    }
    let bad = Tensor::from_slice(&gpu, &[1.0; 6], &[3, 2]).unwrap();
    let ok = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3]).unwrap();
    let g3 = Tensor::from_slice(&gpu, &[1.0; 3], &[3]).unwrap();
    let err = gpu
        .run(|rec| norms::layer_norm_add(rec, &ok, &bad, (&g3, &g3), EPS))
        .unwrap_err();
    assert!(err.to_string().contains("layer_norm_add"), "{err}");
}

#[test]
fn layer_norm_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("layer_norm_backward_reference_matches_finite_differences");
    for (rows, n) in [(1, 1), (3, 5), (2, 8), (4, 13)] {
        let x = to64(&random_vec(&mut rng, rows * n, 2.0));
        let gamma = to64(&random_vec(&mut rng, n, 1.5));
        let beta = to64(&random_vec(&mut rng, n, 1.0));
        let dy = to64(&random_vec(&mut rng, rows * n, 1.0));
        let eps = EPS as f64;
        let loss =
            |x: &[f64], g: &[f64], b: &[f64]| dot(&dy, &cpu::layer_norm_f64(x, g, b, n, eps).0);
        let (dx, dgamma, dbeta) = cpu::layer_norm_backward_f64(&x, &gamma, &dy, n, eps);
        let fdx = fd_grad(&x, |v| loss(v, &gamma, &beta));
        let fdg = fd_grad(&gamma, |v| loss(&x, v, &beta));
        let fdb = fd_grad(&beta, |v| loss(&x, &gamma, v));
        let (ex, eg, eb) = (
            if n == 1 {
                // A one-element row normalises to 0 whatever x is: both are exactly 0.
                dx.iter().chain(&fdx).fold(0.0f64, |m, v| m.max(v.abs()))
            } else {
                rel_max_abs(&dx, &fdx)
            },
            rel_max_abs(&dgamma, &fdg),
            rel_max_abs(&dbeta, &fdb),
        );
        eprintln!("layer_norm FD [{rows}, {n}]: dx {ex:.2e} dgamma {eg:.2e} dbeta {eb:.2e}");
        assert!(
            ex <= FD_TOL && eg <= FD_TOL && eb <= FD_TOL,
            "[{rows}, {n}]"
        );
    }
}

/// Mask values: mostly small additive biases, with some -1e9 and f32::MIN entries (never a
/// whole row here; fully masked rows have their own test).
fn random_mask(rng: &mut rand::rngs::StdRng, m: usize, n: usize) -> Vec<f32> {
    let mut mask = random_vec(rng, m * n, 2.0);
    for r in 0..m {
        for j in 0..n {
            if j == 0 {
                continue;
            }
            match rng.random_range(0..8) {
                0 => mask[r * n + j] = -1e9,
                1 => mask[r * n + j] = f32::MIN,
                _ => {}
            }
        }
    }
    mask
}

#[test]
fn softmax_forward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("softmax_forward_matches_reference");
    // (x shape, mask rows m or 0 for none, rows per mask row)
    let cases: Vec<(Vec<usize>, usize, usize)> = vec![
        (vec![1], 0, 1),
        (vec![3, 5], 0, 1),
        (vec![37, 67], 0, 1),
        (vec![4, 385], 0, 1),
        (vec![3, 1000], 0, 1),
        (vec![70001, 3], 0, 1),
        (vec![3, 5], 3, 1),
        (vec![37, 67], 1, 37),
        // Attention scores [B, H, Sq, Sk] with a [B, Sk] mask: H * Sq rows per mask row.
        (vec![2, 3, 5, 67], 2, 15),
        (vec![2, 2, 3, 385], 2, 6),
        (vec![70001, 5], 70001, 1),
    ];
    for (shape, m, rpm) in cases {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = random_vec(&mut rng, numel, 4.0);
        let mask = (m > 0).then(|| random_mask(&mut rng, m, n));
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tm = mask
            .as_ref()
            .map(|v| Tensor::from_slice(&gpu, v, &[m, n]).unwrap());
        let want = cpu::softmax(&x, mask.as_deref(), n, rpm);
        for spread in SPREADS {
            let y = gpu
                .run(|rec| norms::softmax_with(rec, &tx, (tm.as_ref(), rpm), spread))
                .unwrap()
                .to_vec()
                .unwrap();
            let ef = rel_frobenius(&y, &want);
            // Elementwise, relative to each probability (floored at 1e-7): exp of an
            // argument rounded to f32 (|x - max| <= 8 here) has relative error ~ 8 * 2^-24.
            let em = max_rel_err(&y, &want, 1e-7);
            eprintln!(
                "softmax {spread:?} {shape:?} mask m={m} rpm={rpm}: frob {ef:.2e} max rel {em:.2e}"
            );
            assert!(y.iter().all(|v| v.is_finite()), "{shape:?}");
            assert!(ef <= TOL && em <= TOL, "{spread:?} {shape:?}");
        }
    }
}

/// Both ways of spreading a row; `softmax` picks one per device (a workgroup per row, or
/// one invocation per row on CPU devices), and both must match the reference everywhere.
const SPREADS: [RowSpread; 2] = [RowSpread::Workgroup, RowSpread::Invocation];

#[test]
fn softmax_fully_masked_rows_are_uniform_not_nan() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("softmax_fully_masked_rows_are_uniform_not_nan");
    for spread in SPREADS {
        fully_masked_rows(&gpu, &mut rng, spread);
    }
}

fn fully_masked_rows(gpu: &capaboost::Gpu, rng: &mut rand::rngs::StdRng, spread: RowSpread) {
    let n = 9;
    let fills = [f32::MIN, -1e9, -3.0e38, f32::NEG_INFINITY];
    // 2 x rows per mask row; mask row k is fully masked with fills[k]; the last row
    // partially masked.
    let m = fills.len() + 1;
    let mut mask = vec![0.0f32; m * n];
    for (k, &f) in fills.iter().enumerate() {
        mask[k * n..(k + 1) * n].fill(f);
    }
    mask[fills.len() * n..].fill(f32::MIN);
    mask[fills.len() * n + 4] = 0.0;
    let x = random_vec(rng, 2 * m * n, 1.0);
    let tx = Tensor::from_slice(gpu, &x, &[2 * m, n]).unwrap();
    let tm = Tensor::from_slice(gpu, &mask, &[m, n]).unwrap();
    let y = gpu
        .run(|rec| norms::softmax_with(rec, &tx, (Some(&tm), 2), spread))
        .unwrap()
        .to_vec()
        .unwrap();
    assert!(y.iter().all(|v| !v.is_nan()), "NaN in {y:?}");
    for (r, row) in y.chunks(n).enumerate() {
        let k = r / 2;
        if k < fills.len() {
            // x + mask rounds to the same f32 for every entry: a uniform distribution.
            let worst = row
                .iter()
                .map(|&v| (v as f64 - 1.0 / n as f64).abs())
                .fold(0.0, f64::max);
            eprintln!(
                "fully masked with {:e}: max |y - 1/n| {worst:.2e}",
                fills[k]
            );
            assert!(worst <= 1e-6, "row {r} (mask {}): {row:?}", fills[k]);
        } else {
            // Only entry 4 is unmasked: a one-hot.
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(v, if j == 4 { 1.0 } else { 0.0 }, "row {r}: {row:?}");
            }
        }
    }
    // Huge x next to huge masks: x + mask would overflow to -inf in f32.
    let x = vec![-3.0e38f32, 3.0e38, -1.0, 0.0];
    let mask = vec![f32::MIN, f32::MIN, 0.0, f32::MIN];
    let tx = Tensor::from_slice(gpu, &x, &[1, 4]).unwrap();
    let tm = Tensor::from_slice(gpu, &mask, &[1, 4]).unwrap();
    let y = gpu
        .run(|rec| norms::softmax_with(rec, &tx, (Some(&tm), 1), spread))
        .unwrap()
        .to_vec()
        .unwrap();
    eprintln!("overflowing x + mask: {y:?}");
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    assert!((y.iter().sum::<f32>() - 1.0).abs() <= 1e-6, "{y:?}");
    assert_eq!(y[2], 1.0, "{y:?}");
}

#[test]
fn softmax_backward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("softmax_backward_matches_reference");
    for shape in [
        vec![1],
        vec![3, 5],
        vec![37, 67],
        vec![2, 3, 385],
        vec![3, 1000],
        vec![70001, 3],
    ] {
        let n = *shape.last().unwrap();
        let numel: usize = shape.iter().product();
        let x = random_vec(&mut rng, numel, 3.0);
        let dy = random_vec(&mut rng, numel, 1.0);
        let tx = Tensor::from_slice(&gpu, &x, &shape).unwrap();
        let tdy = Tensor::from_slice(&gpu, &dy, &shape).unwrap();
        for spread in SPREADS {
            let (y, dx) = gpu
                .run(|rec| {
                    let y = norms::softmax_with(rec, &tx, (None, 1), spread)?;
                    let dx = norms::softmax_backward_with(rec, &y, &tdy, spread)?;
                    Ok((y, dx))
                })
                .unwrap();
            let y = y.to_vec().unwrap();
            let want = cpu::softmax_backward(&y, &dy, n);
            let e = rel_frobenius(&dx.to_vec().unwrap(), &want);
            eprintln!("softmax_backward {spread:?} {shape:?}: {e:.2e}");
            if n == 1 {
                // y = 1, dx = y (dy - y dy) = 0 exactly.
                assert!(dx.to_vec().unwrap().iter().all(|&v| v == 0.0));
            } else {
                assert!(e <= TOL, "{spread:?} {shape:?}");
            }
        }
    }
}

#[test]
fn softmax_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("softmax_backward_reference_matches_finite_differences");
    for (rows, n, masked) in [(1, 2, false), (3, 5, false), (4, 9, true), (2, 17, true)] {
        let x = to64(&random_vec(&mut rng, rows * n, 3.0));
        let mask = masked.then(|| to64(&random_vec(&mut rng, 2 * n, 2.0)));
        let rpm = rows / 2;
        let dy = to64(&random_vec(&mut rng, rows * n, 1.0));
        let y = cpu::softmax_f64(&x, mask.as_deref(), n, rpm.max(1));
        let dx = cpu::softmax_backward_f64(&y, &dy, n);
        let fd = fd_grad(&x, |v| {
            dot(&dy, &cpu::softmax_f64(v, mask.as_deref(), n, rpm.max(1)))
        });
        let e = rel_max_abs(&dx, &fd);
        eprintln!("softmax FD [{rows}, {n}] mask={masked}: {e:.2e}");
        assert!(e <= FD_TOL, "[{rows}, {n}]");
    }
}

#[test]
fn shape_errors_name_both_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let t = |shape: &[usize]| {
        let n = shape.iter().product();
        Tensor::from_slice(&gpu, &vec![0.5; n], shape).unwrap()
    };
    let x = t(&[4, 6]);
    let shape_err = |r: capaboost::Result<()>, needles: &[&str]| {
        let err = r.unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{err}");
        for s in needles {
            assert!(err.to_string().contains(s), "{err} lacks {s}");
        }
    };
    let ln = |x: &Tensor, g: &Tensor, b: &Tensor| {
        gpu.run(|rec| norms::layer_norm(rec, x, g, b, EPS).map(|_| ()))
    };
    shape_err(ln(&x, &t(&[5]), &t(&[6])), &["gamma", "[5]", "[6]"]);
    shape_err(ln(&x, &t(&[6]), &t(&[4, 6])), &["beta", "[4, 6]", "[6]"]);
    shape_err(ln(&t(&[]), &t(&[1]), &t(&[1])), &["[]"]);
    shape_err(ln(&t(&[3, 0]), &t(&[0]), &t(&[0])), &["[3, 0]"]);
    let err = gpu
        .run(|rec| norms::layer_norm(rec, &x, &t(&[6]), &t(&[6]), -1.0).map(|_| ()))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    let bwd = |m: &Tensor, r: &Tensor, dy: &Tensor| {
        gpu.run(|rec| norms::layer_norm_backward(rec, &x, &t(&[6]), m, r, dy).map(|_| ()))
    };
    shape_err(
        bwd(&t(&[6]), &t(&[4]), &t(&[4, 6])),
        &["mean", "[6]", "[4]"],
    );
    shape_err(bwd(&t(&[4]), &t(&[4, 1]), &t(&[4, 6])), &["rstd", "[4, 1]"]);
    shape_err(
        bwd(&t(&[4]), &t(&[4]), &t(&[6, 4])),
        &["dy", "[6, 4]", "[4, 6]"],
    );

    let sm = |x: &Tensor, m: Option<&Tensor>, rpm: usize| {
        gpu.run(|rec| norms::softmax(rec, x, m, rpm).map(|_| ()))
    };
    let scores = t(&[2, 3, 5, 7]);
    shape_err(
        sm(&scores, Some(&t(&[2, 6])), 15),
        &["mask", "[2, 6]", "[2, 3, 5, 7]"],
    );
    shape_err(
        sm(&scores, Some(&t(&[2, 7])), 5),
        &["[2, 7]", "[2, 3, 5, 7]", "30 rows"],
    );
    shape_err(
        sm(&scores, Some(&t(&[3, 7])), 15),
        &["[3, 7]", "[2, 3, 5, 7]"],
    );
    shape_err(sm(&scores, Some(&t(&[2, 7])), 0), &["[2, 7]"]);
    shape_err(sm(&scores, Some(&t(&[14])), 15), &["[14]"]);
    shape_err(sm(&t(&[]), None, 1), &["[]"]);
    assert!(sm(&scores, Some(&t(&[2, 7])), 15).is_ok());
    assert!(sm(&scores, None, 0).is_ok());
    let err = gpu
        .run(|rec| norms::softmax_backward(rec, &x, &t(&[6, 4])).map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[6, 4]"),
        "{err}"
    );
}
