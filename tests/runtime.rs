//! The GPU runtime: pool statistics, pipeline and bind-group caches, timing, error capture,
//! adapter selection and adoption of a device another program created.

mod common;

use capaboost::runtime::gpu::AdapterSelection;
use capaboost::runtime::shaders::ShaderSource;
use capaboost::{Error, Gpu, Tensor, TimingSource, kernels::elementwise};

fn one_round(gpu: &Gpu, a: &Tensor, b: &Tensor) -> f32 {
    let out = gpu
        .run(|rec| {
            let s = elementwise::add(rec, a, b)?;
            let m = elementwise::mul(rec, &s, b)?;
            elementwise::scale(rec, &m, 0.5)
        })
        .unwrap();
    out.to_vec().unwrap()[0]
}

/// Recordings that differ at the same dispatch places (other inputs, other kernels in
/// another order) take turns: each must bind its own buffers (the cache tries the group
/// the previous recording had at that place first, then falls back), with correct
/// results every time and no bind group created once both are warm.
#[test]
fn alternating_recordings_bind_their_own_buffers() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let n = 1037;
    let a = Tensor::full(&gpu, &[n], 1.5).unwrap();
    let b = Tensor::full(&gpu, &[n], 2.0).unwrap();
    let c = Tensor::full(&gpu, &[n], -3.0).unwrap();
    let other = |gpu: &Gpu| -> f32 {
        let out = gpu
            .run(|rec| {
                let m = elementwise::mul(rec, &c, &a)?;
                let s = elementwise::scale(rec, &m, 2.0)?;
                elementwise::add(rec, &s, &c)
            })
            .unwrap();
        out.to_vec().unwrap()[n - 1]
    };
    for _ in 0..3 {
        assert_eq!(one_round(&gpu, &a, &b), 3.5);
        assert_eq!(other(&gpu), -12.0);
        assert_eq!(one_round(&gpu, &c, &a), -1.125);
    }
    let created = gpu.pipelines().bind_groups_created();
    for i in 0..20 {
        assert_eq!(one_round(&gpu, &a, &b), 3.5, "round {i}");
        assert_eq!(other(&gpu), -12.0, "round {i}");
        assert_eq!(one_round(&gpu, &c, &a), -1.125, "round {i}");
    }
    assert_eq!(gpu.pipelines().bind_groups_created(), created);
}

#[test]
fn pool_and_caches_stay_flat_over_repeated_work() {
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    let n = 4099;
    let a = Tensor::full(&gpu, &[n], 1.5).unwrap();
    let b = Tensor::full(&gpu, &[n], 2.0).unwrap();
    // A few warm-up rounds: the free lists settle into a fixed rotation after these.
    for _ in 0..4 {
        assert_eq!(one_round(&gpu, &a, &b), 3.5);
        eprintln!("bind groups {}", gpu.pipelines().bind_group_count());
    }
    let before = gpu.pool_stats();
    let pipelines = gpu.pipelines().compiled_count();
    let bind_groups = gpu.pipelines().bind_group_count();
    for i in 0..100 {
        assert_eq!(one_round(&gpu, &a, &b), 3.5, "round {i}");
        let s = gpu.pool_stats();
        assert_eq!(
            s.live_bytes, before.live_bytes,
            "live bytes grew at round {i}"
        );
        assert_eq!(
            s.live_count, before.live_count,
            "live count grew at round {i}"
        );
        assert_eq!(
            s.created_count, before.created_count,
            "buffers created at round {i}"
        );
    }
    let after = gpu.pool_stats();
    assert_eq!(after.peak_live_bytes, before.peak_live_bytes);
    assert!(after.reused_count >= before.reused_count + 100 * 4);
    assert_eq!(gpu.pipelines().compiled_count(), pipelines);
    assert_eq!(gpu.pipelines().bind_group_count(), bind_groups);
    eprintln!("pool after 101 rounds: {after:?}");
    drop((a, b));
    assert_eq!(gpu.pool_stats().live_bytes, 0);
    gpu.trim();
    assert_eq!(gpu.pool_stats().cached_bytes, 0);
}

