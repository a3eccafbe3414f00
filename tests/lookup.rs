//! Embedding lookup and masked mean pooling against their f64 references, on odd shapes and
//! past 65535 workgroups; the pooling backward against its reference and finite differences.

mod common;

use capaboost::kernels::lookup::{self, cpu};
use capaboost::{Error, Indices, Tensor};
use common::{max_rel_err, random_vec};
use rand::Rng;

/// Pooling sums up to 17 f32 products before one division: the absolute error is a few ulps
/// of the input scale (1), so errors are measured relative to max(|want|, 1e-2) to keep
/// near-cancelling sums from inflating the ratio; 1e-5 still leaves a wide margin.
const POOL_TOL: f64 = 1e-5;
const POOL_FLOOR: f64 = 1e-2;
/// The backward is one division and one multiply per element: a few ulps.
const BACKWARD_TOL: f64 = 1e-6;

fn random_mask(rng: &mut impl Rng, b: usize, s: usize, zero_row: Option<usize>) -> Vec<f32> {
    let mut mask: Vec<f32> = (0..b * s)
        .map(|_| if rng.random_bool(0.7) { 1.0 } else { 0.0 })
        .collect();
    for row in 0..b {
        // At least one kept position, except in the row chosen to be all padding.
        if Some(row) == zero_row {
            mask[row * s..(row + 1) * s].fill(0.0);
        } else if mask[row * s..(row + 1) * s].iter().all(|&m| m == 0.0) {
            mask[row * s] = 1.0;
        }
    }
    mask
}

#[test]
fn embedding_matches_reference_exactly() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("embedding_matches_reference_exactly");
    let vocab = 53;
    for hidden in [1, 5, 67, 385] {
        let table = random_vec(&mut rng, vocab * hidden, 1.0);
        let tt = Tensor::from_slice(&gpu, &table, &[vocab, hidden]).unwrap();
        for shape in [vec![1], vec![3, 7], vec![2, 3, 5], vec![37]] {
            let n: usize = shape.iter().product();
            let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
            let ti = Indices::from_slice(&gpu, &ids, &shape).unwrap();
            let out = gpu.run(|rec| lookup::embedding(rec, &tt, &ti)).unwrap();
            let mut want_shape = shape.clone();
            want_shape.push(hidden);
            assert_eq!(out.shape(), want_shape.as_slice());
            let want: Vec<f32> = cpu::embedding(&table, vocab, hidden, &ids)
                .iter()
                .map(|&x| x as f32)
                .collect();
            assert_eq!(out.to_vec().unwrap(), want, "H={hidden} ids {shape:?}");
        }
    }
}

#[test]
fn embedding_past_65535_workgroups_and_out_of_range_ids() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("embedding_past_65535_workgroups_and_out_of_range_ids");
    // 70001 * 241 elements need 65899 workgroups of 256: a 2-D grid.
    let (vocab, hidden, n) = (97, 241, 70_001);
    let table = random_vec(&mut rng, vocab * hidden, 1.0);
    let mut ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab as u32)).collect();
    for (pos, bad) in [(0, vocab as u32), (12_345, u32::MAX), (n - 1, 1_000_000)] {
        ids[pos] = bad;
    }
    let tt = Tensor::from_slice(&gpu, &table, &[vocab, hidden]).unwrap();
    let ti = Indices::from_slice(&gpu, &ids, &[n]).unwrap();
    let out = gpu.run(|rec| lookup::embedding(rec, &tt, &ti)).unwrap();
    let got = out.to_vec().unwrap();
    let want: Vec<f32> = cpu::embedding(&table, vocab, hidden, &ids)
        .iter()
        .map(|&x| x as f32)
        .collect();
    assert_eq!(got, want);
    assert!(got[..hidden].iter().all(|&x| x == 0.0));
    assert!(got[hidden..2 * hidden].iter().any(|&x| x != 0.0));

    let err = lookup::check_ids(&ids, vocab).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("97") && msg.contains("position 0"), "{msg}");
    ids[0] = 3;
    let msg = lookup::check_ids(&ids, vocab).unwrap_err().to_string();
    assert!(
        msg.contains("4294967295") && msg.contains("position 12345"),
        "{msg}"
    );
    assert!(lookup::check_ids(&[0, 96, 5], vocab).is_ok());
    assert!(lookup::check_ids(&[], 0).is_ok());
}

#[test]
fn mean_pool_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("mean_pool_matches_reference");
    for (b, s) in [(1, 1), (3, 5), (37, 17), (2, 1)] {
        for h in [1, 5, 67, 385] {
            let x = random_vec(&mut rng, b * s * h, 1.0);
            let zero_row = (b > 1).then_some(b - 1);
            let mask = random_mask(&mut rng, b, s, zero_row);
            let tx = Tensor::from_slice(&gpu, &x, &[b, s, h]).unwrap();
            let tm = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
            let out = gpu.run(|rec| lookup::mean_pool(rec, &tx, &tm)).unwrap();
            assert_eq!(out.shape(), &[b, h]);
            let got = out.to_vec().unwrap();
            let e = max_rel_err(&got, &cpu::mean_pool(&x, &mask, b, s, h), POOL_FLOOR);
            eprintln!("mean_pool [{b}, {s}, {h}]: rel err {e:.2e}");
            assert!(e <= POOL_TOL, "[{b}, {s}, {h}]: {e}");
            if let Some(z) = zero_row {
                assert!(got[z * h..(z + 1) * h].iter().all(|&v| v == 0.0));
            }
        }
    }
}

