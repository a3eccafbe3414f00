//! Split-K GEMM (`kernels::gemm::split`) and its reduction pass (`shaders/splitk.wgsl`):
//! every split count, including ones that do not divide K and S = K, over the register
//! shapes and the operand views the adapter gradients use (plain, transposed, masked
//! stacked), against the f64 reference on odd shapes with fresh random inputs; the
//! reduction against its CPU twin; bit-identical reruns; refused split counts; the
//! autotuner's split-K candidates and their cache labels.

mod common;

use capaboost::Tensor;
use capaboost::kernels::gemm::template::SHAPES;
use capaboost::kernels::gemm::tune::{self, Mode};
use capaboost::kernels::gemm::{self, Kernel, Operand, View};
use capaboost::kernels::masks::{Factor, MaskBits, MaskKind, MaskSpec, unpack};
use capaboost::kernels::splitk;
use common::{random_vec, rel_frobenius, to64};

/// f32 sums over K of at most about a thousand, in slices: relative Frobenius error near
/// 1e-7; the bound leaves two orders of magnitude.
const TOL: f64 = 1e-5;

/// The four transpose combinations of A and B.
const ALL_VIEWS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];
/// The adapter gradients' combination: `dB = s G^T H`, `dA_s = dH^T x`.
const GRAD_VIEWS: [(bool, bool); 1] = [(true, false)];

/// `C = 0.75 op(A) op(B) - 1.25 C + bias` through `kernel` for each transpose combination
/// of `views`, each against f64.
fn check_dense(
    gpu: &capaboost::Gpu,
    rng: &mut rand::rngs::StdRng,
    kernel: Kernel,
    (m, k, n): (usize, usize, usize),
    views: &[(bool, bool)],
) {
    for &(ta, tb) in views {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let (a, b) = (random_vec(rng, m * k, 1.0), random_vec(rng, k * n, 1.0));
        let (c0, bias) = (random_vec(rng, m * n, 1.0), random_vec(rng, n, 1.0));
        let ga = Tensor::from_slice(gpu, &a, &a_shape).unwrap();
        let gb = Tensor::from_slice(gpu, &b, &b_shape).unwrap();
        let gc = Tensor::from_slice(gpu, &c0, &[m, n]).unwrap();
        let gbias = Tensor::from_slice(gpu, &bias, &[n]).unwrap();
        let op = |t, tr| {
            if tr {
                Operand::trans(t)
            } else {
                Operand::plain(t)
            }
        };
        let (oa, ob) = (op(&ga, ta), op(&gb, tb));
        gpu.run(|rec| gemm::gemm_into_with(rec, kernel, oa, ob, &gc, 0.75, -1.25, Some(&gbias)))
            .unwrap();
        let va = gemm::cpu::view(&a, a_shape, oa.view, &[]).0;
        let vb = gemm::cpu::view(&b, b_shape, ob.view, &[]).0;
        let (c64, b64) = (to64(&c0), to64(&bias));
        let inputs = (&va[..], &vb[..], &c64[..], Some(&b64[..]));
        let got = gc.to_vec().unwrap();
        let err = common::gemm_rel_err(&got, inputs, [m, k, n], (0.75, -1.25));
        assert!(
            err < TOL,
            "{} [{m}x{k}x{n}] ta={ta} tb={tb}: {err:.2e}",
            kernel.label()
        );
    }
}

#[test]
fn every_split_count_matches_reference_on_dense_views() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("every_split_count_matches_reference_on_dense_views");
    // Odd sizes (K = 517: no S below divides it, slices end mid-vec4), adapter-like
    // narrow N and M, and a tile-aligned one (the aligned variants' vec4 loads at slice
    // offsets). Every shape with the gradients' views; all views on the shapes `fixed` and
    // `on` mostly pick (each extra view and shape is a pipeline to compile).
    for shape in 0..SHAPES.len() {
        let views: &[(bool, bool)] = if shape == 0 || shape == 3 {
            &ALL_VIEWS
        } else {
            &GRAD_VIEWS
        };
        for s in [1, 3, 4, 8, 32] {
            check_dense(
                &gpu,
                &mut rng,
                Kernel::SplitK(shape, s),
                (37, 517, 53),
                views,
            );
        }
    }
    for (mkn, shape) in [((67, 301, 16), 3), ((16, 303, 67), 4), ((64, 516, 64), 0)] {
        for s in [3, 8, 16] {
            check_dense(&gpu, &mut rng, Kernel::SplitK(shape, s), mkn, &GRAD_VIEWS);
        }
    }
}

