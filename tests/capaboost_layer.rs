//! One CapaBoost-LoRA layer on the GPU against the per-branch f64 reference: forward,
//! backward (also checked by finite differences), delta_W, merge; the golden case; ranks.

mod common;

use capaboost::kernels::capaboost::{Adapter, Dx, Layer, LayerMasks, Needs, cpu, naive};
use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::{Gpu, Tensor, kernels::gemm};
use common::{random_vec, rel_frobenius};

const TOL: f64 = 1e-5;

struct Case {
    x: Vec<f32>,
    w0: Vec<f32>,
    b0: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    g: Vec<f32>,
    t: usize,
    in_f: usize,
    out_f: usize,
    r: usize,
}

impl Case {
    fn random(rng: &mut rand::rngs::StdRng, t: usize, in_f: usize, out_f: usize, r: usize) -> Self {
        Self {
            x: random_vec(rng, t * in_f, 1.0),
            w0: random_vec(rng, out_f * in_f, 0.5),
            b0: random_vec(rng, out_f, 0.5),
            a: random_vec(rng, r * in_f, 0.5),
            b: random_vec(rng, out_f * r, 0.5),
            g: random_vec(rng, t * out_f, 1.0),
            t,
            in_f,
            out_f,
            r,
        }
    }

    fn reference<'a>(&'a self, ma: &'a [Vec<u8>], mb: &'a [Vec<u8>], s: f64) -> cpu::Layer<'a> {
        cpu::Layer {
            x: &self.x,
            t: self.t,
            w0: &self.w0,
            b0: Some(&self.b0),
            adapter: cpu::Adapter {
                a: &self.a,
                b: &self.b,
                ma,
                mb,
                s,
                in_f: self.in_f,
                out_f: self.out_f,
                r: self.r,
            },
        }
    }
}

struct OnGpu {
    x: Tensor,
    w0: Tensor,
    b0: Tensor,
    a: Tensor,
    b: Tensor,
    g: Tensor,
}

impl OnGpu {
    /// The layer with bias over these tensors.
    fn layer<'a>(&'a self, masks: &'a LayerMasks, s: f32) -> Layer<'a> {
        Layer::new(
            &self.w0,
            Some(&self.b0),
            Adapter::new(&self.a, &self.b, masks, s),
        )
    }
}

fn upload(gpu: &Gpu, c: &Case) -> OnGpu {
    let up = |d: &[f32], s: &[usize]| Tensor::from_slice(gpu, d, s).unwrap();
    OnGpu {
        x: up(&c.x, &[c.t, c.in_f]),
        w0: up(&c.w0, &[c.out_f, c.in_f]),
        b0: up(&c.b0, &[c.out_f]),
        a: up(&c.a, &[c.r, c.in_f]),
        b: up(&c.b, &[c.out_f, c.r]),
        g: up(&c.g, &[c.t, c.out_f]),
    }
}