/// Work whose shapes keep changing (as length-bucketed batches do) leaves idle buffers in
/// many size classes; `trim_excess` between rounds keeps them under the peak in use.
#[test]
fn trim_excess_bounds_idle_buffers_when_shapes_vary() {
    let (Some(plain), Some(trimmed)) = (common::fresh_gpu(), common::fresh_gpu()) else {
        return;
    };
    let sizes: Vec<usize> = (0..24).map(|i| 1000 + 997 * ((i * 7) % 24)).collect();
    for (gpu, trim) in [(&plain, false), (&trimmed, true)] {
        for (i, &n) in sizes.iter().enumerate() {
            let a = Tensor::full(gpu, &[n], 1.5).unwrap();
            let b = Tensor::full(gpu, &[n], 2.0).unwrap();
            assert_eq!(one_round(gpu, &a, &b), 3.5, "round {i}");
            drop((a, b));
            let s = gpu.pool_stats();
            if trim {
                let trimmed_now = gpu.trim_excess(0);
                let t = gpu.pool_stats();
                assert_eq!(trimmed_now, s.cached_bytes > s.peak_live_bytes, "round {i}");
                assert!(t.cached_bytes <= t.peak_live_bytes, "round {i}: {t:?}");
            }
        }
    }
    let (p, t) = (plain.pool_stats(), trimmed.pool_stats());
    eprintln!("untrimmed {p:?}\ntrimmed {t:?}");
    assert!(
        p.cached_bytes > 2 * p.peak_live_bytes,
        "the shapes do pile up: {p:?}"
    );
    assert!(t.cached_bytes <= t.peak_live_bytes);
    // A floor above what is idle leaves the pool alone.
    assert!(!plain.trim_excess(u64::MAX));
    assert_eq!(plain.pool_stats().cached_bytes, p.cached_bytes);
}

#[test]
fn one_submit_for_many_dispatches() {
    let Some(gpu) = common::gpu() else { return };
    let a = Tensor::full(&gpu, &[513], 1.0).unwrap();
    let mut rec = gpu.recorder();
    let mut x = a.clone();
    for _ in 0..10 {
        x = elementwise::add(&mut rec, &x, &a).unwrap();
    }
    assert_eq!(rec.submit().unwrap(), 10);
    assert!(x.to_vec().unwrap().iter().all(|&v| v == 11.0));
}

#[test]
fn full_fills_every_element_across_write_blocks() {
    let Some(gpu) = common::gpu() else { return };
    // Over two of Tensor::full's 2^18-value write blocks, and a ragged end.
    let n = (1 << 19) + 3;
    let t = Tensor::full(&gpu, &[n], -2.5).unwrap();
    assert!(t.to_vec().unwrap().iter().all(|&v| v == -2.5));
    let empty = Tensor::full(&gpu, &[0], 1.0).unwrap();
    assert!(empty.to_vec().unwrap().is_empty());
    let small = Tensor::full(&gpu, &[2, 3], 7.0).unwrap();
    assert_eq!(small.to_vec().unwrap(), vec![7.0; 6]);
}

static BROKEN_SYNTAX: ShaderSource = ShaderSource {
    name: "broken_syntax",
    source: "@compute @workgroup_size(1) fn main( { }",
};

// Parses, but a 4096-wide workgroup is over every device's limit: only wgpu's pipeline
// validation catches it, and it must come back as an Err, not a panic.
static OVER_LIMIT: ShaderSource = ShaderSource {
    name: "over_limit",
    source: "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n\
             @compute @workgroup_size(4096) fn main(@builtin(local_invocation_index) i: u32) { o[i] = 1.0; }",
};

#[test]
fn shader_errors_are_results() {
    let Some(gpu) = common::gpu() else { return };
    let err = gpu
        .pipelines()
        .get(&BROKEN_SYNTAX, "main", &[])
        .unwrap_err();
    assert!(matches!(err, Error::Shader { .. }), "{err}");
    let err = gpu.pipelines().get(&OVER_LIMIT, "main", &[]).unwrap_err();
    assert!(matches!(err, Error::Shader { .. }), "{err}");
    eprintln!("{err}");
    let err = gpu
        .pipelines()
        .get(
            &capaboost::runtime::shaders::ELEMENTWISE,
            "no_such_entry",
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("no_such_entry"), "{err}");
    // The device is still usable afterwards.
    let t = Tensor::full(&gpu, &[3], 4.0).unwrap();
    assert_eq!(t.to_vec().unwrap(), vec![4.0; 3]);
}