#[test]
fn split_counts_up_to_k_and_refused_beyond() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("split_counts_up_to_k_and_refused_beyond");
    // S = K (slices of 4, fewer partials than asked), S = K - 1, and a K under 4.
    for (mkn, s) in [
        ((5, 7, 3), 7),
        ((9, 13, 11), 12),
        ((3, 3, 5), 3),
        ((1, 1, 1), 1),
    ] {
        check_dense(&gpu, &mut rng, Kernel::SplitK(3, s), mkn, &ALL_VIEWS);
    }
    let a = Tensor::from_slice(&gpu, &random_vec(&mut rng, 6 * 5, 1.0), &[6, 5]).unwrap();
    let b = Tensor::from_slice(&gpu, &random_vec(&mut rng, 5 * 4, 1.0), &[5, 4]).unwrap();
    let c = Tensor::empty(&gpu, &[6, 4]).unwrap();
    for s in [6, 0, 100_000] {
        let err = gpu
            .run(|rec| {
                let (oa, ob) = (Operand::plain(&a), Operand::plain(&b));
                gemm::gemm_into_with(rec, Kernel::SplitK(0, s), oa, ob, &c, 1.0, 0.0, None)
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("S = {s}")), "S = {s}: {err}");
    }
    // A batched problem is refused, not split across the batch.
    let ab = Tensor::from_slice(&gpu, &random_vec(&mut rng, 2 * 30, 1.0), &[2, 6, 5]).unwrap();
    let cb = Tensor::empty(&gpu, &[2, 6, 4]).unwrap();
    let err = gpu
        .run(|rec| {
            let (oa, ob) = (Operand::plain(&ab), Operand::plain(&b));
            gemm::gemm_into_with(rec, Kernel::SplitK(0, 2), oa, ob, &cb, 1.0, 0.0, None)
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("unbatched"), "{err}");
}

fn mask_spec(factor: Factor, d: u32, rows: usize, cols: usize) -> MaskSpec {
    MaskSpec {
        kind: MaskKind::Exact,
        density: 0.5,
        seed: 11,
        module: 0,
        factor,
        branches: d,
        rows,
        cols,
    }
}

#[test]
fn split_counts_match_reference_on_stacked_views() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("split_counts_match_reference_on_stacked_views");
    // K of each product is a side of the stacked operand: in = 301 or d r = 27.
    let (d, r, in_f, out_f, t) = (3usize, 9usize, 301usize, 61usize, 37usize);
    let a = random_vec(&mut rng, r * in_f, 1.0);
    let b = random_vec(&mut rng, out_f * r, 1.0);
    let ga = Tensor::from_slice(&gpu, &a, &[r, in_f]).unwrap();
    let gb = Tensor::from_slice(&gpu, &b, &[out_f, r]).unwrap();
    let wa = mask_spec(Factor::A, d as u32, r, in_f)
        .generate_cpu()
        .unwrap();
    let wb = mask_spec(Factor::B, d as u32, out_f, r)
        .generate_cpu()
        .unwrap();
    let ma = MaskBits::from_words(&gpu, &wa, d as u32, r, in_f).unwrap();
    let mb = MaskBits::from_words(&gpu, &wb, d as u32, out_f, r).unwrap();
    let (ua, ub) = (unpack(&wa, d, r * in_f), unpack(&wb, d, out_f * r));
    for view in [
        View::AStacked,
        View::AStackedT,
        View::BStacked,
        View::BStackedT,
    ] {
        let (stored, data, shape, masks) = match view {
            View::AStacked | View::AStackedT => (&ga, &a, [r, in_f], (&ma, &ua)),
            _ => (&gb, &b, [out_f, r], (&mb, &ub)),
        };
        let (logical, rows, cols) = gemm::cpu::view(data, shape, view, masks.1);
        let sv = Operand::stacked(stored, view, masks.0);
        // As A: [rows, cols] x [cols, t] (K = cols); as B: [t, rows] x [rows, cols] (K = rows).
        let right = random_vec(&mut rng, cols * t, 1.0);
        let left = random_vec(&mut rng, t * rows, 1.0);
        let gr = Tensor::from_slice(&gpu, &right, &[cols, t]).unwrap();
        let gl = Tensor::from_slice(&gpu, &left, &[t, rows]).unwrap();
        let want_a = gemm::cpu::matmul(&logical, &to64(&right), rows, cols, t);
        let want_b = gemm::cpu::matmul(&to64(&left), &logical, t, rows, cols);
        for s in [1u32, 3, 8] {
            let (ca, cb) = (
                Tensor::empty(&gpu, &[rows, t]).unwrap(),
                Tensor::empty(&gpu, &[t, cols]).unwrap(),
            );
            gpu.run(|rec| {
                let k = Kernel::SplitK(0, s);
                gemm::gemm_into_with(rec, k, sv, Operand::plain(&gr), &ca, 1.0, 0.0, None)?;
                gemm::gemm_into_with(rec, k, Operand::plain(&gl), sv, &cb, 1.0, 0.0, None)
            })
            .unwrap();
            let ea = rel_frobenius(&ca.to_vec().unwrap(), &want_a);
            let eb = rel_frobenius(&cb.to_vec().unwrap(), &want_b);
            assert!(
                ea < TOL && eb < TOL,
                "S={s} {view:?}: as A {ea:.2e}, as B {eb:.2e}"
            );
        }
    }
}