#[test]
fn forward_backward_delta_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("forward_backward_delta_match_reference");
    // Odd shapes, then one several 64-wide tiles in every direction.
    for (t, in_f, out_f, r, d, kind) in [
        (37, 67, 53, 3, 3u32, MaskKind::Exact),
        (37, 68, 53, 4, 2, MaskKind::TwoOfFour),
        (150, 133, 141, 5, 4, MaskKind::Bernoulli),
    ] {
        let c = Case::random(&mut rng, t, in_f, out_f, r);
        let g = upload(&gpu, &c);
        let s = 16.0 / r as f32;
        let (masks, fwd, grads, dw) = gpu
            .run(|rec| {
                let masks = LayerMasks::generate(
                    rec,
                    &MaskConfig::new(kind, d, 0.5, 7),
                    0,
                    r,
                    in_f,
                    out_f,
                )?;
                let fwd = g.layer(&masks, s).forward(rec, &g.x)?;
                let grads = g.layer(&masks, s).backward(rec, &g.x, &fwd.h, &g.g, true)?;
                let dw = Adapter::new(&g.a, &g.b, &masks, s).delta_weight(rec)?;
                Ok((masks, fwd, grads, dw))
            })
            .unwrap();
        let (ma, mb) = masks.to_u8().unwrap();
        let layer = c.reference(&ma, &mb, s as f64);
        let (dx, da, db) = layer.backward(&c.g);
        let errs = [
            (
                "y",
                rel_frobenius(&fwd.y.to_vec().unwrap(), &layer.forward()),
            ),
            (
                "dx",
                rel_frobenius(&grads.dx.unwrap().to_vec().unwrap(), &dx),
            ),
            ("dA", rel_frobenius(&grads.da.to_vec().unwrap(), &da)),
            ("dB", rel_frobenius(&grads.db.to_vec().unwrap(), &db)),
            (
                "delta_W",
                rel_frobenius(&dw.to_vec().unwrap(), &layer.delta_weight()),
            ),
        ];
        eprintln!("T={t} in={in_f} out={out_f} r={r} d={d} {kind:?}: {errs:?}");
        for (name, e) in errs {
            assert!(e < TOL, "{name}: {e}");
        }
    }
}

#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = common::rng("reference_backward_matches_finite_differences");
    let c = Case::random(&mut rng, 5, 7, 6, 2);
    let d = 3;
    let ma: Vec<Vec<u8>> = (0..d)
        .map(|_| {
            (0..c.r * c.in_f)
                .map(|_| rand::Rng::random_range(&mut rng, 0..2))
                .collect()
        })
        .collect();
    let mb: Vec<Vec<u8>> = (0..d)
        .map(|_| {
            (0..c.out_f * c.r)
                .map(|_| rand::Rng::random_range(&mut rng, 0..2))
                .collect()
        })
        .collect();
    let s = 1.7;
    let (dx, da, db) = c.reference(&ma, &mb, s).backward(&c.g);
    let loss = |c: &Case| -> f64 {
        c.reference(&ma, &mb, s)
            .forward()
            .iter()
            .zip(&c.g)
            .map(|(y, &g)| y * g as f64)
            .sum()
    };
    // y is linear in each input, so central differences are exact up to rounding.
    let h = 0.25f32;
    let mut worst = 0.0f64;
    for (which, grad) in [(0, &dx), (1, &da), (2, &db)] {
        let n = grad.len();
        for e in 0..n {
            let mut p = Case { ..clone_case(&c) };
            let mut m = clone_case(&c);
            let (vp, vm) = match which {
                0 => (&mut p.x[e], &mut m.x[e]),
                1 => (&mut p.a[e], &mut m.a[e]),
                _ => (&mut p.b[e], &mut m.b[e]),
            };
            *vp += h;
            *vm -= h;
            let fd = (loss(&p) - loss(&m)) / (2.0 * h as f64);
            worst =
                worst.max((fd - grad[e]).abs() / grad.iter().fold(1e-12f64, |a, v| a.max(v.abs())));
        }
    }
    eprintln!("worst FD error relative to max |grad|: {worst:.2e}");
    assert!(worst < 1e-9, "{worst}");
}

fn clone_case(c: &Case) -> Case {
    Case {
        x: c.x.clone(),
        w0: c.w0.clone(),
        b0: c.b0.clone(),
        a: c.a.clone(),
        b: c.b.clone(),
        g: c.g.clone(),
        ..*c
    }
}

