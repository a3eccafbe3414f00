//! One CapaBoost-LoRA layer, forward + backward, over d = 1, 2, 4, 8: the fused kernels
//! (masks applied while tiles load, stacked GEMMs) against the naive path (masked copies
//! materialized, then d separate GEMMs), measured in the same run; plus the dense GEMM.
//!
//! GPU time per iteration (timestamps where the device has them). The shape is small
//! enough to run in seconds on lavapipe; set CAPABOOST_BENCH_TOKENS / _WIDTH to scale it.

use std::time::Duration;

use capaboost::kernels::capaboost::{Adapter, Layer, LayerMasks, naive};
use capaboost::kernels::masks::{MaskConfig, MaskKind};
use capaboost::{Gpu, Tensor, kernels::gemm};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn filled(gpu: &Gpu, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| (capaboost::kernels::masks::mix32(i as u32 ^ seed) as f32 / u32::MAX as f32) - 0.5)
        .collect();
    Tensor::from_slice(gpu, &data, shape).unwrap()
}

fn gpu_time(gpu: &Gpu, iters: u64, mut f: impl FnMut(&mut capaboost::Recorder)) -> Duration {
    (0..iters)
        .map(|_| {
            gpu.time(|rec| {
                f(rec);
                Ok(())
            })
            .unwrap()
            .total
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let gpu = match Gpu::new() {
        Ok(g) => g,
        Err(e) => return eprintln!("skipping benchmarks: {e}"),
    };
    let t = env_usize("CAPABOOST_BENCH_TOKENS", 256);
    let width = env_usize("CAPABOOST_BENCH_WIDTH", 256);
    let r = 8;
    let x = filled(&gpu, &[t, width], 1);
    let w0 = filled(&gpu, &[width, width], 2);
    let b0 = filled(&gpu, &[width], 3);
    let a = filled(&gpu, &[r, width], 4);
    let b = filled(&gpu, &[width, r], 5);
    let g = filled(&gpu, &[t, width], 6);
    let s = 2.0;

    let mut group = c.benchmark_group(format!("layer_fwd_bwd/T{t}_w{width}_r{r}"));
    for d in [1u32, 2, 4, 8] {
        let masks = gpu
            .run(|rec| {
                LayerMasks::generate(
                    rec,
                    &MaskConfig::new(MaskKind::Exact, d, 0.5, 7),
                    0,
                    r,
                    width,
                    width,
                )
            })
            .unwrap();
        let layer = Layer::new(&w0, Some(&b0), Adapter::new(&a, &b, &masks, s));
        group.bench_with_input(BenchmarkId::new("fused", d), &d, |bench, _| {
            bench.iter_custom(|iters| {
                gpu_time(&gpu, iters, |rec| {
                    let f = layer.forward(rec, &x).unwrap();
                    layer.backward(rec, &x, &f.h, &g, true).unwrap();
                })
            })
        });
        group.bench_with_input(BenchmarkId::new("naive", d), &d, |bench, _| {
            bench.iter_custom(|iters| {
                gpu_time(&gpu, iters, |rec| {
                    naive::forward_backward(rec, &layer, &x, &g).unwrap();
                })
            })
        });
    }
    group.finish();

    // Generating every mask of one factor once, per kind: the cost a GEMM would pay on
    // each tile load if it regenerated masks from the key instead of reading packed bits.
    let mut group = c.benchmark_group("mask_generate");
    for kind in [MaskKind::Exact, MaskKind::Bernoulli] {
        let spec = capaboost::kernels::masks::MaskSpec {
            kind,
            density: 0.5,
            seed: 1,
            module: 0,
            factor: capaboost::kernels::masks::Factor::A,
            branches: 8,
            rows: r,
            cols: width,
        };
        group.throughput(Throughput::Elements(spec.total_bits() as u64));
        group.bench_function(format!("{kind:?}/d8_r{r}_in{width}"), |bench| {
            bench.iter_custom(|iters| {
                gpu_time(&gpu, iters, |rec| {
                    capaboost::kernels::masks::MaskBits::generate(rec, &spec).unwrap();
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("dense_gemm");
    for n in [256usize, 511] {
        let a = filled(&gpu, &[n, n], 7);
        let b = filled(&gpu, &[n, n], 8);
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_with_input(BenchmarkId::new("nn", n), &n, |bench, _| {
            bench.iter_custom(|iters| {
                gpu_time(&gpu, iters, |rec| {
                    gemm::matmul(rec, &a, false, &b, false).unwrap();
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
