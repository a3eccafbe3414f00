//! Mask generation: GPU bits equal the CPU twin bit for bit; counts, coverage, keys, 2:4
//! groups; masked sums against their f64 reference.

mod common;

use capaboost::kernels::masks::{self, Factor, MaskBits, MaskKind, MaskSpec, masked_sum, unpack};
use capaboost::{Error, Tensor};
use common::{random_vec, rel_frobenius};

fn spec(
    kind: MaskKind,
    density: f64,
    seed: u64,
    factor: Factor,
    d: u32,
    rows: usize,
    cols: usize,
) -> MaskSpec {
    MaskSpec {
        kind,
        density,
        seed,
        module: 5,
        factor,
        branches: d,
        rows,
        cols,
    }
}

fn gpu_words(gpu: &capaboost::Gpu, s: &MaskSpec) -> Vec<u32> {
    gpu.run(|rec| MaskBits::generate(rec, s))
        .unwrap()
        .to_words()
        .unwrap()
}

#[test]
fn gpu_masks_equal_cpu_twin_bit_for_bit() {
    let Some(gpu) = common::gpu() else { return };
    let cases = [
        (MaskKind::Exact, 0.5, 3, 67),
        (MaskKind::Exact, 0.3, 53, 3),
        (MaskKind::Exact, 1.0, 8, 33),
        (MaskKind::Exact, 0.5, 64, 768),
        (MaskKind::Bernoulli, 0.5, 3, 67),
        (MaskKind::Bernoulli, 0.1, 129, 17),
        (MaskKind::TwoOfFour, 0.5, 5, 68),
        (MaskKind::TwoOfFour, 0.5, 53, 4),
    ];
    for (kind, p, rows, cols) in cases {
        for d in [1, 3] {
            let s = spec(kind, p, 7, Factor::A, d, rows, cols);
            let cpu = s.generate_cpu().unwrap();
            let gpu_w = gpu_words(&gpu, &s);
            assert_eq!(gpu_w, cpu, "{kind:?} p={p} d={d} [{rows}, {cols}]");
        }
    }
}

#[test]
fn exact_masks_hold_exactly_floor_numel_p_ones() {
    let Some(gpu) = common::gpu() else { return };
    for (p, rows, cols) in [
        (0.5, 3, 67),
        (0.37, 53, 3),
        (0.9, 17, 19),
        (1.0, 4, 5),
        (0.01, 64, 64),
    ] {
        let s = spec(MaskKind::Exact, p, 11, Factor::B, 4, rows, cols);
        let m = unpack(&gpu_words(&gpu, &s), 4, rows * cols);
        let want = ((rows * cols) as f64 * p).floor() as usize;
        for (i, branch) in m.iter().enumerate() {
            let ones = branch.iter().filter(|&&b| b == 1).count();
            assert_eq!(ones, want, "p={p} [{rows}, {cols}] branch {i}");
        }
    }
}

#[test]
fn coverage_and_overlap_follow_the_formulas() {
    let Some(gpu) = common::gpu() else { return };
    let (rows, cols, p) = (64, 256, 0.5);
    let numel = rows * cols;
    for kind in [MaskKind::Exact, MaskKind::Bernoulli, MaskKind::TwoOfFour] {
        for d in [2u32, 4] {
            let s = spec(kind, p, 3, Factor::A, d, rows, cols);
            let m = unpack(&gpu_words(&gpu, &s), d as usize, numel);
            let covered =
                (0..numel).filter(|&e| m.iter().any(|b| b[e] == 1)).count() as f64 / numel as f64;
            let want = 1.0 - (1.0f64 - p).powi(d as i32);
            // Binomial standard error at n = 16384 is below 0.004; 0.02 is five of them.
            assert!(
                (covered - want).abs() < 0.02,
                "{kind:?} d={d}: coverage {covered} vs {want}"
            );
            let overlap =
                (0..numel).filter(|&e| m[0][e] == 1 && m[1][e] == 1).count() as f64 / numel as f64;
            assert!(
                (overlap - p * p).abs() < 0.02,
                "{kind:?} d={d}: overlap {overlap}"
            );
            let density = m[0].iter().filter(|&&b| b == 1).count() as f64 / numel as f64;
            assert!((density - p).abs() < 0.02, "{kind:?}: density {density}");
        }
    }
}

