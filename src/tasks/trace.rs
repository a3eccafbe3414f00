//! A step trace of a training run (`finetune --trace DIR`), enough for an independent
//! implementation to replay the run step by step (`scripts/replay_torch.py`):
//!
//! - `init.safetensors`: every trainable tensor before the first step, and every mask;
//! - `steps.jsonl`: one line per optimizer step: `step`, `lr` (the rate that step used),
//!   `examples` (the task's ids of the batch's examples in batch order; GLUE: 1-based file
//!   lines), `padded_len` (the batch's longest example in tokens: batches pad to it),
//!   `loss` and `grad_norm` (the global L2 norm of all gradients, before any clipping);
//! - `final.safetensors`: the trainable tensors after the last step (rewritten at each
//!   checkpoint, so an interrupted run's file matches its last checkpoint);
//! - `recipe.json`: the model, data, tokenization, loss, optimizer, schedule, dropout and
//!   seeds in plain words and numbers.
//!
//! Tensor names: a tensor of the encoder gets the PEFT export's key
//! (`base_model.model.encoder.layer.{i}.{module}.lora_A.weight`, `lora_B.weight`; bottleneck
//! adapters `base_model.model.encoder.layer.{i}.output_adapter.down.weight`, ...; for ViT /
//! DINOv2 the module is the checkpoint's, `encoder.layer.{i}.attention.attention.query`,
//! not the renamed one PEFT uses at run time), holding
//! the shared factor itself (`[r, in]`, `[out, r]`; not the stacked rank-d·r export); the
//! task's head keeps its checkpoint name (`head.weight`, `head.bias`). Masks (u8, 0/1) are
//! named after their module with the same prefix: `{module}.mask_A.{i}` masks `lora_A`
//! (bottleneck: `down.weight`) in branch `i`, `{module}.mask_B.{i}` masks `lora_B`
//! (bottleneck: `up.weight`); plain LoRA has one all-ones pair.
//!
//! Tracing does not change the run: the gradient norm, when clipping does not compute it
//! anyway, is computed on the GPU from the same gradients without touching them, and the
//! loss and norm come back together in one readback per step.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::kernels::optim as kernels;
use crate::nn::optim::{AdamW, AdamWConfig};
use crate::nn::tape::Gradients;
use crate::runtime::error::{Error, Result};
use crate::runtime::io::{TensorWriter, write_atomic};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::tasks::config::TrainConfig;
use crate::tasks::kind::TaskKind;
use crate::tasks::task::NamedMask;

/// The files of a trace.
pub const INIT_FILE: &str = "init.safetensors";
/// One JSON object per optimizer step.
pub const STEPS_FILE: &str = "steps.jsonl";
/// The trainable tensors after the last step.
pub const FINAL_FILE: &str = "final.safetensors";
/// What a replay needs to know.
pub const RECIPE_FILE: &str = "recipe.json";

const PEFT_PREFIX: &str = "base_model.model.";

/// A tensor's name in a trace: encoder tensors get the PEFT export's prefix, the task's
/// head keeps its checkpoint name.
pub fn trace_name(name: &str) -> String {
    if name.starts_with("encoder.") {
        format!("{PEFT_PREFIX}{name}")
    } else {
        name.to_string()
    }
}

/// One optimizer step as `steps.jsonl` records it.
#[derive(Clone, Debug)]
pub struct StepRecord {
    /// Steps done, this one included (from 1).
    pub step: u64,
    /// The learning rate this step used.
    pub lr: f32,
    /// The task's ids of the batch's examples, in batch order.
    pub examples: Vec<u64>,
    /// The batch's padded length (its longest example).
    pub padded_len: usize,
    /// The training loss of the batch (before the update).
    pub loss: f32,
    /// The global gradient norm, before clipping.
    pub grad_norm: f32,
}

