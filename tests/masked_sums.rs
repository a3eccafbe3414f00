//! `masked_sum_pair` (`shaders/masked_sums.wgsl`): both factors' masked sums of an
//! adapter's backward in one dispatch, against the f64 twin on odd shapes with fresh
//! random inputs (bar: relative Frobenius error 1e-6), bit for bit against two
//! `masked_sum` dispatches and with factor B's stack given transposed
//! ([`StackedB::Rows`], what the adapter's backward passes), and its shape errors. The gradients it produces inside the
//! layer's backward are checked by finite differences in tests/autograd.rs
//! (`capaboost_ops`) and tests/capaboost_layer.rs.

mod common;

use capaboost::kernels::capaboost::LayerMasks;
use capaboost::kernels::masked_sums::{StackedB, cpu, masked_sum_pair, masked_sum_pair_as};
use capaboost::kernels::masks::{Factor, MaskBits, MaskKind, MaskSpec, masked_sum, unpack};
use capaboost::{Gpu, Tensor};
use common::{random_vec, rel_frobenius};

fn spec(kind: MaskKind, factor: Factor, d: u32, rows: usize, cols: usize) -> MaskSpec {
    MaskSpec {
        kind,
        density: 0.5,
        seed: 11,
        module: 3,
        factor,
        branches: d,
        rows,
        cols,
    }
}

/// Masks of an adapter `(r, in, out)` with d branches: on the GPU and as bytes.
fn masks(gpu: &Gpu, kind: MaskKind, d: usize, (r, i, o): (usize, usize, usize)) -> Masks {
    let wa = spec(kind, Factor::A, d as u32, r, i)
        .generate_cpu()
        .unwrap();
    let wb = spec(kind, Factor::B, d as u32, o, r)
        .generate_cpu()
        .unwrap();
    let layer = LayerMasks {
        a: MaskBits::from_words(gpu, &wa, d as u32, r, i).unwrap(),
        b: MaskBits::from_words(gpu, &wb, d as u32, o, r).unwrap(),
    };
    (layer, unpack(&wa, d, r * i), unpack(&wb, d, o * r))
}

type Masks = (LayerMasks, Vec<Vec<u8>>, Vec<Vec<u8>>);

#[test]
fn pair_matches_twin_and_two_single_sums() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("masked_sum_pair");
    let cases = [
        (MaskKind::Exact, 3, (3, 67, 53)),
        (MaskKind::Exact, 2, (8, 33, 129)),
        (MaskKind::Bernoulli, 1, (5, 17, 7)),
        (MaskKind::TwoOfFour, 4, (4, 68, 9)),
    ];
    for (kind, d, (r, i, o)) in cases {
        let (layer, ma, mb) = masks(&gpu, kind, d, (r, i, o));
        let sa = random_vec(&mut rng, d * r * i, 1.0);
        let sb = random_vec(&mut rng, o * d * r, 1.0);
        let ta = Tensor::from_slice(&gpu, &sa, &[d * r, i]).unwrap();
        let tb = Tensor::from_slice(&gpu, &sb, &[o, d * r]).unwrap();
        // S_B^T [d r, o]: the same values, rows and columns swapped.
        let sbt: Vec<f32> = (0..d * r * o)
            .map(|e| sb[(e % o) * d * r + e / o])
            .collect();
        let tbt = Tensor::from_slice(&gpu, &sbt, &[d * r, o]).unwrap();
        let ((da, db), one_a, one_b, (ra, rb)) = gpu
            .run(|rec| {
                let pair = masked_sum_pair(rec, &layer, &ta, &tb)?;
                let one_a = masked_sum(rec, &layer.a, Factor::A, &ta)?;
                let one_b = masked_sum(rec, &layer.b, Factor::B, &tb)?;
                let rows = masked_sum_pair_as(rec, &layer, &ta, (&tbt, StackedB::Rows))?;
                Ok((pair, one_a, one_b, rows))
            })
            .unwrap();
        let (da, db) = (da.to_vec().unwrap(), db.to_vec().unwrap());
        let (wa, wb) = cpu::masked_sum_pair((&ma, &mb), &sa, &sb, (r, i, o));
        let (ea, eb) = (rel_frobenius(&da, &wa), rel_frobenius(&db, &wb));
        assert!(ea < 1e-6 && eb < 1e-6, "{kind:?} d {d}: {ea:.2e} {eb:.2e}");
        assert_eq!(da, one_a.to_vec().unwrap(), "{kind:?} d {d}: A differs");
        assert_eq!(db, one_b.to_vec().unwrap(), "{kind:?} d {d}: B differs");
        assert_eq!(da, ra.to_vec().unwrap(), "{kind:?} d {d}: A differs (rows)");
        assert_eq!(db, rb.to_vec().unwrap(), "{kind:?} d {d}: B^T differs");
        assert!(da.iter().chain(&db).any(|v| *v != 0.0));
    }
}

#[test]
fn pair_refuses_wrong_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let (d, r, i, o) = (2, 3, 5, 7);
    let (layer, _, _) = masks(&gpu, MaskKind::Exact, d, (r, i, o));
    let ok_a = Tensor::from_slice(&gpu, &vec![1.0; d * r * i], &[d * r, i]).unwrap();
    let ok_b = Tensor::from_slice(&gpu, &vec![1.0; o * d * r], &[o, d * r]).unwrap();
    let bad_a = Tensor::from_slice(&gpu, &vec![1.0; d * r * i], &[r, d * i]).unwrap();
    let bad_b = Tensor::from_slice(&gpu, &vec![1.0; o * d * r], &[d * r, o]).unwrap();
    for (a, b) in [(&bad_a, &ok_b), (&ok_a, &bad_b)] {
        let err = gpu
            .run(|rec| masked_sum_pair(rec, &layer, a, b))
            .unwrap_err();
        assert!(err.to_string().contains("stacked gradient"), "{err}");
    }
    // Transposed, factor B's stack must be [d r, out]; [out, d r] is refused.
    let err = gpu
        .run(|rec| masked_sum_pair_as(rec, &layer, &ok_a, (&ok_b, StackedB::Rows)))
        .unwrap_err();
    assert!(err.to_string().contains("[6, 7]"), "{err}");
}
