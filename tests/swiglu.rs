//! SwiGLU (`kernels::swiglu`): forward and both gradients on odd sizes (1, 257, 3 x 1537),
//! fresh random inputs including large |gate| (up to 60, where a naive exp overflows),
//! against the f64 twin; the twin's gradients against central finite differences.
//! Tolerance: a few f32 roundings per element, 1e-5 relative Frobenius.

mod common;

use capaboost::Tensor;
use capaboost::kernels::swiglu;
use common::{random_vec, rel_frobenius, to64};

const TOL: f64 = 1e-5;

#[test]
fn forward_and_backward_match_the_twin() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("swiglu");
    for (shape, scale) in [(vec![1], 3.0), (vec![257], 8.0), (vec![3, 1537], 60.0)] {
        let n: usize = shape.iter().product();
        let (gv, uv, dyv) = (
            random_vec(&mut rng, n, scale),
            random_vec(&mut rng, n, 1.0),
            random_vec(&mut rng, n, 1.0),
        );
        let t = |v: &[f32]| Tensor::from_slice(&gpu, v, &shape).unwrap();
        let (g, u, dy) = (t(&gv), t(&uv), t(&dyv));
        let (y, (dg, du)) = gpu
            .run(|rec| {
                let y = swiglu::swiglu(rec, &g, &u)?;
                Ok((y, swiglu::swiglu_backward(rec, &g, &u, &dy)?))
            })
            .unwrap();
        let (g64, u64_, dy64) = (to64(&gv), to64(&uv), to64(&dyv));
        let want_y = swiglu::cpu::swiglu(&g64, &u64_);
        let (want_dg, want_du) = swiglu::cpu::swiglu_backward(&g64, &u64_, &dy64);
        for (name, got, want) in [
            ("y", &y, &want_y),
            ("dg", &dg, &want_dg),
            ("du", &du, &want_du),
        ] {
            let got = got.to_vec().unwrap();
            assert!(
                got.iter().all(|v| v.is_finite()),
                "{shape:?} {name}: not finite"
            );
            let e = rel_frobenius(&got, want);
            assert!(e < TOL, "{shape:?} {name}: {e}");
        }
    }
}

#[test]
fn twin_gradients_match_finite_differences() {
    let mut rng = common::rng("swiglu fd");
    let (g, u, dy) = (
        to64(&random_vec(&mut rng, 11, 4.0)),
        to64(&random_vec(&mut rng, 11, 1.0)),
        to64(&random_vec(&mut rng, 11, 1.0)),
    );
    let dot = |y: Vec<f64>| y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f64>();
    let (dg, du) = swiglu::cpu::swiglu_backward(&g, &u, &dy);
    let fd_g = common::fd_grad(&g, |g| dot(swiglu::cpu::swiglu(g, &u)));
    let fd_u = common::fd_grad(&u, |u| dot(swiglu::cpu::swiglu(&g, u)));
    assert!(common::rel_max_abs(&dg, &fd_g) < 1e-6);
    assert!(common::rel_max_abs(&du, &fd_u) < 1e-6);
}

#[test]
fn mismatched_shapes_are_named() {
    let Some(gpu) = common::gpu() else { return };
    let g = Tensor::from_slice(&gpu, &[0.5; 6], &[2, 3]).unwrap();
    let u = Tensor::from_slice(&gpu, &[0.5; 6], &[3, 2]).unwrap();
    let e = gpu
        .run(|rec| swiglu::swiglu(rec, &g, &u))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
}
