//! `capaboost finetune --task causal-lm` end to end on a tiny chat model (tests/data's
//! tiny-llama with a one-character-per-token tokenizer and a ChatML template, see
//! tests/common/tiny_chat.rs): a CapaBoost run on mixed prompt/response and chat JSONL
//! (run folder, perplexity), `eval --run` and `eval --model`, `generate --run`, `export
//! --format peft` (HF Llama module names, the rank-d r LoRA), `merge` refused with the way
//! out, resume; and bad input: a line that is not an object, methods and targets a decoder
//! cannot take, chat data for a model without a template. And a learning check: 30 LoRA
//! steps memorize a response (loss below a fifth of the base's, every answer greedy-exact).

mod common;
#[path = "common/tiny_chat.rs"]
mod tiny_chat;

use std::path::{Path, PathBuf};

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-lmcli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn data(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..10 {
        let (p, r) = if i % 2 == 0 {
            ("good film", "yes")
        } else {
            ("bad film", "no")
        };
        text += &format!("{{\"prompt\": \"Review: {p} {i}\\nOk?\", \"response\": \" {r}\"}}\n");
    }
    text += "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n";
    text += "{\"prompt\": \"Review: fine\\nOk?\", \"response\": \" yes\"}\n";
    let p = dir.join("train.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = common::capaboost_cmd().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn finetune_eval_generate_export_on_a_tiny_chat_model() {
    if common::gpu().is_none() {
        return;
    }
    let dir = scratch().join("e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny-chat.gguf");
    tiny_chat::write(&model);
    let (train, out) = (data(&dir), dir.join("run"));
    let base = [
        "finetune",
        "--task",
        "causal-lm",
        "--data",
        s(&train),
        "--model",
        s(&model),
        "--method",
        "capaboost",
        "--r",
        "4",
        "--d",
        "2",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--no-progress",
        "--max-steps",
        "3",
        "--targets",
        "q,v",
    ];
    let (ok, _, err) = run(&[&base[..], &["--out", s(&out), "--stop-after", "2"]].concat());
    assert!(ok, "{err}");
    assert!(
        err.contains("the last 1 of 12 examples are held out"),
        "{err}"
    );
    let (ok, so, err) = run(&["finetune", "--resume", s(&out), "--no-progress"]);
    assert!(ok && so.contains("perplexity"), "{so}\n{err}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("first_token_accuracy"), "{metrics}");
    let dev = dir.join("dev.jsonl");
    std::fs::write(
        &dev,
        "{\"prompt\": \"Review: good film\\nOk?\", \"response\": \" yes\"}\n",
    )
    .unwrap();
    let (ok, so, err) = run(&["eval", "--run", s(&out), "--data", s(&dev)]);
    assert!(ok && so.contains("\"exact_match\""), "{so}{err}");
    let (ok, so, err) = run(&["eval", "--model", s(&model), "--data", s(&dev)]);
    assert!(ok && so.contains("\"perplexity\""), "{so}{err}");
    let generate = [
        "generate",
        "--model",
        s(&model),
        "--run",
        s(&out),
        "--prompt",
        "Review: ok",
    ];
    let (ok, so, err) = run(&[&generate[..], &["--max-new-tokens", "3"]].concat());
    assert!(
        ok && so.starts_with("Review: ok") && err.contains("tokens/s"),
        "{so}{err}"
    );
    let chat = ["generate", "--model", s(&model), "--prompt", "hi", "--chat"];
    let (ok, so, err) = run(&[&chat[..], &["--max-new-tokens", "2"]].concat());
    assert!(ok && !so.starts_with("hi"), "the reply alone: {so}{err}");
    let plain = format!("{}/tests/data/tiny-llama.gguf", env!("CARGO_MANIFEST_DIR"));
    let (ok, _, err) = run(&["generate", "--model", &plain, "--prompt", "t1", "--chat"]);
    assert!(!ok && err.contains("no chat template"), "{err}");
    let export = |format: &str, to: &Path| {
        let (ok, _, err) = run(&[
            "export",
            "--run",
            s(&out),
            "--format",
            format,
            "--out",
            s(to),
        ]);
        assert!(ok, "export --format {format}: {err}");
    };
    let peft = dir.join("peft");
    export("peft", &peft);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], 8, "CapaBoost d 2 r 4 exports as rank 8");
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(cfg["base_model_name_or_path"], "tiny-chat");
    let st = std::fs::read(peft.join("adapter_model.safetensors")).unwrap();
    let text = String::from_utf8_lossy(&st[..4096.min(st.len())]).into_owned();
    for k in [
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight",
    ] {
        assert!(text.contains(k), "{k} missing");
    }
    let native = dir.join("native");
    export("native", &native);
    let c = std::fs::read_to_string(native.join("capaboost_config.json")).unwrap();
    assert!(
        c.contains("7 * layer + projection index") && c.contains("causal-lm"),
        "{c}"
    );
    assert!(native.join("adapter.safetensors").exists());
    let (ok, _, err) = run(&["merge", "--run", s(&out), "--out", s(&dir.join("m"))]);
    assert!(!ok && err.contains("export --format peft"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_causal_lm_input_is_named() {
    let dir = scratch().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny-chat.gguf");
    tiny_chat::write(&model);
    let train = data(&dir);
    let out = dir.join("run");
    let go = |extra: &[&str], data: &Path, model: &Path| {
        let base = [
            "finetune",
            "--task",
            "causal-lm",
            "--data",
            s(data),
            "--model",
            s(model),
            "--out",
            s(&out),
            "--no-progress",
            "--max-steps",
            "1",
        ];
        run(&[&base[..], extra].concat())
    };
    let (ok, _, err) = go(&["--method", "head-only"], &train, &model);
    assert!(!ok && err.contains("lora or capaboost"), "{err}");
    let (ok, _, err) = go(&["--targets", "intermediate"], &train, &model);
    assert!(!ok && err.contains("gate and up"), "{err}");
    let (ok, _, err) = go(&["--max-len", "200"], &train, &model);
    assert!(!ok && err.contains("context of 128"), "{err}");
    let (ok, _, err) = go(&["--base-dtype", "f16"], &train, &model);
    assert!(!ok && err.contains("--base-dtype"), "{err}");
    let bad = dir.join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"response\": \"b\"}\n\"just text\"\n",
    )
    .unwrap();
    let (ok, _, err) = go(&[], &bad, &model);
    assert!(!ok && err.contains("line 2: not a JSON object"), "{err}");
    // Chat data needs a template; the original tiny-llama has none.
    let plain = format!("{}/tests/data/tiny-llama.gguf", env!("CARGO_MANIFEST_DIR"));
    let chat = dir.join("chat.jsonl");
    let line = "{\"messages\": [{\"role\": \"user\", \"content\": \"t1\"}, {\"role\": \"assistant\", \"content\": \"t2\"}]}\n";
    std::fs::write(&chat, line.repeat(3)).unwrap();
    let (ok, _, err) = go(&[], &chat, Path::new(&plain));
    assert!(!ok && err.contains("chat template"), "{err}");
    assert!(!out.exists(), "no run folder is created for bad input");
    std::fs::remove_dir_all(&dir).ok();
}

fn metric(json: &str, key: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    v[key].as_f64().unwrap()
}

#[test]
fn a_short_fine_tune_learns_a_response() {
    if common::gpu().is_none() {
        return;
    }
    let dir = scratch().join("learn");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("tiny-chat.gguf");
    tiny_chat::write(&model);
    let line = "{\"prompt\": \"Q: sky?\\nA:\", \"response\": \" blue\"}\n";
    let data = dir.join("sky.jsonl");
    std::fs::write(&data, line.repeat(8)).unwrap();
    let (ok, before, err) = run(&["eval", "--model", s(&model), "--data", s(&data)]);
    assert!(ok, "{err}");
    let out = dir.join("run");
    let args = [
        "finetune",
        "--task",
        "causal-lm",
        "--data",
        s(&data),
        "--eval-data",
        s(&data),
        "--model",
        s(&model),
        "--method",
        "lora",
        "--r",
        "4",
        "--targets",
        "all-linear",
        "--batch-size",
        "4",
        "--max-steps",
        "30",
        "--lr",
        "3e-2",
        "--no-progress",
        "--out",
        s(&out),
    ];
    let (ok, _, err) = run(&args);
    assert!(ok, "{err}");
    let (ok, after, err) = run(&["eval", "--run", s(&out), "--data", s(&data)]);
    assert!(ok, "{err}");
    let (l0, l1) = (metric(&before, "loss"), metric(&after, "loss"));
    eprintln!("loss {l0:.3} -> {l1:.3}; exact match {before} -> {after}");
    assert!(l1 < 0.2 * l0, "loss {l0} -> {l1}");
    assert_eq!(metric(&after, "exact_match"), 1.0, "{after}");
    assert_eq!(metric(&before, "exact_match"), 0.0, "{before}");
    std::fs::remove_dir_all(&dir).ok();
}