#[test]
fn gpu_backward_matches_gpu_finite_differences() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("gpu_backward_matches_gpu_finite_differences");
    let c = Case::random(&mut rng, 9, 11, 13, 3);
    let g = upload(&gpu, &c);
    let s = 2.0;
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 2, 0.5, 3),
                1,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let grads = gpu
        .run(|rec| {
            let f = g.layer(&masks, s).forward(rec, &g.x)?;
            g.layer(&masks, s).backward(rec, &g.x, &f.h, &g.g, true)
        })
        .unwrap();
    let loss = |x: &[f32], a: &[f32], b: &[f32]| -> f64 {
        let tx = Tensor::from_slice(&gpu, x, &[c.t, c.in_f]).unwrap();
        let ta = Tensor::from_slice(&gpu, a, &[c.r, c.in_f]).unwrap();
        let tb = Tensor::from_slice(&gpu, b, &[c.out_f, c.r]).unwrap();
        let y = gpu
            .run(|rec| {
                Layer::new(&g.w0, Some(&g.b0), Adapter::new(&ta, &tb, &masks, s)).forward(rec, &tx)
            })
            .unwrap()
            .y;
        y.to_vec()
            .unwrap()
            .iter()
            .zip(&c.g)
            .map(|(&y, &g)| y as f64 * g as f64)
            .sum()
    };
    let h = 0.5f32;
    for (name, grad, which) in [
        ("dx", grads.dx.unwrap(), 0),
        ("dA", grads.da, 1),
        ("dB", grads.db, 2),
    ] {
        let grad = grad.to_vec().unwrap();
        let scale = grad.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64;
        // A handful of entries per tensor: every probe is two GPU forwards.
        for e in [0, grad.len() / 3, grad.len() / 2, grad.len() - 1] {
            let (mut xp, mut ap, mut bp) = (c.x.clone(), c.a.clone(), c.b.clone());
            let (mut xm, mut am, mut bm) = (c.x.clone(), c.a.clone(), c.b.clone());
            match which {
                0 => (xp[e] += h, xm[e] -= h),
                1 => (ap[e] += h, am[e] -= h),
                _ => (bp[e] += h, bm[e] -= h),
            };
            let fd = (loss(&xp, &ap, &bp) - loss(&xm, &am, &bm)) / (2.0 * h as f64);
            let err = (fd - grad[e] as f64).abs() / scale;
            assert!(err < 1e-4, "{name}[{e}]: fd {fd} vs {} ({err})", grad[e]);
        }
    }
}

#[test]
fn golden_case_is_exact() {
    let Some(gpu) = common::gpu() else { return };
    let up = |d: &[f32], s: &[usize]| Tensor::from_slice(&gpu, d, s).unwrap();
    let x = up(&[1., 2., -1., 0., 1., 3.], &[2, 3]);
    let a = up(&[1., 0.5, 2., -2., 1., 0.], &[2, 3]);
    let b = up(&[1., 3., 0., 1., -1., 0., 2., -2.], &[4, 2]);
    let w0 = up(&[0.0; 12], &[4, 3]);
    let g = up(&[1., -1., 0.5, 2., 0., 2., -1., 1.], &[2, 4]);
    let ma = vec![vec![1, 1, 0, 0, 1, 1], vec![0, 1, 1, 1, 0, 1]];
    let mb = vec![vec![1, 0, 1, 1, 0, 1, 0, 0], vec![0, 1, 1, 0, 1, 0, 1, 1]];
    let masks = LayerMasks::from_u8(&gpu, &ma, &mb, 2, 3, 4).unwrap();
    let (fwd, grads, dw) = gpu
        .run(|rec| {
            let layer = Layer::new(&w0, None, Adapter::new(&a, &b, &masks, 2.0));
            let f = layer.forward(rec, &x)?;
            let gr = layer.backward(rec, &x, &f.h, &g, true)?;
            let dw = layer.adapter.delta_weight(rec)?;
            Ok((f, gr, dw))
        })
        .unwrap();
    assert_eq!(
        fwd.y.to_vec().unwrap(),
        [-8., 4., 2., 4., 1., 2., -13., 26.]
    );
    assert_eq!(grads.da.to_vec().unwrap(), [2., 24., 11., -2., 0., 4.]);
    assert_eq!(
        grads.db.to_vec().unwrap(),
        [4., -4., 26., 0., -14., 0., 9., -8.]
    );
    assert_eq!(
        grads.dx.unwrap().to_vec().unwrap(),
        [6., 2.5, 14., 8., 7., 12.]
    );
    let dw = dw.to_vec().unwrap();
    assert_eq!(dw, [-10., 1., 0., 0., 2., 0., 0., -1., -4., 8., 2., 8.]);
    let dw64: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
    assert_eq!(cpu::rank(&dw64, 4, 3, 1e-9), 3);
    let one = LayerMasks::from_u8(&gpu, &ma[..1], &mb[..1], 2, 3, 4).unwrap();
    let dw1 = gpu
        .run(|rec| Adapter::new(&a, &b, &one, 2.0).delta_weight(rec))
        .unwrap()
        .to_vec()
        .unwrap();
    let dw1: Vec<f64> = dw1.iter().map(|&v| v as f64).collect();
    assert_eq!(cpu::rank(&dw1, 4, 3, 1e-9), 2);
}

