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
