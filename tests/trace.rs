//! `capaboost finetune --trace DIR`: the trace does not change the run (the same losses
//! and final weights bit for bit as the same run untraced), and holds what a replay needs
//! (step-0 tensors under the PEFT names, masks, one line per step with the batch's file
//! lines, the final tensors and the recipe).
//!
//! Needs the MiniLM model (scripts/fetch-minilm.sh); skips without it unless
//! `CAPABOOST_REQUIRE_MODEL=1`.

mod common;

use std::path::Path;

use capaboost::runtime::io::TensorFile;
use serde_json::Value;

/// The first rows of SST-2's train and dev files.
fn tiny_sst2(dir: &Path, train_rows: usize, dev_rows: usize) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue/SST-2");
    std::fs::create_dir_all(dir).unwrap();
    for (f, n) in [("train.tsv", train_rows), ("dev.tsv", dev_rows)] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        let head: String = text.split_inclusive('\n').take(n + 1).collect();
        std::fs::write(dir.join(f), head).unwrap();
    }
}

/// Runs `finetune` with `extra` flags into `out`.
fn finetune(data: &Path, model: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "finetune",
        "--task",
        "sst2",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--method",
        "capaboost",
        "--d",
        "2",
        "--batch-size",
        "8",
        "--max-len",
        "16",
        "--max-steps",
        "4",
        "--log-every",
        "1",
        "--dropout",
        "0.1",
        "--no-progress",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = common::capaboost_cmd().args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "capaboost {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `train_loss.csv` rows as (step, loss text, lr text): the texts round-trip, so equal
/// texts are equal bits.
fn loss_rows(run: &Path) -> Vec<(u64, String, String)> {
    let csv = std::fs::read_to_string(run.join("train_loss.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[2].to_string(), f[3].to_string())
        })
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let f = TensorFile::read(path).unwrap();
    let mut v: Vec<(String, Vec<u32>)> = f
        .names()
        .filter(|n| !n.contains(".mask_"))
        .map(|n| {
            let bits = f.f32(n).unwrap().1.iter().map(|x| x.to_bits()).collect();
            (n.to_string(), bits)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn tracing_leaves_the_run_unchanged_and_records_every_step() {
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = common::model_dir() else {
        return;
    };
    let root = std::env::temp_dir().join(format!("capaboost-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("sst2");
    tiny_sst2(&data, 24, 8);
    let (plain, traced, dir) = (root.join("plain"), root.join("traced"), root.join("trace"));
    finetune(&data, &model, &plain, &[]);
    finetune(&data, &model, &traced, &["--trace", dir.to_str().unwrap()]);

    // The same run, bit for bit: every step's loss and every final tensor.
    let (a, b) = (loss_rows(&plain), loss_rows(&traced));
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "tracing changed the losses");
    let ckpt = |run: &Path| tensors(&run.join("checkpoint/adapter.safetensors"));
    assert_eq!(ckpt(&plain), ckpt(&traced), "tracing changed the weights");

    // steps.jsonl: one line per step with the step's loss and lr as train_loss.csv has
    // them, 8 distinct file lines per batch (the 24 rows are lines 2..=25), an epoch of 3
    // batches covering every row once.
    let text = std::fs::read_to_string(dir.join("steps.jsonl")).unwrap();
    let steps: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps.len(), 4, "{text}");
    let mut epoch_lines = Vec::new();
    for (s, (step, loss, lr)) in steps.iter().zip(&b) {
        assert_eq!(s["step"].as_u64(), Some(*step));
        assert_eq!(s["loss"].as_f64().unwrap().to_string(), *loss, "{s}");
        assert_eq!(s["lr"].as_f64().unwrap().to_string(), *lr, "{s}");
        let g = s["grad_norm"].as_f64().unwrap();
        assert!(g.is_finite() && g > 0.0, "{s}");
        let lines: Vec<u64> = s["examples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(lines.len(), 8, "{s}");
        assert!(lines.iter().all(|l| (2..=25).contains(l)), "{s}");
        let p = s["padded_len"].as_u64().unwrap();
        assert!((3..=16).contains(&p), "{s}");
        if *step <= 3 {
            epoch_lines.extend(lines);
        }
    }
    epoch_lines.sort();
    assert_eq!(epoch_lines, (2..=25).collect::<Vec<u64>>());

    // init.safetensors: the factors under the PEFT export's names, lora_B zero, the head,
    // and both branches' masks of every adapted module at density 0.5 (exact masks).
    let init = TensorFile::read(&dir.join("init.safetensors")).unwrap();
    let q = "base_model.model.encoder.layer.0.attention.self.query";
    let (sa, _) = init.f32(&format!("{q}.lora_A.weight")).unwrap();
    assert_eq!(sa, [8, 384]);
    let (_, b0) = init.f32(&format!("{q}.lora_B.weight")).unwrap();
    assert!(b0.iter().all(|&x| x == 0.0));
    assert_eq!(init.f32("head.weight").unwrap().0, [2, 384]);
    assert_eq!(init.f32("head.bias").unwrap().0, [2]);
    for layer in 0..6 {
        for m in ["attention.self.query", "attention.self.value"] {
            let module = format!("base_model.model.encoder.layer.{layer}.{m}");
            for i in 0..2 {
                let ma = init
                    .mask(&format!("{module}.mask_A.{i}"), &[8, 384])
                    .unwrap();
                let mb = init
                    .mask(&format!("{module}.mask_B.{i}"), &[384, 8])
                    .unwrap();
                assert_eq!(ma.iter().filter(|&&x| x == 1).count(), 8 * 384 / 2);
                assert_eq!(mb.iter().filter(|&&x| x == 1).count(), 8 * 384 / 2);
            }
        }
    }
    assert!(!init.contains(&format!("{q}.mask_A.2")));
    // 12 adapted modules x 2 factors + head; 12 x 2 factors x 2 branches masks.
    assert_eq!(init.names().count(), 24 + 2 + 48);

    // final.safetensors: the checkpoint's tensors under the trace's names.
    let fin = tensors(&dir.join("final.safetensors"));
    let renamed: Vec<(String, Vec<u32>)> = {
        let mut v: Vec<_> = ckpt(&traced)
            .into_iter()
            .map(|(n, t)| match n.starts_with("encoder.") {
                true => (format!("base_model.model.{n}"), t),
                false => (n, t),
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(fin, renamed);

    let recipe: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("recipe.json")).unwrap()).unwrap();
    assert_eq!(recipe["schedule"]["total_steps"].as_u64(), Some(4));
    assert_eq!(
        recipe["task"]["columns"]["text_a"].as_str(),
        Some("sentence")
    );
    assert_eq!(recipe["method"]["dropout"].as_f64(), Some(0.1f32 as f64));

    // A folder that already holds a trace is refused before anything is written.
    let again = root.join("again");
    let o = common::capaboost_cmd()
        .args([
            "finetune",
            "--task",
            "sst2",
            "--data",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--max-steps",
            "1",
            "--out",
            again.to_str().unwrap(),
            "--trace",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already holds a trace"));
    assert!(
        !again.exists(),
        "the run folder was created before the refusal"
    );
    std::fs::remove_dir_all(&root).ok();
}