fn merged_rank(gpu: &Gpu, a: &Tensor, b: &Tensor, masks: &LayerMasks) -> usize {
    let dw = gpu
        .run(|rec| Adapter::new(a, b, masks, 1.0).delta_weight(rec))
        .unwrap()
        .to_vec()
        .unwrap();
    let dw: Vec<f64> = dw.iter().map(|&v| v as f64).collect();
    cpu::rank(&dw, 64, 64, 1e-4)
}

#[test]
fn rank_grows_with_d_and_controls_collapse_to_r() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("rank_grows_with_d_and_controls_collapse_to_r");
    let (n, r) = (64, 4);
    let a = Tensor::from_slice(&gpu, &random_vec(&mut rng, r * n, 1.0), &[r, n]).unwrap();
    let b = Tensor::from_slice(&gpu, &random_vec(&mut rng, n * r, 1.0), &[n, r]).unwrap();
    for (d, want) in [(1u32, 4), (2, 8), (4, 16)] {
        let masks = gpu
            .run(|rec| {
                LayerMasks::generate(
                    rec,
                    &MaskConfig::new(MaskKind::Exact, d, 0.5, 11),
                    0,
                    r,
                    n,
                    n,
                )
            })
            .unwrap();
        assert_eq!(merged_rank(&gpu, &a, &b, &masks), want, "d={d}");
    }
    // Negative controls: identical masks in every branch, and masks on one factor only.
    let one = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 1, 0.5, 11),
                0,
                r,
                n,
                n,
            )
        })
        .unwrap();
    let (ma, mb) = one.to_u8().unwrap();
    let same = LayerMasks::from_u8(
        &gpu,
        &vec![ma[0].clone(); 4],
        &vec![mb[0].clone(); 4],
        r,
        n,
        n,
    )
    .unwrap();
    assert_eq!(merged_rank(&gpu, &a, &b, &same), r);
    let four = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 4, 0.5, 11),
                0,
                r,
                n,
                n,
            )
        })
        .unwrap();
    let (ma4, _) = four.to_u8().unwrap();
    let a_only = LayerMasks::from_u8(&gpu, &ma4, &vec![vec![1u8; n * r]; 4], r, n, n).unwrap();
    assert_eq!(merged_rank(&gpu, &a, &b, &a_only), r);
}

#[test]
fn merge_equals_unmerged_forward_and_unmerge_restores() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("merge_equals_unmerged_forward_and_unmerge_restores");
    let c = Case::random(&mut rng, 37, 67, 53, 3);
    let g = upload(&gpu, &c);
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 3, 0.5, 5),
                2,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let y = gpu
        .run(|rec| g.layer(&masks, 4.0).forward(rec, &g.x))
        .unwrap()
        .y;
    gpu.run(|rec| g.layer(&masks, 4.0).adapter.merge(rec, &g.w0))
        .unwrap();
    let merged = gpu
        .run(|rec| gemm::linear(rec, &g.x, &g.w0, Some(&g.b0)))
        .unwrap();
    let y64: Vec<f64> = y.to_vec().unwrap().iter().map(|&v| v as f64).collect();
    let e = rel_frobenius(&merged.to_vec().unwrap(), &y64);
    assert!(e < TOL, "merged forward: {e}");
    gpu.run(|rec| g.layer(&masks, 4.0).adapter.unmerge(rec, &g.w0))
        .unwrap();
    let w: Vec<f64> = c.w0.iter().map(|&v| v as f64).collect();
    let e = rel_frobenius(&g.w0.to_vec().unwrap(), &w);
    assert!(e < 1e-6, "unmerge: {e}");
}