#[test]
fn timing_covers_each_pass() {
    let Some(gpu) = common::gpu() else { return };
    let a = Tensor::full(&gpu, &[100_003], 1.0).unwrap();
    let timing = gpu
        .time(|rec| {
            let b = elementwise::add(rec, &a, &a)?;
            let c = elementwise::mul(rec, &b, &a)?;
            elementwise::copy(rec, &c).map(drop)
        })
        .unwrap();
    eprintln!("{timing:?}");
    if gpu.has_timestamps() {
        assert_eq!(timing.source, TimingSource::Timestamps);
        let names: Vec<_> = timing.passes.iter().map(|p| p.0).collect();
        assert_eq!(names, ["add", "mul", "copy_vec4", "copy_tail"]);
        let sum: std::time::Duration = timing.passes.iter().map(|p| p.1).sum();
        assert!(timing.total >= sum, "{timing:?}");
    }
    let wall = gpu
        .time_with(false, |rec| elementwise::add(rec, &a, &a).map(drop))
        .unwrap();
    assert_eq!(wall.source, TimingSource::WallClock);
    assert!(wall.total > std::time::Duration::ZERO);
}

#[test]
fn unknown_adapter_is_a_clear_error() {
    let sel = AdapterSelection {
        name_contains: Some("no-such-gpu-xyz".into()),
        backend: None,
    };
    let err = Gpu::with_selection(&sel).unwrap_err();
    assert!(matches!(err, Error::NoAdapter { .. }), "{err}");
    assert!(err.to_string().contains("no-such-gpu-xyz"), "{err}");
}

#[test]
fn adopts_a_device_created_elsewhere() {
    // A host program makes its own device with WebGPU default limits and no features.
    let instance = common::host_instance();
    let adapter =
        match pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        {
            Ok(a) => a,
            Err(e) if common::adapter_required() => panic!("no adapter: {e}"),
            Err(e) => return eprintln!("skipping: {e}"),
        };
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())).unwrap();
    let gpu = Gpu::from_wgpu(device.clone(), queue);
    assert_eq!(gpu.features(), wgpu::Features::empty());
    assert_eq!(
        gpu.limits().max_storage_buffer_binding_size,
        device.limits().max_storage_buffer_binding_size
    );
    let a = Tensor::from_slice(&gpu, &[1.0, -2.0, 3.5], &[3]).unwrap();
    let b = gpu.run(|rec| elementwise::scale(rec, &a, 2.0)).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![2.0, -4.0, 7.0]);
    // Without TIMESTAMP_QUERY, timing falls back to the wall clock.
    let t = gpu
        .time(|rec| elementwise::add(rec, &a, &a).map(drop))
        .unwrap();
    assert_eq!(t.source, TimingSource::WallClock);
}

#[test]
fn capabilities_report_the_fallbacks_taken() {
    let Some(gpu) = common::gpu() else { return };
    let caps = gpu.capabilities();
    let gl = gpu.adapter_info().backend == wgpu::Backend::Gl;
    eprintln!("{:?} on {:?}", caps, gpu.adapter_info().backend);
    // GL serialises the crate's calls into the device; no other backend does.
    assert_eq!(caps.serialised_calls, gl);
    assert_eq!(gpu.gate().is_some(), gl);
    // Timing: timestamps where the device has them, else the wall clock, and `time`
    // reports the source it used.
    let t = gpu.time(|rec| {
        let a = Tensor::full(rec.gpu(), &[1000], 1.0)?;
        elementwise::scale(rec, &a, 2.0).map(|_| ())
    });
    let want = if gpu.has_timestamps() {
        TimingSource::Timestamps
    } else {
        TimingSource::WallClock
    };
    assert_eq!(caps.timing, want);
    assert_eq!(t.unwrap().source, want);
    // A tensor past the binding limit is refused with the limit named, never truncated.
    assert_eq!(caps.max_tensor_bytes, gpu.max_binding_bytes());
    let too_many = (caps.max_tensor_bytes / 4 + 1) as usize;
    match Tensor::empty(&gpu, &[too_many]) {
        Err(Error::TooLarge { limit, .. }) => assert_eq!(limit, caps.max_tensor_bytes),
        other => panic!("expected TooLarge for {too_many} floats, got {other:?}"),
    }
}

