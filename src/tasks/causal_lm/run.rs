//! A causal-LM run from its configuration: the GGUF model's tokenizer and chat template,
//! the JSONL data split into training and evaluation examples, the export of a saved run
//! (PEFT LoRA under the transformers Llama names, or the crate's own files), and the
//! model of a saved run for `generate --run`.

use std::path::Path;

use crate::models::llama::{ChatTemplate, LlamaTokenizer, gguf_rows_to_hf};
use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::Gguf;
use crate::runtime::gpu::Gpu;
use crate::tasks::causal_lm::data::{Encoder, LmLine, read_jsonl};
use crate::tasks::causal_lm::task::{CausalLmTask, LmModel};
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::export_run::ExportFormat;
use crate::tasks::run::RunDir;
use crate::tasks::task::{Metrics, Task};

/// The tokenizer and chat template of a GGUF file.
pub fn tokenizer(g: &Gguf) -> Result<(LlamaTokenizer, Option<ChatTemplate>)> {
    let tok = LlamaTokenizer::from_gguf(g)?;
    let chat = ChatTemplate::for_tokenizer(g, &tok)?;
    Ok((tok, chat))
}

/// The training and evaluation examples: `--eval-data` when given, else the last tenth
/// of `--data` (at least one example) is held out, which stderr says.
fn split(cfg: &TrainConfig) -> Result<(Vec<LmLine>, Vec<LmLine>)> {
    let path = cfg.data_dir()?;
    let mut train = read_jsonl(path)?;
    let eval = match &cfg.data.eval_data {
        Some(p) => read_jsonl(p)?,
        None => {
            if train.len() < 2 {
                return Err(Error::File {
                    path: path.display().to_string(),
                    message: "one example cannot be split into training and evaluation: \
                              give --eval-data"
                        .into(),
                });
            }
            let held = (train.len() / 10).max(1);
            let eval = train.split_off(train.len() - held);
            eprintln!(
                "{}: the last {held} of {} examples are held out for evaluation (no --eval-data)",
                path.display(),
                train.len() + held
            );
            eval
        }
    };
    Ok((train, eval))
}

/// The task of a new or resumed run, everything checked before the run folder is touched.
pub fn load(cfg: &TrainConfig) -> Result<CausalLmTask> {
    let (mut train, mut eval) = split(cfg)?;
    if let Some(n) = cfg.data.train_limit {
        train.truncate(n);
    }
    if let Some(n) = cfg.data.dev_limit {
        eval.truncate(n);
    }
    if train.is_empty() || eval.is_empty() {
        return Err(Error::InvalidArgument(
            "no training or no evaluation examples left (--train-limit / --dev-limit)".into(),
        ));
    }
    let g = Gguf::open(&cfg.model.model)?;
    let (tok, chat) = tokenizer(&g)?;
    let enc = Encoder {
        tok: &tok,
        chat: chat.as_ref(),
        max_len: max_len(cfg, &g)?,
    };
    Ok(CausalLmTask::new(
        enc.encode_all(&train, "training")?,
        enc.encode_all(&eval, "evaluation")?,
    ))
}

/// The longest example for the model `g`: `--max-len` (an error beyond the model's
/// context), else the default 512 or the context if shorter.
pub fn max_len(cfg: &TrainConfig, g: &Gguf) -> Result<usize> {
    let context = crate::models::llama::LlamaConfig::from_gguf(g)?.context;
    match cfg.data.max_len {
        Some(n) if n > context => Err(Error::InvalidArgument(format!(
            "--max-len {n} exceeds the model's context of {context} tokens"
        ))),
        Some(n) => Ok(n),
        None => Ok(cfg.max_len().min(context)),
    }
}

/// The model of a saved causal-LM run: the base (the run's GGUF file, or `base` when
/// given) with the checkpoint's adapters.
pub fn load_run_model(
    gpu: &Gpu,
    run_path: &Path,
    base: Option<&Path>,
) -> Result<(TrainConfig, LmModel)> {
    let (run, mut cfg) = crate::tasks::train::read_run(run_path)?;
    if let Some(b) = base {
        cfg.model.model = b.to_path_buf();
    }
    if cfg.kind()? != crate::tasks::kind::TaskKind::CausalLm {
        return Err(Error::InvalidArgument(format!(
            "{} is a --task {} run, not causal-lm",
            run_path.display(),
            cfg.kind()?
        )));
    }
    let model = LmModel::build(gpu, &cfg)?;
    crate::tasks::trainer::load_checkpoint_params(&run, &model)?;
    Ok((cfg, model))
}