#[test]
fn plain_lora_and_zero_b_are_exact() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("plain_lora_and_zero_b_are_exact");
    let mut c = Case::random(&mut rng, 21, 19, 23, 4);
    // d = 1, p = 1: every mask entry is 1, i.e. plain LoRA.
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 1, 1.0, 1),
                0,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let (ma, mb) = masks.to_u8().unwrap();
    assert!(ma[0].iter().chain(&mb[0]).all(|&v| v == 1));
    let g = upload(&gpu, &c);
    let y = gpu
        .run(|rec| g.layer(&masks, 2.0).forward(rec, &g.x))
        .unwrap()
        .y;
    let e = rel_frobenius(&y.to_vec().unwrap(), &c.reference(&ma, &mb, 2.0).forward());
    assert!(e < TOL, "{e}");
    // B = 0 (LoRA's init): the adapted output equals the base layer's bit for bit.
    c.b = vec![0.0; c.out_f * c.r];
    let g = upload(&gpu, &c);
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 2, 0.5, 1),
                0,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let y = gpu
        .run(|rec| g.layer(&masks, 2.0).forward(rec, &g.x))
        .unwrap()
        .y;
    let base = gpu
        .run(|rec| gemm::linear(rec, &g.x, &g.w0, Some(&g.b0)))
        .unwrap();
    assert_eq!(y.to_vec().unwrap(), base.to_vec().unwrap());
}

#[test]
fn layer_shape_errors_name_the_tensor() {
    let Some(gpu) = common::gpu() else { return };
    let up = |s: &[usize]| Tensor::full(&gpu, s, 0.5).unwrap();
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 2, 0.5, 1),
                0,
                3,
                8,
                5,
            )
        })
        .unwrap();
    let (x, w0, a, b) = (up(&[4, 8]), up(&[5, 8]), up(&[3, 8]), up(&[5, 3]));
    let bad_x = up(&[4, 9]);
    let err = gpu
        .run(|rec| Layer::new(&w0, None, Adapter::new(&a, &b, &masks, 1.0)).forward(rec, &bad_x))
        .unwrap_err();
    assert!(err.to_string().contains("x is [4, 9]"), "{err}");
    let bad_b = up(&[5, 4]);
    let err = gpu
        .run(|rec| Layer::new(&w0, None, Adapter::new(&a, &bad_b, &masks, 1.0)).forward(rec, &x))
        .unwrap_err();
    assert!(err.to_string().contains("lora_B"), "{err}");
    let bad_bias = up(&[6]);
    let err = gpu
        .run(|rec| {
            Layer::new(&w0, Some(&bad_bias), Adapter::new(&a, &b, &masks, 1.0)).forward(rec, &x)
        })
        .unwrap_err();
    assert!(err.to_string().contains("bias"), "{err}");
}

#[test]
fn naive_baseline_computes_the_same_layer() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("naive_baseline_computes_the_same_layer");
    let c = Case::random(&mut rng, 37, 67, 53, 3);
    let g = upload(&gpu, &c);
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 3, 0.5, 5),
                2,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let (y, grads) = gpu
        .run(|rec| naive::forward_backward(rec, &g.layer(&masks, 2.0), &g.x, &g.g))
        .unwrap();
    let (dx, da, db) = (grads.dx.unwrap(), grads.da, grads.db);
    let (ma, mb) = masks.to_u8().unwrap();
    let layer = c.reference(&ma, &mb, 2.0);
    let (rdx, rda, rdb) = layer.backward(&c.g);
    for (name, got, want) in [
        ("y", y, layer.forward()),
        ("dx", dx, rdx),
        ("dA", da, rda),
        ("dB", db, rdb),
    ] {
        let e = rel_frobenius(&got.to_vec().unwrap(), &want);
        assert!(e < TOL, "{name}: {e}");
    }
}