#[test]
fn many_dispatches_share_one_pass_and_few_parameter_writes() {
    let Some(gpu) = common::gpu() else { return };
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(rand::random());
    let n = 301;
    let x0: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
    // More parameter blocks than one 64 KiB arena chunk holds (256 B each where the
    // device asks for 256-byte offsets), with a clear in the middle that ends the pass.
    let factors: Vec<f32> = (0..700).map(|_| rng.random_range(0.9..1.1)).collect();
    let mut rec = gpu.recorder();
    let mut x = Tensor::from_slice(&gpu, &x0, &[n]).unwrap();
    let scratch = Tensor::full(&gpu, &[n], 7.0).unwrap();
    for (i, &f) in factors.iter().enumerate() {
        x = elementwise::scale(&mut rec, &x, f).unwrap();
        if i == 350 {
            rec.clear(&scratch);
        }
    }
    assert_eq!(rec.dispatch_count(), 700);
    assert_eq!(rec.pass_count(), 2, "one pass before the clear, one after");
    assert_eq!(rec.uniform_count(), 700);
    let writes = rec.uniform_write_count();
    assert!((1..=12).contains(&writes), "{writes} parameter writes");
    rec.submit().unwrap();
    let got = x.to_vec().unwrap();
    for (i, (&g, &x)) in got.iter().zip(&x0).enumerate() {
        let want = factors.iter().fold(x as f64, |acc, &f| acc * f as f64);
        assert!(
            (g as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
            "element {i}: {g} vs {want}"
        );
    }
    assert!(scratch.to_vec().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn a_repeated_training_step_creates_no_bind_groups() {
    // A device of its own: other tests' work must not touch its pool or caches.
    let Some(gpu) = common::fresh_gpu() else {
        return;
    };
    use capaboost::nn::Graph;
    use capaboost::nn::modules::Linear;
    use capaboost::nn::optim::{AdamW, AdamWConfig};
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(rand::random());
    let (t, i, o) = (37, 19, 11);
    let l1 = Linear::init(&gpu, i, o, true, &mut rng).unwrap();
    let l2 = Linear::init(&gpu, o, 3, true, &mut rng).unwrap();
    let xs: Vec<f32> = (0..t * i).map(|_| rng.random_range(-1.0..1.0)).collect();
    let ys: Vec<f32> = (0..t * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_slice(&gpu, &xs, &[t, i]).unwrap();
    let y = Tensor::from_slice(&gpu, &ys, &[t, 3]).unwrap();
    let params: Vec<Tensor> = l1
        .params()
        .into_iter()
        .chain(l2.params())
        .map(|(_, p)| p)
        .collect();
    let mut opt = AdamW::new(&gpu, AdamWConfig::default(), &params).unwrap();
    let mut step = || {
        let mut g = Graph::new(&gpu);
        let (xv, yv) = (g.input(&x), g.input(&y));
        let h = l1.forward(&mut g, &xv).unwrap();
        let h = g.gelu(&h).unwrap();
        let out = l2.forward(&mut g, &h).unwrap();
        let loss = g.mse(&out, &yv).unwrap();
        let grads = g.backward(&loss).unwrap();
        opt.step(g.recorder(), &grads).unwrap();
        g.submit().unwrap();
        loss.value().to_vec().unwrap()[0]
    };
    let first = step();
    // The free lists settle within a few steps (the first ones create the buffers).
    step();
    step();
    let created = gpu.pipelines().bind_groups_created();
    let mut last = first;
    for _ in 0..10 {
        last = step();
    }
    // Buffers are handed out by lowest free id, so the same requests get the same buffers
    // and every bind group of a step comes from the cache.
    assert_eq!(gpu.pipelines().bind_groups_created(), created);
    assert!(last < first, "loss {first} -> {last}");
}
