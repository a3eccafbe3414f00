//! Run folder: create/open rules, metric logs, derived CSV and PNG, checkpoint swap.

use std::path::PathBuf;

use capaboost::tasks::run::{CURVES_SIZE, Progress, RunDir, install_interrupt_flag};
use serde_json::json;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Decodes a PNG and returns its size, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "bad PNG signature");
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

#[test]
fn create_and_open_rules() {
    let dir = tmpdir("create");
    let cfg = json!({"task": "sst2", "lr": 1e-4});
    // Missing folder: open fails, create makes it.
    let e = RunDir::open(&dir).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let run = RunDir::create(&dir, &cfg).unwrap();
    assert_eq!(run.path(), dir);
    assert_eq!(run.config().unwrap(), cfg);
    assert_eq!(RunDir::open(&dir).unwrap().config().unwrap(), cfg);
    // A run is never created over another: refused while locked, and after release too
    // (naming the run); --overwrite replaces it by renames and leaves no sibling behind.
    let cfg2 = json!({"task": "sst2", "lr": 2e-4});
    let e = RunDir::create(&dir, &cfg2).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
    let e = RunDir::create_with(&dir, &cfg2, true).unwrap_err();
    assert!(e.to_string().contains("locked by process"), "{e}");
    assert!(dir.join(".lock").is_file());
    drop(run);
    assert!(!dir.join(".lock").exists());
    let e = RunDir::create(&dir, &cfg2).unwrap_err();
    assert!(e.to_string().contains("holds a run (sst2"), "{e}");
    let run2 = RunDir::create_with(&dir, &cfg2, true).unwrap();
    assert_eq!(RunDir::open(&dir).unwrap().config().unwrap(), cfg2);
    assert!(RunDir::open_writer(&dir).is_err(), "second writer");
    drop(run2);
    // A stale lock (a pid that is not running) is taken over.
    std::fs::write(dir.join(".lock"), "4000000000\n").unwrap();
    std::fs::write(dir.join(".params.tmp-1"), "junk").unwrap();
    let w = RunDir::open_writer(&dir).unwrap();
    assert!(
        !dir.join(".params.tmp-1").exists(),
        "stale temp file removed"
    );
    drop(w);
    // Not a JSON object.
    assert!(RunDir::create(&tmpdir("create-arr"), &json!([1])).is_err());

    // A non-empty foreign folder is refused; an empty one is fine.
    let foreign = tmpdir("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    RunDir::create(&foreign, &cfg).unwrap();
    std::fs::remove_file(foreign.join("config.json")).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let e = RunDir::create(&foreign, &cfg).unwrap_err();
    assert!(e.to_string().contains("no config.json"), "{e}");
    let e = RunDir::open(&foreign).unwrap_err();
    assert!(e.to_string().contains("config.json"), "{e}");
    // A config.json that is not ours (not an object) is refused too.
    std::fs::write(foreign.join("config.json"), "[1, 2]").unwrap();
    assert!(RunDir::create(&foreign, &cfg).is_err());
    assert!(RunDir::open(&foreign).is_err());
    // A file where the folder should be.
    let file = tmpdir("afile");
    std::fs::write(&file, "x").unwrap();
    assert!(RunDir::create(&file, &cfg).is_err());
    std::fs::remove_file(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&foreign).unwrap();
}

#[test]
fn logs_csv_and_curves() {
    let dir = tmpdir("logs");
    let run = RunDir::create(&dir, &json!({"task": "mrpc"})).unwrap();

    // Zero points: still a valid PNG and a header-only CSV.
    run.write_curves().unwrap();
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(png_size(&png), CURVES_SIZE);
    assert_eq!(
        std::fs::read_to_string(dir.join("dev_metrics.csv")).unwrap(),
        "step,epoch,split\n"
    );

    // One point of each.
    run.log_train_loss(1, 0.01, 0.69, 1e-4).unwrap();
    run.log_metrics(&json!({"step": 1, "epoch": 0.01, "split": "dev", "accuracy": 0.5, "f1": 0.4, "train_loss": 0.69}))
        .unwrap();
    run.write_curves().unwrap();
    assert_eq!(
        png_size(&std::fs::read(dir.join("curves.png")).unwrap()),
        CURVES_SIZE
    );

    for s in 2..=50u64 {
        let loss = 0.7 / (1.0 + s as f64 / 10.0);
        run.log_train_loss(s, s as f64 / 100.0, loss, 1e-4).unwrap();
        if s % 10 == 0 {
            run.log_metrics(&json!({
                "step": s, "epoch": s as f64 / 100.0, "split": "dev",
                "accuracy": 0.5 + s as f64 / 200.0, "f1": 0.4 + s as f64 / 150.0,
                "train_loss": loss,
            }))
            .unwrap();
        }
    }
    // Validation of records.
    assert!(run.log_metrics(&json!([1, 2])).is_err());
    assert!(run.log_metrics(&json!({"epoch": 1.0})).is_err());
    assert!(run.log_metrics(&json!({"step": -1})).is_err());

    let jsonl = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["accuracy"], 0.5);
    assert_eq!(lines[5]["step"], 50);

    let loss_csv = std::fs::read_to_string(dir.join("train_loss.csv")).unwrap();
    let rows: Vec<&str> = loss_csv.lines().collect();
    assert_eq!(rows[0], "step,epoch,loss,lr");
    assert_eq!(rows[1], "1,0.01,0.69,0.0001");
    assert_eq!(rows.len(), 51);
    assert_eq!(run.read_train_loss().unwrap().len(), 50);

    run.write_curves().unwrap();
    let dev = std::fs::read_to_string(dir.join("dev_metrics.csv")).unwrap();
    let rows: Vec<&str> = dev.lines().collect();
    assert_eq!(rows[0], "step,epoch,split,accuracy,f1,train_loss");
    assert_eq!(rows[1], "1,0.01,dev,0.5,0.4,0.69");
    assert_eq!(rows.len(), 7);
    assert!(rows[6].starts_with("50,0.5,dev,0.75,"), "{}", rows[6]);
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(png_size(&png), CURVES_SIZE);
    // Plenty of non-white pixels: panels, text and lines were drawn.
    let mut dec = png::Decoder::new(std::io::Cursor::new(&png))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    dec.next_frame(&mut buf).unwrap();
    let ink = buf.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
    assert!(ink > 5000, "only {ink} dark pixels");

    // A torn last line (crash while appending) is skipped, not an error.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("metrics.jsonl"))
        .unwrap();
    f.write_all(b"{\"step\": 6").unwrap();
    drop(f);
    assert_eq!(run.read_metrics().unwrap().len(), 6);
    run.write_curves().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoint_swap_and_recovery() {
    let dir = tmpdir("ckpt");
    let run = RunDir::create(&dir, &json!({})).unwrap();
    assert_eq!(run.load_checkpoint_state().unwrap(), None);
    assert_eq!(run.checkpoint_dir(), dir.join("checkpoint"));

    run.save_checkpoint(
        &[
            ("adapters.safetensors", vec![1, 2, 3]),
            ("optim.bin", vec![4]),
        ],
        &json!({"step": 10}),
    )
    .unwrap();
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 10}))
    );
    run.save_checkpoint(
        &[("adapters.safetensors", vec![5, 6])],
        &json!({"step": 20}),
    )
    .unwrap();
    let ck = run.checkpoint_dir();
    assert_eq!(
        std::fs::read(ck.join("adapters.safetensors")).unwrap(),
        vec![5, 6]
    );
    assert!(
        !ck.join("optim.bin").exists(),
        "stale file of the old checkpoint kept"
    );
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 20}))
    );
    assert!(!dir.join(".checkpoint.tmp").exists() && !dir.join(".checkpoint.old").exists());

    // Crash between "checkpoint -> .old" and ".tmp -> checkpoint": the complete .tmp wins.
    std::fs::rename(&ck, dir.join(".checkpoint.old")).unwrap();
    std::fs::create_dir(dir.join(".checkpoint.tmp")).unwrap();
    std::fs::write(dir.join(".checkpoint.tmp/a.bin"), [9]).unwrap();
    std::fs::write(
        dir.join(".checkpoint.tmp/trainer_state.json"),
        r#"{"step": 30}"#,
    )
    .unwrap();
    let reopened = RunDir::open(&dir).unwrap();
    assert_eq!(
        reopened.load_checkpoint_state().unwrap(),
        Some(json!({"step": 30}))
    );
    assert_eq!(std::fs::read(ck.join("a.bin")).unwrap(), vec![9]);
    assert!(!dir.join(".checkpoint.tmp").exists() && !dir.join(".checkpoint.old").exists());

    // Same point, but the .tmp is incomplete (no trainer_state.json): the .old is restored.
    std::fs::rename(&ck, dir.join(".checkpoint.old")).unwrap();
    std::fs::create_dir(dir.join(".checkpoint.tmp")).unwrap();
    std::fs::write(dir.join(".checkpoint.tmp/a.bin"), [1]).unwrap();
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 30}))
    );
    assert_eq!(std::fs::read(ck.join("a.bin")).unwrap(), vec![9]);
    assert!(!dir.join(".checkpoint.tmp").exists() && !dir.join(".checkpoint.old").exists());
    // Crash after the temp folder was complete but before any rename: the old
    // checkpoint stays in place and the next save replaces the leftover.
    std::fs::create_dir(dir.join(".checkpoint.tmp")).unwrap();
    std::fs::write(
        dir.join(".checkpoint.tmp/trainer_state.json"),
        r#"{"step": 35}"#,
    )
    .unwrap();
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 30}))
    );
    // Crash while writing the temp folder: the next save cleans it up.
    run.save_checkpoint(&[("a.bin", vec![7])], &json!({"step": 40}))
        .unwrap();
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 40}))
    );
    assert!(!dir.join(".checkpoint.tmp").exists());

    // Bad file names.
    for bad in ["", "..", "a/b", "trainer_state.json"] {
        assert!(
            run.save_checkpoint(&[(bad, vec![])], &json!({})).is_err(),
            "{bad:?}"
        );
    }
    assert!(
        run.save_checkpoint(&[("x", vec![]), ("x", vec![])], &json!({}))
            .is_err()
    );
    assert_eq!(
        run.load_checkpoint_state().unwrap(),
        Some(json!({"step": 40}))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn progress_plain_mode_and_interrupt_flag() {
    // Not a terminal under the test harness: plain lines; must not panic at the edges.
    let p = Progress::new(20, true);
    for s in 0..=20 {
        p.update(s, (s > 0).then_some(1.0 / (s as f64 + 1.0)), Some(123.0));
    }
    p.println("eval done");
    p.finish();
    let p = Progress::new(0, false);
    p.update(0, None, None);
    p.finish();

    let a = install_interrupt_flag().unwrap();
    let b = install_interrupt_flag().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(!a.load(std::sync::atomic::Ordering::SeqCst));
}
