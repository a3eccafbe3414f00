//! `capaboost bench` at tiny sizes: the table, the JSON rows, the sampled correctness check.

mod common;

#[test]
fn bench_runs_small_and_writes_json() {
    if common::gpu().is_none() {
        return;
    }
    let path = std::env::temp_dir().join(format!("capaboost-bench-{}.json", std::process::id()));
    let out = common::capaboost_cmd()
        .args([
            "bench",
            "--shapes",
            "37x67x3",
            "--ds",
            "1,2",
            "--gemm",
            "67",
            "--copy-mb",
            "1",
            "--reps",
            "2",
            "--warmup",
            "1",
        ])
        .args(["--json", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("ceiling: vec4 copy") && text.contains("adapter ms"),
        "{text}"
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let layers: Vec<_> = rows.iter().filter(|r| r["kind"] == "layer").collect();
    assert_eq!(layers.len(), 2);
    for r in layers {
        assert!(r["check_rel_err"].as_f64().unwrap() < 1e-4, "{r}");
        for k in [
            "layer_ms",
            "adapter_ms",
            "base_ms",
            "adapter_tflops",
            "adapter_gbps",
        ] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k} in {r}");
        }
    }
    std::fs::remove_file(&path).ok();
    let out = common::capaboost_cmd()
        .args(["bench", "--shapes", "12x4"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKENSxWIDTHxR"));
}

#[test]
fn bench_step_reports_host_cost_and_reuses_bind_groups() {
    if common::gpu().is_none() {
        return;
    }
    let Some(model) = common::model_dir() else {
        return;
    };
    let out = common::capaboost_cmd()
        .args(["bench-step", "--model", model.to_str().unwrap()])
        .args(["--batch-size", "2", "--max-len", "7", "--steps", "2"])
        .args(["--warmup", "3"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("host recording"), "{text}");
    // Every dispatch in one pass, and a repeated step takes its bind groups from the cache.
    assert!(text.contains("in 1 compute passes"), "{text}");
    assert!(text.contains(" 0 bind groups created"), "{text}");
    assert!(text.contains("gemm "), "{text}");
    let missing = std::env::temp_dir().join("capaboost-no-model-here");
    let out = common::capaboost_cmd()
        .args(["bench-step", "--model", missing.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--model"), "{err}");
}
