//! The embedding path: a host program's own device, buffers and command encoder; the
//! CapaBoost layer records into that encoder, nothing is submitted until the host submits,
//! and the results match the f64 reference.

mod common;

use capaboost::kernels::capaboost::{Adapter, Layer, LayerMasks, cpu};
use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::nn::Gradients;
use capaboost::nn::optim::{AdamW, AdamWConfig};
use capaboost::{Gpu, Recorder, Tensor};
use common::{random_vec, rel_frobenius};

fn host_buffer(device: &wgpu::Device, queue: &wgpu::Queue, data: &[f32]) -> wgpu::Buffer {
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host"),
        size: (data.len() * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&b, 0, bytemuck::cast_slice(data));
    b
}

#[test]
fn layer_records_into_the_hosts_encoder_on_the_hosts_buffers() {
    // With the GEMM autotuner on (the default for users), recording into a host encoder
    // must still submit nothing: an untuned shape takes the reference kernel there.
    use capaboost::kernels::gemm::tune;
    tune::set_mode(Some(tune::Mode::On));
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
    let gpu = Gpu::from_wgpu(device.clone(), queue.clone());
    let mut rng = common::rng("layer_records_into_the_hosts_encoder_on_the_hosts_buffers");
    let (t, in_f, out_f, r, d) = (19, 23, 17, 3, 2u32);
    let (x, w0, a, b, g) = (
        random_vec(&mut rng, t * in_f, 1.0),
        random_vec(&mut rng, out_f * in_f, 1.0),
        random_vec(&mut rng, r * in_f, 1.0),
        random_vec(&mut rng, out_f * r, 1.0),
        random_vec(&mut rng, t * out_f, 1.0),
    );
    // The host's buffers. x reaches its final buffer only through the host's own copy,
    // recorded in the same encoder before the layer: the layer must see it.
    let x_staging = host_buffer(&device, &queue, &x);
    let x_buf = host_buffer(&device, &queue, &vec![0.0; t * in_f]);
    let tx = Tensor::from_buffer(&gpu, x_buf.clone(), &[t, in_f]).unwrap();
    let tw = Tensor::from_buffer(&gpu, host_buffer(&device, &queue, &w0), &[out_f, in_f]).unwrap();
    let ta = Tensor::from_buffer(&gpu, host_buffer(&device, &queue, &a), &[r, in_f]).unwrap();
    let tb = Tensor::from_buffer(&gpu, host_buffer(&device, &queue, &b), &[out_f, r]).unwrap();
    let tg = Tensor::from_buffer(&gpu, host_buffer(&device, &queue, &g), &[t, out_f]).unwrap();
    assert!(
        Tensor::from_buffer(&gpu, x_buf.clone(), &[t, in_f + 1]).is_err(),
        "too small a buffer is an error"
    );

    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("host"),
    });
    encoder.copy_buffer_to_buffer(&x_staging, 0, &x_buf, 0, (t * in_f * 4) as u64);
    let mut rec = Recorder::wrap(&gpu, encoder);
    let masks = LayerMasks::generate(
        &mut rec,
        &MaskConfig::new(MaskKind::Exact, d, 0.5, 3),
        0,
        r,
        in_f,
        out_f,
    )
    .unwrap();
    let layer = Layer::new(&tw, None, Adapter::new(&ta, &tb, &masks, 2.0));
    let f = layer.forward(&mut rec, &tx).unwrap();
    let grads = layer.backward(&mut rec, &tx, &f.h, &tg, true).unwrap();
    let dispatches = rec.dispatch_count();
    let (encoder, keep) = rec.into_encoder();
    assert!(dispatches >= 10 && !keep.is_empty());
    assert_eq!(
        gpu.submit_count(),
        0,
        "nothing submitted behind the host's back"
    );
    queue.submit(Some(encoder.finish()));
    drop(keep);

    let (ma, mb) = masks.to_u8().unwrap();
    let layer = cpu::Layer {
        x: &x,
        t,
        w0: &w0,
        b0: None,
        adapter: cpu::Adapter {
            a: &a,
            b: &b,
            ma: &ma,
            mb: &mb,
            s: 2.0,
            in_f,
            out_f,
            r,
        },
    };
    let (dx, da, db) = layer.backward(&g);
    for (name, got, want) in [
        ("y", f.y.to_vec().unwrap(), layer.forward()),
        ("dx", grads.dx.unwrap().to_vec().unwrap(), dx),
        ("dA", grads.da.to_vec().unwrap(), da),
        ("dB", grads.db.to_vec().unwrap(), db),
    ] {
        let e = rel_frobenius(&got, &want);
        assert!(e < 1e-5, "{name}: {e}");
    }

    // The optimizer updates the host's parameter buffer in place, inside a host encoder.
    let before = ta.to_vec().unwrap();
    let mut opt = AdamW::new(&gpu, AdamWConfig::default(), std::slice::from_ref(&ta)).unwrap();
    let mut gs = Gradients::new();
    gs.insert(&ta, grads.da.clone()).unwrap();
    let mut rec = Recorder::wrap(&gpu, device.create_command_encoder(&Default::default()));
    assert_eq!(opt.step(&mut rec, &gs).unwrap(), 1);
    let submits = gpu.submit_count();
    let (encoder, keep) = rec.into_encoder();
    assert_eq!(gpu.submit_count(), submits);
    queue.submit(Some(encoder.finish()));
    drop(keep);
    assert_ne!(
        ta.to_vec().unwrap(),
        before,
        "the host's lora_A buffer was updated"
    );
}
