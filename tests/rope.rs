//! Rotary position embeddings (`kernels::rope`): forward and backward on odd shapes (odd T
//! and H, head widths 2, 10 and 64, a leading batch, positions with an offset as a KV cache
//! uses), fresh random inputs, against the f64 twin; the backward is the forward's transpose
//! (<R x, g> = <x, R^T g>); position 0 is the identity. The layout is the one
//! `models::llama::cpu` uses (and checks against transformers). Tolerance: one f32 rotation
//! per pair, so 1e-6 relative Frobenius.

mod common;

use capaboost::Tensor;
use capaboost::kernels::rope::{self, Direction, RopeTable};
use common::{random_vec, rel_frobenius};

const TOL: f64 = 1e-6;

#[test]
fn forward_and_backward_match_the_twin_on_odd_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("rope");
    for (batch, seq, heads, dim, start, theta) in [
        (1, 1, 1, 2, 0, 10000.0),
        (1, 7, 3, 10, 0, 500.0),
        (2, 5, 9, 64, 13, 100000.0),
        (3, 33, 1, 16, 4000, 10000.0),
    ] {
        let positions: Vec<usize> = (start..start + seq).collect();
        let table = RopeTable::new(&gpu, theta, dim, &positions).unwrap();
        let (cos, sin) = rope::cpu::table(theta, dim, &positions);
        let n = batch * seq * heads * dim;
        let (xv, gv) = (random_vec(&mut rng, n, 1.0), random_vec(&mut rng, n, 1.0));
        let x = Tensor::from_slice(&gpu, &xv, &[batch, seq, heads, dim]).unwrap();
        let g = Tensor::from_slice(&gpu, &gv, &[batch, seq, heads, dim]).unwrap();
        let (y, dx) = gpu
            .run(|rec| {
                let y = rope::rope(rec, &x, &table, Direction::Forward)?;
                Ok((y, rope::rope(rec, &g, &table, Direction::Backward)?))
            })
            .unwrap();
        let (y, dx) = (y.to_vec().unwrap(), dx.to_vec().unwrap());
        let dims = [seq, heads, dim];
        let want_y = rope::cpu::rope(&xv, dims, (&cos, &sin), Direction::Forward);
        let want_dx = rope::cpu::rope(&gv, dims, (&cos, &sin), Direction::Backward);
        let case = format!("b={batch} t={seq} h={heads} d={dim} from {start}");
        assert!(rel_frobenius(&y, &want_y) < TOL, "{case}: forward");
        assert!(rel_frobenius(&dx, &want_dx) < TOL, "{case}: backward");
        let dot = |a: &[f64], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * *y as f64).sum::<f64>();
        let (lhs, rhs) = (dot(&want_y, &gv), dot(&want_dx, &xv));
        assert!(
            (lhs - rhs).abs() < 1e-9 * n as f64,
            "{case}: not a transpose {lhs} {rhs}"
        );
        if start == 0 {
            assert_eq!(y[..dim], xv[..dim], "{case}: position 0 must not move");
        }
    }
}

#[test]
fn misuse_names_the_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let e = RopeTable::new(&gpu, 10000.0, 7, &[0, 1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("head width 7"), "{e}");
    let table = RopeTable::new(&gpu, 10000.0, 8, &[0, 1, 2]).unwrap();
    let x = Tensor::from_slice(&gpu, &[0.5; 2 * 4 * 8], &[2, 4, 8]).unwrap();
    let e = gpu
        .run(|rec| rope::rope(rec, &x, &table, Direction::Forward))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[2, 4, 8]") && e.contains("T = 3"), "{e}");
}
