//! PEFT export: the stacked LoRA reproduces the CapaBoost delta_W, files round trip, the
//! config carries the fields PEFT reads, and bad inputs are errors.

mod common;

use std::path::PathBuf;

use capaboost::kernels::capaboost::cpu;
use capaboost::tasks::export::{self, PeftLora};
use rand::{Rng, rngs::StdRng};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn random_masks(rng: &mut StdRng, d: usize, n: usize) -> Vec<Vec<u8>> {
    (0..d)
        .map(|_| (0..n).map(|_| rng.random_bool(0.5) as u8).collect())
        .collect()
}

/// `(alpha / r) * lora_B @ lora_A` in f64, `[out, in]`.
fn lora_delta(l: &PeftLora, alpha_over_r: f64) -> Vec<f64> {
    let (r, i_n, o_n) = (l.rank, l.in_features, l.out_features);
    let mut dw = vec![0.0; o_n * i_n];
    for o in 0..o_n {
        for c in 0..i_n {
            dw[o * i_n + c] = alpha_over_r
                * (0..r)
                    .map(|j| l.lora_b[o * r + j] as f64 * l.lora_a[j * i_n + c] as f64)
                    .sum::<f64>();
        }
    }
    dw
}

fn max_rel(got: &[f64], want: &[f64]) -> f64 {
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / scale)
        .fold(0.0, f64::max)
}

