//! The typed training configuration: parsed from flags, validated once, and written to and
//! read back from `config.json` unchanged.
#![cfg(feature = "tasks")]

use std::path::Path;

use capaboost::kernels::masks::MaskKind;
use capaboost::models::bert::Target;
use capaboost::models::llama::LlamaTarget;
use capaboost::tasks::config::{Method, Targets, TrainConfig};
use capaboost::tasks::glue::Task;
use clap::Parser;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    config: TrainConfig,
}

fn parse(flags: &[&str]) -> Result<TrainConfig, String> {
    let argv = std::iter::once("finetune").chain(flags.iter().copied());
    let cfg = Args::try_parse_from(argv)
        .map_err(|e| e.to_string())?
        .config;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn flags_become_typed_settings() {
    let cfg = parse(&[
        "--task",
        "SST-2",
        "--data",
        "d",
        "--method",
        "lora",
        "--mask",
        "2:4",
        "--d",
        "4",
        "--targets",
        "all-linear",
        "--seed",
        "7",
        "--schedule",
        "cosine",
    ])
    .unwrap();
    assert_eq!(cfg.task().unwrap(), Task::Sst2);
    assert_eq!(cfg.adapter.method, Method::Lora);
    assert_eq!(cfg.adapter.mask.kind, MaskKind::TwoOfFour);
    assert_eq!((cfg.adapter.mask.d, cfg.seed()), (4, 7));
    assert_eq!(cfg.adapter.targets.encoder().unwrap(), Target::ALL.to_vec());
    assert_eq!(cfg.adapter.targets.decoder().unwrap().len(), 7);
    // Plain LoRA ignores the mask flags: one dense branch.
    assert_eq!(cfg.adapter.layer_config().mask.d, 1);
    let d = parse(&[]).unwrap();
    assert_eq!(d.adapter.targets.to_string(), "query,value");
    assert_eq!(
        (d.adapter.r, d.adapter.mask.d, d.adapter.mask.density),
        (8, 2, 0.5)
    );
    assert!(d.task().is_err() && d.optim.lr.is_none());
}

#[test]
fn bad_settings_are_refused_at_parse_time_naming_the_flag() {
    for (flags, want) in [
        (&["--r", "0"][..], "--r"),
        (&["--d", "0"], "--d"),
        (&["--density", "0"], "--density"),
        (&["--density", "1.5"], "--density"),
        (&["--density", "NaN"], "--density"),
        (&["--lr", "inf"], "--lr"),
        (&["--lr=-1"], "--lr"),
        (&["--alpha", "0"], "--alpha"),
        (&["--dropout", "1"], "--dropout"),
        (&["--warmup-ratio", "2"], "--warmup-ratio"),
        (&["--weight-decay=-0.1"], "--weight-decay"),
        (&["--max-grad-norm", "0"], "--max-grad-norm"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--targets", "query,nope"], "nope"),
        (&["--method", "dora"], "dora"),
        (&["--task", "wnli"], "wnli"),
        (&["--data", "x"], "--task"),
    ] {
        let e = parse(flags).unwrap_err();
        assert!(e.contains(want), "{flags:?}: {e}");
    }
}

#[test]
fn config_json_round_trips() {
    let cfg = parse(&[
        "--task",
        "stsb",
        "--data",
        "/data/STS-B",
        "--method",
        "capaboost-adapter",
        "--placement",
        "houlsby",
        "--lr",
        "0.002",
        "--max-grad-norm",
        "1",
    ])
    .unwrap();
    let v = cfg.to_json().unwrap();
    // Flat, with today's field names; the mask settings are one object.
    for k in [
        "task", "data", "model", "method", "r", "alpha", "targets", "lr", "epochs",
    ] {
        assert!(v.get(k).is_some(), "missing {k} in {v}");
    }
    assert_eq!(v["task"], "stsb");
    assert_eq!(v["method"], "capaboost-adapter");
    assert_eq!(v["mask"]["kind"], "exact");
    assert_eq!(v["targets"], serde_json::json!(["query", "value"]));
    let back = TrainConfig::from_json(v.clone(), Path::new("config.json")).unwrap();
    assert_eq!(back.to_json().unwrap(), v);
    // The command-line form of the targets is accepted too.
    let mut legacy = v.clone();
    legacy["targets"] = "query,key".into();
    let back = TrainConfig::from_json(legacy, Path::new("config.json")).unwrap();
    assert_eq!(
        back.adapter.targets,
        Targets::of(&[Target::Query, Target::Key])
    );
    // Decoder names: typed, mapped, and refused where the model lacks them.
    let t: Targets = "q_proj,v,gate".parse().unwrap();
    let d = t.decoder().unwrap();
    assert_eq!(d, [LlamaTarget::Q, LlamaTarget::V, LlamaTarget::Gate]);
    assert!(t.encoder().unwrap_err().to_string().contains("--targets q"));
    let t: Targets = "query,value".parse().unwrap();
    assert_eq!(t.decoder().unwrap(), [LlamaTarget::Q, LlamaTarget::V]);
    let t: Targets = "intermediate".parse().unwrap();
    assert!(t.decoder().unwrap_err().to_string().contains("gate and up"));
    let e = "qq".parse::<Targets>().unwrap_err().to_string();
    assert!(e.contains("\"qq\"") && e.contains("gate"), "{e}");
    // A hand-edited config is validated like the flags.
    let mut bad = v;
    bad["mask"]["density"] = 2.0.into();
    let e = TrainConfig::from_json(bad, Path::new("config.json")).unwrap_err();
    assert!(e.to_string().contains("--density"), "{e}");
}
