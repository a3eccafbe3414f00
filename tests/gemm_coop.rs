//! The cooperative-matrix GEMM (`kernels::gemm::coop`). Lavapipe has no cooperative
//! matrices, so its arithmetic is tested through the CPU twin (`coop_twin`, the kernel's
//! blocks, staging maps, padding, f16 rounding, subgroup tile ownership and epilogue step
//! for step) against the f64 reference on odd shapes; its sources are translated by naga in
//! `tests/shader_portability.rs`; and on a device without the feature the autotuner must
//! never list it.

mod common;

use capaboost::kernels::gemm::coop::{self, CONFIGS, F16_CHECK_TOL, Spec, per_subgroup};
use capaboost::kernels::gemm::coop_twin::{self, Problem, round_f16};
use capaboost::kernels::gemm::tune::{self, CHECK_TOL, Mode};
use capaboost::kernels::gemm::{self, Kernel, Operand, View};
use capaboost::runtime::coopmat::{CoopInput, CoopPolicy, CoopShape, usable};
use capaboost::runtime::tensor::Tensor;

#[test]
fn f16_rounding_is_round_to_nearest_even_with_subnormals_and_overflow() {
    assert_eq!(round_f16(1.0), 1.0);
    assert_eq!(round_f16(1.0 / 3.0), 0.333_251_95);
    // Halfway between 1 and 1 + 2^-10: ties to even (1); just above: up.
    assert_eq!(round_f16(1.0 + f32::powi(2.0, -11)), 1.0);
    assert_eq!(
        round_f16(1.0 + 3.0 * f32::powi(2.0, -11)),
        1.0 + f32::powi(2.0, -9)
    );
    assert_eq!(round_f16(-2049.0), -2048.0);
    assert_eq!(round_f16(65504.0), 65504.0);
    assert_eq!(round_f16(65519.0), 65504.0);
    assert_eq!(round_f16(65520.0), f32::INFINITY);
    assert_eq!(round_f16(-1e6), f32::NEG_INFINITY);
    // Subnormal quantum 2^-24; below half of it, zero.
    assert_eq!(round_f16(3.0 * f32::powi(2.0, -25)), f32::powi(2.0, -23));
    assert_eq!(round_f16(f32::powi(2.0, -26)), 0.0);
    assert!(round_f16(f32::NAN).is_nan());
}

fn reference(p: &Problem, c0: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let [m, k, n] = p.mkn;
    let (mut want, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut abs) = (0f64, 0f64);
            for x in 0..k {
                let t = p.a[i * k + x] as f64 * p.b[x * n + j] as f64;
                s += t;
                abs += t.abs();
            }
            let bias = p.bias.map_or(0.0, |b| b[j] as f64);
            // beta == 0: C is not read (it may hold NaN).
            let old = if p.beta == 0.0 {
                0.0
            } else {
                p.beta as f64 * c0[i * n + j] as f64
            };
            want[i * n + j] = p.alpha as f64 * s + old + bias;
            mag[i * n + j] = abs;
        }
    }
    (want, mag)
}

/// Checks `got` elementwise against the rounding-error bound of the kernel's arithmetic:
/// rounding both inputs moves a product by at most `(2u + u^2)` of its magnitude (`u`: the
/// input rounding's relative error, 0 for f32 inputs), the f32 sum of K products by at
/// most `(K + 2) 2^-24` of the sum of magnitudes, and the epilogue adds three f32
/// roundings. Returns the relative Frobenius error and how much of the terms' size the
/// result keeps (`||want|| / ||terms||`).
fn within_bound(p: &Problem, c0: &[f32], got: &[f32], u: f64) -> (f64, f64) {
    let (want, mag) = reference(p, c0);
    let eps = f64::powi(2.0, -24);
    let k = p.mkn[1] as f64;
    let alpha = p.alpha.abs() as f64;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let j = i % p.mkn[2];
        let sum = alpha * mag[i] * (1.0 + 2.0 * u + u * u);
        let old = if p.beta == 0.0 {
            0.0
        } else {
            p.beta as f64 * c0[i] as f64
        };
        let edges = old.abs() + p.bias.map_or(0.0, |b| b[j].abs() as f64);
        let bound =
            alpha * mag[i] * (2.0 * u + u * u) + sum * (k + 2.0) * eps + 4.0 * eps * (sum + edges);
        let err = (g as f64 - w).abs();
        assert!(
            err <= bound,
            "{:?} at {i}: got {g}, want {w}, error {err:e} over the bound {bound:e}",
            p.mkn
        );
        num += w * w;
        den += (alpha * mag[i] + edges).powi(2);
    }
    // How much of the terms' size the result keeps: near 0 when it cancels (fresh random
    // inputs on a 1x1x1 problem), where the relative error says nothing the bound did not.
    let kept = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    (common::rel_frobenius(got, &want), kept)
}