#[test]
fn reduction_matches_its_cpu_twin() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("reduction_matches_its_cpu_twin");
    for ([s, m, n], beta, with_bias) in [
        ([1, 3, 5], 0.0, false),
        ([3, 37, 53], -1.25, true),
        ([7, 1, 1], 0.5, false),
        ([32, 67, 16], 0.0, true),
        ([5, 130, 67], 1.0, true),
    ] {
        let parts = random_vec(&mut rng, s * m * n, 1.0);
        let c0 = random_vec(&mut rng, m * n, 1.0);
        let bias = random_vec(&mut rng, n, 1.0);
        let gp = Tensor::from_slice(&gpu, &parts, &[s, m, n]).unwrap();
        let gc = Tensor::from_slice(&gpu, &c0, &[m, n]).unwrap();
        let gbias = Tensor::from_slice(&gpu, &bias, &[n]).unwrap();
        let b = with_bias.then_some(&gbias);
        gpu.run(|rec| splitk::reduce_into(rec, &gp, &gc, (0.75, beta), b))
            .unwrap();
        let b64 = to64(&bias);
        let want = splitk::cpu::reduce(
            &to64(&parts),
            [s, m, n],
            &to64(&c0),
            (0.75, beta as f64),
            with_bias.then_some(&b64[..]),
        );
        let err = rel_frobenius(&gc.to_vec().unwrap(), &want);
        // Sums of at most 32 f32 terms.
        assert!(err < 1e-6, "[{s}, {m}, {n}] beta={beta}: {err:.2e}");
    }
    // Mismatched operands are refused by name.
    let gp = Tensor::from_slice(&gpu, &random_vec(&mut rng, 24, 1.0), &[2, 3, 4]).unwrap();
    let flat = Tensor::from_slice(&gpu, &random_vec(&mut rng, 12, 1.0), &[12]).unwrap();
    let c = Tensor::empty(&gpu, &[3, 5]).unwrap();
    let c_ok = Tensor::empty(&gpu, &[3, 4]).unwrap();
    let bias = Tensor::empty(&gpu, &[3]).unwrap();
    for (p, c, b, what) in [
        (&flat, &c_ok, None, "partials"),
        (&gp, &c, None, "output"),
        (&gp, &c_ok, Some(&bias), "bias"),
    ] {
        let err = gpu
            .run(|rec| splitk::reduce_into(rec, p, c, (1.0, 0.0), b))
            .unwrap_err()
            .to_string();
        assert!(err.contains(what), "{what}: {err}");
    }
}

