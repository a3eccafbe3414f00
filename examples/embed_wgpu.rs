//! A host program that owns its wgpu device runs its own compute pass, then trains a
//! CapaBoost layer on its own buffers inside the same command encoder, and submits when it
//! chooses. `cargo run --example embed_wgpu [-- --smoke]`.

use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::nn::Graph;
use capaboost::nn::modules::{CapaBoostConfig, CapaBoostLinear, Linear};
use capaboost::nn::optim::{AdamW, AdamWConfig};
use capaboost::runtime::gpu::{ENV_BACKEND, parse_backend};
use capaboost::{Gpu, Recorder, Tensor};
use rand::{Rng, SeedableRng, rngs::StdRng};

const HOST_SHADER: &str = "
@group(0) @binding(0) var<storage, read_write> data: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&data)) { data[id.x] = sin(f32(id.x) * 0.37); }
}";

fn main() -> capaboost::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let steps = if smoke { 5 } else { 200 };
    // The host's own device, queue and pipeline: capaboost does not create them.
    // The host chooses its backend; CI sets CAPABOOST_BACKEND to run this on each one.
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    if let Some(b) = std::env::var(ENV_BACKEND)
        .ok()
        .and_then(|b| parse_backend(&b))
    {
        desc.backends = wgpu::Backends::from(b);
    }
    let instance = wgpu::Instance::new(desc);
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .map_err(|e| capaboost::Error::NoAdapter {
                tried: e.to_string(),
            })?;
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor::default()),
    )
    .map_err(|e| capaboost::Error::RequestDevice {
        adapter: adapter.get_info().name,
        message: e.to_string(),
    })?;
    let gpu = Gpu::from_wgpu(device.clone(), queue.clone());
    let info = gpu.adapter_info();
    println!("host device: {} ({})", info.name, info.backend.to_str());
    let (t, n) = (64usize, 32usize);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("host"),
        source: wgpu::ShaderSource::Wgsl(HOST_SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("host"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    // The host's input buffer, filled by the host's pass, read by the adapter.
    let x_buf = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host x"),
        size: (t * n * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: x_buf.as_entire_binding(),
        }],
    });
    let x = Tensor::from_buffer(&gpu, x_buf, &[t, n])?;

    let mut rng = StdRng::seed_from_u64(0);
    let base = Linear::init(&gpu, n, n, false, &mut rng)?;
    let layer = CapaBoostLinear::new(
        &gpu,
        base,
        CapaBoostConfig {
            mask: MaskConfig::new(MaskKind::Exact, 2, 0.5, 1),
            ..CapaBoostConfig::lora(4, 8.0)
        },
        0,
        &mut rng,
    )?;
    let target: Vec<f32> = (0..t * n).map(|_| rng.random_range(-1.0..1.0)).collect();
    let target = Tensor::from_slice(&gpu, &target, &[t, n])?;
    let params: Vec<Tensor> = layer.params().into_iter().map(|(_, p)| p).collect();
    let mut opt = AdamW::new(
        &gpu,
        AdamWConfig {
            lr: 1e-2,
            ..Default::default()
        },
        &params,
    )?;
    let mut last = None;
    for step in 0..steps {
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("host step"),
        });
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(((t * n) as u32).div_ceil(64), 1, 1);
        }
        // capaboost records the training step into the same encoder.
        let mut g = Graph::with_recorder(Recorder::wrap(&gpu, encoder));
        let xv = g.input(&x);
        let tv = g.input(&target);
        let y = layer.forward(&mut g, &xv)?;
        let loss = g.mse(&y, &tv)?;
        let grads = g.backward(&loss)?;
        opt.step(g.recorder(), &grads)?;
        let (encoder, keep) = g.into_encoder();
        queue.submit(Some(encoder.finish())); // the host decides when
        drop(keep);
        if step == 0 || step + 1 == steps {
            let l = loss.value().to_vec()?[0];
            println!("step {step:>3}: loss {l:.5}");
            last = Some(l);
        }
    }
    println!(
        "capaboost submitted {} command buffers of its own (readbacks only)",
        gpu.submit_count()
    );
    assert!(last.is_some_and(f32::is_finite));
    Ok(())
}
