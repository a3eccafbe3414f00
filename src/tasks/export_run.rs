//! `export` of a saved run, for any task: the head, and the adapters in the crate's own
//! format or as a Hugging Face PEFT LoRA (aimed at the transformers class that carries
//! the task's head when there is one, e.g. `BertForQuestionAnswering`).

use std::path::Path;

use serde_json::json;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::write_atomic;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::export::{write_json, write_peft_with_head};
use crate::tasks::glue_task::GlueTask;
use crate::tasks::kind::TaskKind;
use crate::tasks::run::RunDir;
use crate::tasks::squad::task::SquadTask;
use crate::tasks::task::{HfHead, Model, Task};
use crate::tasks::train::{load_model, read_run};

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Adapter weights, head and the run config (masks are regenerated from their keys).
    Native,
    /// HF PEFT LoRA (`adapter_config.json` + `adapter_model.safetensors`) plus the head.
    Peft,
}

/// Writes a run's adapters and head to `out` in `format`.
pub fn export_run(gpu: &Gpu, run_path: &Path, format: ExportFormat, out: &Path) -> Result<()> {
    let (run, cfg) = read_run(run_path)?;
    crate::tasks::run::refuse_overwriting_inputs("--out", out, &cfg.input_paths(run_path))?;
    let saved = (&run, &cfg);
    match cfg.kind()? {
        TaskKind::Glue(k) => export_task(gpu, &GlueTask::new(k), saved, format, out),
        TaskKind::Squad => {
            let task = SquadTask::without_data(cfg.max_len(), cfg.qa.decode());
            export_task(gpu, &task, saved, format, out)
        }
        TaskKind::Image => {
            let task = crate::tasks::image::run::without_data(&cfg)?;
            export_task(gpu, &task, saved, format, out)
        }
        TaskKind::CausalLm => crate::tasks::causal_lm::run::export(gpu, saved, format, out),
    }
}

fn export_task<T: Task>(
    gpu: &Gpu,
    task: &T,
    (run, cfg): (&RunDir, &TrainConfig),
    format: ExportFormat,
    out: &Path,
) -> Result<()> {
    if format == ExportFormat::Peft && cfg.adapter.method == Method::CapaboostAdapter {
        return Err(Error::InvalidArgument(
            "bottleneck adapters have no PEFT LoRA equivalent: export --format native".into(),
        ));
    }
    let model = load_model(gpu, run, cfg, task)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    task.export_head(&model, out)?;
    match format {
        ExportFormat::Native => export_native(run, cfg, out),
        ExportFormat::Peft => export_peft(cfg, &model, task.hf_head(&model)?, out),
    }
}

pub(crate) fn export_native(run: &RunDir, cfg: &TrainConfig, out: &Path) -> Result<()> {
    let src = crate::tasks::trainer::checkpoint_params_file(run);
    let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
    write_atomic(&out.join("adapter.safetensors"), &bytes)?;
    let mut c = run.config()?;
    // The masks are a pure function of these keys (seed, module id, factor, branch), so
    // they are regenerated on load and never stored.
    let m = &cfg.adapter.mask;
    let module_id = match cfg.data.task {
        Some(TaskKind::CausalLm) => "7 * layer + projection index (q, k, v, o, gate, up, down)",
        _ => "6 * layer + target index (query, key, value, attention_output, intermediate, output)",
    };
    c["mask_keys"] = json!({
        "seed": m.seed, "kind": m.kind, "density": m.density, "d": m.d,
        "module_id": module_id,
    });
    write_json(&out.join("capaboost_config.json"), &c)
}

fn export_peft(
    cfg: &TrainConfig,
    model: &impl Model,
    head: Option<HfHead>,
    out: &Path,
) -> Result<()> {
    let encoder = model.encoder().ok_or_else(|| {
        Error::InvalidArgument("this task's model has no encoder adapters to export".into())
    })?;
    let layers = crate::tasks::adapters::adapted_layers(encoder);
    if layers.is_empty() {
        // head-only: the head beside the base model is the whole export.
        return Ok(());
    }
    let prefix = head.as_ref().map_or("", |h| h.encoder_prefix);
    let mut loras = Vec::new();
    let mut scale = 0.0;
    for (module, l) in &layers {
        let (lora, s) = crate::tasks::adapters::as_peft_lora(&format!("{prefix}{module}"), l)?;
        loras.push(lora);
        scale = s;
    }
    let targets: Vec<String> = cfg
        .adapter
        .targets
        .encoder()?
        .iter()
        .map(|&t| encoder.peft_target_module(t).to_string())
        .collect();
    let base = cfg.model.model.display().to_string();
    write_peft_with_head(out, &loras, scale, &base, &targets, head.as_ref())
}
