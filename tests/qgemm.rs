//! GEMMs through quantized frozen weights (`kernels::qgemm`): forward `X W^T` and backward
//! `dY W` for Q4_0, Q4_1 and Q8_0 on odd shapes (M, N not multiples of the 16-tile; K a
//! multiple of 32 but not of 64), fresh random inputs, against the f64 twin and against
//! dequantize-then-dense through the f32 GEMM; misuse names the culprit; and the SmolLM2
//! base of scripts/fetch-smollm2.sh when present: GPU bytes quantized vs f32, and one of
//! its layers against the twin.
//!
//! Tolerance: the weights are exact in f32 after decoding (a Q4_1 value `q d + m` may
//! differ by one f32 rounding), so only the f32 accumulation over K <= 1536 terms differs
//! from f64: relative Frobenius error below 1e-5.

mod common;

use capaboost::Tensor;
use capaboost::kernels::{gemm, qgemm};
use capaboost::runtime::gguf::{Gguf, TensorType};
use capaboost::runtime::quant::{self, BlockFormat, QuantTensor};
use common::{random_vec, rel_frobenius};
use qgemm::QForm;
use qgemm::cpu::QuantWeight;

const TOL: f64 = 1e-5;

const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 32),
    (7, 13, 96),
    (37, 50, 160),
    (17, 33, 32),
    (70, 19, 224),
];

#[test]
fn forward_and_backward_match_the_f64_twin_and_dense_gemm() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("qgemm");
    for (f, form) in BlockFormat::ALL
        .into_iter()
        .flat_map(|f| [QForm::Tiled, QForm::Register].map(|q| (f, q)))
    {
        for (m, n, k) in SHAPES {
            let blocks = quant::quantize(f, &random_vec(&mut rng, n * k, 1.0)).unwrap();
            let qw = QuantWeight {
                format: f,
                bytes: &blocks,
                shape: [n, k],
            };
            let w = QuantTensor::from_blocks(&gpu, "w", f, &blocks, [n, k]).unwrap();
            let dense = quant::dequantize(f, "w", &blocks, n * k).unwrap();
            let wd = Tensor::from_slice(&gpu, &dense, &[n, k]).unwrap();
            // Redraw x until the product is not degenerate (with one output of a 32-term
            // dot product, |y| <= 0.1 happens by chance a few percent of the time).
            let xv = (0..100)
                .map(|_| random_vec(&mut rng, m * k, 1.0))
                .find(|xv| {
                    let y = qgemm::cpu::forward(xv, &qw).unwrap();
                    y.iter().any(|&v| v.abs() > 0.1)
                })
                .expect("a non-degenerate product within 100 draws");
            let gv = random_vec(&mut rng, m * n, 1.0);
            let x = Tensor::from_slice(&gpu, &xv, &[m, k]).unwrap();
            let g = Tensor::from_slice(&gpu, &gv, &[m, n]).unwrap();
            let (y, dx, y_ref, dx_ref) = gpu
                .run(|rec| {
                    let y = qgemm::forward_with(rec, &x, &w, form)?;
                    let dx = qgemm::backward_with(rec, &g, &w, form)?;
                    let y_ref = gemm::linear(rec, &x, &wd, None)?;
                    let dx_ref = gemm::matmul(rec, &g, false, &wd, false)?;
                    Ok((y, dx, y_ref, dx_ref))
                })
                .unwrap();
            assert_eq!((y.shape(), dx.shape()), (&[m, n][..], &[m, k][..]));
            let want_y = qgemm::cpu::forward(&xv, &qw).unwrap();
            let want_dx = qgemm::cpu::backward(&gv, &qw).unwrap();
            let case = format!("{f} {form:?} m={m} n={n} k={k}");
            let (y, dx) = (y.to_vec().unwrap(), dx.to_vec().unwrap());
            assert!(
                want_y.iter().any(|&v| v.abs() > 0.1),
                "{case}: degenerate product"
            );
            let e = rel_frobenius(&y, &want_y);
            assert!(e < TOL, "{case}: forward error {e}");
            let e = rel_frobenius(&dx, &want_dx);
            assert!(e < TOL, "{case}: backward error {e}");
            let e = rel_frobenius(&y, &common::to64(&y_ref.to_vec().unwrap()));
            assert!(e < TOL, "{case}: forward vs dense {e}");
            let e = rel_frobenius(&dx, &common::to64(&dx_ref.to_vec().unwrap()));
            assert!(e < TOL, "{case}: backward vs dense {e}");
        }
    }
}

