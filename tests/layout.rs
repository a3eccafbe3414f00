//! The middle-dims swap against its reference, and its gradient through the graph.

mod common;

use capaboost::nn::Graph;
use capaboost::{Tensor, kernels::layout};
use common::{max_rel_err, random_vec};

#[test]
fn swap_middle_matches_reference_and_inverts() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("swap_middle_matches_reference_and_inverts");
    for dims in [
        [1, 1, 1, 1],
        [2, 3, 5, 7],
        [3, 37, 12, 32],
        [1, 70001, 3, 1],
    ] {
        let n = dims.iter().product();
        let x = random_vec(&mut rng, n, 1.0);
        let t = Tensor::from_slice(&gpu, &x, &dims).unwrap();
        let (y, back) = gpu
            .run(|rec| {
                let y = layout::swap_middle(rec, &t)?;
                let back = layout::swap_middle(rec, &y)?;
                Ok((y, back))
            })
            .unwrap();
        assert_eq!(y.shape(), &[dims[0], dims[2], dims[1], dims[3]]);
        assert_eq!(
            max_rel_err(
                &y.to_vec().unwrap(),
                &layout::cpu::swap_middle(&x, dims),
                1e-30
            ),
            0.0
        );
        assert_eq!(back.to_vec().unwrap(), x);
    }
    let bad = Tensor::full(&gpu, &[2, 3], 1.0).unwrap();
    assert!(gpu.run(|rec| layout::swap_middle(rec, &bad)).is_err());
}

#[test]
fn swap_middle_gradient_is_the_inverse_swap() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("swap_middle_gradient_is_the_inverse_swap");
    let dims = [2, 3, 4, 5];
    let x = Tensor::from_slice(&gpu, &random_vec(&mut rng, 120, 1.0), &dims).unwrap();
    let w = random_vec(&mut rng, 120, 1.0);
    let wt = Tensor::from_slice(&gpu, &w, &[2, 4, 3, 5]).unwrap();
    let mut g = Graph::new(&gpu);
    let xv = g.param(&x);
    let y = g.swap_middle(&xv).unwrap();
    let wv = g.input(&wt);
    let p = g.mul(&y, &wv).unwrap();
    let l = g.sum(&p).unwrap();
    let grads = g.backward(&l).unwrap();
    g.submit().unwrap();
    // dL/dx = swap(w) exactly.
    let want = layout::cpu::swap_middle(&w, [2, 4, 3, 5]);
    let got = grads.of(&x).unwrap().to_vec().unwrap();
    assert_eq!(max_rel_err(&got, &want, 1e-30), 0.0);
}

#[test]
fn swap_middle3_swaps_three_tensors_as_three_swaps() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("swap_middle3_swaps_three_tensors_as_three_swaps");
    for dims in [
        [1, 1, 1, 1],
        [2, 3, 5, 7],
        [3, 37, 12, 32],
        [1, 30001, 3, 1],
    ] {
        let n = dims.iter().product();
        let xs: Vec<Vec<f32>> = (0..3).map(|_| random_vec(&mut rng, n, 1.0)).collect();
        let ts: Vec<Tensor> = xs
            .iter()
            .map(|x| Tensor::from_slice(&gpu, x, &dims).unwrap())
            .collect();
        let ys = gpu
            .run(|rec| layout::swap_middle3(rec, [&ts[0], &ts[1], &ts[2]]))
            .unwrap();
        for (x, y) in xs.iter().zip(&ys) {
            assert_eq!(y.shape(), &[dims[0], dims[2], dims[1], dims[3]]);
            let want: Vec<f32> = layout::cpu::swap_middle(x, dims)
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_eq!(y.to_vec().unwrap(), want, "{dims:?}");
        }
    }
    let a = Tensor::full(&gpu, &[2, 3, 4, 5], 1.0).unwrap();
    let b = Tensor::full(&gpu, &[2, 4, 3, 5], 1.0).unwrap();
    let err = gpu
        .run(|rec| layout::swap_middle3(rec, [&a, &b, &a]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("one shape"), "{err}");
    let flat = Tensor::full(&gpu, &[6], 1.0).unwrap();
    assert!(
        gpu.run(|rec| layout::swap_middle3(rec, [&flat, &flat, &flat]))
            .is_err()
    );
}