/// Runs the twin and checks it against the bound (f16: round to nearest, `u = 2^-11`).
fn check(shape: CoopShape, (pk, ns): (u32, u32), p: &Problem, c0: &[f32]) -> (f64, f64) {
    let mut got = c0.to_vec();
    coop_twin::gemm(shape, pk, ns, p, &mut got).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
    let u = match shape.input {
        CoopInput::F16 => f64::powi(2.0, -11),
        CoopInput::F32 => 0.0,
    };
    within_bound(p, c0, &got, u)
}

const SHAPES: [[usize; 3]; 7] = [
    [1, 1, 1],
    [5, 3, 7],
    [17, 33, 5],
    [64, 64, 64],
    [65, 31, 70],
    [100, 67, 129],
    [33, 130, 9],
];

#[test]
fn twin_matches_the_f64_reference_on_odd_shapes_within_the_rounding_bound() {
    let mut rng = common::rng("coop twin");
    for shape in CONFIGS {
        for (s, mkn) in SHAPES.iter().enumerate() {
            let [m, k, n] = *mkn;
            let a = common::random_vec(&mut rng, m * k, 1.0);
            let b = common::random_vec(&mut rng, k * n, 1.0);
            let bias = common::random_vec(&mut rng, n, 1.0);
            let c0 = common::random_vec(&mut rng, m * n, 1.0);
            let p = Problem {
                mkn: *mkn,
                a: &a,
                b: &b,
                a_transposed: s % 2 == 1,
                b_transposed: s % 3 == 1,
                alpha: 0.75,
                beta: -1.25,
                bias: Some(&bias),
            };
            // NVIDIA-like subgroups (32 wide, 4 per workgroup).
            let (err, kept) = check(shape, (per_subgroup(32), 4), &p, &c0);
            let tol = coop::check_tol(shape);
            // Every element is within its rounding bound (asserted in `check`); the relative
            // error is meaningful where the result did not cancel away.
            assert!(
                err <= tol || kept < 0.1,
                "{shape:?} {mkn:?}: relative error {err:e} > {tol:e}"
            );
            if shape.input == CoopInput::F16 && k >= 64 {
                // Why f16 inputs need a tolerance of their own: the f32 one would reject
                // them (C is mostly the product here: beta C and the bias are O(1)).
                let no_c = Problem {
                    beta: 0.0,
                    bias: None,
                    ..p
                };
                let (err, _) = check(shape, (per_subgroup(32), 4), &no_c, &c0);
                assert!(err > CHECK_TOL, "{shape:?} {mkn:?}: f16 error {err:e}");
            }
        }
    }
}

#[test]
fn twin_is_exact_for_every_subgroup_size_the_accumulator_count_allows() {
    // A device with subgroups of up to `sg_max` compiles `per_subgroup(sg_max)` accumulators;
    // it may run any smaller power-of-two size (more subgroups), and every tile must still
    // be computed exactly once (the twin errors otherwise) and right. beta = 0: C unread.
    let mut rng = common::rng("coop subgroups");
    let [m, k, n] = [70, 45, 37];
    let a = common::random_vec(&mut rng, m * k, 1.0);
    let b = common::random_vec(&mut rng, k * n, 1.0);
    let c0 = vec![f32::NAN; m * n];
    for shape in CONFIGS {
        for sg_max in [4u32, 8, 16, 32, 64, 128] {
            let mut size = sg_max;
            while size >= 4 {
                let p = Problem {
                    mkn: [m, k, n],
                    a: &a,
                    b: &b,
                    a_transposed: size % 16 == 0,
                    b_transposed: size % 8 == 0,
                    alpha: -1.5,
                    beta: 0.0,
                    bias: None,
                };
                let (got, _) = check(shape, (per_subgroup(sg_max), 128 / size), &p, &c0);
                assert!(got.is_finite(), "{shape:?} sg_max {sg_max} size {size}");
                size /= 2;
            }
        }
    }
    // Too few accumulators for the subgroups present is caught.
    let p = Problem {
        mkn: [m, k, n],
        a: &a,
        b: &b,
        a_transposed: false,
        b_transposed: false,
        alpha: 1.0,
        beta: 0.0,
        bias: None,
    };
    let mut c = vec![0.0; m * n];
    let e = coop_twin::gemm(CONFIGS[0], per_subgroup(32), 2, &p, &mut c).unwrap_err();
    assert!(e.contains("never stored"), "{e}");
}

fn props(
    size: u32,
    ab: wgpu::CooperativeScalarType,
    cr: wgpu::CooperativeScalarType,
) -> wgpu::CooperativeMatrixProperties {
    wgpu::CooperativeMatrixProperties {
        m_size: size,
        n_size: size,
        k_size: size,
        ab_type: ab,
        cr_type: cr,
        saturating_accumulation: false,
    }
}

