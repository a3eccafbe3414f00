//! `--task image` through the command line on the tiny random DINOv2 and ViT models of
//! tests/data and a few CIFAR-10 images: finetune (stopped and resumed), eval with a
//! predictions TSV that reproduces the run's accuracy, PEFT export under the ViT / DINOv2
//! module names, merge into a folder the encoder loads, and flags of other tasks refused.

mod common;

use std::path::{Path, PathBuf};

use capaboost::models::vit::Vit;
use capaboost::runtime::io::TensorFile;
use serde_json::Value;

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-imgcli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `train/` with 4 and `dev/` with 2 CIFAR-10 images of each of two classes.
fn tiny_data(dir: &Path) -> PathBuf {
    let src = manifest("../shared/data/cifar10-test-half");
    let data = dir.join("data");
    for class in ["cat", "ship"] {
        for i in 0..6 {
            let split = if i < 4 { "train" } else { "dev" };
            let to = data.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let name = format!("{i:04}.jpg");
            std::fs::copy(src.join(class).join(&name), to.join(&name)).unwrap();
        }
    }
    data
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn run(args: &[String]) -> (bool, String, String) {
    let out = common::capaboost_cmd().args(args).output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn ok(args: &[String]) -> String {
    let (good, out, err) = run(args);
    assert!(good, "capaboost {args:?} failed:\n{out}{err}");
    out
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn finetune(model: &str, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = args(&["finetune", "--task", "image", "--data"]);
    a.extend([
        p(data),
        "--model".into(),
        p(&manifest(model)),
        "--out".into(),
        p(out),
    ]);
    a.extend(args(&[
        "--batch-size",
        "4",
        "--max-steps",
        "3",
        "--no-progress",
        "--lr",
        "1e-2",
    ]));
    a.extend(args(extra));
    a
}

fn last_record(run: &Path) -> Value {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

#[test]
fn dinov2_capaboost_run_resume_eval_export_merge() {
    let Some(gpu) = common::gpu() else { return };
    let dir = tmpdir("dino");
    let data = tiny_data(&dir);
    let run_dir = dir.join("run");
    let extra = [
        "--method",
        "capaboost",
        "--r",
        "4",
        "--d",
        "2",
        "--pooling",
        "mean",
    ];
    let mut first = finetune("tests/data/tiny-dinov2", &data, &run_dir, &extra);
    first.extend(args(&["--stop-after", "2"]));
    ok(&first);
    ok(&args(&[
        "finetune",
        "--resume",
        &p(&run_dir),
        "--no-progress",
    ]));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["task"], "image");
    assert_eq!(cfg["classes"], serde_json::json!(["cat", "ship"]));
    let rec = last_record(&run_dir);
    assert_eq!(rec["step"], 3, "{rec}");
    for k in ["accuracy", "accuracy_cat", "accuracy_ship"] {
        assert!(rec[k].is_number(), "{k} missing from {rec}");
    }
    // eval on the run's own folder scores its dev split, as training did.
    let preds = dir.join("preds.tsv");
    let conf = dir.join("confusion.png");
    let out = ok(&args(&[
        "eval",
        "--run",
        &p(&run_dir),
        "--data",
        &p(&data),
        "--predictions",
        &p(&preds),
        "--confusion",
        &p(&conf),
    ]));
    let png = image::open(&conf).unwrap();
    assert!(png.width() > 100 && png.height() > 100);
    // The run folder holds the confusion matrix of its latest evaluation (the same
    // predictions as this eval), written atomically (no temporary file left).
    let own = std::fs::read(run_dir.join("confusion.png")).unwrap();
    assert_eq!(own, std::fs::read(&conf).unwrap());
    let own = image::load_from_memory(&own).unwrap().to_rgb8();
    assert_eq!(own.dimensions(), (110 + 2 * 48 + 10, 110 + 2 * 48 + 10));
    assert!(
        own.pixels().any(|p| p.0 != [255, 255, 255]),
        "a blank image"
    );
    let names: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
    let m: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        (m["accuracy"].as_f64().unwrap() - rec["accuracy"].as_f64().unwrap()).abs() < 1e-9,
        "{m} vs {rec}"
    );
    let tsv = std::fs::read_to_string(&preds).unwrap();
    let mut lines = tsv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "path\tlabel\tprediction\tlogit_cat\tlogit_ship"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4);
    let right = rows
        .iter()
        .filter(|r| {
            let f: Vec<&str> = r.split('\t').collect();
            f[1] == f[2]
        })
        .count();
    assert!((right as f64 / 4.0 - m["accuracy"].as_f64().unwrap()).abs() < 1e-9);
    // PEFT export under Dinov2Model's module names, head beside it.
    let peft = dir.join("peft");
    ok(&args(&[
        "export",
        "--run",
        &p(&run_dir),
        "--format",
        "peft",
        "--out",
        &p(&peft),
    ]));
    let acfg: Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    let targets = acfg["target_modules"].to_string();
    assert!(targets.contains("attention.q_proj"), "{acfg}");
    // As PEFT 0.21 saves a LoRA on Dinov2ForImageClassification with the classifier in
    // modules_to_save.
    assert_eq!(acfg["modules_to_save"], serde_json::json!(["classifier"]));
    assert!(acfg["task_type"].is_null(), "{acfg}");
    let t = TensorFile::read(&peft.join("adapter_model.safetensors")).unwrap();
    let (shape, _) = t
        .f32("base_model.model.dinov2.encoder.layer.1.attention.v_proj.lora_A.weight")
        .unwrap();
    assert_eq!(shape, vec![8, 32], "rank d r = 8");
    let head: Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("head_config.json")).unwrap())
            .unwrap();
    assert_eq!(head["pooling"], "mean");
    assert_eq!(head["labels"], serde_json::json!(["cat", "ship"]));
    // The classifier reads concat(CLS, mean of patches): mean pooling fills the second
    // half with the head, the CLS half is zero.
    let (shape, wide) = t.f32("base_model.model.classifier.weight").unwrap();
    assert_eq!(shape, vec![2, 64]);
    let own = TensorFile::read(&peft.join("head.safetensors")).unwrap();
    let (_, w) = own.f32("weight").unwrap();
    assert!(w.iter().any(|&v| v != 0.0));
    for (row, src) in wide.chunks(64).zip(w.chunks(32)) {
        assert!(row[..32].iter().all(|&v| v == 0.0));
        assert_eq!(&row[32..], src);
    }
    assert_eq!(
        t.f32("base_model.model.classifier.bias").unwrap().1,
        own.f32("bias").unwrap().1
    );
    // The merged folder loads as a Dinov2 encoder, with the query weights changed.
    let merged = dir.join("merged");
    ok(&args(&[
        "merge",
        "--run",
        &p(&run_dir),
        "--out",
        &p(&merged),
    ]));
    assert!(merged.join("preprocessor_config.json").exists());
    let mcfg: Value =
        serde_json::from_str(&std::fs::read_to_string(merged.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        mcfg["architectures"],
        serde_json::json!(["Dinov2ForImageClassification"])
    );
    assert_eq!(
        mcfg["id2label"],
        serde_json::json!({"0": "cat", "1": "ship"})
    );
    let mt = TensorFile::read(&merged.join("model.safetensors")).unwrap();
    assert_eq!(mt.f32("classifier.weight").unwrap().1, wide);
    assert!(mt.contains("dinov2.embeddings.cls_token"));
    let vit = Vit::load(&gpu, &merged).unwrap();
    let base = Vit::load(&gpu, &manifest("tests/data/tiny-dinov2")).unwrap();
    let (a, b) = (
        vit.layers[0].proj[0].base().weight.to_vec().unwrap(),
        base.layers[0].proj[0].base().weight.to_vec().unwrap(),
    );
    assert!(
        a.iter().zip(&b).any(|(x, y)| x != y),
        "merged query equals the base"
    );
    let (a, b) = (
        vit.layers[0].proj[1].base().weight.to_vec().unwrap(),
        base.layers[0].proj[1].base().weight.to_vec().unwrap(),
    );
    assert_eq!(a, b, "the key projection is not adapted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vit_lora_cls_and_flags_of_other_tasks() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = tmpdir("vit");
    let data = tiny_data(&dir);
    let run_dir = dir.join("run");
    ok(&finetune(
        "tests/data/tiny-vit",
        &data,
        &run_dir,
        &["--method", "lora", "--r", "2", "--image-size", "16"],
    ));
    assert!(last_record(&run_dir)["accuracy"].is_number());
    let peft = dir.join("peft");
    ok(&args(&[
        "export",
        "--run",
        &p(&run_dir),
        "--format",
        "peft",
        "--out",
        &p(&peft),
    ]));
    let t = TensorFile::read(&peft.join("adapter_model.safetensors")).unwrap();
    assert!(t.contains("base_model.model.vit.layers.0.attention.q_proj.lora_B.weight"));
    // ViTForImageClassification: the classifier on the CLS token is the head itself.
    let own = TensorFile::read(&peft.join("head.safetensors")).unwrap();
    let (shape, w) = t.f32("base_model.model.classifier.weight").unwrap();
    assert_eq!((shape, w), own.f32("weight").unwrap());
    // Image flags with a text task, QA flags with the image task: refused by name.
    let (good, _, err) = run(&args(&[
        "finetune",
        "--task",
        "sst2",
        "--data",
        &p(&data),
        "--image-size",
        "16",
    ]));
    assert!(!good && err.contains("--image-size"), "{err}");
    let (good, _, err) = run(&finetune(
        "tests/data/tiny-vit",
        &data,
        &dir.join("r2"),
        &["--doc-stride", "64"],
    ));
    assert!(!good && err.contains("--doc-stride"), "{err}");
    // A text model folder is refused naming its config.
    let text_model = std::env::var("CAPABOOST_MODEL_DIR").unwrap_or_default();
    if !text_model.is_empty() {
        let mut a = finetune("tests/data/tiny-vit", &data, &dir.join("r3"), &[]);
        let i = a.iter().position(|x| x == "--model").unwrap();
        a[i + 1] = text_model;
        let (good, _, err) = run(&a);
        assert!(
            !good && err.contains("config.json") && err.contains("bert"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An idx folder (MNIST layout, plain files): 8 training and 4 evaluation 8x8 grey images
/// of classes 0 and 1 with a gradient across each row (so flips and crops change them).
fn idx_data(dir: &Path) -> PathBuf {
    let data = dir.join("idx");
    std::fs::create_dir_all(&data).unwrap();
    let write = |name: &str, shape: &[u32], body: &[u8]| {
        let mut bytes = vec![0, 0, 8, shape.len() as u8];
        for d in shape {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(body);
        std::fs::write(data.join(name), bytes).unwrap();
    };
    for (prefix, count) in [("train", 8u32), ("t10k", 4)] {
        let labels: Vec<u8> = (0..count).map(|i| (i % 2) as u8).collect();
        let body: Vec<u8> = (0..count)
            .flat_map(|i| (0..64u32).map(move |p| ((p % 8) * 30 + (i % 2) * 20 + i) as u8))
            .collect();
        write(
            &format!("{prefix}-images-idx3-ubyte"),
            &[count, 8, 8],
            &body,
        );
        write(&format!("{prefix}-labels-idx1-ubyte"), &[count], &labels);
    }
    data
}

fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("train_loss.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "loss").unwrap();
    text.lines()
        .skip(1)
        .map(|l| l.split(',').nth(col).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn idx_data_with_augmentation_resumes_exactly() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = tmpdir("augment");
    let data = idx_data(&dir);
    let run_with = |name: &str, aug: &str, extra: &[&str]| {
        let out = dir.join(name);
        let mut a = finetune("tests/data/tiny-vit", &data, &out, &["--image-size", "16"]);
        a.extend(args(&["--augment", aug, "--log-every", "1"]));
        a.extend(args(extra));
        ok(&a);
        out
    };
    let resumed = run_with("resumed", "flip,crop", &["--stop-after", "2"]);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(resumed.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["augment"], "flip,crop");
    assert_eq!(cfg["classes"], serde_json::json!(["0", "1"]));
    // A resume keeps the run's augmentation and refuses another.
    let (good, _, err) = run(&args(&[
        "finetune",
        "--resume",
        &p(&resumed),
        "--augment",
        "flip",
    ]));
    assert!(!good && err.contains("--augment"), "{err}");
    ok(&args(&[
        "finetune",
        "--resume",
        &p(&resumed),
        "--no-progress",
    ]));
    let straight = run_with("straight", "flip,crop", &[]);
    let plain = run_with("plain", "none", &[]);
    let (a, b, c) = (losses(&resumed), losses(&straight), losses(&plain));
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a, b, "a resumed augmented run draws the same images");
    assert_ne!(a, c, "augmentation changes the training inputs");
    // Evaluation is never augmented: eval of the run reproduces its last record.
    let out = ok(&args(&[
        "eval",
        "--run",
        &p(&straight),
        "--data",
        &p(&data),
    ]));
    let m: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(m["accuracy"], last_record(&straight)["accuracy"]);
    // An unknown augmentation is refused at parse.
    let (good, _, err) = run(&finetune(
        "tests/data/tiny-vit",
        &data,
        &dir.join("bad"),
        &["--augment", "rotate"],
    ));
    assert!(!good && err.contains("rotate"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dinov2_capaboost_trace_records_the_masks_it_used() {
    let Some(_gpu) = common::gpu() else { return };
    let dir = tmpdir("trace");
    let data = idx_data(&dir);
    let (run_dir, trace) = (dir.join("run"), dir.join("trace"));
    let mut a = finetune("tests/data/tiny-dinov2", &data, &run_dir, &[]);
    a.extend(args(&[
        "--image-size",
        "16",
        "--method",
        "capaboost",
        "--r",
        "4",
        "--d",
        "2",
        "--density",
        "0.5",
        "--log-every",
        "1",
        "--trace",
    ]));
    a.push(p(&trace));
    ok(&a);
    // One steps.jsonl line per step, with the losses train_loss.csv logged.
    let steps: Vec<Value> = std::fs::read_to_string(trace.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let traced: Vec<f64> = steps.iter().map(|s| s["loss"].as_f64().unwrap()).collect();
    let logged = losses(&run_dir);
    assert_eq!(traced.len(), 3);
    for (t, l) in traced.iter().zip(&logged) {
        assert!((t - l).abs() < 1e-6, "{traced:?} vs {logged:?}");
    }
    assert_eq!(steps[0]["padded_len"], 17, "16 patches + CLS");
    let recipe: Value =
        serde_json::from_str(&std::fs::read_to_string(trace.join("recipe.json")).unwrap()).unwrap();
    assert!(
        recipe["model"]["encoder"]
            .as_str()
            .unwrap()
            .contains("Dinov2")
    );
    assert_eq!(recipe["task"]["classes"], serde_json::json!(["0", "1"]));
    // Both branches' masks of every adapted module (query, value of 2 layers), exact 0.5.
    let init = TensorFile::read(&trace.join("init.safetensors")).unwrap();
    let fin = TensorFile::read(&trace.join("final.safetensors")).unwrap();
    ok(&args(&[
        "export",
        "--run",
        &p(&run_dir),
        "--format",
        "peft",
        "--out",
        &p(&dir.join("peft")),
    ]));
    let peft = TensorFile::read(&dir.join("peft/adapter_model.safetensors")).unwrap();
    for layer in 0..2 {
        for (m, pm) in [("query", "q_proj"), ("value", "v_proj")] {
            let module = format!("base_model.model.encoder.layer.{layer}.attention.attention.{m}");
            let (_, a_final) = fin.f32(&format!("{module}.lora_A.weight")).unwrap();
            let (_, stacked) = peft
                .f32(&format!(
                    "base_model.model.dinov2.encoder.layer.{layer}.attention.{pm}.lora_A.weight"
                ))
                .unwrap();
            assert_eq!(stacked.len(), 2 * 4 * 32);
            for i in 0..2 {
                let ma = init
                    .mask(&format!("{module}.mask_A.{i}"), &[4, 32])
                    .unwrap();
                let mb = init
                    .mask(&format!("{module}.mask_B.{i}"), &[32, 4])
                    .unwrap();
                assert_eq!(ma.iter().filter(|&&x| x == 1).count(), 4 * 32 / 2);
                assert_eq!(mb.iter().filter(|&&x| x == 1).count(), 4 * 32 / 2);
                // The recorded masks are the ones the run applied: branch i of the export
                // is the trained lora_A masked by mask_A.i.
                let masked: Vec<f32> = a_final
                    .iter()
                    .zip(&ma)
                    .map(|(v, &k)| if k == 1 { *v } else { 0.0 })
                    .collect();
                assert!(masked.iter().any(|&v| v != 0.0));
                assert_eq!(&stacked[i * 128..(i + 1) * 128], &masked[..]);
            }
        }
    }
    // 4 modules x 2 factors + head (2); 4 x 2 factors x 2 branches masks.
    assert_eq!(init.names().count(), 8 + 2 + 16);
    std::fs::remove_dir_all(&dir).unwrap();
}
