//! Bad input to the `capaboost` binary, case by case: each case asserts the exit code, that
//! the message names the culprit, and that nothing the user had changed (the run, data
//! and model folders are hashed before and after; a refused new run leaves no folder).
//!
//! Most cases fail before any training. The few that train use 8 rows, `--max-len 16`
//! and one or two steps. Needs the MiniLM model (scripts/fetch-minilm.sh); skips without
//! it unless `CAPABOOST_REQUIRE_MODEL=1`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "bad_input/fixture.rs"]
mod fixture;

use fixture::*;

#[test]
fn flags_are_checked_before_anything_is_written() {
    let Some(f) = fixture() else { return };
    let out = f.root.join("never");
    #[rustfmt::skip]
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--warmup-ratio", "NaN"], 1, "--warmup-ratio"),
        (&["--alpha", "NaN"], 1, "--alpha"),
        (&["--alpha=-1"], 1, "--alpha"),
        (&["--density", "NaN"], 1, "--density"),
        (&["--method", "head-only", "--density", "NaN"], 1, "--density"),
        (&["--density", "0"], 1, "--density"),
        (&["--density", "1.5"], 1, "--density"),
        (&["--lr", "NaN"], 1, "--lr"),
        (&["--lr", "inf"], 1, "--lr"),
        (&["--lr=-1e-3"], 1, "--lr"),
        (&["--weight-decay", "NaN"], 1, "--weight-decay"),
        (&["--dropout", "1"], 1, "--dropout"),
        (&["--dropout", "NaN"], 1, "--dropout"),
        (&["--max-grad-norm", "NaN"], 1, "--max-grad-norm"),
        (&["--batch-size", "0"], 1, "--batch-size"),
        (&["--max-len", "0"], 1, "--max-len"),
        (&["--max-len", "1"], 1, "--max-len"),
        (&["--max-len", "100000"], 1, "max_position_embeddings"),
        (&["--r", "0"], 1, "--r"),
        (&["--d", "0"], 1, "--d"),
        (&["--epochs", "0"], 1, "--epochs"),
        (&["--log-every", "0"], 1, "--log-every"),
        (&["--eval-every", "0"], 1, "--eval-every"),
        (&["--method", "capaboost-adapter", "--adapter-width", "0"], 1, "--adapter-width"),
        (&["--targets", "bogus"], 2, "bogus"),
        (&["--method", "lora", "--d", "4"], 1, "--d"),
        (&["--method", "lora", "--placement", "houlsby"], 1, "--placement"),
        (&["--method", "head-only", "--r", "4"], 1, "--r"),
        (&["--method", "capaboost-adapter", "--targets", "query"], 1, "--targets"),
        (&["--mask", "bogus"], 2, "bogus"),
        (&["--batch-size=-3"], 2, "--batch-size"),
        (&["--overwrite", "--resume", "x"], 2, "--resume"),
    ];
    for (i, (extra, code, needle)) in cases.iter().enumerate() {
        let args = new_run(f, &out, extra);
        case(&format!("flag {i}"), &args, *code, needle, &[&f.data, &out]);
        assert!(!out.exists(), "flag case {i} created {}", out.display());
    }
    // --data without --task, an unknown task, --resume with --out.
    for (args, needle) in [
        (strs(&["finetune", "--data", "x"]), "--task"),
        (strs(&["finetune", "--task", "sst9", "--data", "x"]), "sst9"),
        (strs(&["finetune", "--resume", "x", "--out", "y"]), "--out"),
    ] {
        case("usage", &args, 2, needle, &[]);
    }
}

/// Writes `files` into a fresh data folder `name`.
fn data_dir(f: &Fixture, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = f.root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for (n, text) in files {
        std::fs::write(d.join(n), text).unwrap();
    }
    d
}

