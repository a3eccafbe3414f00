//! The ViT / DINOv2 encoder against transformers: tiny random `ViTModel` and `Dinov2Model`
//! checkpoints (tests/data/tiny-{vit,dinov2}, written by scripts/make_vit_golden.py) and
//! their `last_hidden_state` for two images, matched within 1e-4. The Dinov2 model is fed
//! at 24 px against a 28 px position grid, so the bicubic resampling is exercised. LoRA /
//! CapaBoost gradients through its pre-LN, layer-scaled blocks match finite differences.

mod common;

use std::path::{Path, PathBuf};

use capaboost::models::vit::{PixelBatch, Vit, VitConfig, VitLayout, position};
use capaboost::nn::Graph;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn check_golden(name: &str, layout: VitLayout) {
    let Some(gpu) = common::gpu() else { return };
    let dir = data(name);
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let vit = Vit::load(&gpu, &dir).unwrap();
    assert_eq!(vit.config.layout, layout);
    let size = gold["image_size"].as_u64().unwrap() as usize;
    let pixels = floats(&gold["pixel_values"]);
    let batch = PixelBatch::new(&gpu, &pixels, (3, size), vit.config.patch_size).unwrap();
    let mut g = Graph::no_grad(&gpu);
    let out = vit.forward(&mut g, &batch).unwrap();
    g.submit().unwrap();
    let shape: Vec<usize> = gold["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(out.shape(), shape.as_slice());
    let got = out.value().to_vec().unwrap();
    let want = floats(&gold["last_hidden_state"]);
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{name}: max |diff| {worst:.2e} over {} values", want.len());
    assert!(worst < 1e-4, "{name}: max |diff| {worst}");
}

#[test]
fn tiny_vit_matches_transformers() {
    check_golden("tiny-vit", VitLayout::Vit);
}

#[test]
fn tiny_dinov2_matches_transformers() {
    check_golden("tiny-dinov2", VitLayout::Dinov2);
}

#[test]
fn bicubic_keeps_equal_grids_and_constants() {
    let table: Vec<f32> = (0..9 * 2).map(|i| i as f32).collect();
    assert_eq!(position::interpolate(&table, (3, 3), 2, (3, 3)), table);
    // A constant grid stays constant at any size (the weights sum to 1).
    let ones = vec![1.5f32; 16 * 3];
    for v in position::interpolate(&ones, (4, 4), 3, (7, 7)) {
        assert!((v - 1.5).abs() < 1e-6);
    }
}

#[test]
fn configs_and_checkpoints_name_the_culprit() {
    let bad = VitConfig::parse(r#"{"model_type":"swin","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"image_size":8,"patch_size":4}"#)
        .unwrap_err();
    assert!(bad.contains("swin"), "{bad}");
    let bad = VitConfig::parse(r#"{"model_type":"vit","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":3,"intermediate_size":8,"image_size":8,"patch_size":4}"#)
        .unwrap_err();
    assert!(bad.contains("multiple of 3 heads"), "{bad}");
    let Some(gpu) = common::gpu() else { return };
    // A config that disagrees with the weights: the error names the tensor.
    let tmp = std::env::temp_dir().join(format!("capaboost-vit-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let cfg = std::fs::read_to_string(data("tiny-vit/config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        cfg.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    std::fs::copy(
        data("tiny-vit/model.safetensors"),
        tmp.join("model.safetensors"),
    )
    .unwrap();
    let e = Vit::load(&gpu, &tmp).err().unwrap().to_string();
    assert!(e.contains("encoder.layer.0.intermediate.dense.bias"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The pretrained DINOv2 ViT-S/14 of scripts/fetch-vit.sh (`$CAPABOOST_VIT_DIR`, default
/// ~/.cache/capaboost/dinov2-vits14-focus) against transformers at 112x112 (the 37x37
/// position grid resampled to 8x8): CLS tokens and patch means within 1e-4. Skips when the
/// folder is absent.
#[test]
fn pretrained_vits14_matches_transformers() {
    let dir = std::env::var_os("CAPABOOST_VIT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/capaboost/dinov2-vits14-focus")
        });
    if !dir.join("model.safetensors").exists() {
        eprintln!("skipping: no {} (scripts/fetch-vit.sh)", dir.display());
        return;
    }
    let Some(gpu) = common::gpu() else { return };
    let gold: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data("vits14-focus-golden.json")).unwrap())
            .unwrap();
    let n = 112;
    let mut pixels = Vec::new();
    for b in 0..2 {
        for c in 0..3 {
            for i in 0..n {
                for j in 0..n {
                    let v = 0.1 * (i + 1) as f64 * (c + 1) as f64 + 0.07 * j as f64 + b as f64;
                    pixels.push(v.sin() as f32);
                }
            }
        }
    }
    let vit = Vit::load(&gpu, &dir).unwrap();
    let batch = PixelBatch::new(&gpu, &pixels, (3, n), 14).unwrap();
    let mut g = Graph::no_grad(&gpu);
    let out = vit.forward(&mut g, &batch).unwrap();
    let cls = g.mean_pool(&out, &batch.cls_mask).unwrap();
    let mean = g.mean_pool(&out, &batch.patch_mask).unwrap();
    g.submit().unwrap();
    for (name, got) in [("cls", cls), ("patch_mean", mean)] {
        let got = got.value().to_vec().unwrap();
        let want = floats(&gold[name]);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("vits14 {name}: max |diff| {worst:.2e}");
        assert!(worst < 1e-4, "{name}: max |diff| {worst}");
    }
}

/// `sum(last_hidden_state * r)` of the tiny Dinov2 model with LoRA on query,value, and
/// with `grad` the gradient of every adapter tensor.
fn vit_loss(
    gpu: &capaboost::Gpu,
    vit: &Vit,
    r: &capaboost::Tensor,
    grad: bool,
) -> (f64, Vec<Vec<f32>>) {
    let gold: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("tiny-dinov2").join("golden.json")).unwrap(),
    )
    .unwrap();
    let size = gold["image_size"].as_u64().unwrap() as usize;
    let pixels = floats(&gold["pixel_values"]);
    let batch = PixelBatch::new(gpu, &pixels, (3, size), vit.config.patch_size).unwrap();
    let mut g = if grad {
        Graph::new(gpu)
    } else {
        Graph::no_grad(gpu)
    };
    let out = vit.forward(&mut g, &batch).unwrap();
    let ri = g.input(r);
    let prod = g.mul(&out, &ri).unwrap();
    let loss = g.sum(&prod).unwrap();
    let grads = grad.then(|| g.backward(&loss).unwrap());
    g.submit().unwrap();
    let value = loss.value().to_vec().unwrap()[0] as f64;
    let gs = match grads {
        Some(gr) => vit
            .params()
            .iter()
            .map(|(_, t)| gr.of(t).unwrap().to_vec().unwrap())
            .collect(),
        None => Vec::new(),
    };
    (value, gs)
}

#[test]
fn dinov2_adapter_gradients_match_finite_differences() {
    // Pre-LN blocks with layer scale: the parts of the ViT backward BERT does not share.
    // Central differences of the f32 GPU loss (step 5e-2) at each checked tensor's largest
    // gradient entry: within 1e-3 of the largest (fresh random inputs every run; measured
    // 2e-5 to 9e-5 over six runs).
    use capaboost::models::bert::Target;
    use capaboost::nn::modules::CapaBoostConfig;
    use rand::SeedableRng;
    let Some(gpu) = common::gpu() else { return };
    let mut vit = Vit::load(&gpu, &data("tiny-dinov2")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let cfg = CapaBoostConfig::capaboost(4, 8.0, 2, 0.5, 1);
    vit.add_lora(
        &gpu,
        &[Target::Query, Target::Value, Target::Output],
        &cfg,
        &mut rng,
    )
    .unwrap();
    let mut trng = common::rng("vit_grad");
    for (name, t) in vit.params() {
        if name.contains("lora_B") {
            t.write(&common::random_vec(&mut trng, t.numel(), 0.3))
                .unwrap();
        }
    }
    let rv = common::random_vec(&mut trng, 2 * 37 * 32, 1.0);
    let r = capaboost::Tensor::from_slice(&gpu, &rv, &[2, 37, 32]).unwrap();
    let (_, grads) = vit_loss(&gpu, &vit, &r, true);
    let params = vit.params();
    let (got, want) = common::fd_at_largest(&params, &grads, (3, 5e-2), || {
        vit_loss(&gpu, &vit, &r, false).0
    });
    let e = common::rel_max_abs(&got, &want);
    eprintln!("adapter gradients vs finite differences: {e:.2e}");
    assert!(e < 1e-3, "adapter gradients vs finite differences: {e}");
    assert!(
        want.iter().any(|w| w.abs() > 1e-2),
        "degenerate check {want:?}"
    );
}