#[test]
fn usable_configurations_follow_the_listing_the_features_and_the_policy() {
    use wgpu::CooperativeScalarType::{F16, F32};
    let all = wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16;
    let mut nvidia = vec![props(16, F16, F16), props(16, F16, F32)];
    nvidia.push(wgpu::CooperativeMatrixProperties {
        n_size: 8,
        ..props(16, F16, F32)
    });
    let metal = vec![props(8, F32, F32), props(8, F16, F16), props(8, F16, F32)];
    let f16 = |size| CoopShape {
        size,
        input: CoopInput::F16,
    };
    let f32_8 = CoopShape {
        size: 8,
        input: CoopInput::F32,
    };
    assert_eq!(usable(&nvidia, all, CoopPolicy::F16), [f16(16)]);
    assert_eq!(usable(&nvidia, all, CoopPolicy::F32), []);
    assert_eq!(usable(&metal, all, CoopPolicy::F32), [f32_8]);
    assert_eq!(usable(&metal, all, CoopPolicy::F16), [f32_8, f16(8)]);
    assert_eq!(usable(&metal, all, CoopPolicy::Off), []);
    // f16 inputs need SHADER_F16; every configuration needs SUBGROUP.
    let no_f16 = wgpu::Features::SUBGROUP;
    assert_eq!(usable(&metal, no_f16, CoopPolicy::F16), [f32_8]);
    assert_eq!(
        usable(&metal, wgpu::Features::SHADER_F16, CoopPolicy::F16),
        []
    );
    assert_eq!(usable(&[], all, CoopPolicy::F16), []);
}

#[test]
fn workgroup_memory_and_labels_match_the_sources() {
    for (i, shape) in CONFIGS.iter().enumerate() {
        let source = Spec {
            config: i,
            per_subgroup: 4,
            emulated: 0,
        }
        .source();
        let module = naga::front::wgsl::parse_str(source.source).unwrap();
        let mut bytes = 0u64;
        for (_, var) in module.global_variables.iter() {
            if var.space != naga::AddressSpace::WorkGroup {
                continue;
            }
            let naga::TypeInner::Array { base, size, .. } = module.types[var.ty].inner else {
                panic!("{}: workgroup variable not an array", source.name);
            };
            let naga::ArraySize::Constant(len) = size else {
                panic!("{}: unsized workgroup array", source.name);
            };
            let naga::TypeInner::Scalar(s) = module.types[base].inner else {
                panic!("{}: not an array of scalars", source.name);
            };
            bytes += len.get() as u64 * s.width as u64;
        }
        assert_eq!(bytes, shape.workgroup_bytes(), "{}", source.name);
        let kernel = Kernel::Coop(i);
        assert_eq!(Kernel::from_label(&kernel.label()), Some(kernel));
        let tol = match shape.input {
            CoopInput::F16 => F16_CHECK_TOL,
            CoopInput::F32 => CHECK_TOL,
        };
        assert_eq!(kernel.check_tol(), tol);
    }
    assert_eq!(Kernel::Register(0).check_tol(), CHECK_TOL);
    assert_eq!(per_subgroup(32), 4);
    assert_eq!(per_subgroup(64), 8);
    assert_eq!(per_subgroup(8), 1);
}

#[test]
fn without_the_feature_the_autotuner_never_lists_a_coop_candidate() {
    let Some(gpu) = common::gpu() else { return };
    if gpu
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        eprintln!("skipping: this device has cooperative matrices");
        return;
    }
    assert!(gpu.cooperative_matrix_properties().is_empty());
    assert!(coop::candidates(&gpu).is_empty());
    let mut rng = common::rng("coop tune");
    let [m, k, n] = [96, 80, 72];
    let a = Tensor::from_slice(&gpu, &common::random_vec(&mut rng, m * k, 1.0), &[m, k]).unwrap();
    let b = Tensor::from_slice(&gpu, &common::random_vec(&mut rng, k * n, 1.0), &[k, n]).unwrap();
    let (oa, ob) = (Operand::plain(&a), Operand::plain(&b));
    let report = tune::tune(&gpu, &oa, &ob, [m, k, n], Mode::Exhaustive).unwrap();
    assert!(report.times.len() > 1, "{:?}", report.times);
    for (kernel, _) in &report.times {
        assert!(!matches!(kernel, Kernel::Coop(_)), "{}", kernel.label());
    }
    assert!(!matches!(report.chosen, Kernel::Coop(_)));
}