#[test]
fn split_k_is_bit_identical_between_runs() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("split_k_is_bit_identical_between_runs");
    // The adapter's dB shape in small: G^T H with G [T, out], H [T, d r].
    let (t, out_f, dr) = (1031, 45, 16);
    let g = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * out_f, 1.0), &[t, out_f]).unwrap();
    let h = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * dr, 1.0), &[t, dr]).unwrap();
    let c0 = random_vec(&mut rng, out_f * dr, 1.0);
    for kernel in [
        Kernel::SplitK(3, 8),
        Kernel::SplitK(0, 32),
        Kernel::SplitK(4, 5),
    ] {
        let runs: Vec<Vec<u32>> = (0..2)
            .map(|_| {
                let c = Tensor::from_slice(&gpu, &c0, &[out_f, dr]).unwrap();
                gpu.run(|rec| {
                    let (oa, ob) = (Operand::trans(&g), Operand::plain(&h));
                    gemm::gemm_into_with(rec, kernel, oa, ob, &c, 0.5, 1.0, None)
                })
                .unwrap();
                c.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{}", kernel.label());
    }
}

#[test]
fn split_labels_round_trip() {
    for s in 0..SHAPES.len() {
        for p in [1, 4, 8, 16, 32, 1000] {
            let k = Kernel::SplitK(s, p);
            assert_eq!(Kernel::from_label(&k.label()), Some(k), "{}", k.label());
        }
    }
    assert_eq!(Kernel::SplitK(3, 8).label(), "r4x4w4x16s8");
    for bad in [
        "r4x4w4x16s0",
        "r4x4w4x16s",
        "r4x4w4x16sx",
        "r9x9w1x1s8",
        "s8",
    ] {
        assert_eq!(Kernel::from_label(bad), None, "{bad}");
    }
}

#[test]
fn autotuner_measures_split_counts_on_adapter_gradients() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("autotuner_measures_split_counts_on_adapter_gradients");
    let dir = std::env::temp_dir().join(format!("capaboost-splitk-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    tune::set_cache_file(Some(dir.join("gemm_tune.json")));
    // dA_s = dH^T x: [d r, T] x [T, in] with T = 600 tokens, d r = 12, in = 50.
    let (t, dr, in_f) = (600, 12, 50);
    let dh = random_vec(&mut rng, t * dr, 1.0);
    let x = random_vec(&mut rng, t * in_f, 1.0);
    let gdh = Tensor::from_slice(&gpu, &dh, &[t, dr]).unwrap();
    let gx = Tensor::from_slice(&gpu, &x, &[t, in_f]).unwrap();
    let (oa, ob) = (Operand::trans(&gdh), Operand::plain(&gx));
    tune::set_mode(Some(Mode::On));
    let chosen = tune::choose(&gpu, &oa, &ob, [dr, t, in_f]).unwrap();
    let report = tune::reports()
        .into_iter()
        .rfind(|r| r.mkn == [dr, t, in_f])
        .expect("the shape was tuned");
    assert_eq!(report.chosen, chosen);
    let mut splits: Vec<u32> = report
        .times
        .iter()
        .filter_map(|(k, _)| match k {
            Kernel::SplitK(_, s) => Some(*s),
            _ => None,
        })
        .collect();
    splits.sort();
    // K = 600 allows S = 4, 8 and 16 (slices of at least 32), over the leading shape.
    assert_eq!(splits, [4, 8, 16], "{:?}", report.times);
    // The choice persists under a label that parses back to it.
    let file = tune::cache_entries(&dir.join("gemm_tune.json"));
    assert_eq!(Kernel::from_label(&file[&report.key]), Some(chosen));
    // Whatever won runs correctly through the tuned entry point.
    let c = Tensor::empty(&gpu, &[dr, in_f]).unwrap();
    gpu.run(|rec| gemm::gemm_into(rec, oa, ob, &c, 1.0, 0.0, None))
        .unwrap();
    let want = gemm::cpu::matmul(
        &gemm::cpu::transpose(&to64(&dh), t, dr),
        &to64(&x),
        dr,
        t,
        in_f,
    );
    let err = rel_frobenius(&c.to_vec().unwrap(), &want);
    assert!(err < TOL, "{}: {err:.2e}", chosen.label());
    let _ = std::fs::remove_dir_all(&dir);
}
