//! f16 operand B (frozen base weights) in every GEMM kernel: the reference (`B_HALF`,
//! integer decode) and each generated register variant (native `f16` loads where the
//! device has SHADER_F16, e.g. lavapipe; `unpack2x16float` where it has only the
//! downlevel SHADER_F16_IN_F32, e.g. the GL backend), both dense views,
//! odd and aligned shapes, fresh random inputs, against an f64 product computed on the
//! f16-rounded weights; the tuner keys f16 apart; misuse is an error.

mod common;

use capaboost::kernels::gemm::template::SHAPES;
use capaboost::kernels::gemm::tune;
use capaboost::kernels::gemm::{self, Kernel, Operand, View};
use capaboost::runtime::half::round_f16;
use capaboost::{HalfTensor, Tensor};
use common::{random_vec, rel_frobenius};

/// The weights are exact after rounding, so only the f32 accumulation over K (a few
/// hundred terms) differs from f64: relative Frobenius error near 1e-7.
const TOL: f64 = 1e-5;

/// The reference, and the generated variants where the device can run their f16 loads
/// (else each must be a clear error).
fn kernels(gpu: &capaboost::Gpu) -> Vec<Kernel> {
    let mut k = vec![Kernel::Reference];
    eprintln!(
        "f16 reads of the generated variants: {:?}",
        gemm::half_read(gpu)
    );
    if gemm::f16_variants(gpu) {
        k.extend((0..SHAPES.len()).map(Kernel::Register));
    } else {
        eprintln!("no SHADER_F16 on this device: the f16 register variants are not run");
        let w = HalfTensor::from_f32(gpu, "w", &[1.0; 4], &[2, 2]).unwrap();
        let x = Tensor::from_slice(gpu, &[1.0; 4], &[2, 2]).unwrap();
        let c = Tensor::empty(gpu, &[2, 2]).unwrap();
        let ob = Operand::f16(&w, View::Plain);
        let err = gpu
            .run(|rec| {
                let r0 = Kernel::Register(0);
                gemm::gemm_into_with(rec, r0, Operand::plain(&x), ob, &c, 1.0, 0.0, None)
            })
            .unwrap_err();
        assert!(err.to_string().contains("SHADER_F16"), "{err}");
    }
    k
}

/// `C = 0.75 op(A) op(W16) - 1.25 C + bias` for one kernel and each view of A and of the
/// f16 B, checked against f64 on the rounded weights.
fn check(gpu: &capaboost::Gpu, rng: &mut rand::rngs::StdRng, kernel: Kernel, mkn: [usize; 3]) {
    let [m, k, n] = mkn;
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a_shape = if ta { [k, m] } else { [m, k] };
        let b_shape = if tb { [n, k] } else { [k, n] };
        let a = random_vec(rng, m * k, 1.0);
        let b = random_vec(rng, k * n, 1.0);
        let c0 = random_vec(rng, m * n, 1.0);
        let bias = random_vec(rng, n, 1.0);
        let ga = Tensor::from_slice(gpu, &a, &a_shape).unwrap();
        let gb = HalfTensor::from_f32(gpu, "w", &b, &b_shape).unwrap();
        let gc = Tensor::from_slice(gpu, &c0, &[m, n]).unwrap();
        let gbias = Tensor::from_slice(gpu, &bias, &[n]).unwrap();
        let oa = if ta {
            Operand::trans(&ga)
        } else {
            Operand::plain(&ga)
        };
        let bv = if tb { View::Trans } else { View::Plain };
        let ob = Operand::f16(&gb, bv);
        gpu.run(|rec| gemm::gemm_into_with(rec, kernel, oa, ob, &gc, 0.75, -1.25, Some(&gbias)))
            .unwrap();
        let got = gc.to_vec().unwrap();
        let b16: Vec<f32> = b.iter().map(|&x| round_f16(x)).collect();
        let va = gemm::cpu::view(&a, a_shape, oa.view, &[]).0;
        let vb = gemm::cpu::view(&b16, b_shape, bv, &[]).0;
        let c64: Vec<f64> = c0.iter().map(|&v| v as f64).collect();
        let b64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
        let want = gemm::cpu::gemm(&va, &vb, &c64, Some(&b64), [m, k, n], 0.75, -1.25);
        let err = rel_frobenius(&got, &want);
        assert!(
            err < TOL,
            "{kernel:?} [{m}x{k}x{n}] ta={ta} tb={tb}: {err:.2e}"
        );
    }
}

#[test]
fn f16_b_matches_f64_on_rounded_weights_in_every_kernel() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gemm_f16");
    // Odd (scalar loads, edge guards), multiple-of-4 (the two-word F16N / F16K loads,
    // guarded) and tile-exact (aligned variants) shapes.
    let shapes = [
        [37, 45, 29],
        [5, 3, 7],
        [52, 68, 36],
        [64, 96, 64],
        [128, 32, 64],
    ];
    for kernel in kernels(&gpu) {
        for mkn in shapes {
            check(&gpu, &mut rng, kernel, mkn);
        }
    }
}