#[test]
fn exported_lora_reproduces_capaboost_delta_w() {
    let mut rng = common::rng("exported_lora_reproduces_capaboost_delta_w");
    for &(d, r, in_f, out_f) in &[(1, 1, 1, 1), (2, 3, 5, 7), (4, 8, 67, 33), (3, 5, 17, 1)] {
        let a = common::random_vec(&mut rng, r * in_f, 1.0);
        let b = common::random_vec(&mut rng, out_f * r, 1.0);
        let ma = random_masks(&mut rng, d, r * in_f);
        let mb = random_masks(&mut rng, d, out_f * r);
        let s = rng.random_range(0.25f32..4.0);
        let adapter = cpu::Adapter {
            a: &a,
            b: &b,
            ma: &ma,
            mb: &mb,
            s: s as f64,
            in_f,
            out_f,
            r,
        };
        let want = adapter.delta_weight();

        let lora = export::capaboost_as_lora("m", &a, &b, r, in_f, out_f, &ma, &mb).unwrap();
        assert_eq!(lora.rank, d * r);
        assert_eq!(lora.lora_a.len(), d * r * in_f);
        assert_eq!(lora.lora_b.len(), out_f * d * r);

        // Through the files, so alpha / r is what PEFT would compute from the config.
        let dir = tmpdir(&format!("delta-{d}-{r}-{in_f}-{out_f}"));
        export::write_peft(&dir, &[lora], s, "base", &["query".into()]).unwrap();
        let (cfg, back) = export::read_peft(&dir).unwrap();
        let alpha = cfg["lora_alpha"].as_f64().unwrap();
        let r_exp = cfg["r"].as_u64().unwrap() as f64;
        let got = lora_delta(&back[0], alpha / r_exp);
        let err = max_rel(&got, &want);
        eprintln!("d={d} r={r} in={in_f} out={out_f}: max rel err {err:e}");
        assert!(err <= 1e-6, "delta_W mismatch: {err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn single_branch_all_ones_is_the_lora_itself() {
    let mut rng = common::rng("single_branch_all_ones_is_the_lora_itself");
    let (r, in_f, out_f) = (3, 5, 4);
    let a = common::random_vec(&mut rng, r * in_f, 1.0);
    let b = common::random_vec(&mut rng, out_f * r, 1.0);
    let l = export::capaboost_as_lora(
        "m",
        &a,
        &b,
        r,
        in_f,
        out_f,
        &[vec![1; r * in_f]],
        &[vec![1; out_f * r]],
    )
    .unwrap();
    assert_eq!((l.lora_a, l.lora_b, l.rank), (a, b, r));
}

fn random_lora(rng: &mut StdRng, module: &str, rank: usize, in_f: usize, out_f: usize) -> PeftLora {
    PeftLora {
        module: module.into(),
        lora_a: common::random_vec(rng, rank * in_f, 1.0),
        lora_b: common::random_vec(rng, out_f * rank, 1.0),
        rank,
        in_features: in_f,
        out_features: out_f,
    }
}

#[test]
fn peft_round_trip_and_config_fields() {
    let mut rng = common::rng("peft_round_trip_and_config_fields");
    let adapters = vec![
        random_lora(&mut rng, "encoder.layer.0.attention.self.query", 6, 37, 37),
        random_lora(&mut rng, "encoder.layer.0.attention.self.value", 6, 37, 37),
        random_lora(&mut rng, "encoder.layer.1.output.dense", 6, 67, 5),
    ];
    let targets: Vec<String> = vec!["query".into(), "value".into(), "dense".into()];
    let dir = tmpdir("roundtrip");
    export::write_peft(&dir, &adapters, 0.5, "bert-base-uncased", &targets).unwrap();

    let tf =
        capaboost::runtime::io::TensorFile::read(&dir.join("adapter_model.safetensors")).unwrap();
    assert!(tf.contains("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"));
    assert!(tf.contains("base_model.model.encoder.layer.1.output.dense.lora_B.weight"));
    assert_eq!(tf.names().count(), 6);
    assert_eq!(tf.metadata().get("format").map(String::as_str), Some("pt"));

    let (cfg, back) = export::read_peft(&dir).unwrap();
    assert_eq!(back, adapters, "adapters differ after the round trip");
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "FEATURE_EXTRACTION");
    assert_eq!(cfg["r"], 6);
    assert_eq!(cfg["lora_alpha"].as_f64(), Some(3.0));
    assert_eq!(cfg["use_rslora"], false);
    assert_eq!(cfg["lora_dropout"].as_f64(), Some(0.0));
    assert_eq!(cfg["bias"], "none");
    assert_eq!(cfg["fan_in_fan_out"], false);
    assert_eq!(cfg["base_model_name_or_path"], "bert-base-uncased");
    assert_eq!(cfg["inference_mode"], true);
    assert!(cfg["modules_to_save"].is_null());
    assert_eq!(cfg["init_lora_weights"], true);
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["query", "value", "dense"])
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn peft_errors() {
    let mut rng = common::rng("peft_errors");
    let dir = tmpdir("errors");
    let mixed = vec![
        random_lora(&mut rng, "a", 4, 5, 5),
        random_lora(&mut rng, "b", 8, 5, 5),
    ];
    let e = export::write_peft(&dir, &mixed, 1.0, "m", &[]).unwrap_err();
    assert!(e.to_string().contains("rank_pattern"), "{e}");
    assert!(export::write_peft(&dir, &[], 1.0, "m", &[]).is_err());
    let dup = vec![
        random_lora(&mut rng, "a", 4, 5, 5),
        random_lora(&mut rng, "a", 4, 5, 5),
    ];
    assert!(export::write_peft(&dir, &dup, 1.0, "m", &[]).is_err());
    let mut bad = random_lora(&mut rng, "a", 4, 5, 5);
    bad.lora_b.pop();
    let e = export::write_peft(&dir, &[bad], 1.0, "m", &[]).unwrap_err();
    assert!(e.to_string().contains("lora_B"), "{e}");
    assert!(export::read_peft(&dir.join("missing")).is_err());

    // Mask counts and sizes.
    let a = vec![1.0; 6];
    let b = vec![1.0; 4];
    let m = |n| vec![1u8; n];
    assert!(export::capaboost_as_lora("m", &a, &b, 2, 3, 2, &[m(6)], &[]).is_err());
    assert!(export::capaboost_as_lora("m", &a, &b, 2, 3, 2, &[], &[]).is_err());
    assert!(export::capaboost_as_lora("m", &a, &b, 2, 3, 2, &[m(5)], &[m(4)]).is_err());
    assert!(export::capaboost_as_lora("m", &a, &b, 2, 4, 2, &[m(6)], &[m(4)]).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn head_round_trip() {
    let mut rng = common::rng("head_round_trip");
    let (classes, hidden) = (3, 37);
    let w = common::random_vec(&mut rng, classes * hidden, 1.0);
    let b = common::random_vec(&mut rng, classes, 1.0);
    let labels: Vec<String> = ["neg", "neu", "pos"].map(String::from).to_vec();
    let dir = tmpdir("head");
    export::write_head(&dir, &w, &b, classes, hidden, &labels, "cls").unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("head_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["num_labels"], 3);
    assert_eq!(cfg["hidden_size"], 37);
    assert_eq!(cfg["pooling"], "cls");
    assert_eq!(cfg["labels"], serde_json::json!(["neg", "neu", "pos"]));
    let h = export::read_head(&dir).unwrap();
    assert_eq!(
        (h.weight, h.bias, h.labels),
        (w.clone(), b.clone(), labels.clone())
    );
    assert!(export::write_head(&dir, &w[1..], &b, classes, hidden, &labels, "cls").is_err());
    assert!(export::write_head(&dir, &w, &b[1..], classes, hidden, &labels, "cls").is_err());
    assert!(export::write_head(&dir, &w, &b, classes, hidden, &labels[1..], "cls").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