#[test]
fn mean_pool_and_backward_past_65535_workgroups() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("mean_pool_and_backward_past_65535_workgroups");
    let (b, s, h) = (70_001, 1, 241);
    let x = random_vec(&mut rng, b * s * h, 1.0);
    let mask = random_mask(&mut rng, b, s, Some(5));
    let dy = random_vec(&mut rng, b * h, 1.0);
    let tx = Tensor::from_slice(&gpu, &x, &[b, s, h]).unwrap();
    let tm = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
    let tdy = Tensor::from_slice(&gpu, &dy, &[b, h]).unwrap();
    let (y, dx) = gpu
        .run(|rec| {
            Ok((
                lookup::mean_pool(rec, &tx, &tm)?,
                lookup::mean_pool_backward(rec, &tm, &tdy, s)?,
            ))
        })
        .unwrap();
    let e_fwd = max_rel_err(
        &y.to_vec().unwrap(),
        &cpu::mean_pool(&x, &mask, b, s, h),
        POOL_FLOOR,
    );
    let e_bwd = max_rel_err(
        &dx.to_vec().unwrap(),
        &cpu::mean_pool_backward(&mask, &dy, b, s, h),
        1e-30,
    );
    eprintln!("[{b}, {s}, {h}]: forward rel err {e_fwd:.2e}, backward {e_bwd:.2e}");
    assert!(e_fwd <= POOL_TOL && e_bwd <= BACKWARD_TOL);
}

#[test]
fn mean_pool_backward_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("mean_pool_backward_matches_reference");
    for (b, s) in [(1, 1), (3, 5), (37, 17)] {
        for h in [1, 5, 67, 385] {
            let zero_row = (b > 1).then_some(0);
            let mask = random_mask(&mut rng, b, s, zero_row);
            let dy = random_vec(&mut rng, b * h, 1.0);
            let tm = Tensor::from_slice(&gpu, &mask, &[b, s]).unwrap();
            let tdy = Tensor::from_slice(&gpu, &dy, &[b, h]).unwrap();
            let dx = gpu
                .run(|rec| lookup::mean_pool_backward(rec, &tm, &tdy, s))
                .unwrap();
            assert_eq!(dx.shape(), &[b, s, h]);
            let got = dx.to_vec().unwrap();
            assert!(got.iter().all(|v| v.is_finite()));
            let e = max_rel_err(&got, &cpu::mean_pool_backward(&mask, &dy, b, s, h), 1e-30);
            eprintln!("mean_pool_backward [{b}, {s}, {h}]: rel err {e:.2e}");
            assert!(e <= BACKWARD_TOL, "[{b}, {s}, {h}]: {e}");
        }
    }
}

#[test]
fn mean_pool_backward_reference_matches_finite_differences() {
    let mut rng = common::rng("mean_pool_backward_reference_matches_finite_differences");
    let (b, s, h) = (3, 4, 5);
    let x: Vec<f64> = random_vec(&mut rng, b * s * h, 1.0)
        .iter()
        .map(|&v| v as f64)
        .collect();
    let mask = random_mask(&mut rng, b, s, Some(2));
    let mask64 = cpu::widen(&mask);
    let dy = random_vec(&mut rng, b * h, 1.0);
    // loss = sum(dy * mean_pool(x)), so d loss / dx is the backward of dy.
    let loss = |x: &[f64]| -> f64 {
        cpu::mean_pool_f64(x, &mask64, b, s, h)
            .iter()
            .zip(&dy)
            .map(|(y, &g)| y * g as f64)
            .sum()
    };
    let analytic = cpu::mean_pool_backward(&mask, &dy, b, s, h);
    let step = 1e-5;
    let mut worst: f64 = 0.0;
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += step;
        let mut xm = x.clone();
        xm[i] -= step;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * step);
        worst = worst.max((fd - analytic[i]).abs() / analytic[i].abs().max(1e-3));
    }
    eprintln!("mean_pool_backward vs finite differences: rel err {worst:.2e}");
    // The forward is linear in x, so central differences are exact up to rounding.
    assert!(worst <= 1e-8, "{worst}");
}

#[test]
fn shape_errors_name_the_operands() {
    let Some(gpu) = common::gpu() else { return };
    let table = Tensor::from_slice(&gpu, &[1.0; 6], &[6]).unwrap();
    let ids = Indices::from_slice(&gpu, &[0, 1], &[2]).unwrap();
    let err = gpu
        .run(|rec| lookup::embedding(rec, &table, &ids))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[6]"),
        "{err}"
    );

    let x = Tensor::from_slice(&gpu, &[1.0; 24], &[2, 3, 4]).unwrap();
    let x2 = Tensor::from_slice(&gpu, &[1.0; 24], &[6, 4]).unwrap();
    let mask = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3]).unwrap();
    let bad_mask = Tensor::from_slice(&gpu, &[1.0; 6], &[3, 2]).unwrap();
    let err = gpu
        .run(|rec| lookup::mean_pool(rec, &x2, &mask))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[6, 4]"),
        "{err}"
    );
    let err = gpu
        .run(|rec| lookup::mean_pool(rec, &x, &bad_mask))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("[3, 2]") && msg.contains("[2, 3, 4]"), "{msg}");

    let dy = Tensor::from_slice(&gpu, &[1.0; 8], &[2, 4]).unwrap();
    let err = gpu
        .run(|rec| lookup::mean_pool_backward(rec, &mask, &dy, 5))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[2, 3]"),
        "{err}"
    );
    let err = gpu
        .run(|rec| lookup::mean_pool_backward(rec, &mask, &x, 3))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[2, 3, 4]"),
        "{err}"
    );
    assert!(
        gpu.run(|rec| lookup::mean_pool_backward(rec, &mask, &dy, 3))
            .is_ok()
    );
}
