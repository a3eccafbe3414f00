//! A smoke run of `capaboost finetune` on a tiny slice of SST-2 (from ../shared), then
//! exact resume, `eval`, `export` (native and PEFT) and `merge` on that run.
//!
//! Needs the MiniLM model (scripts/fetch-minilm.sh); skips without it unless
//! `CAPABOOST_REQUIRE_MODEL=1`.

mod common;

use common::model_dir;

use std::path::Path;
use std::process::Command;

use capaboost::models::bert::{Batch, Bert, BertTokenizer};
use capaboost::nn::Graph;
use capaboost::runtime::io::TensorFile;

/// The first rows of SST-2's train (CRLF, `label<TAB>sentence`) and dev (`label<TAB>content`).
fn tiny_sst2(dir: &Path, train_rows: usize, dev_rows: usize) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue/SST-2");
    std::fs::create_dir_all(dir).unwrap();
    for (f, n) in [("train.tsv", train_rows), ("dev.tsv", dev_rows)] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        let head: String = text.split_inclusive('\n').take(n + 1).collect();
        std::fs::write(dir.join(f), head).unwrap();
    }
}

fn capaboost(args: &[&str]) -> String {
    let out = common::capaboost_cmd().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "capaboost {args:?} failed:\n{text}");
    text
}

fn adapter_tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
    let f = TensorFile::read(&run.join("checkpoint/adapter.safetensors")).unwrap();
    f.names()
        .map(|n| (n.to_string(), f.f32(n).unwrap().1))
        .collect()
}