/// Stored shape of a dense view of logical `[rows, cols]`, batched.
fn stored(view: View, batch: usize, [r, c]: [usize; 2]) -> Vec<usize> {
    let s = if view == View::Trans { [c, r] } else { [r, c] };
    if batch > 1 {
        vec![batch, s[0], s[1]]
    } else {
        s.to_vec()
    }
}

/// The generated kernel itself, run on this device through the GEMM's own dispatch as its
/// emulation (`coop::set_emulation`: the same source, each cooperative operation a loop
/// over the tile elements a lane of a "subgroup" holds, f16 rounding through `pack2x16float`),
/// against the f64 reference on odd shapes, transposed views, a batch, beta and the bias.
/// The emulation compiles the accumulators of a device with subgroups of up to 64 and runs
/// subgroups of 32, so half of them idle behind the guards.
#[test]
fn the_emulated_kernel_matches_the_f64_reference_on_odd_shapes_and_views() {
    let Some(gpu) = common::gpu() else { return };
    if gpu.adapter_info().backend == wgpu::Backend::Gl {
        // wgpu has cooperative matrices on Vulkan and Metal only, and llvmpipe's GL driver
        // did not finish the emulated kernel in 5 minutes (Vulkan: seconds).
        eprintln!("skipping on GL: no cooperative matrices there; the Vulkan pass runs this");
        return;
    }
    coop::set_emulation(Some((64, 32)));
    let mut rng = common::rng("coop emulated");
    let cases = [
        ([37, 45, 70], View::Plain, View::Plain, 1),
        ([65, 33, 9], View::Trans, View::Trans, 1),
        ([20, 70, 67], View::Plain, View::Trans, 2),
        ([64, 64, 64], View::Trans, View::Plain, 1),
    ];
    // Every case on the tensor-core shape (16x16 f16), one each on the others (llvmpipe
    // compiles a pipeline per configuration and view pair).
    let runs = (0..cases.len())
        .map(|c| (0, c))
        .chain((1..CONFIGS.len()).map(|i| (i, i % cases.len())));
    for (config, case) in runs {
        let shape = &CONFIGS[config];
        {
            let ([m, k, n], va, vb, batch) = cases[case];
            let a = common::random_vec(&mut rng, batch * m * k, 1.0);
            let b = common::random_vec(&mut rng, batch * k * n, 1.0);
            let c0 = common::random_vec(&mut rng, batch * m * n, 1.0);
            let bias = common::random_vec(&mut rng, n, 1.0);
            let ga = Tensor::from_slice(&gpu, &a, &stored(va, batch, [m, k])).unwrap();
            let gb = Tensor::from_slice(&gpu, &b, &stored(vb, batch, [k, n])).unwrap();
            let gc = Tensor::from_slice(&gpu, &c0, &stored(View::Plain, batch, [m, n])).unwrap();
            let gbias = Tensor::from_slice(&gpu, &bias, &[n]).unwrap();
            let oa = Operand {
                tensor: (&ga).into(),
                view: va,
                masks: None,
            };
            let ob = Operand {
                tensor: (&gb).into(),
                view: vb,
                masks: None,
            };
            let kernel = Kernel::Coop(config);
            gpu.run(|rec| {
                gemm::gemm_into_with(rec, kernel, oa, ob, &gc, 0.75, -1.25, Some(&gbias))
            })
            .unwrap();
            let got = gc.to_vec().unwrap();
            // pack2x16float may round to either neighbour: twice round-to-nearest's error.
            let u = match shape.input {
                CoopInput::F16 => f64::powi(2.0, -10),
                CoopInput::F32 => 0.0,
            };
            for i in 0..batch {
                let (sa, sb) = (stored(va, 1, [m, k]), stored(vb, 1, [k, n]));
                let la = gemm::cpu::view(&a[i * m * k..][..m * k], [sa[0], sa[1]], va, &[]).0;
                let lb = gemm::cpu::view(&b[i * k * n..][..k * n], [sb[0], sb[1]], vb, &[]).0;
                let (la, lb): (Vec<f32>, Vec<f32>) = (
                    la.iter().map(|&v| v as f32).collect(),
                    lb.iter().map(|&v| v as f32).collect(),
                );
                let p = Problem {
                    mkn: [m, k, n],
                    a: &la,
                    b: &lb,
                    a_transposed: va == View::Trans,
                    b_transposed: vb == View::Trans,
                    alpha: 0.75,
                    beta: -1.25,
                    bias: Some(&bias),
                };
                let range = i * m * n..(i + 1) * m * n;
                let (err, kept) = within_bound(&p, &c0[range.clone()], &got[range], u);
                assert!(
                    err <= coop::check_tol(*shape) || kept < 0.1,
                    "{shape:?} {m}x{k}x{n}: {err:e}"
                );
            }
        }
    }
    coop::set_emulation(None);
}
