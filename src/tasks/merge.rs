//! A run's adapters folded into the encoder: a complete BERT folder that HF transformers
//! loads as a plain `BertModel`, with the head beside it.

use std::path::Path;

use crate::models::bert::Bert;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter, write_atomic};
use crate::runtime::tensor::Tensor;
use crate::tasks::adapters;
use crate::tasks::config::Method;
use crate::tasks::glue_task::GlueTask;
use crate::tasks::task::Task;

/// Files of the base model folder copied beside the merged weights.
const MODEL_FILES: [&str; 5] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
];

/// Writes the full model with the adapters merged (`model.safetensors`, `config.json` and
/// the tokenizer files), loadable by HF transformers as a plain BERT model, and the head.
pub fn merge_run(gpu: &Gpu, run_path: &Path, out: &Path) -> Result<()> {
    let (_, cfg, mut model) = crate::tasks::train::load_run(gpu, run_path)?;
    if cfg.adapter.method == Method::CapaboostAdapter {
        return Err(Error::InvalidArgument(
            "bottleneck adapters sit behind a nonlinearity and cannot be merged".into(),
        ));
    }
    crate::tasks::run::refuse_overwriting_inputs("--out", out, &cfg.input_paths(run_path))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    adapters::merge_all(gpu, &mut model.bert)?;
    let mut w = encoder_tensors(&model.bert)?;
    let base = &cfg.model.model;
    copy_other_tensors(&mut w, &base.join("model.safetensors"))?;
    w.write(&out.join("model.safetensors"))?;
    for f in MODEL_FILES {
        let src = base.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            write_atomic(&out.join(f), &bytes)?;
        }
    }
    GlueTask::new(cfg.task()?).export_head(&model, out)
}

fn put(w: &mut TensorWriter, name: String, t: &Tensor) -> Result<()> {
    w.f32(name, t.shape(), &t.to_vec()?);
    Ok(())
}

/// The encoder's tensors under HF names (the projections' merged base weights).
fn encoder_tensors(b: &Bert) -> Result<TensorWriter> {
    let mut w = TensorWriter::default();
    for (name, t) in [
        ("word_embeddings.weight", &b.word),
        ("position_embeddings.weight", &b.position),
        ("token_type_embeddings.weight", &b.token_type),
        ("LayerNorm.weight", &b.emb_norm.gamma),
        ("LayerNorm.bias", &b.emb_norm.beta),
    ] {
        put(&mut w, format!("embeddings.{name}"), t)?;
    }
    for (i, layer) in b.layers.iter().enumerate() {
        for (k, p) in layer.proj.iter().enumerate() {
            let base = p.base();
            let name = adapters::module_name(i, k);
            put(&mut w, format!("{name}.weight"), &base.weight)?;
            if let Some(bias) = &base.bias {
                put(&mut w, format!("{name}.bias"), bias)?;
            }
        }
        for (n, norm) in [
            ("attention.output.LayerNorm", &layer.attn_norm),
            ("output.LayerNorm", &layer.out_norm),
        ] {
            put(&mut w, format!("encoder.layer.{i}.{n}.weight"), &norm.gamma)?;
            put(&mut w, format!("encoder.layer.{i}.{n}.bias"), &norm.beta)?;
        }
    }
    Ok(w)
}

/// The base checkpoint's other encoder tensors (the pooler, position ids) are copied as
/// they are, so the merged folder loads as a complete BertModel; pretraining heads
/// (`cls.*`) are left out, and a `bert.` prefix is dropped to match the names above.
fn copy_other_tensors(w: &mut TensorWriter, base: &Path) -> Result<()> {
    let src = TensorFile::read(base)?;
    for name in src.names() {
        let short = name.strip_prefix("bert.").unwrap_or(name);
        if !short.starts_with("cls.") && !w.contains(short) {
            if let Some(t) = src.raw(name) {
                w.raw(short, t);
            }
        }
    }
    Ok(())
}
