//! A run's adapters folded into the encoder: a complete folder that HF transformers loads
//! as a plain `BertModel` / `ViTModel` / `Dinov2Model` with the head beside it, or as the
//! class that carries the task's head (`BertForQuestionAnswering`,
//! `ViTForImageClassification`, `Dinov2ForImageClassification`).

use std::path::Path;

use crate::models::common::AdaptedEncoder;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter, write_atomic};
use crate::tasks::adapters;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::glue_task::GlueTask;
use crate::tasks::kind::TaskKind;
use crate::tasks::run::RunDir;
use crate::tasks::squad::task::SquadTask;
use crate::tasks::task::{HfHead, Model, Task};
use crate::tasks::train::{load_model, read_run};

/// Files of the base model folder copied beside the merged weights.
const MODEL_FILES: [&str; 6] = [
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// Writes the full model with the adapters merged (`model.safetensors`, `config.json` and
/// the tokenizer files), loadable by HF transformers as a plain BERT model (GLUE, with the
/// head beside it) or as the class that carries the task's head (QA:
/// `BertForQuestionAnswering`, encoder under `bert.`, `qa_outputs`, no pooler).
pub fn merge_run(gpu: &Gpu, run_path: &Path, out: &Path) -> Result<()> {
    let (run, cfg) = read_run(run_path)?;
    if cfg.adapter.method == Method::CapaboostAdapter {
        return Err(Error::InvalidArgument(
            "bottleneck adapters sit behind a nonlinearity and cannot be merged".into(),
        ));
    }
    crate::tasks::run::refuse_overwriting_inputs("--out", out, &cfg.input_paths(run_path))?;
    match cfg.kind()? {
        TaskKind::Glue(k) => merge_task(gpu, &GlueTask::new(k), (&run, &cfg), out),
        TaskKind::Squad => {
            let task = SquadTask::without_data(cfg.max_len(), cfg.qa.decode());
            merge_task(gpu, &task, (&run, &cfg), out)
        }
        TaskKind::Image => {
            let task = crate::tasks::image::run::without_data(&cfg)?;
            merge_task(gpu, &task, (&run, &cfg), out)
        }
        TaskKind::CausalLm => Err(Error::InvalidArgument(
            "merge writes an encoder's safetensors folder; a causal-lm run's base is a \
             quantized GGUF file: use `capaboost generate --run` (adapters applied) or \
             `export --format peft` (PeftModel on the transformers model)"
                .into(),
        )),
    }
}

fn no_encoder() -> Error {
    Error::InvalidArgument("this task's model has no encoder to merge adapters into".into())
}

fn merge_task<T: Task>(
    gpu: &Gpu,
    task: &T,
    (run, cfg): (&RunDir, &TrainConfig),
    out: &Path,
) -> Result<()> {
    let mut model = load_model(gpu, run, cfg, task)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    adapters::merge_all(gpu, model.encoder_mut().ok_or_else(no_encoder)?)?;
    let head = task.hf_head(&model)?;
    let prefix = head.as_ref().map_or("", |h| h.encoder_prefix);
    let encoder = model.encoder().ok_or_else(no_encoder)?;
    let mut w = encoder_tensors(encoder, prefix)?;
    let base = &cfg.model.model;
    let src = base.join("model.safetensors");
    copy_other_tensors(&mut w, (&src, encoder), head.as_ref())?;
    if let Some(h) = &head {
        for (name, shape, values) in &h.tensors {
            w.f32(name.clone(), shape, values);
        }
    }
    w.write(&out.join("model.safetensors"))?;
    for f in MODEL_FILES {
        let src = base.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            let bytes = match (&head, f) {
                (Some(h), "config.json") => with_architecture(&src, &bytes, h)?,
                _ => bytes,
            };
            write_atomic(&out.join(f), &bytes)?;
        }
    }
    task.export_head(&model, out)
}

/// The base model's `config.json` naming the head's class as the model class, with its
/// labels (`id2label`, `label2id`) when it has them.
fn with_architecture(path: &Path, bytes: &[u8], head: &HfHead) -> Result<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!("not valid JSON: {e}"),
    })?;
    v["architectures"] = serde_json::json!([head.architecture]);
    if !head.labels.is_empty() {
        let id2label: serde_json::Map<String, serde_json::Value> = (head.labels.iter())
            .enumerate()
            .map(|(i, l)| (i.to_string(), serde_json::json!(l)))
            .collect();
        let label2id: serde_json::Map<String, serde_json::Value> = (head.labels.iter())
            .enumerate()
            .map(|(i, l)| (l.clone(), serde_json::json!(i)))
            .collect();
        v["id2label"] = id2label.into();
        v["label2id"] = label2id.into();
    }
    let text =
        serde_json::to_string_pretty(&v).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(format!("{text}\n").into_bytes())
}

/// The encoder's tensors under HF names behind `prefix` (the projections' merged base
/// weights).
fn encoder_tensors(e: &dyn AdaptedEncoder, prefix: &str) -> Result<TensorWriter> {
    let mut w = TensorWriter::default();
    for (name, t) in e.hf_tensors()? {
        w.f32(format!("{prefix}{name}"), t.shape(), &t.to_vec()?);
    }
    Ok(w)
}

/// The base checkpoint's other encoder tensors (the pooler, position ids) are copied as
/// they are, so the merged folder loads as a complete BertModel; pretraining heads
/// (`cls.*`) are left out, and a `bert.` prefix is dropped to match the names above. For
/// a class with its own head (`head`) the names take its encoder prefix, and the pooler,
/// which such classes (`BertForQuestionAnswering`) do not have, is left out.
fn copy_other_tensors(
    w: &mut TensorWriter,
    (base, encoder): (&Path, &dyn AdaptedEncoder),
    head: Option<&HfHead>,
) -> Result<()> {
    let src = TensorFile::read(base)?;
    let prefix = head.map_or("", |h| h.encoder_prefix);
    for name in src.names() {
        let short = name
            .strip_prefix(encoder.checkpoint_prefix())
            .unwrap_or(name);
        let skip = short.starts_with(encoder.head_prefix())
            || (head.is_some() && short.starts_with("pooler."));
        let named = format!("{prefix}{short}");
        if !skip && !w.contains(&named) {
            if let Some(t) = src.raw(name) {
                w.raw(&named, t);
            }
        }
    }
    Ok(())
}