#[test]
fn keys_decide_masks() {
    let Some(gpu) = common::gpu() else { return };
    let base = spec(MaskKind::Exact, 0.5, 42, Factor::A, 2, 8, 64);
    let words = gpu_words(&gpu, &base);
    assert_eq!(gpu_words(&gpu, &base), words, "same key, same masks");
    let variants = [
        MaskSpec { seed: 43, ..base },
        MaskSpec { module: 6, ..base },
        MaskSpec {
            factor: Factor::B,
            ..base
        },
    ];
    for v in variants {
        assert_ne!(gpu_words(&gpu, &v), words, "{v:?}");
    }
    let m = unpack(&words, 2, 8 * 64);
    assert_ne!(m[0], m[1], "branches differ");
}

#[test]
fn two_of_four_groups_hold_exactly_two() {
    let Some(gpu) = common::gpu() else { return };
    let (rows, cols) = (7, 36);
    let s = spec(MaskKind::TwoOfFour, 0.5, 9, Factor::B, 3, rows, cols);
    for branch in unpack(&gpu_words(&gpu, &s), 3, rows * cols) {
        for g in branch.chunks(4) {
            assert_eq!(g.iter().map(|&b| b as u32).sum::<u32>(), 2, "{g:?}");
        }
    }
}

#[test]
fn bad_specs_are_errors() {
    let Some(gpu) = common::gpu() else { return };
    let s = spec(MaskKind::TwoOfFour, 0.5, 1, Factor::A, 2, 4, 6);
    let err = gpu.run(|rec| MaskBits::generate(rec, &s)).unwrap_err();
    assert!(
        matches!(err, Error::Shape(_)) && err.to_string().contains("multiple of 4"),
        "{err}"
    );
    for p in [0.0, -0.5, 1.5, f64::NAN] {
        let s = spec(MaskKind::Exact, p, 1, Factor::A, 2, 4, 8);
        let err = s.generate_cpu().unwrap_err();
        assert!(err.to_string().contains("density"), "{err}");
    }
    assert!(MaskKind::parse("2:4").is_ok() && MaskKind::parse("random").is_err());
}

#[test]
fn masked_sums_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("masked_sums_match_reference");
    let (d, r, in_f, out_f) = (3usize, 3usize, 67usize, 53usize);
    for (factor, rows, cols, stacked_shape) in [
        (Factor::A, r, in_f, [d * r, in_f]),
        (Factor::B, out_f, r, [out_f, d * r]),
    ] {
        let s = spec(MaskKind::Exact, 0.5, 2, factor, d as u32, rows, cols);
        let words = s.generate_cpu().unwrap();
        let bits = MaskBits::from_words(&gpu, &words, d as u32, rows, cols).unwrap();
        let data = random_vec(&mut rng, d * rows * cols, 1.0);
        let stacked = Tensor::from_slice(&gpu, &data, &stacked_shape).unwrap();
        let got = gpu
            .run(|rec| masked_sum(rec, &bits, factor, &stacked))
            .unwrap();
        let want =
            masks::cpu::masked_sum(&unpack(&words, d, rows * cols), factor, &data, rows, cols);
        let err = rel_frobenius(&got.to_vec().unwrap(), &want);
        assert!(err < 1e-6, "{factor:?}: {err}");
        let wrong = Tensor::from_slice(&gpu, &data, &[1, d * rows * cols]).unwrap();
        assert!(
            gpu.run(|rec| masked_sum(rec, &bits, factor, &wrong))
                .is_err()
        );
    }
}
