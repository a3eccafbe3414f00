//! Sizes from flags that no device (or no address space) can hold: each is an error that
//! names the flag, before a host buffer is allocated, never an abort or a panic (exit 101
//! or 134). The `finetune` cases leave no run folder. Needs the MiniLM model for the
//! `finetune` cases (scripts/fetch-minilm.sh); skips without it unless
//! `CAPABOOST_REQUIRE_MODEL=1`.

mod common;

use std::path::{Path, PathBuf};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let o = common::capaboost_cmd()
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn expect(name: &str, args: &[&str], code: i32, needle: &str) {
    let (got, err) = run(args);
    assert_eq!(got, Some(code), "{name}: capaboost {args:?}\n{err}");
    assert!(err.contains(needle), "{name}: no {needle:?} in:\n{err}");
}

fn root() -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-sizes-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bench_sizes_are_checked_naming_the_flag() {
    if common::gpu().is_none() {
        return;
    }
    let small = ["--reps", "1", "--warmup", "0"];
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["--shapes", "100000000000x100000000000x8", "--gemm", "64", "--copy-mb", "1"], "--shapes"),
        (&["--shapes", "4000000000x4000000x8", "--gemm", "64", "--copy-mb", "1"], "--shapes"),
        (&["--shapes", "64x64x8", "--ds", "100000000", "--gemm", "64", "--copy-mb", "1"], "--ds 100000000"),
        (&["--shapes", "64x64x8", "--ds", "0", "--gemm", "64", "--copy-mb", "1"], "--ds"),
        (&["--shapes", "64x64x8", "--gemm", "100000", "--copy-mb", "1"], "--gemm 100000"),
        (&["--shapes", "64x64x8", "--gemm", "0", "--copy-mb", "1"], "--gemm"),
        (&["--shapes", "64x64x8", "--gemm", "64", "--copy-mb", "100000000000000"], "--copy-mb"),
        (&["--shapes", "64x64x8", "--gemm", "64", "--copy-mb", "0"], "--copy-mb"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let mut args = vec!["bench"];
        args.extend(*extra);
        args.extend(small);
        expect(&format!("bench {i}"), &args, 1, needle);
    }
}

#[test]
fn layer_masks_too_large_name_d() {
    if common::gpu().is_none() {
        return;
    }
    let input = root().join("layer-in.safetensors");
    let mut w = capaboost::runtime::io::TensorWriter::default();
    let v = |n: usize| vec![0.5f32; n];
    w.f32("x", &[2, 4], &v(8));
    w.f32("weight", &[4, 4], &v(16));
    w.f32("lora_A", &[2, 4], &v(8));
    w.f32("lora_B", &[4, 2], &v(8));
    w.f32("grad_y", &[2, 4], &v(8));
    w.write(&input).unwrap();
    let out = root().join("layer-out.safetensors");
    let (i, o) = (input.display().to_string(), out.display().to_string());
    let args = ["layer", "--input", &i, "--output", &o, "--d", "100000000"];
    expect("layer --d", &args, 1, "--d 100000000");
    assert!(!out.exists());
}

fn tiny_sst2(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/glue/SST-2");
    std::fs::create_dir_all(dir).unwrap();
    for (f, n) in [("train.tsv", 8), ("dev.tsv", 4)] {
        let text = std::fs::read_to_string(src.join(f)).unwrap();
        let head: String = text.split_inclusive('\n').take(n + 1).collect();
        std::fs::write(dir.join(f), head).unwrap();
    }
}

#[test]
fn finetune_sizes_are_checked_naming_the_flag() {
    if common::gpu().is_none() || common::model_dir().is_none() {
        return;
    }
    let data = root().join("sst2");
    tiny_sst2(&data);
    let out = root().join("never");
    let (d, o) = (data.display().to_string(), out.display().to_string());
    let base = [
        "finetune",
        "--task",
        "sst2",
        "--no-progress",
        "--max-steps",
        "1",
        "--max-len",
        "16",
        "--data",
        &d,
        "--out",
        &o,
    ];
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["--r", "100000000"], "--r 100000000"),
        (&["--method", "capaboost-adapter", "--adapter-width", "1000000000"], "--adapter-width 1000000000"),
    ];
    for (i, (extra, needle)) in cases.iter().enumerate() {
        let mut args = base.to_vec();
        args.extend(*extra);
        expect(&format!("finetune {i}"), &args, 1, needle);
        assert!(!out.exists(), "finetune case {i} created the run folder");
    }
}
