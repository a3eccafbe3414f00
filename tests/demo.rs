//! The built-in demo: the seeded ordering of scenario (1) and the `--report` contract.

mod common;

use capaboost::tasks::demo::{self, DemoConfig, Scenario};

#[test]
fn capaboost_beats_lora_on_a_flat_spectrum_and_loses_on_a_decaying_one() {
    let Some(gpu) = common::gpu() else { return };
    // Fewer steps than the CLI default keep the test short; the ordering is already clear.
    let cfg = DemoConfig {
        steps: 250,
        ..DemoConfig::default()
    };
    let rows = demo::run(&gpu, &cfg, |r| eprintln!("{r:?}")).unwrap();
    print!("{}", demo::table(&rows));
    let loss = |s: Scenario, d: u32| {
        rows.iter()
            .find(|r| r.scenario == s && r.d == d)
            .unwrap()
            .final_loss
    };
    let lora = loss(Scenario::Flat, 1);
    for d in [2, 4, 8] {
        assert!(
            loss(Scenario::Flat, d) < 0.97 * lora,
            "flat: d={d} {} vs LoRA {lora}",
            loss(Scenario::Flat, d)
        );
    }
    assert!(loss(Scenario::Flat, 4).min(loss(Scenario::Flat, 8)) < loss(Scenario::Flat, 2));
    let lora = loss(Scenario::Decaying, 1);
    for d in [2, 4, 8] {
        assert!(
            lora < loss(Scenario::Decaying, d),
            "decaying: LoRA {lora} vs d={d}"
        );
    }
    for r in &rows {
        assert_eq!(
            r.trainable_params,
            8 * (64 + 64),
            "same stored parameters for every d"
        );
        assert!(r.used_params <= r.trainable_params);
        // The learned update reaches rank d r (up to numerical rank at the 1e-3 cut-off).
        let full = (8 * r.d as usize).min(64);
        assert!(r.rank <= full && r.rank + 2 >= full, "{r:?}");
    }
}

#[test]
fn finetune_report_has_the_contract_fields() {
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("capaboost-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let out = common::capaboost_cmd()
        .args([
            "finetune",
            "--steps",
            "5",
            "--report",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("scenario Flat") && text.contains("scenario Decaying"),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        for key in [
            "scenario",
            "method",
            "r",
            "d",
            "trainable_params",
            "used_params",
            "final_loss",
            "steps_per_s",
            "device",
        ] {
            assert!(row.get(key).is_some(), "missing {key} in {row}");
        }
        assert!(["flat", "decaying"].contains(&row["scenario"].as_str().unwrap()));
        assert!(["lora", "capaboost"].contains(&row["method"].as_str().unwrap()));
    }
    std::fs::remove_dir_all(&dir).ok();
}
