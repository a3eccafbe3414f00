//! The `capaboost` binary as users run it.

mod common;

use std::process::Command;

fn capaboost(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capaboost"));
    cmd.args(args);
    // The suite runs the `fixed` GEMM choice unless CAPABOOST_AUTOTUNE is set.
    cmd.env(
        "CAPABOOST_AUTOTUNE",
        std::env::var("CAPABOOST_AUTOTUNE").unwrap_or_else(|_| "fixed".into()),
    );
    cmd.env_remove("CAPABOOST_ADAPTER")
        .env_remove("CAPABOOST_BACKEND");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn info_lists_adapters_and_marks_the_chosen_one() {
    let (ok, out, err) = capaboost(&["info"], &[]);
    if !ok && !common::adapter_required() {
        return eprintln!("skipping: {err}");
    }
    assert!(ok, "{out}\n{err}");
    let marked: Vec<_> = out.lines().filter(|l| l.starts_with("* [")).collect();
    assert_eq!(marked.len(), 1, "{out}");
    for key in [
        "backend",
        "max_storage_buffer_binding_size",
        "TIMESTAMP_QUERY",
        "SUBGROUP",
    ] {
        assert!(out.contains(key), "missing {key}:\n{out}");
    }
    if common::adapter_required() {
        // CI runs on lavapipe.
        assert!(out.contains("llvmpipe"), "{out}");
    }
}

#[test]
fn info_reports_bad_selections() {
    let (ok, _, err) = capaboost(&["info"], &[("CAPABOOST_BACKEND", "cuda")]);
    assert!(!ok);
    assert!(
        err.contains("CAPABOOST_BACKEND") && err.contains("vulkan"),
        "{err}"
    );
    let (ok, out, err) = capaboost(&["info"], &[("CAPABOOST_ADAPTER", "no-such-gpu-xyz")]);
    assert!(!ok);
    assert!(out.contains("no adapter matches"), "{out}");
    assert!(err.contains("no-such-gpu-xyz"), "{err}");
}