#[test]
fn bad_data_is_refused_before_the_run_folder_exists() {
    let Some(f) = fixture() else { return };
    let out = f.root.join("never-data");
    let train = std::fs::read_to_string(f.data.join("train.tsv")).unwrap();
    let dev = std::fs::read_to_string(f.data.join("dev.tsv")).unwrap();
    let header = "sentence\tlabel\n";
    let cases: Vec<(PathBuf, Vec<&str>, &str)> = vec![
        (f.root.join("no-such-data"), vec![], "--data"),
        (
            data_dir(f, "d-notrain", &[("dev.tsv", &dev)]),
            vec![],
            "train.tsv",
        ),
        (
            data_dir(f, "d-nodev", &[("train.tsv", &train)]),
            vec![],
            "dev",
        ),
        (
            data_dir(
                f,
                "d-emptydev",
                &[("train.tsv", &train), ("dev.tsv", header)],
            ),
            vec![],
            "dev.tsv",
        ),
        (
            data_dir(
                f,
                "d-emptytrain",
                &[("train.tsv", header), ("dev.tsv", &dev)],
            ),
            vec![],
            "train.tsv",
        ),
        (f.data.clone(), vec!["--dev-limit", "0"], "dev.tsv"),
        (f.data.clone(), vec!["--label-column", "nope"], "nope"),
        (f.data.clone(), vec!["--text-a", "nope"], "nope"),
        (
            data_dir(
                f,
                "d-binary",
                &[("train.tsv", "\u{0}\u{1}\u{2}"), ("dev.tsv", &dev)],
            ),
            vec![],
            "train.tsv",
        ),
        (f.data.join("train.tsv"), vec![], "train.tsv"),
    ];
    for (i, (data, extra, needle)) in cases.iter().enumerate() {
        let mut args = new_run(f, &out, extra);
        let at = args.iter().position(|a| a == "--data").unwrap();
        args[at + 1] = p(data);
        case(&format!("data {i}"), &args, 1, needle, &[data, &out]);
        assert!(!out.exists(), "data case {i} created the run folder");
    }
}

#[test]
fn bad_model_folders_are_refused_before_the_run_folder_exists() {
    let Some(f) = fixture() else { return };
    let out = f.root.join("never-model");
    let m = |name: &str, skip: &str, junk: Option<(&str, &str)>| {
        let d = f.root.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for e in std::fs::read_dir(&f.model).unwrap().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != skip && e.file_type().unwrap().is_file() {
                std::os::unix::fs::symlink(e.path(), d.join(&n)).unwrap();
            }
        }
        if let Some((n, text)) = junk {
            let _ = std::fs::remove_file(d.join(n));
            std::fs::write(d.join(n), text).unwrap();
        }
        d
    };
    let cases = [
        (f.root.join("no-such-model"), "--model"),
        (m("m-notok", "tokenizer.json", None), "tokenizer.json"),
        (
            m("m-badcfg", "", Some(("config.json", "{nope"))),
            "config.json",
        ),
        (
            m("m-badst", "", Some(("model.safetensors", "\u{8}\0\0\0"))),
            "model.safetensors",
        ),
        (
            m("m-noweights", "model.safetensors", None),
            "model.safetensors",
        ),
    ];
    for (i, (model, needle)) in cases.iter().enumerate() {
        let args = new_run(f, &out, &["--model", &p(model)]);
        case(&format!("model {i}"), &args, 1, needle, &[model, &out]);
        assert!(!out.exists(), "model case {i} created the run folder");
    }
}

#[test]
fn run_folders_are_never_mixed() {
    let Some(f) = fixture() else { return };
    let run = copy_run(f, "rf-run");
    let foreign = data_dir(f, "rf-foreign", &[("notes.txt", "mine")]);
    let file = f.root.join("rf-file");
    std::fs::write(&file, "x").unwrap();
    // New runs over something: refused, naming it.
    for (out, needle) in [
        (&run, "--resume"),
        (&foreign, "no config.json"),
        (&file, "not a folder"),
        (&f.data, "data folder"),
        (&f.model.join("sub"), "base model folder"),
    ] {
        let args = new_run(f, out, &[]);
        case(
            &p(out),
            &args,
            1,
            needle,
            &[&run, &foreign, &file, &f.data, out],
        );
    }
    let resume = |r: &Path, extra: &[&str]| {
        let mut a = strs(&["finetune", "--no-progress", "--resume"]);
        a.push(p(r));
        a.extend(strs(extra));
        a
    };
    // --resume with flags that change the run: an error listing them.
    let err = case(
        "resume changes",
        &resume(&run, &["--r", "4", "--seed", "9", "--max-steps", "5"]),
        1,
        "--r 4",
        &[&run],
    );
    assert!(
        err.contains("--seed 9") && !err.contains("--max-steps 5"),
        "{err}"
    );
    case(
        "resume missing",
        &resume(&f.root.join("nope"), &[]),
        1,
        "does not exist",
        &[],
    );
    case(
        "resume foreign",
        &resume(&foreign, &[]),
        1,
        "config.json",
        &[&foreign],
    );
    // Broken run folders: a config.json that is not ours, NaN in it, no checkpoint.
    let bad = copy_run(f, "rf-badcfg");
    std::fs::write(bad.join("config.json"), "{\"task\": 3").unwrap();
    case(
        "resume bad config",
        &resume(&bad, &[]),
        1,
        "config.json",
        &[&bad],
    );
    let nan = copy_run(f, "rf-nancfg");
    let text = std::fs::read_to_string(nan.join("config.json")).unwrap();
    let text = text.replace("\"alpha\": 16.0", "\"alpha\": null");
    std::fs::write(nan.join("config.json"), text).unwrap();
    case("resume null alpha", &resume(&nan, &[]), 1, "alpha", &[&nan]);
    let nock = copy_run(f, "rf-nock");
    std::fs::remove_dir_all(nock.join("checkpoint")).unwrap();
    case(
        "resume no checkpoint",
        &resume(&nock, &[]),
        1,
        "no checkpoint",
        &[&nock],
    );
    // A live writer's lock (this test process is alive) refuses a second writer.
    let locked = copy_run(f, "rf-locked");
    let me = std::process::id().to_string();
    std::fs::write(locked.join(".lock"), format!("{me}\n")).unwrap();
    let err = case("second writer", &resume(&locked, &[]), 1, &me, &[&locked]);
    assert!(err.contains("locked by process"), "{err}");
    let args = new_run(f, &locked, &["--overwrite"]);
    case(
        "overwrite locked",
        &args,
        1,
        "locked by process",
        &[&locked],
    );
}

