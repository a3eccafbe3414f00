//! Bandwidth of the elementwise kernels, in GPU time (timestamps where the device has
//! them, otherwise wall clock around a blocking wait).

use std::time::Duration;

use capaboost::{Gpu, Tensor, kernels::elementwise};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => return eprintln!("skipping benchmarks: {e}"),
    };
    let mut group = c.benchmark_group("elementwise");
    for n in [1 << 16, 1 << 22] {
        let a = Tensor::full(&gpu, &[n], 1.0).unwrap();
        let b = Tensor::full(&gpu, &[n], 2.0).unwrap();
        group.throughput(Throughput::Bytes(n as u64 * 8));
        group.bench_function(format!("copy_vec4/{n}"), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += gpu
                        .time(|rec| elementwise::copy(rec, &a).map(drop))
                        .unwrap()
                        .total;
                }
                total
            })
        });
        group.throughput(Throughput::Bytes(n as u64 * 12));
        group.bench_function(format!("add/{n}"), |bench| {
            bench.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += gpu
                        .time(|rec| elementwise::add(rec, &a, &b).map(drop))
                        .unwrap()
                        .total;
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