/// The base model's name for PEFT: the GGUF file's stem without a quantization suffix
/// (`SmolLM2-135M-Instruct.Q4_1.gguf` -> `SmolLM2-135M-Instruct`).
pub fn base_model_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    match stem.rsplit_once('.') {
        Some((name, q)) if q.starts_with(['Q', 'q', 'F', 'f', 'B', 'b', 'I', 'i']) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Writes a saved run's adapters to `out`: PEFT (`CAUSAL_LM`, modules
/// `model.layers.{i}.self_attn.q_proj` ..., CapaBoost as the equal rank-`d r` LoRA) or the
/// crate's own files.
pub fn export(
    gpu: &Gpu,
    (run, cfg): (&RunDir, &TrainConfig),
    format: ExportFormat,
    out: &Path,
) -> Result<()> {
    if format == ExportFormat::Native {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        return crate::tasks::export_run::export_native(run, cfg, out);
    }
    if cfg.adapter.method == Method::CapaboostAdapter {
        return Err(Error::InvalidArgument(
            "bottleneck adapters have no PEFT LoRA equivalent".into(),
        ));
    }
    let model = LmModel::build(gpu, cfg)?;
    crate::tasks::trainer::load_checkpoint_params(run, &model)?;
    let c = &model.llama.config;
    let mut loras = Vec::new();
    let mut scale = 0.0;
    for (module, a) in model.llama.adapted() {
        let (ma, mb) = a.masks.to_u8()?;
        let [out_f, in_f] = a.base.shape();
        let mut lora = crate::tasks::export::capaboost_as_lora(
            &module,
            &a.lora_a.to_vec()?,
            &a.lora_b.to_vec()?,
            a.config.r,
            in_f,
            out_f,
            &ma,
            &mb,
        )?;
        // q and k rows are in the GGUF rotary order; transformers' are not.
        let heads = match () {
            _ if module.ends_with(".q_proj") => Some(c.heads),
            _ if module.ends_with(".k_proj") => Some(c.kv_heads),
            _ => None,
        };
        if let Some(h) = heads {
            lora.lora_b = gguf_rows_to_hf(&lora.lora_b, (out_f, lora.rank), h);
        }
        loras.push(lora);
        scale = a.config.scale();
    }
    let targets: Vec<String> = cfg
        .adapter
        .targets
        .decoder()?
        .iter()
        .map(|t| t.peft_name().to_string())
        .collect();
    let base = base_model_name(&cfg.model.model);
    crate::tasks::export::write_peft_for_task(out, &loras, scale, &base, &targets, "CAUSAL_LM")
}

/// The evaluation examples of the JSONL file `data` for the GGUF model `g`.
fn eval_task(g: &Gguf, data: &Path, max_len: usize) -> Result<CausalLmTask> {
    let (tok, chat) = tokenizer(g)?;
    let enc = Encoder {
        tok: &tok,
        chat: chat.as_ref(),
        max_len,
    };
    let eval = enc.encode_all(&read_jsonl(data)?, "evaluation")?;
    Ok(CausalLmTask::new(Vec::new(), eval))
}

/// Scores a saved causal-LM run on the JSONL file `data`.
pub fn eval_run(gpu: &Gpu, run_path: &Path, data: &Path) -> Result<Metrics> {
    let (cfg, model) = load_run_model(gpu, run_path, None)?;
    let g = Gguf::open(&cfg.model.model)?;
    eval_task(&g, data, max_len(&cfg, &g)?)?.evaluate(gpu, &model)
}

/// Scores the base model of the GGUF file `model` (no adapters) on the JSONL file `data`,
/// examples truncated to `max_len` tokens: the baseline a run is compared with.
pub fn eval_base(gpu: &Gpu, model: &Path, data: &Path, max_len: usize) -> Result<Metrics> {
    let g = Gguf::open(model)?;
    let llama = crate::models::llama::Llama::load(gpu, &g)?;
    let max_len = max_len.min(llama.config.context);
    eval_task(&g, data, max_len)?.evaluate(gpu, &LmModel { llama })
}