/// Writes NaN over the first value of the first f32 tensor of a safetensors file.
fn poison(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (_, t) = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, v)| *k != "__metadata__" && v["dtype"] == "F32")
        .unwrap();
    let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn eval_export_merge_never_write_over_inputs_or_use_nan() {
    let Some(f) = fixture() else { return };
    let run = copy_run(f, "eem-run");
    let r = p(&run);
    let d = p(&f.data);
    let guarded: [&Path; 3] = [&run, &f.data, &f.model];
    #[rustfmt::skip]
    let cases: Vec<(Vec<String>, &str)> = vec![
        (strs(&["merge", "--run", &r, "--out", &p(&f.model)]), "base model folder"),
        (strs(&["merge", "--run", &r, "--out", &r]), "run folder"),
        (strs(&["export", "--run", &r, "--out", &p(&run.join("x"))]), "lies inside"),
        (strs(&["export", "--run", &r, "--format", "native", "--out", &d]), "data folder"),
        (strs(&["eval", "--run", &r, "--data", &d, "--predictions", &p(&f.data.join("dev.tsv"))]), "data folder"),
        (strs(&["eval", "--run", &r, "--data", &d, "--predictions", &p(&run.join("p.tsv"))]), "run folder"),
        (strs(&["eval", "--run", &p(&f.root.join("nope")), "--data", &d]), "does not exist"),
        (strs(&["eval", "--run", &r, "--data", &d, "--split", "missing.tsv"]), "missing.tsv"),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        case(&format!("out/in {i}"), args, 1, needle, &guarded);
    }
    // A checkpoint holding NaN is refused by all three.
    poison(&run.join("checkpoint/adapter.safetensors"));
    let out = f.root.join("eem-out");
    for args in [
        strs(&["eval", "--run", &r, "--data", &d]),
        strs(&["export", "--run", &r, "--out", &p(&out)]),
        strs(&["merge", "--run", &r, "--out", &p(&out)]),
    ] {
        case("nan checkpoint", &args, 1, "non-finite", &[&run, &out]);
        assert!(!out.exists());
    }
}

#[test]
fn resume_repairs_torn_logs_stale_locks_and_temp_files() {
    let Some(f) = fixture() else { return };
    let run = copy_run(f, "torn");
    let metrics = run.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\": 7, \"accuracy\": 0.5}\n{\"step\": 9, \"acc");
    std::fs::write(&metrics, &text).unwrap();
    std::fs::write(run.join(".lock"), "4000000000\n").unwrap();
    std::fs::write(run.join(".params.tmp-1"), "junk").unwrap();
    // A curves.png that cannot be replaced (a non-empty folder): a warning, not a failure.
    std::fs::remove_file(run.join("curves.png")).unwrap();
    std::fs::create_dir_all(run.join("curves.png/blocker")).unwrap();
    let out = bin()
        .args(["finetune", "--no-progress", "--max-steps", "2", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("torn last line"), "{err}");
    assert!(err.contains("stale lock"), "{err}");
    assert!(err.contains("dropped 1 records after"), "{err}");
    assert!(err.contains("could not redraw the curves"), "{err}");
    assert!(!run.join(".params.tmp-1").exists() && !run.join(".lock").exists());
    let text = std::fs::read_to_string(&metrics).unwrap();
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    assert_eq!(text.lines().count(), 2, "{text}");
    let cfg = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(
        cfg.contains("\"max_steps\": 2"),
        "the extension is recorded: {cfg}"
    );
}

