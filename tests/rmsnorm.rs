//! RMSNorm (`kernels::rmsnorm`): forward and the x-gradient on odd shapes (rows 1, 7, 33;
//! widths 2, 7, 300 and 576, shorter and longer than the 256-thread workgroup; a leading
//! batch), fresh random inputs, against the f64 twin; the twin's gradient against central
//! finite differences. A width of 1 is not compared: its gradient `eps r^3 w dy` is all
//! cancellation. Tolerance: f32 sums over at most 576 terms, 1e-5 relative
//! Frobenius.

mod common;

use capaboost::Tensor;
use capaboost::kernels::rmsnorm;
use common::{random_vec, rel_frobenius, to64};

const TOL: f64 = 1e-5;
const EPS: f32 = 1e-5;

#[test]
fn forward_and_backward_match_the_twin() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("rmsnorm");
    for (lead, n) in [
        (vec![1], 2),
        (vec![7], 7),
        (vec![3, 11], 300),
        (vec![33], 576),
    ] {
        let rows: usize = lead.iter().product();
        let mut shape = lead.clone();
        shape.push(n);
        let (xv, dyv) = (
            random_vec(&mut rng, rows * n, 2.0),
            random_vec(&mut rng, rows * n, 1.0),
        );
        let wv: Vec<f32> = random_vec(&mut rng, n, 0.5)
            .iter()
            .map(|v| v + 1.0)
            .collect();
        let x = Tensor::from_slice(&gpu, &xv, &shape).unwrap();
        let dy = Tensor::from_slice(&gpu, &dyv, &shape).unwrap();
        let w = Tensor::from_slice(&gpu, &wv, &[n]).unwrap();
        let (y, dx) = gpu
            .run(|rec| {
                let (y, rstd) = rmsnorm::rms_norm(rec, &x, &w, EPS)?;
                Ok((y, rmsnorm::rms_norm_backward(rec, &x, &w, &rstd, &dy)?))
            })
            .unwrap();
        assert_eq!(y.shape(), &shape[..]);
        let (x64, w64, dy64) = (to64(&xv), to64(&wv), to64(&dyv));
        let want_y = rmsnorm::cpu::rms_norm(&x64, &w64, EPS as f64);
        let want_dx = rmsnorm::cpu::rms_norm_backward(&x64, &w64, &dy64, EPS as f64);
        let e = rel_frobenius(&y.to_vec().unwrap(), &want_y);
        assert!(e < TOL, "{shape:?}: forward {e}");
        let e = rel_frobenius(&dx.to_vec().unwrap(), &want_dx);
        assert!(e < TOL, "{shape:?}: backward {e}");
    }
}

#[test]
fn twin_gradient_matches_finite_differences() {
    let mut rng = common::rng("rmsnorm fd");
    let n = 9;
    let (x, w, g) = (
        to64(&random_vec(&mut rng, 2 * n, 1.0)),
        to64(&random_vec(&mut rng, n, 1.0)),
        to64(&random_vec(&mut rng, 2 * n, 1.0)),
    );
    let loss = |x: &[f64]| {
        let y = rmsnorm::cpu::rms_norm(x, &w, 1e-5);
        y.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
    };
    let fd = common::fd_grad(&x, loss);
    let an = rmsnorm::cpu::rms_norm_backward(&x, &w, &g, 1e-5);
    assert!(common::rel_max_abs(&an, &fd) < 1e-6);
}

#[test]
fn misuse_names_the_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let x = Tensor::from_slice(&gpu, &[0.5; 12], &[3, 4]).unwrap();
    let w = Tensor::from_slice(&gpu, &[1.0; 3], &[3]).unwrap();
    let e = gpu
        .run(|rec| rmsnorm::rms_norm(rec, &x, &w, EPS).map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 4]") && e.contains("[3]"), "{e}");
}
