//! Faults while a run folder is written: the process killed at chosen points of the
//! checkpoint writer and of `finetune --overwrite`, and a full disk while a checkpoint is
//! written, through `CAPABOOST_FAILPOINT` (see `capaboost::runtime::failpoint`).
//!
//! Each case asserts that the last good checkpoint (or the old or the new run, whole)
//! stays loadable, that no temporary file or folder is left once the run is reopened, and
//! that `--resume` continues. Runs use 8 rows, `--max-len 16` and one step per process.
//! Needs the MiniLM model (scripts/fetch-minilm.sh); skips without it unless
//! `CAPABOOST_REQUIRE_MODEL=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use capaboost::runtime::failpoint;
use capaboost::tasks::run::RunDir;

struct Fixture {
    root: PathBuf,
    data: PathBuf,
    /// A run trained for one step, with its checkpoint at step 1.
    run: PathBuf,
}

const TRAIN: [&str; 9] = [
    "--no-progress",
    "--batch-size",
    "4",
    "--max-len",
    "16",
    "--train-limit",
    "8",
    "--dev-limit",
    "4",
];

fn bin() -> Command {
    let mut c = common::capaboost_cmd();
    c.env("NO_COLOR", "1").env_remove(failpoint::ENV);
    c
}

fn new_run(f: &Fixture, out: &Path) -> Command {
    let mut c = bin();
    c.args(["finetune", "--task", "sst2", "--max-steps", "1"])
        .args(TRAIN)
        .arg("--data")
        .arg(&f.data)
        .arg("--out")
        .arg(out);
    c
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        common::gpu()?;
        common::model_dir()?;
        let root = std::env::temp_dir().join(format!("capaboost-faults-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("sst2");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue/SST-2");
        std::fs::create_dir_all(&data).unwrap();
        for (file, n) in [("train.tsv", 8), ("dev.tsv", 4)] {
            let text = std::fs::read_to_string(src.join(file)).unwrap();
            let head: String = text.split_inclusive('\n').take(n + 1).collect();
            std::fs::write(data.join(file), head).unwrap();
        }
        let f = Fixture {
            run: root.join("run"),
            root,
            data,
        };
        let o = new_run(&f, &f.run).output().unwrap();
        ok(&o);
        // Rows longer than --max-len are cut like any other, said once per file.
        let err = stderr(&o);
        let cut = "dev.tsv: 3 rows longer than --max-len 16 tokens were truncated \
                   (the first at line 3)";
        assert_eq!(err.matches("dev.tsv: ").count(), 1, "{err}");
        assert!(err.contains(cut), "{err}");
        Some(f)
    })
    .as_ref()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", stderr(o));
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn copy_run(f: &Fixture, name: &str) -> PathBuf {
    let dst = f.root.join(name);
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&f.run, &dst);
    dst
}

fn resume(run: &Path, max_steps: &str, point: Option<&str>) -> Output {
    let mut c = bin();
    c.args([
        "finetune",
        "--no-progress",
        "--max-steps",
        max_steps,
        "--resume",
    ])
    .arg(run);
    if let Some(p) = point {
        c.env(failpoint::ENV, p);
    }
    c.output().unwrap()
}

/// Reopens `run` as every command does (finishing an interrupted swap) and returns the
/// checkpoint's step.
fn reopen_step(run: &Path) -> u64 {
    let dir = RunDir::open(run).unwrap();
    let state = dir.load_checkpoint_state().unwrap().expect("a checkpoint");
    for f in ["adapter.safetensors", "optimizer.safetensors"] {
        assert!(dir.checkpoint_dir().join(f).is_file(), "{f} missing");
    }
    state["step"].as_u64().unwrap()
}

/// Hidden leftovers in `dir` other than a (stale) lock: temp files and folders.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".lock")
        .collect()
}

/// Kills the resumed run at `point` of its step-2 checkpoint save.
fn kill_at(f: &Fixture, point: &str) -> PathBuf {
    let run = copy_run(f, point);
    let o = resume(&run, "2", Some(point));
    assert_eq!(
        o.status.code(),
        Some(failpoint::EXIT_CODE),
        "{}",
        stderr(&o)
    );
    run
}

#[test]
fn a_kill_before_or_after_the_checkpoint_swap_leaves_a_loadable_checkpoint() {
    let Some(f) = fixture() else { return };
    // Before the swap the old checkpoint (step 1) stands; after it, the new one.
    let run = kill_at(f, "checkpoint-files-written");
    assert_eq!(reopen_step(&run), 1);
    let run = kill_at(f, "checkpoint-swapped");
    assert_eq!(reopen_step(&run), 2);
}

#[test]
fn a_kill_amid_the_checkpoint_swap_is_finished_and_resume_continues() {
    let Some(f) = fixture() else { return };
    // No checkpoint/ at all when killed: the complete new copy is renamed into place,
    // `--resume` continues, and the writer leaves nothing behind.
    let run = kill_at(f, "checkpoint-old-renamed");
    let o = resume(&run, "3", None);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("stale lock"), "{err}");
    assert!(
        err.contains("finished an interrupted checkpoint save"),
        "{err}"
    );
    assert_eq!(reopen_step(&run), 3);
    assert!(!run.join(".lock").exists());
    assert_eq!(leftovers(&run), Vec::<String>::new());
}

#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_last_one_and_names_the_file() {
    let Some(f) = fixture() else { return };
    let run = copy_run(f, "enospc");
    let o = resume(&run, "2", Some("checkpoint-enospc"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("optimizer.safetensors"), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // The partial copy is gone at once (it would hold the space the next save needs),
    // the lock released, the step-1 checkpoint in place; the run continues.
    assert_eq!(leftovers(&run), Vec::<String>::new());
    assert!(!run.join(".lock").exists());
    assert_eq!(reopen_step(&run), 1);
    ok(&resume(&run, "2", None));
    assert_eq!(reopen_step(&run), 2);
}

#[test]
fn a_kill_anywhere_in_an_overwrite_leaves_the_old_run_or_the_new_one() {
    let Some(f) = fixture() else { return };
    // (point, whether the new run is in place once reopened).
    for (point, replaced) in [
        ("overwrite-prepared", false),
        ("overwrite-old-renamed", false),
        ("overwrite-swapped", true),
    ] {
        let run = copy_run(f, point);
        std::fs::write(run.join("mine.txt"), "old").unwrap();
        let o = new_run(f, &run)
            .args(["--overwrite", "--seed", "7"])
            .env(failpoint::ENV, point)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(failpoint::EXIT_CODE),
            "{}",
            stderr(&o)
        );
        RunDir::open(&run).unwrap();
        let cfg = std::fs::read_to_string(run.join("config.json")).unwrap();
        assert_eq!(cfg.contains("\"seed\": 7"), replaced, "{point}: {cfg}");
        assert_eq!(run.join("mine.txt").exists(), !replaced, "{point}");
        if !replaced {
            assert_eq!(reopen_step(&run), 1, "{point}: the old run is whole");
        }
        let siblings: Vec<_> = std::fs::read_dir(&f.root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!(".{point}.")))
            .collect();
        assert!(siblings.is_empty(), "{point}: {siblings:?}");
    }
}