#[test]
fn f16_b_through_the_tuned_path_and_linear_shapes() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gemm_f16_tuned");
    tune::set_cache_file(None);
    // The projection shapes of a layer (x W^T, dy W) at odd token counts, as
    // `Graph::linear_f16` runs them, with whatever kernel the mode in force picks.
    let (t, inp, out) = (33, 72, 40);
    let x = random_vec(&mut rng, t * inp, 1.0);
    let w = random_vec(&mut rng, out * inp, 0.5);
    let gx = Tensor::from_slice(&gpu, &x, &[t, inp]).unwrap();
    let gw = HalfTensor::from_f32(&gpu, "w", &w, &[out, inp]).unwrap();
    let y = gpu
        .run(|rec| {
            gemm::gemm(
                rec,
                Operand::plain(&gx),
                Operand::f16(&gw, View::Trans),
                1.0,
                None,
            )
        })
        .unwrap();
    let w16: Vec<f32> = w.iter().map(|&v| round_f16(v)).collect();
    let vx = gemm::cpu::view(&x, [t, inp], View::Plain, &[]).0;
    let vw = gemm::cpu::view(&w16, [out, inp], View::Trans, &[]).0;
    let want = gemm::cpu::gemm(&vx, &vw, &vec![0.0; t * out], None, [t, inp, out], 1.0, 0.0);
    let err = rel_frobenius(&y.to_vec().unwrap(), &want);
    assert!(err < TOL, "x W16^T: {err:.2e}");
    let dy = Tensor::from_slice(&gpu, &random_vec(&mut rng, t * out, 1.0), &[t, out]).unwrap();
    let dx = gpu
        .run(|rec| {
            gemm::gemm(
                rec,
                Operand::plain(&dy),
                Operand::f16(&gw, View::Plain),
                1.0,
                None,
            )
        })
        .unwrap();
    let vdy = gemm::cpu::view(&dy.to_vec().unwrap(), [t, out], View::Plain, &[]).0;
    let vw = gemm::cpu::view(&w16, [out, inp], View::Plain, &[]).0;
    let want = gemm::cpu::gemm(
        &vdy,
        &vw,
        &vec![0.0; t * inp],
        None,
        [t, out, inp],
        1.0,
        0.0,
    );
    let err = rel_frobenius(&dx.to_vec().unwrap(), &want);
    assert!(err < TOL, "dy W16: {err:.2e}");
    // The tuning key tells the storage of B apart.
    let wf = Tensor::from_slice(&gpu, &w, &[out, inp]).unwrap();
    let mkn = [512, inp, out];
    let kf = tune::key(&gpu, &Operand::plain(&gx), &Operand::trans(&wf), mkn);
    let kh = tune::key(
        &gpu,
        &Operand::plain(&gx),
        &Operand::f16(&gw, View::Trans),
        mkn,
    );
    assert_ne!(kf, kh);
}

#[test]
fn half_tensor_round_trips_and_misuse_is_an_error() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("half_tensor");
    let v = random_vec(&mut rng, 7 * 5, 3.0);
    let h = HalfTensor::from_f32(&gpu, "w", &v, &[7, 5]).unwrap();
    assert_eq!(h.bytes(), 4 * 18);
    let back = h.to_vec().unwrap();
    let want: Vec<f32> = v.iter().map(|&x| round_f16(x)).collect();
    assert_eq!(back, want);
    let err = HalfTensor::from_f32(&gpu, "layer.9.w", &[1.0, 1e6], &[2]).unwrap_err();
    assert!(err.to_string().contains("layer.9.w"), "{err}");
    let x = Tensor::from_slice(&gpu, &v, &[5, 7]).unwrap();
    // f16 only as a dense operand B.
    let err = gpu
        .run(|rec| {
            gemm::gemm(
                rec,
                Operand::f16(&h, View::Plain),
                Operand::plain(&x),
                1.0,
                None,
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("operand A"), "{err}");
    let err = gpu
        .run(|rec| {
            gemm::gemm(
                rec,
                Operand::plain(&x),
                Operand::f16(&h, View::AStacked),
                1.0,
                None,
            )
        })
        .unwrap_err();
    assert!(err.to_string().contains("f16"), "{err}");
}

#[test]
fn f16_special_values_decode_exactly_in_every_kernel() {
    let Some(gpu) = common::gpu() else { return };
    // Subnormals (including the smallest), signed zeros, the normal boundary and the
    // largest finite values, in a 9 x 9 weight read by I W: C must be the rounded weights,
    // exactly.
    let n = 9;
    let special = [
        5.960_464_5e-8,
        -1.0e-6,
        3.0e-7,
        6.103_515_6e-5,
        -6.097_555e-5,
        0.0,
        -0.0,
        65504.0,
        -65504.0,
        1.0,
        -0.333_33,
        1234.5,
    ];
    let w: Vec<f32> = (0..n * n).map(|i| special[i % special.len()]).collect();
    let eye: Vec<f32> = (0..n * n)
        .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
        .collect();
    let gw = HalfTensor::from_f32(&gpu, "w", &w, &[n, n]).unwrap();
    let gi = Tensor::from_slice(&gpu, &eye, &[n, n]).unwrap();
    let want: Vec<f32> = w.iter().map(|&v| round_f16(v)).collect();
    for kernel in kernels(&gpu) {
        for view in [View::Plain, View::Trans] {
            let c = Tensor::empty(&gpu, &[n, n]).unwrap();
            let ob = Operand::f16(&gw, view);
            gpu.run(|rec| {
                gemm::gemm_into_with(rec, kernel, Operand::plain(&gi), ob, &c, 1.0, 0.0, None)
            })
            .unwrap();
            let got = c.to_vec().unwrap();
            for r in 0..n {
                for col in 0..n {
                    let e = if view == View::Plain {
                        r * n + col
                    } else {
                        col * n + r
                    };
                    // Exact values (the f32 sum 0 + -0 is +0, so zeros compare as values).
                    assert_eq!(
                        got[r * n + col],
                        want[e],
                        "{kernel:?} {view:?} ({r}, {col})"
                    );
                }
            }
        }
    }
}
