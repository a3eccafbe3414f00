//! The GEMM kernel against its f64 reference, for every operand view, on odd shapes and on
//! shapes spanning several tiles in every direction.

mod common;

use capaboost::kernels::gemm::{self, Operand, View};
use capaboost::kernels::masks::{Factor, MaskBits, MaskKind, MaskSpec, unpack};
use capaboost::{Error, Tensor};
use common::{random_vec, rel_frobenius};

/// f32 accumulation over K <= a few hundred: relative Frobenius error stays near 1e-7.
const TOL: f64 = 1e-5;

#[test]
fn dense_views_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("dense_views_match_reference");
    for (m, k, n) in [(1, 1, 1), (37, 67, 53), (203, 211, 197), (5, 300, 3)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let a_shape = if ta { [k, m] } else { [m, k] };
            let b_shape = if tb { [n, k] } else { [k, n] };
            let a = random_vec(&mut rng, m * k, 1.0);
            let b = random_vec(&mut rng, k * n, 1.0);
            let c0 = random_vec(&mut rng, m * n, 1.0);
            let bias = random_vec(&mut rng, n, 1.0);
            let (ga, gb) = (
                Tensor::from_slice(&gpu, &a, &a_shape).unwrap(),
                Tensor::from_slice(&gpu, &b, &b_shape).unwrap(),
            );
            let gc = Tensor::from_slice(&gpu, &c0, &[m, n]).unwrap();
            let gbias = Tensor::from_slice(&gpu, &bias, &[n]).unwrap();
            let oa = if ta {
                Operand::trans(&ga)
            } else {
                Operand::plain(&ga)
            };
            let ob = if tb {
                Operand::trans(&gb)
            } else {
                Operand::plain(&gb)
            };
            gpu.run(|rec| gemm::gemm_into(rec, oa, ob, &gc, 0.75, -1.25, Some(&gbias)))
                .unwrap();
            let va = gemm::cpu::view(&a, a_shape, oa.view, &[]).0;
            let vb = gemm::cpu::view(&b, b_shape, ob.view, &[]).0;
            let c64: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
            let b64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
            let got = gc.to_vec().unwrap();
            let inputs = (&va[..], &vb[..], &c64[..], Some(&b64[..]));
            let err = common::gemm_rel_err(&got, inputs, [m, k, n], (0.75, -1.25));
            eprintln!("[{m}x{k}x{n}] ta={ta} tb={tb}: rel err {err:.2e}");
            assert!(err < TOL, "[{m}x{k}x{n}] ta={ta} tb={tb}: {err}");
        }
    }
}

#[test]
fn beta_zero_ignores_garbage_in_c() {
    let Some(gpu) = common::gpu() else { return };
    let c = Tensor::full(&gpu, &[3, 5], f32::NAN).unwrap();
    let a = Tensor::full(&gpu, &[3, 2], 1.0).unwrap();
    let b = Tensor::full(&gpu, &[2, 5], 2.0).unwrap();
    gpu.run(|rec| {
        gemm::gemm_into(
            rec,
            Operand::plain(&a),
            Operand::plain(&b),
            &c,
            1.0,
            0.0,
            None,
        )
    })
    .unwrap();
    assert_eq!(c.to_vec().unwrap(), vec![4.0; 15]);
}

#[test]
fn batched_matmul_matches_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("batched_matmul_matches_reference");
    let (bsz, m, k, n) = (3, 17, 29, 70);
    let a = random_vec(&mut rng, bsz * m * k, 1.0);
    let b = random_vec(&mut rng, bsz * n * k, 1.0);
    let ga = Tensor::from_slice(&gpu, &a, &[bsz, m, k]).unwrap();
    let gb = Tensor::from_slice(&gpu, &b, &[bsz, n, k]).unwrap();
    let c = gpu
        .run(|rec| gemm::matmul(rec, &ga, false, &gb, true))
        .unwrap();
    assert_eq!(c.shape(), &[bsz, m, n]);
    let got = c.to_vec().unwrap();
    for i in 0..bsz {
        let va = gemm::cpu::view(&a[i * m * k..(i + 1) * m * k], [m, k], View::Plain, &[]).0;
        let vb = gemm::cpu::view(&b[i * n * k..(i + 1) * n * k], [n, k], View::Trans, &[]).0;
        let want = gemm::cpu::matmul(&va, &vb, m, k, n);
        let err = rel_frobenius(&got[i * m * n..(i + 1) * m * n], &want);
        assert!(err < TOL, "batch {i}: {err}");
    }
}