/// An open trace folder.
pub struct Tracer {
    dir: PathBuf,
    steps: std::fs::File,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

/// Writes `params` (trace names) and `masks` to `path`.
fn write_tensors(path: &Path, params: &[(String, Tensor)], masks: &[NamedMask]) -> Result<()> {
    let mut w = TensorWriter::default();
    w.metadata("format", "pt");
    for (name, t) in params {
        w.f32(trace_name(name), t.shape(), &t.to_vec()?);
    }
    for (name, shape, bits) in masks {
        w.u8(trace_name(name), shape, bits);
    }
    w.write(path)
}

/// Refuses a trace folder that already holds a trace (or is a file).
pub fn check_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "--trace {}: not a folder",
            dir.display()
        )));
    }
    for f in [STEPS_FILE, INIT_FILE] {
        if dir.join(f).exists() {
            return Err(Error::InvalidArgument(format!(
                "--trace {}: already holds a trace ({f}); give an empty or new folder",
                dir.display()
            )));
        }
    }
    Ok(())
}

impl Tracer {
    /// Starts a trace in `dir` (created; one that already holds a trace is refused): writes
    /// `init.safetensors` from the step-0 `params` and `masks`, and `recipe.json`.
    pub fn start(
        dir: &Path,
        params: &[(String, Tensor)],
        masks: &[NamedMask],
        recipe: &Value,
    ) -> Result<Self> {
        check_dir(dir)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        write_tensors(&dir.join(INIT_FILE), params, masks)?;
        let text = serde_json::to_string_pretty(recipe)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        write_atomic(&dir.join(RECIPE_FILE), format!("{text}\n").as_bytes())?;
        let path = dir.join(STEPS_FILE);
        let steps = std::fs::File::create(&path).map_err(io_err(&path))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            steps,
        })
    }

    /// Appends one step to `steps.jsonl`.
    pub fn record(&mut self, r: &StepRecord) -> Result<()> {
        let line = json!({
            "step": r.step,
            "lr": r.lr,
            "examples": r.examples,
            "padded_len": r.padded_len,
            "loss": r.loss,
            "grad_norm": r.grad_norm,
        });
        let path = self.dir.join(STEPS_FILE);
        writeln!(self.steps, "{line}").map_err(io_err(&path))?;
        self.steps.flush().map_err(io_err(&path))
    }

    /// Writes `final.safetensors` from the current `params` (reads them back).
    pub fn write_final(&self, params: &[(String, Tensor)]) -> Result<()> {
        write_tensors(&self.dir.join(FINAL_FILE), params, &[])
    }
}

/// The `[1]` global gradient norm of this step's gradients: the optimizer's when it clips
/// (call after its step), else recorded here on `rec` from `grads` of `params` (call
/// before the step; the gradients are only read).
pub fn own_grad_norm(
    rec: &mut Recorder,
    opt: &AdamW,
    grads: &Gradients,
    params: &[(String, Tensor)],
) -> Result<Option<Tensor>> {
    if opt.config().max_grad_norm.is_some() {
        return Ok(None);
    }
    let present: Vec<&Tensor> = params.iter().filter_map(|(_, t)| grads.of(t)).collect();
    let sq = kernels::grad_sq_norm(rec, &present)?;
    let (norm, _) = kernels::clip_coef(rec, &sq, f32::MAX)?;
    Ok(Some(norm))
}

