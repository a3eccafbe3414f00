//! GEMMs through a quantized weight (`kernels::qgemm`) on SmolLM2's shapes, both forms,
//! in GPU time (timestamps where the device has them, otherwise wall clock around a
//! blocking wait): a 256-token training step's forward `X W^T` and backward `dY W`, and
//! one decoded row. Throughput in elements = multiply-adds.

use std::time::Duration;

use capaboost::kernels::qgemm::{self, QForm};
use capaboost::runtime::quant::{self, BlockFormat, QuantTensor};
use capaboost::{Gpu, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => return eprintln!("skipping benchmarks: {e}"),
    };
    let mut group = c.benchmark_group("qgemm");
    for (m, n, k) in [(256, 1536, 576), (256, 576, 1536), (1, 1536, 576)] {
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let blocks = quant::quantize(BlockFormat::Q4_1, &w).unwrap();
        let w = QuantTensor::from_blocks(&gpu, "w", BlockFormat::Q4_1, &blocks, [n, k]).unwrap();
        let x = Tensor::full(&gpu, &[m, k], 0.5).unwrap();
        let dy = Tensor::full(&gpu, &[m, n], 0.5).unwrap();
        group.throughput(Throughput::Elements((m * n * k) as u64));
        for form in [QForm::Tiled, QForm::Register] {
            let mut run = |name: &str, backward: bool| {
                group.bench_function(format!("{name}/{form:?}/{m}x{n}x{k}"), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let t = gpu.time(|rec| match backward {
                                false => qgemm::forward_with(rec, &x, &w, form).map(drop),
                                true => qgemm::backward_with(rec, &dy, &w, form).map(drop),
                            });
                            total += t.unwrap().total;
                        }
                        total
                    })
                });
            };
            run("forward", false);
            if m > 1 {
                run("backward", true);
            }
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .without_plots();
    targets = bench
}
criterion_main!(benches);