#[test]
fn leading_dims_are_rows() {
    let Some(gpu) = common::gpu() else { return };
    let mut rng = common::rng("qgemm batch");
    let (n, k) = (24, 64);
    let blocks = quant::quantize(BlockFormat::Q4_1, &random_vec(&mut rng, n * k, 0.5)).unwrap();
    let w = QuantTensor::from_blocks(&gpu, "w", BlockFormat::Q4_1, &blocks, [n, k]).unwrap();
    let xv = random_vec(&mut rng, 2 * 5 * k, 1.0);
    let x = Tensor::from_slice(&gpu, &xv, &[2, 5, k]).unwrap();
    let y = gpu.run(|rec| qgemm::forward(rec, &x, &w)).unwrap();
    assert_eq!(y.shape(), [2, 5, n]);
    let qw = QuantWeight {
        format: BlockFormat::Q4_1,
        bytes: &blocks,
        shape: [n, k],
    };
    let e = rel_frobenius(
        &y.to_vec().unwrap(),
        &qgemm::cpu::forward(&xv, &qw).unwrap(),
    );
    assert!(e < TOL, "{e}");
}

#[test]
fn misuse_names_the_culprit() {
    let Some(gpu) = common::gpu() else { return };
    let blocks = quant::quantize(BlockFormat::Q8_0, &[0.5; 64]).unwrap();
    let e = QuantTensor::from_blocks(
        &gpu,
        "blk.0.attn_q.weight",
        BlockFormat::Q8_0,
        &blocks,
        [4, 16],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("blk.0.attn_q.weight") && e.contains("whole blocks"),
        "{e}"
    );
    let e = QuantTensor::from_blocks(&gpu, "w", BlockFormat::Q8_0, &blocks, [3, 32])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'w'") && e.contains("68 bytes"), "{e}");
    let w = QuantTensor::from_blocks(&gpu, "w", BlockFormat::Q8_0, &blocks, [2, 32]).unwrap();
    let x = Tensor::from_slice(&gpu, &[1.0; 6], &[2, 3]).unwrap();
    let e = gpu
        .run(|rec| qgemm::forward(rec, &x, &w))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("[2, 3]") && e.contains("Q8_0") && e.contains("[2, 32]"),
        "{e}"
    );
    let e = gpu
        .run(|rec| qgemm::backward(rec, &x, &w))
        .unwrap_err()
        .to_string();
    assert!(e.contains("must end in 2"), "{e}");
}

/// Every quantized weight of SmolLM2 uploaded: GPU bytes against f32; one layer checked.
#[test]
fn smollm2_base_memory_and_a_real_layer() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let Some(gpu) = common::gpu() else { return };
    let g = Gguf::open(&path).unwrap();
    let (mut quant_bytes, mut f32_bytes, mut count) = (0u64, 0u64, 0);
    for t in &g.tensors {
        let TensorType::Quant(f) = t.ty else { continue };
        let shape = t.shape();
        let w = QuantTensor::from_blocks(
            &gpu,
            &t.name,
            f,
            &g.raw(&t.name).unwrap(),
            [shape[0], shape[1]],
        )
        .unwrap();
        quant_bytes += w.bytes();
        f32_bytes += t.numel() as u64 * 4;
        count += 1;
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "SmolLM2 base: {count} quantized weights, {:.1} MiB on the GPU vs {:.1} MiB as f32 ({:.2}x)",
        mib(quant_bytes),
        mib(f32_bytes),
        f32_bytes as f64 / quant_bytes as f64
    );
    assert_eq!(count, 211);
    assert!(quant_bytes * 5 < f32_bytes);
    let name = "blk.3.ffn_down.weight";
    let raw = g.raw(name).unwrap();
    let w = QuantTensor::from_blocks(&gpu, name, BlockFormat::Q4_1, &raw, [576, 1536]).unwrap();
    let mut rng = common::rng("qgemm smollm2");
    let xv = random_vec(&mut rng, 9 * 1536, 1.0);
    let x = Tensor::from_slice(&gpu, &xv, &[9, 1536]).unwrap();
    let y = gpu.run(|rec| qgemm::forward(rec, &x, &w)).unwrap();
    let qw = QuantWeight {
        format: BlockFormat::Q4_1,
        bytes: &raw,
        shape: [576, 1536],
    };
    let e = rel_frobenius(
        &y.to_vec().unwrap(),
        &qgemm::cpu::forward(&xv, &qw).unwrap(),
    );
    assert!(e < TOL, "{name}: {e}");
}