#[test]
fn stacked_views_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("stacked_views_match_reference");
    // (d, r, in, out, T): odd shapes, then one spanning several 64-wide tiles everywhere.
    for (d, r, in_f, out_f, t) in [
        (3usize, 3usize, 67usize, 53usize, 37usize),
        (4, 20, 150, 133, 141),
    ] {
        let a = random_vec(&mut rng, r * in_f, 1.0);
        let b = random_vec(&mut rng, out_f * r, 1.0);
        let ga = Tensor::from_slice(&gpu, &a, &[r, in_f]).unwrap();
        let gb = Tensor::from_slice(&gpu, &b, &[out_f, r]).unwrap();
        let spec = |factor, rows, cols| MaskSpec {
            kind: MaskKind::Exact,
            density: 0.5,
            seed: 1,
            module: 0,
            factor,
            branches: d as u32,
            rows,
            cols,
        };
        let wa = spec(Factor::A, r, in_f).generate_cpu().unwrap();
        let wb = spec(Factor::B, out_f, r).generate_cpu().unwrap();
        let ma = MaskBits::from_words(&gpu, &wa, d as u32, r, in_f).unwrap();
        let mb = MaskBits::from_words(&gpu, &wb, d as u32, out_f, r).unwrap();
        let (ua, ub) = (unpack(&wa, d, r * in_f), unpack(&wb, d, out_f * r));
        // Each stacked view against a dense partner with the matching inner dimension.
        let cases: [(View, usize, usize); 4] = [
            (View::AStacked, d * r, in_f),
            (View::AStackedT, in_f, d * r),
            (View::BStacked, out_f, d * r),
            (View::BStackedT, d * r, out_f),
        ];
        for (view, rows, cols) in cases {
            let (stored, data, shape, masks) = match view {
                View::AStacked | View::AStackedT => (&ga, &a, [r, in_f], (&ma, &ua)),
                _ => (&gb, &b, [out_f, r], (&mb, &ub)),
            };
            let (logical, lr, lc) = gemm::cpu::view(data, shape, view, masks.1);
            assert_eq!((lr, lc), (rows, cols));
            // As operand A: [rows, cols] x dense [cols, t].
            let dense = random_vec(&mut rng, cols * t, 1.0);
            let gd = Tensor::from_slice(&gpu, &dense, &[cols, t]).unwrap();
            let got = gpu
                .run(|rec| {
                    gemm::gemm(
                        rec,
                        Operand::stacked(stored, view, masks.0),
                        Operand::plain(&gd),
                        1.5,
                        None,
                    )
                })
                .unwrap();
            let d64: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
            let want: Vec<f64> = gemm::cpu::matmul(&logical, &d64, rows, cols, t)
                .iter()
                .map(|v| 1.5 * v)
                .collect();
            let err = rel_frobenius(&got.to_vec().unwrap(), &want);
            assert!(err < TOL, "{view:?} as A: {err}");
            // As operand B: dense [t, rows] x [rows, cols].
            let dense = random_vec(&mut rng, t * rows, 1.0);
            let gd = Tensor::from_slice(&gpu, &dense, &[t, rows]).unwrap();
            let got = gpu
                .run(|rec| {
                    gemm::gemm(
                        rec,
                        Operand::plain(&gd),
                        Operand::stacked(stored, view, masks.0),
                        1.0,
                        None,
                    )
                })
                .unwrap();
            let d64: Vec<f64> = dense.iter().map(|&v| v as f64).collect();
            let want = gemm::cpu::matmul(&d64, &logical, t, rows, cols);
            let err = rel_frobenius(&got.to_vec().unwrap(), &want);
            eprintln!("d={d} r={r} {view:?}: rel err {err:.2e}");
            assert!(err < TOL, "{view:?} as B: {err}");
        }
    }
}

#[test]
fn shape_errors_name_the_problem() {
    let Some(gpu) = common::gpu() else { return };
    let a = Tensor::full(&gpu, &[3, 4], 1.0).unwrap();
    let b = Tensor::full(&gpu, &[5, 6], 1.0).unwrap();
    let err = gpu
        .run(|rec| gemm::matmul(rec, &a, false, &b, false))
        .unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("[3, 4]"),
        "{err}"
    );
    let v = Tensor::full(&gpu, &[4], 1.0).unwrap();
    assert!(
        gpu.run(|rec| gemm::matmul(rec, &v, false, &a, false))
            .is_err()
    );
    let err = gpu
        .run(|rec| {
            gemm::gemm(
                rec,
                Operand {
                    tensor: (&a).into(),
                    view: View::AStacked,
                    masks: None,
                },
                Operand::plain(&b),
                1.0,
                None,
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("needs masks"), "{err}");
}
