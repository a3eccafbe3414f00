//! burn 0.22 and capaboost on one wgpu device: the program creates the device, registers it
//! with burn (`init_device`) and with capaboost (`Gpu::from_wgpu`), computes features with
//! burn, and trains a CapaBoost layer on them with capaboost.

use burn::backend::wgpu::{WgpuSetup, init_device};
use burn::tensor::{Device, Distribution, Tensor as BurnTensor};
use capaboost::nn::Graph;
use capaboost::nn::modules::{CapaBoostConfig, CapaBoostLinear, Linear};
use capaboost::nn::optim::{AdamW, AdamWConfig};
use capaboost::{Gpu, Tensor};
use rand::SeedableRng;

fn main() -> capaboost::Result<()> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
        .map_err(|e| capaboost::Error::NoAdapter { tried: e.to_string() })?;
    let backend = adapter.get_info().backend;
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .map_err(|e| capaboost::Error::RequestDevice { adapter: adapter.get_info().name, message: e.to_string() })?;
    // One device, two libraries.
    let burn_device = init_device(
        WgpuSetup { instance, adapter, device: device.clone(), queue: queue.clone(), backend },
        Default::default(),
    );
    let gpu = Gpu::from_wgpu(device, queue);
    let burn_device = Device::from(burn_device);

    // burn computes the inputs...
    let (t, n) = (32usize, 24usize);
    let raw = BurnTensor::<2>::random([t, n], Distribution::Normal(0.0, 1.0), &burn_device);
    let feats = raw.clone().matmul(raw.transpose()).matmul(BurnTensor::random([t, n], Distribution::Default, &burn_device));
    let feats: Vec<f32> = feats.into_data().try_to_vec::<f32>().expect("f32 data");
    // ...capaboost trains an adapter on them, on the same device.
    let x = Tensor::from_slice(&gpu, &feats, &[t, n])?;
    let target = Tensor::from_slice(&gpu, &vec![0.1; t * n], &[t, n])?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let layer = CapaBoostLinear::new(&gpu, Linear::init(&gpu, n, n, false, &mut rng)?, CapaBoostConfig::capaboost(4, 8.0, 2, 0.5, 1), 0, &mut rng)?;
    let params: Vec<Tensor> = layer.params().into_iter().map(|(_, p)| p).collect();
    let mut opt = AdamW::new(&gpu, AdamWConfig::default(), &params)?;
    for step in 0..5 {
        let mut g = Graph::new(&gpu);
        let (xv, tv) = (g.input(&x), g.input(&target));
        let y = layer.forward(&mut g, &xv)?;
        let loss = g.mse(&y, &tv)?;
        let grads = g.backward(&loss)?;
        opt.step(g.recorder(), &grads)?;
        g.submit()?;
        println!("step {step}: loss {}", loss.value().to_vec()?[0]);
    }
    println!("burn and capaboost shared the device of {}", gpu.adapter_info().name);
    Ok(())
}
