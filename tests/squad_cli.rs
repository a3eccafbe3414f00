//! `--task squad` through the command line: finetune into a run folder, resume, eval with
//! the official predictions file, PEFT export aimed at `BertForQuestionAnswering`, merge
//! into a complete `BertForQuestionAnswering` folder, and bad QA input refused by name.

mod common;

use std::path::{Path, PathBuf};

use capaboost::runtime::io::TensorFile;
use serde_json::{Value, json};

fn shared_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/squad/squad-v1.1-dev-even-articles.json")
}

/// Two articles of the shared file, each cut to its first paragraph and `q` questions.
fn tiny_file(dir: &Path, q: usize) -> PathBuf {
    let text = std::fs::read_to_string(shared_file()).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let data = v["data"].as_array_mut().unwrap();
    data.truncate(2);
    for a in data.iter_mut() {
        let ps = a["paragraphs"].as_array_mut().unwrap();
        ps.truncate(1);
        ps[0]["qas"].as_array_mut().unwrap().truncate(q);
    }
    let path = dir.join("tiny.json");
    std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
    path
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Runs the CLI; returns (success, stdout, stderr).
fn run(args: &[String]) -> (bool, String, String) {
    let out = common::capaboost_cmd().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[String]) -> String {
    let (good, out, err) = run(args);
    assert!(good, "capaboost {args:?} failed:\n{out}{err}");
    out
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn finetune_args(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strs(&["finetune", "--task", "squad", "--data"]);
    a.extend([p(data), "--model".into(), p(model), "--out".into(), p(out)]);
    if !extra.contains(&"--max-len") {
        a.extend(strs(&["--max-len", "64"]));
    }
    a.extend(strs(&[
        "--doc-stride",
        "16",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--no-progress",
    ]));
    a.extend(strs(extra));
    a
}

fn last_record(run: &Path) -> Value {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("exact_match"))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

#[test]
fn squad_run_resume_eval_export_merge() {
    let (Some(_), Some(model)) = (common::gpu(), common::model_dir()) else {
        return;
    };
    let root = std::env::temp_dir().join(format!("capaboost-squad-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data = tiny_file(&root, 3);
    let run_dir = root.join("run");
    ok(&finetune_args(
        &model,
        &data,
        &run_dir,
        &["--method", "capaboost", "--max-steps", "2"],
    ));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["task"], "squad");
    assert_eq!(
        (cfg["max_len"].clone(), cfg["doc_stride"].clone()),
        (json!(64), json!(16))
    );
    // Two articles: the default split holds out the last one.
    assert_eq!(cfg["eval_articles"], Value::Null);
    let mut resume = strs(&["finetune", "--resume"]);
    resume.extend([
        p(&run_dir),
        "--max-steps".into(),
        "3".into(),
        "--no-progress".into(),
    ]);
    ok(&resume);
    let rec = last_record(&run_dir);
    assert_eq!(rec["step"], 3, "{rec}");

    // eval on the run's own file scores its held-out article, as training reported.
    let preds = root.join("preds.json");
    let mut eval = strs(&["eval", "--run"]);
    eval.extend([
        p(&run_dir),
        "--data".into(),
        p(&data),
        "--predictions".into(),
        p(&preds),
    ]);
    let printed: Value = serde_json::from_str(ok(&eval).trim()).unwrap();
    for k in ["exact_match", "f1"] {
        let (a, b) = (printed[k].as_f64().unwrap(), rec[k].as_f64().unwrap());
        assert!((a - b).abs() < 1e-9, "{k}: eval {a} vs training {b}");
    }
    let answers: Value = serde_json::from_str(&std::fs::read_to_string(&preds).unwrap()).unwrap();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let held: Vec<&str> = file["data"][1]["paragraphs"][0]["qas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["id"].as_str().unwrap())
        .collect();
    let got: Vec<&str> = answers
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut want = held.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(answers.as_object().unwrap().values().all(Value::is_string));

    check_peft_export(&run_dir, &root.join("peft"));
    check_merge(&run_dir, &root.join("merged"), &model);
    std::fs::remove_dir_all(&root).unwrap();
}

fn check_peft_export(run_dir: &Path, out: &Path) {
    let mut a = strs(&["export", "--run"]);
    a.extend([
        p(run_dir),
        "--format".into(),
        "peft".into(),
        "--out".into(),
        p(out),
    ]);
    ok(&a);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["task_type"], "QUESTION_ANS");
    assert_eq!(cfg["modules_to_save"], json!(["qa_outputs"]));
    let t = TensorFile::read(&out.join("adapter_model.safetensors")).unwrap();
    let (shape, _) = t
        .f32("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight")
        .unwrap();
    // CapaBoost d = 2 of rank 8 is the LoRA of rank 16.
    assert_eq!(shape, vec![16, 384]);
    assert_eq!(
        t.f32("base_model.model.qa_outputs.weight").unwrap().0,
        vec![2, 384]
    );
    assert_eq!(
        t.f32("base_model.model.qa_outputs.bias").unwrap().0,
        vec![2]
    );
    // The crate reads its own export back (the head is not taken for an adapter).
    let (_, loras) = capaboost::tasks::export::read_peft(out).unwrap();
    assert_eq!(loras.len(), 12);
}

fn check_merge(run_dir: &Path, out: &Path, model: &Path) {
    let mut a = strs(&["merge", "--run"]);
    a.extend([p(run_dir), "--out".into(), p(out)]);
    ok(&a);
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"], json!(["BertForQuestionAnswering"]));
    let t = TensorFile::read(&out.join("model.safetensors")).unwrap();
    let names: Vec<&str> = t.names().collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("bert.") || n.starts_with("qa_outputs."))
    );
    assert!(!names.iter().any(|n| n.contains("pooler")));
    assert_eq!(t.f32("qa_outputs.weight").unwrap().0, vec![2, 384]);
    let base = TensorFile::read(&model.join("model.safetensors")).unwrap();
    let emb = |f: &TensorFile, n: &str| f.f32(n).unwrap().1;
    // Embeddings are frozen and copied as they are; an adapted projection has moved.
    assert_eq!(
        emb(&t, "bert.embeddings.word_embeddings.weight"),
        emb(&base, "embeddings.word_embeddings.weight")
    );
    assert_ne!(
        emb(&t, "bert.encoder.layer.0.attention.self.query.weight"),
        emb(&base, "encoder.layer.0.attention.self.query.weight")
    );
}

#[test]
fn bad_qa_input_is_refused_by_name() {
    let (Some(_), Some(model)) = (common::gpu(), common::model_dir()) else {
        return;
    };
    let root = std::env::temp_dir().join(format!("capaboost-squad-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data = tiny_file(&root, 2);
    let empty = root.join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let no_articles = root.join("none.json");
    std::fs::write(&no_articles, r#"{"version": "1.1", "data": []}"#).unwrap();
    let impossible = root.join("impossible.json");
    let doc = json!({"version": "v2.0", "data": [
        {"title": "a", "paragraphs": [{"context": "Nothing here.", "qas": [
            {"id": "q1", "question": "What?", "answers": [], "is_impossible": true}]}]},
        {"title": "b", "paragraphs": [{"context": "Nor here.", "qas": [
            {"id": "q2", "question": "Who?", "answers": [], "is_impossible": true}]}]}]});
    std::fs::write(&impossible, doc.to_string()).unwrap();
    let long_q = root.join("long.json");
    let q = "why ".repeat(80);
    let doc = json!({"version": "1.1", "data": [
        {"title": "a", "paragraphs": [{"context": "Paris is in France.", "qas": [
            {"id": "long-one", "question": q, "answers": [{"text": "France", "answer_start": 12}]}]}]},
        {"title": "b", "paragraphs": [{"context": "Rome is in Italy.", "qas": [
            {"id": "q2", "question": "Where?", "answers": [{"text": "Italy", "answer_start": 11}]}]}]}]});
    std::fs::write(&long_q, doc.to_string()).unwrap();
    let cases: Vec<(&Path, Vec<&str>, &str)> = vec![
        (&empty, vec![], "empty.json"),
        (&no_articles, vec![], "no usable question"),
        (&impossible, vec![], "nothing to learn from"),
        (&long_q, vec![], "long-one"),
        (&data, vec!["--eval-articles", "5"], "--eval-articles 5"),
        (
            &data,
            vec!["--train-articles", "1", "--eval-articles", "x"],
            "\"x\"",
        ),
        (&data, vec!["--doc-stride", "64"], "--doc-stride"),
        (&data, vec!["--n-best", "0"], "--n-best"),
        (&data, vec!["--max-len", "100000"], "--max-len 100000"),
    ];
    for (i, (file, extra, needle)) in cases.into_iter().enumerate() {
        let out = root.join(format!("run{i}"));
        let (good, _, err) = run(&finetune_args(&model, file, &out, &extra));
        assert!(!good && err.contains(needle), "case {i} ({needle}): {err}");
        assert!(
            !out.exists(),
            "case {i}: a failed run left {}",
            out.display()
        );
    }
    // QA flags with a GLUE task are refused, naming them.
    let mut a = strs(&["finetune", "--task", "sst2", "--data"]);
    a.extend([p(&root), "--doc-stride".into(), "32".into(), "--out".into()]);
    a.push(p(&root.join("glue")));
    let (good, _, err) = run(&a);
    assert!(!good && err.contains("--doc-stride"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
