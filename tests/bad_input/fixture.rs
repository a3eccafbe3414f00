//! The fixture of `tests/bad_input.rs`: a tiny SST-2 slice, one trained run, and the
//! helpers that run a case and check that nothing guarded changed.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common;

/// Shared inputs: a tiny SST-2 slice, the model, and one trained run (1 step) that cases
/// copy before they touch it.
pub struct Fixture {
    pub root: PathBuf,
    pub data: PathBuf,
    pub model: PathBuf,
    pub run: PathBuf,
}

pub const TRAIN: [&str; 10] = [
    "--max-steps",
    "1",
    "--batch-size",
    "4",
    "--max-len",
    "16",
    "--train-limit",
    "8",
    "--dev-limit",
    "4",
];

pub fn bin() -> Command {
    let mut c = common::capaboost_cmd();
    c.env("NO_COLOR", "1");
    c
}

pub fn tiny_sst2(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue/SST-2");
    std::fs::create_dir_all(dir).unwrap();
    for (f, n) in [("train.tsv", 8), ("dev.tsv", 4)] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        let head: String = text.split_inclusive('\n').take(n + 1).collect();
        std::fs::write(dir.join(f), head).unwrap();
    }
}

pub fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        common::gpu()?;
        let model = common::model_dir()?;
        let root = std::env::temp_dir().join(format!("capaboost-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("sst2");
        tiny_sst2(&data);
        let run = root.join("run");
        let out = bin()
            .args(["finetune", "--task", "sst2", "--no-progress"])
            .args(TRAIN)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&run)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Fixture {
            root,
            data,
            model,
            run,
        })
    })
    .as_ref()
}

/// A hash of every file under `path` (name and content; size and mtime for files over
/// 1 MB), or of its absence.
pub fn tree_hash(path: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    let mut stack = vec![path.to_path_buf()];
    let mut files = Vec::new();
    while let Some(p) = stack.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                for e in std::fs::read_dir(&p).unwrap().flatten() {
                    stack.push(e.path());
                }
            }
            Ok(m) => files.push((p, m)),
            Err(_) => "absent".hash(&mut h),
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, m) in files {
        p.hash(&mut h);
        if m.file_type().is_symlink() {
            std::fs::read_link(&p).ok().hash(&mut h);
        } else if m.len() > 1 << 20 {
            (m.len(), m.modified().ok()).hash(&mut h);
        } else {
            std::fs::read(&p).unwrap_or_default().hash(&mut h);
        }
    }
    h.finish()
}

/// A fresh copy of the trained run (files only, no lock).
pub fn copy_run(f: &Fixture, name: &str) -> PathBuf {
    let dst = f.root.join(name);
    let _ = std::fs::remove_dir_all(&dst);
    copy_dir(&f.run, &dst);
    dst
}

pub fn copy_dir(src: &Path, dst: &Path) {
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

/// Runs `capaboost args`, asserts the exit code and that stderr names `needle`, and that
/// every path in `guarded` is as it was. Returns stderr.
pub fn case(name: &str, args: &[String], code: i32, needle: &str, guarded: &[&Path]) -> String {
    let before: Vec<u64> = guarded.iter().map(|p| tree_hash(p)).collect();
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "case {name}: capaboost {args:?}\n{err}"
    );
    assert!(
        err.contains(needle),
        "case {name}: message does not name {needle:?}:\n{err}"
    );
    for (p, h) in guarded.iter().zip(before) {
        assert_eq!(tree_hash(p), h, "case {name}: {} changed", p.display());
    }
    err
}

pub fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

/// A new run into `out` with the fixture's data, plus `extra`.
pub fn new_run(f: &Fixture, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strs(&["finetune", "--task", "sst2", "--no-progress"]);
    for pair in TRAIN.chunks(2) {
        if !extra.iter().any(|e| e.split('=').next() == Some(pair[0])) {
            a.extend(strs(pair));
        }
    }
    a.extend(["--data".into(), p(&f.data), "--out".into(), p(out)]);
    a.extend(strs(extra));
    a
}