#[test]
fn smoke_run_resume_eval_export_merge() {
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = model_dir() else { return };
    let root = std::env::temp_dir().join(format!("capaboost-finetune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("sst2");
    tiny_sst2(&data, 24, 12);
    let (data_s, model_s) = (
        data.to_str().unwrap().to_string(),
        model.to_str().unwrap().to_string(),
    );
    let base = |out: &Path| -> Vec<String> {
        [
            "finetune",
            "--task",
            "sst2",
            "--data",
            &data_s,
            "--model",
            &model_s,
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
            "--eval-every",
            "2",
            "--log-every",
            "1",
            "--dropout",
            "0.1",
            "--no-progress",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // Straight through.
    let straight = root.join("straight");
    let a = base(&straight);
    let text = capaboost(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("74498 trainable parameters"), "{text}");
    for f in [
        "config.json",
        "metrics.jsonl",
        "train_loss.csv",
        "dev_metrics.csv",
        "curves.png",
        "checkpoint/adapter.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/trainer_state.json",
    ] {
        assert!(straight.join(f).exists(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Step 2 (--eval-every), step 3 (end of the 3-batch epoch), step 4 (the last).
    assert_eq!(records.len(), 3, "{metrics}");
    for r in &records {
        for k in ["step", "epoch", "split", "accuracy", "train_loss"] {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
    }
    // Interrupted after 2 steps, then resumed: the same weights, bit for bit.
    let split = root.join("split");
    let mut b = base(&split);
    b.extend(["--stop-after".to_string(), "2".to_string()]);
    let text = capaboost(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("interrupted"), "{text}");
    capaboost(&[
        "finetune",
        "--resume",
        split.to_str().unwrap(),
        "--no-progress",
    ]);
    let (s, r) = (adapter_tensors(&straight), adapter_tensors(&split));
    assert_eq!(s.len(), r.len());
    for ((n1, v1), (n2, v2)) in s.iter().zip(&r) {
        assert_eq!(n1, n2);
        assert_eq!(v1, v2, "{n1} differs after resume");
    }
    // eval reproduces the last dev accuracy, and its predictions file agrees with it.
    let preds = root.join("preds.tsv");
    let text = capaboost(&[
        "eval",
        "--run",
        straight.to_str().unwrap(),
        "--data",
        &data_s,
        "--predictions",
        preds.to_str().unwrap(),
    ]);
    let last = records.last().unwrap()["accuracy"].as_f64().unwrap();
    let line = text.lines().find(|l| l.starts_with('{')).unwrap();
    let got: serde_json::Value = serde_json::from_str(line).unwrap();
    assert!(
        (got["accuracy"].as_f64().unwrap() - last).abs() < 1e-9,
        "{text} vs {last}"
    );
    let preds = std::fs::read_to_string(&preds).unwrap();
    let mut rows = preds.lines();
    assert_eq!(
        rows.next(),
        Some("line\tprediction\tlogit_negative\tlogit_positive")
    );
    let dev = std::fs::read_to_string(data.join("dev.tsv")).unwrap();
    let dev: Vec<&str> = dev.lines().collect();
    let mut correct = 0;
    let mut n = 0;
    for row in rows {
        let f: Vec<&str> = row.split('\t').collect();
        assert_eq!(f.len(), 4, "{row}");
        let line: usize = f[0].parse().unwrap();
        let (neg, pos): (f32, f32) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert!(neg.is_finite() && pos.is_finite() && neg != pos, "{row}");
        let want = if pos > neg { "positive" } else { "negative" };
        assert_eq!(f[1], want, "{row}");
        let gold = dev[line - 1].split('\t').next().unwrap();
        correct += usize::from((gold == "1") == (want == "positive"));
        n += 1;
    }
    assert_eq!(n, 12);
    assert!((correct as f64 / 12.0 - last).abs() < 1e-9, "{preds}");
    // A file without labels (GLUE's official test layout): predictions, no metrics.
    std::fs::write(
        data.join("test.tsv"),
        "index\tsentence\n0\ta gripping , funny film .\n1\tdull\n",
    )
    .unwrap();
    let test_preds = root.join("test_preds.tsv");
    let text = capaboost(&[
        "eval",
        "--run",
        straight.to_str().unwrap(),
        "--data",
        &data_s,
        "--split",
        "test.tsv",
        "--predictions",
        test_preds.to_str().unwrap(),
    ]);
    assert!(text.contains("no label column"), "{text}");
    let test_preds = std::fs::read_to_string(&test_preds).unwrap();
    let lines: Vec<&str> = test_preds
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(lines, ["line", "2", "3"], "{test_preds}");
    // PEFT export: 12 adapted modules as LoRA of rank d r = 16, alpha / r = s.
    let peft = root.join("peft");
    capaboost(&[
        "export",
        "--run",
        straight.to_str().unwrap(),
        "--format",
        "peft",
        "--out",
        peft.to_str().unwrap(),
    ]);
    let (cfg, loras) = capaboost::tasks::export::read_peft(&peft).unwrap();
    assert_eq!(loras.len(), 12);
    assert_eq!(cfg["r"], 16);
    assert!(
        (cfg["lora_alpha"].as_f64().unwrap() / 16.0 - 2.0).abs() < 1e-6,
        "{cfg}"
    );
    assert!(
        loras
            .iter()
            .any(|l| l.module == "encoder.layer.3.attention.self.value")
    );
    let head = capaboost::tasks::export::read_head(&peft).unwrap();
    assert_eq!((head.classes, head.hidden), (2, 384));
    let native = root.join("native");
    capaboost(&[
        "export",
        "--run",
        straight.to_str().unwrap(),
        "--format",
        "native",
        "--out",
        native.to_str().unwrap(),
    ]);
    assert!(
        native.join("adapter.safetensors").exists()
            && native.join("capaboost_config.json").exists()
    );
    // merge: a plain BERT whose embeddings equal the adapted model's.
    let merged = root.join("merged");
    capaboost(&[
        "merge",
        "--run",
        straight.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    // Tensors the merge does not touch (the pooler, position ids) come over unchanged,
    // so the folder loads as a complete BertModel.
    let (src, dst) = (
        TensorFile::read(&model.join("model.safetensors")).unwrap(),
        TensorFile::read(&merged.join("model.safetensors")).unwrap(),
    );
    for name in ["pooler.dense.weight", "pooler.dense.bias"] {
        if src.contains(name) {
            assert_eq!(dst.f32(name).unwrap(), src.f32(name).unwrap(), "{name}");
        }
    }
    assert_eq!(
        src.names().filter(|n| !n.starts_with("cls.")).count(),
        dst.names().count()
    );
    let gpu = common::gpu().unwrap();
    let (_, _, clf) = capaboost::tasks::train::load_run(&gpu, &straight).unwrap();
    let plain = Bert::load(&gpu, &merged).unwrap();
    let tok = BertTokenizer::load(&model, 16).unwrap();
    let enc = vec![
        tok.encode("a gripping , funny film .", None).unwrap(),
        tok.encode("dull", None).unwrap(),
    ];
    let batch = Batch::new(&gpu, &enc, 30522).unwrap();
    let pooled = |bert: &Bert| {
        let mut g = Graph::no_grad(&gpu);
        let (last, _) = bert.forward(&mut g, &batch, false).unwrap();
        let p = g.mean_pool(&last, &batch.mask).unwrap();
        g.submit().unwrap();
        p.value().to_vec().unwrap()
    };
    let (want, got) = (pooled(&clf.bert), pooled(&plain));
    let want64: Vec<f64> = want.iter().map(|&v| v as f64).collect();
    let err = common::rel_frobenius(&got, &want64);
    assert!(err < 1e-5, "merged model differs: {err}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_finetune_inputs_are_clear_errors() {
    // Run in a temporary folder with `--out` inside it: a failed run must leave nothing
    // (this test used to leave `runs/sst2-capaboost-<time>` in the crate root).
    let root = std::env::temp_dir().join(format!("capaboost-badinput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let cmd = || {
        let mut c = common::capaboost_cmd();
        c.current_dir(&root);
        c
    };
    let out = cmd()
        .args([
            "finetune",
            "--task",
            "sst2",
            "--data",
            "/nonexistent/glue",
            "--max-steps",
            "1",
            "--out",
        ])
        .arg(root.join("run"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("/nonexistent/glue"), "{text}");
    let out = cmd().args(["finetune", "--data", "x"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--task"));
    let out = cmd()
        .args(["finetune", "--resume", "/nonexistent/run"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/run")
    );
    std::fs::remove_dir_all(&root).ok();
}

/// A separable sentiment task in SST-2's layout (`label<TAB>sentence`): "the <noun> is
/// <word>" or "a <word> <noun>", with <word> from 8 positive or 8 negative adjectives.
/// Dev pairs the same words with other nouns and templates than train does.
fn polar_sst2(dir: &Path, train_rows: usize, dev_rows: usize) {
    let pos = [
        "good",
        "great",
        "wonderful",
        "excellent",
        "delightful",
        "superb",
        "brilliant",
        "lovely",
    ];
    let neg = [
        "bad", "awful", "terrible", "dull", "boring", "horrible", "poor", "dreadful",
    ];
    let nouns = ["film", "movie", "story", "plot", "acting", "script"];
    let rows = |n: usize, off: usize| -> String {
        let mut text = String::from("label\tsentence\n");
        for i in 0..n {
            let label = i % 2;
            let word = if label == 1 { pos } else { neg }[(i * 3 + off) % 8];
            let noun = nouns[(i * 5 + off) % 6];
            if (i / 2) % 2 == 1 {
                text.push_str(&format!("{label}\ta {word} {noun}\n"));
            } else {
                text.push_str(&format!("{label}\tthe {noun} is {word}\n"));
            }
        }
        text
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.tsv"), rows(train_rows, 0)).unwrap();
    std::fs::write(dir.join("dev.tsv"), rows(dev_rows, 1)).unwrap();
}

/// Fine-tuning learns: a head on MiniLM, trained through `capaboost finetune` (GlueTask,
/// Trainer, cross-entropy, AdamW, warmup + linear decay) on a separable two-class task,
/// lowers the training loss and predicts the dev labels far above chance. A trainer that
/// learns the wrong thing (every label flipped, a gradient of the wrong sign, an optimizer
/// that does not step) fails here: with flipped labels the loss falls just as well, but dev
/// accuracy drops to about 0.2.
///
/// Measured (lavapipe, seed 0): step-1 loss 0.595, mean of the last 4 steps 0.022, dev
/// accuracy 0.8125 (26 of 32); with every training label flipped: loss 0.819 -> 0.045,
/// dev accuracy 0.28. Asserted: last-4 mean < 0.5 x step-1 loss and dev accuracy >= 0.70
/// (chance: 0.5; 23 of 32 or more has p ~ 0.01 under guessing). 45-60 s on a loaded
/// 2-core machine.
#[test]
fn finetuning_learns_a_separable_task() {
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = model_dir() else { return };
    let root = std::env::temp_dir().join(format!("capaboost-learns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("polar");
    polar_sst2(&data, 96, 32);
    let run = root.join("run");
    capaboost(&[
        "finetune",
        "--task",
        "sst2",
        "--method",
        "head-only",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--batch-size",
        "8",
        "--max-len",
        "8",
        "--max-steps",
        "12",
        "--lr",
        "2e-2",
        "--seed",
        "0",
        "--log-every",
        "1",
        "--no-progress",
        "--out",
        run.to_str().unwrap(),
    ]);
    let csv = std::fs::read_to_string(run.join("train_loss.csv")).unwrap();
    let losses: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 12, "{csv}");
    let first = losses[0];
    let last = losses[8..].iter().sum::<f64>() / 4.0;
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    let accuracy = record["accuracy"].as_f64().unwrap();
    eprintln!("step-1 loss {first:.4}, last-4 mean {last:.4}, dev accuracy {accuracy:.4}");
    assert!(
        last < 0.5 * first,
        "training loss did not fall: step 1 {first}, last 4 {last} ({csv})"
    );
    assert!(
        accuracy >= 0.70,
        "dev accuracy {accuracy} (chance 0.5): the trainer does not learn the labels"
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn ctrl_c_stops_at_a_step_boundary_with_a_checkpoint() {
    use std::io::{BufRead, BufReader};
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = model_dir() else { return };
    let root = std::env::temp_dir().join(format!("capaboost-sigint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("sst2");
    tiny_sst2(&data, 16, 4);
    let run = root.join("run");
    let mut child = common::capaboost_cmd()
        .args([
            "finetune",
            "--task",
            "sst2",
            "--method",
            "lora",
            "--batch-size",
            "8",
            "--max-len",
            "12",
        ])
        .args(["--max-steps", "200", "--no-progress", "--log-every", "1"])
        .args([
            "--data",
            data.to_str().unwrap(),
            "--model",
            model.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for training to be under way, then press Ctrl-C. stderr keeps draining in a
    // thread so the child never writes into a closed pipe.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.starts_with("step ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(std::time::Duration::from_secs(240))
        .expect("training never started");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let errors = drain.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{errors}");
    assert!(text.contains("interrupted"), "{text}{errors}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!(step > 0 && step < 200, "{state}");
    std::fs::remove_dir_all(&root).ok();
}

/// A synthetic STS-B folder: sentence pairs with float scores, GLUE's column layout.
fn tiny_stsb(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let words = [
        "the", "a", "cat", "dog", "sat", "ran", "on", "mat", "park", "red", "blue", "big",
    ];
    for (f, n) in [("train.tsv", 12), ("dev.tsv", 6)] {
        let mut text = String::from(
            "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n",
        );
        for i in 0..n {
            let a: Vec<&str> = (0..5)
                .map(|k| words[(i * 7 + k * 3) % words.len()])
                .collect();
            let b: Vec<&str> = (0..4)
                .map(|k| words[(i * 5 + k * 2 + 1) % words.len()])
                .collect();
            let score = (i * 37 % 50) as f32 / 10.0;
            text.push_str(&format!(
                "{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{}\t{}\t{score:.1}\n",
                a.join(" "),
                b.join(" ")
            ));
        }
        std::fs::write(dir.join(f), text).unwrap();
    }
}

#[test]
fn regression_pairs_with_bottleneck_adapters() {
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = model_dir() else { return };
    let root = std::env::temp_dir().join(format!("capaboost-stsb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = root.join("stsb");
    tiny_stsb(&data);
    let run = root.join("run");
    let text = capaboost(&[
        "finetune",
        "--task",
        "stsb",
        "--method",
        "capaboost-adapter",
        "--placement",
        "houlsby",
        "--adapter-width",
        "8",
        "--d",
        "2",
        "--batch-size",
        "6",
        "--max-len",
        "16",
        "--max-steps",
        "2",
        "--no-progress",
        "--data",
        data.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    // 6 layers x 2 adapters x (8*384*2 + 8 + 384) + head 384 + 1.
    assert!(
        text.contains(&format!(
            "{} trainable parameters",
            12 * (8 * 384 * 2 + 8 + 384) + 385
        )),
        "{text}"
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            r["pearson"].is_number() && r["spearman"].is_number() && r["train_loss"].is_number(),
            "{r}"
        );
    }
    // Regression predictions: the score is the prediction.
    let preds = root.join("preds.tsv");
    capaboost(&[
        "eval",
        "--run",
        run.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--predictions",
        preds.to_str().unwrap(),
    ]);
    let preds = std::fs::read_to_string(&preds).unwrap();
    let mut rows = preds.lines();
    assert_eq!(rows.next(), Some("line\tprediction\tscore"));
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split('\t').collect()).collect();
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[1], r[2]);
        assert!(r[2].parse::<f32>().unwrap().is_finite());
    }
    // Bottleneck adapters have no LoRA form: PEFT export and merge refuse with a reason.
    for args in [
        vec![
            "export",
            "--run",
            run.to_str().unwrap(),
            "--format",
            "peft",
            "--out",
            root.join("peft").to_str().unwrap(),
        ],
        vec![
            "merge",
            "--run",
            run.to_str().unwrap(),
            "--out",
            root.join("merged").to_str().unwrap(),
        ],
    ] {
        let out = common::capaboost_cmd().args(&args).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bottleneck adapters"), "{err}");
    }
    capaboost(&[
        "export",
        "--run",
        run.to_str().unwrap(),
        "--format",
        "native",
        "--out",
        root.join("native").to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&root).ok();
}