/// `recipe.json`: the run's configuration with everything a replay needs spelled out.
pub fn recipe(cfg: &TrainConfig, opt: &AdamWConfig, task: Value) -> Result<Value> {
    Ok(json!({
        "format": "capaboost.trace",
        "version": 1,
        "model": {
            "dir": cfg.model.model.display().to_string(),
            "encoder": encoder_recipe(cfg),
            "frozen": "every encoder weight; only the tensors of init.safetensors train",
        },
        "data": {"dir": cfg.data.data.as_ref().map(|d| d.display().to_string()),
                 "train_limit": cfg.data.train_limit},
        "task": task,
        "method": method_recipe(cfg),
        "optimizer": {
            "name": "AdamW (torch.optim.AdamW semantics, decoupled weight decay)",
            "lr": opt.lr,
            "betas": [opt.beta1, opt.beta2],
            "eps": opt.eps,
            "weight_decay": opt.weight_decay,
            "weight_decay_applies_to": "every trainable tensor (head and biases included)",
            "max_grad_norm": opt.max_grad_norm,
            "clipping": "when max_grad_norm is set: gradients scaled by \
                min(1, max_grad_norm / (norm + 1e-6))",
        },
        "schedule": {
            "name": opt.schedule.name(),
            "warmup_steps": opt.warmup_steps,
            "total_steps": opt.total_steps,
            "rule": "step k (from 1) uses lr * f(k): f(k) = k / warmup_steps while k < \
                warmup_steps, then 1 (constant), (total - k) / (total - warmup) (linear) or \
                0.5 (1 + cos(pi (k - warmup) / (total - warmup))) (cosine); this is \
                transformers' get_*_schedule_with_warmup lambda at k, i.e. its scheduler \
                stepped once before the first optimizer step. steps.jsonl has each lr",
        },
        "batches": {
            "batch_size": cfg.run.batch_size,
            "order": "steps.jsonl lists each step's examples in batch order",
        },
        "seeds": {
            "seed": cfg.seed(),
            "init": "head, then lora_A / down.weight drawn from StdRng(seed): values in \
                init.safetensors",
            "masks": "keyed generator (seed, module id, factor, branch): values in \
                init.safetensors",
            "data_order": "StdRng(seed ^ (0x5eed0000 + epoch)): batches in steps.jsonl",
            "dropout_seed": "seed * 1000003 + step (step counted from 0)",
        },
        "config": cfg.to_json()?,
    }))
}

/// The encoder in words: BERT, or ViT / DINOv2 for an image run.
fn encoder_recipe(cfg: &TrainConfig) -> &'static str {
    match cfg.data.task {
        Some(TaskKind::Image) => {
            "ViT / DINOv2 pre-norm encoder as transformers' ViTModel / Dinov2Model (the \
             layout of the model folder's config.json): patch convolution, CLS token, \
             position embeddings resampled bicubically to the input's patch grid \
             (interpolate_pos_encoding), erf GELU, Dinov2's layer scale, final LayerNorm; \
             no dropout and no padding"
        }
        _ => {
            "BERT post-LayerNorm encoder, erf GELU, no dropout anywhere in the encoder \
             (hidden and attention dropout 0); padded keys get f32::MIN added to their \
             attention scores"
        }
    }
}

/// The method part of the recipe: adapters, their scale and masks, dropout.
fn method_recipe(cfg: &TrainConfig) -> Value {
    let a = &cfg.adapter;
    let layer = a.layer_config();
    let targets: Vec<&str> = match a.targets.encoder() {
        Ok(t) => t.iter().map(|t| t.module()).collect(),
        Err(_) => a
            .targets
            .decoder()
            .unwrap_or_default()
            .iter()
            .map(|t| t.module())
            .collect(),
    };
    json!({
        "name": a.method.name(),
        "targets": targets,
        "r": a.r,
        "alpha": a.alpha,
        "rank_scaling": a.rank_scaling,
        "scale": layer.scale(),
        "lora_update": "y = base(x) + scale * sum_i (x (A*M_i)^T) (B*N_i)^T with A = \
            lora_A [r, in], B = lora_B [out, r], M_i = mask_A.i, N_i = mask_B.i",
        "mask": layer.mask,
        "adapter_width": a.adapter_width,
        "placement": a.placement,
        "adapter_activation": "relu",
        "adapter_update": "the projection's output h becomes h + sum_i relu(h \
            (D*M_i)^T + down.bias) (U*N_i)^T + up.bias, with D = down.weight [m, hidden], \
            U = up.weight [hidden, m]; output_adapter after the feed-forward output \
            dense, attention_adapter after the attention output dense, both before \
            the residual add and LayerNorm",
        "dropout": a.dropout,
        "dropout_where": "on the LoRA input x of each adapted projection (training \
            only), from a GPU generator keyed by (dropout_seed, module id): not \
            replayable; a replay needs dropout 0",
    })
}