#[test]
fn adapter_update_and_backward_match_reference() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("adapter_update_and_backward_match_reference");
    let c = Case::random(&mut rng, 29, 45, 38, 3);
    let g = upload(&gpu, &c);
    let masks = gpu
        .run(|rec| {
            LayerMasks::generate(
                rec,
                &MaskConfig::new(MaskKind::Exact, 3, 0.5, 9),
                4,
                c.r,
                c.in_f,
                c.out_f,
            )
        })
        .unwrap();
    let (ma, mb) = masks.to_u8().unwrap();
    let reference = c.reference(&ma, &mb, 1.5).adapter;
    let adapter = Adapter::new(&g.a, &g.b, &masks, 1.5);
    // The update accumulates into a given output: y0 + s H B_s^T.
    let y0 = random_vec(&mut rng, c.t * c.out_f, 1.0);
    let y = Tensor::from_slice(&gpu, &y0, &[c.t, c.out_f]).unwrap();
    let h = gpu.run(|rec| adapter.update(rec, &g.x, &y)).unwrap();
    assert_eq!(h.shape(), [3 * c.r, c.t], "H is saved transposed");
    let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
    reference.update(&c.x, c.t, &mut want);
    let e = rel_frobenius(&y.to_vec().unwrap(), &want);
    assert!(e < TOL, "update: {e}");

    let mut dx_want = vec![0.0; c.t * c.in_f];
    let (da_want, db_want) = reference.backward(&c.x, c.t, &c.g, Some(&mut dx_want));
    // Each gradient only when asked for; dx new, or added to a given tensor.
    let only_a = Needs {
        a: true,
        b: false,
        x: Dx::New,
    };
    let grads = gpu
        .run(|rec| adapter.backward(rec, &g.x, &h, &g.g, only_a))
        .unwrap();
    assert!(grads.db.is_none());
    let e = rel_frobenius(&grads.da.unwrap().to_vec().unwrap(), &da_want);
    assert!(e < TOL, "dA: {e}");
    let e = rel_frobenius(&grads.dx.unwrap().to_vec().unwrap(), &dx_want);
    assert!(e < TOL, "dx: {e}");
    let dx0 = random_vec(&mut rng, c.t * c.in_f, 1.0);
    let dx = Tensor::from_slice(&gpu, &dx0, &[c.t, c.in_f]).unwrap();
    let only_b = Needs {
        a: false,
        b: true,
        x: Dx::AddTo(&dx),
    };
    let grads = gpu
        .run(|rec| adapter.backward(rec, &g.x, &h, &g.g, only_b))
        .unwrap();
    assert!(grads.da.is_none() && grads.dx.is_none());
    let e = rel_frobenius(&grads.db.unwrap().to_vec().unwrap(), &db_want);
    assert!(e < TOL, "dB: {e}");
    let want: Vec<f64> = dx0
        .iter()
        .zip(&dx_want)
        .map(|(&a, b)| a as f64 + b)
        .collect();
    let e = rel_frobenius(&dx.to_vec().unwrap(), &want);
    assert!(e < TOL, "dx added: {e}");
    let none = Needs {
        a: false,
        b: false,
        x: Dx::Skip,
    };
    let grads = gpu
        .run(|rec| adapter.backward(rec, &g.x, &h, &g.g, none))
        .unwrap();
    assert!(grads.da.is_none() && grads.db.is_none() && grads.dx.is_none());
    // Shape errors name the tensor.
    let err = gpu
        .run(|rec| adapter.backward(rec, &g.x, &g.x, &g.g, only_a))
        .unwrap_err();
    assert!(err.to_string().contains("saved H"), "{err}");
}