#[test]
fn overwrite_replaces_a_run_whole() {
    let Some(f) = fixture() else { return };
    let run = copy_run(f, "ow");
    std::fs::write(run.join("mine.txt"), "old").unwrap();
    let out = bin()
        .args(new_run(f, &run, &["--overwrite", "--seed", "3"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!run.join("mine.txt").exists(), "old run left behind");
    let cfg = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(cfg.contains("\"seed\": 3"), "{cfg}");
    let siblings: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".ow."))
        .collect();
    assert!(siblings.is_empty(), "{siblings:?}");
}

#[test]
fn a_run_that_goes_non_finite_keeps_its_last_good_checkpoint() {
    let Some(f) = fixture() else { return };
    let run = f.root.join("nan-run");
    let args = new_run(
        f,
        &run,
        &[
            "--lr",
            "1e30",
            "--warmup-ratio",
            "0",
            "--eval-every",
            "1",
            "--log-every",
            "1",
        ],
    );
    let args: Vec<String> = {
        let mut a = args;
        let at = a.iter().position(|x| x == "--max-steps").unwrap();
        a[at + 1] = "4".into();
        a
    };
    let out = bin().args(&args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("non-finite") || err.contains("loss is"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    // Whatever checkpoint is there is finite: eval accepts it.
    if run.join("checkpoint").exists() {
        let out = bin()
            .args(["eval", "--run", &p(&run), "--data", &p(&f.data)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!run.join(".lock").exists());
}

#[test]
fn sigterm_checkpoints_and_exits_143_and_a_second_writer_is_refused() {
    let Some(f) = fixture() else { return };
    let run = f.root.join("term");
    let mut args = new_run(f, &run, &["--log-every", "1"]);
    let at = args.iter().position(|x| x == "--max-steps").unwrap();
    args[at + 1] = "500".into();
    let at = args.iter().position(|x| x == "--train-limit").unwrap();
    args[at + 1] = "400".into();
    let mut child = bin()
        .args(&args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let began = Instant::now();
    while !run.join("train_loss.csv").exists() {
        assert!(began.elapsed() < Duration::from_secs(300), "no step logged");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = child.id().to_string();
    let second = bin()
        .args(["finetune", "--no-progress", "--resume", &p(&run)])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("locked by process {pid}")), "{err}");
    // SAFETY: signals our own child.
    let killed = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(killed, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(run.join("checkpoint/trainer_state.json").is_file(), "{err}");
    assert!(!run.join(".lock").exists());
}

#[test]
fn environment_without_a_model_names_the_flag() {
    let Some(f) = fixture() else { return };
    let out = f.root.join("never-env");
    let mut args = strs(&["finetune", "--task", "sst2", "--no-progress"]);
    args.extend(["--data".into(), p(&f.data), "--out".into(), p(&out)]);
    let o = bin()
        .args(&args)
        .env("CAPABOOST_CACHE_DIR", f.root.join("no-cache-here"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--model"), "{err}");
    assert!(!out.exists());
}

#[test]
fn layer_checks_its_files_and_flags_first() {
    let Some(f) = fixture() else { return };
    let dir = f.root.join("layer");
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("in.safetensors");
    let mut w = capaboost::runtime::io::TensorWriter::default();
    w.f32("x".to_string(), &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    w.write(&good).unwrap();
    let nan = dir.join("nan.safetensors");
    let mut w = capaboost::runtime::io::TensorWriter::default();
    w.f32("x".to_string(), &[2, 2], &[1.0, f32::NAN, 3.0, 4.0]);
    w.write(&nan).unwrap();
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, "not a tensor file").unwrap();
    let out = p(&dir.join("out.safetensors"));
    let (g, n, j) = (p(&good), p(&nan), p(&junk));
    let missing = p(&dir.join("nope.safetensors"));
    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--input", &missing, "--output", &out], "nope.safetensors"),
        (vec!["--input", &j, "--output", &out], "junk.safetensors"),
        (vec!["--input", &n, "--output", &out], "non-finite"),
        (vec!["--input", &g, "--output", &g], "--output"),
        (vec!["--input", &g, "--output", &out, "--alpha", "NaN"], "--alpha"),
        (vec!["--input", &g, "--output", &out, "--density", "NaN"], "--density"),
        (vec!["--input", &g, "--output", &out, "--d", "0"], "--d"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let mut args = strs(&["layer"]);
        args.extend(strs(extra));
        case(&format!("layer {i}"), &args, 1, needle, &[&dir]);
    }
}
