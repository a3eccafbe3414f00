//! Export of trained adapters in the Hugging Face PEFT LoRA format, plus the task head.
//!
//! A CapaBoost layer `delta_W = s sum_i (B*N_i)(A*M_i)` is exactly a LoRA of rank `d r`:
//! stack the masked copies of `A` vertically and those of `B` horizontally, and
//! `B_stacked A_stacked` is the same sum. PEFT scales by `lora_alpha / r`, so writing
//! `lora_alpha = s * r_exported` makes PEFT apply exactly `s`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::runtime::error::{Error, Result};
use crate::runtime::io::{TensorFile, TensorWriter, write_atomic};
use crate::tasks::task::HfHead;

const MODEL_FILE: &str = "adapter_model.safetensors";
const CONFIG_FILE: &str = "adapter_config.json";
const HEAD_FILE: &str = "head.safetensors";
const HEAD_CONFIG_FILE: &str = "head_config.json";
const KEY_PREFIX: &str = "base_model.model.";

/// One LoRA adapter as PEFT stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeftLora {
    /// Module path in the base model, e.g. `encoder.layer.3.attention.self.query`.
    pub module: String,
    /// `lora_A.weight`, row-major `[rank, in_features]`.
    pub lora_a: Vec<f32>,
    /// `lora_B.weight`, row-major `[out_features, rank]`.
    pub lora_b: Vec<f32>,
    /// LoRA rank.
    pub rank: usize,
    /// Input features of the wrapped linear layer.
    pub in_features: usize,
    /// Output features of the wrapped linear layer.
    pub out_features: usize,
}

impl PeftLora {
    fn check(&self) -> Result<()> {
        let (r, i, o) = (self.rank, self.in_features, self.out_features);
        if self.lora_a.len() != r * i {
            return Err(Error::shape(format!(
                "{}: lora_A has {} values, expected [rank {r}, in {i}] = {}",
                self.module,
                self.lora_a.len(),
                r * i
            )));
        }
        if self.lora_b.len() != o * r {
            return Err(Error::shape(format!(
                "{}: lora_B has {} values, expected [out {o}, rank {r}] = {}",
                self.module,
                self.lora_b.len(),
                o * r
            )));
        }
        Ok(())
    }
}

/// The LoRA of rank `d r` equal to a CapaBoost layer with `d = masks_a.len()` branches:
/// `lora_A` is `[d r, in]` with block `i` = `A*M_i`, `lora_B` is `[out, d r]` with block
/// `i` = `B*N_i`. Export it with PEFT scale `s` (the CapaBoost scale). With one all-ones
/// mask pair it is the LoRA `(A, B)` itself.
#[allow(clippy::too_many_arguments)]
pub fn capaboost_as_lora(
    module: &str,
    a: &[f32],
    b: &[f32],
    r: usize,
    in_f: usize,
    out_f: usize,
    masks_a: &[Vec<u8>],
    masks_b: &[Vec<u8>],
) -> Result<PeftLora> {
    let d = masks_a.len();
    if d == 0 || masks_b.len() != d {
        return Err(Error::shape(format!(
            "{module}: {} A masks and {} B masks; need the same number, at least one",
            masks_a.len(),
            masks_b.len()
        )));
    }
    if a.len() != r * in_f {
        return Err(Error::shape(format!(
            "{module}: A has {} values, expected [r {r}, in {in_f}]",
            a.len()
        )));
    }
    if b.len() != out_f * r {
        return Err(Error::shape(format!(
            "{module}: B has {} values, expected [out {out_f}, r {r}]",
            b.len()
        )));
    }
    for (i, m) in masks_a.iter().enumerate() {
        if m.len() != a.len() {
            return Err(Error::shape(format!(
                "{module}: mask M_{i} has {} values, A is [{r}, {in_f}]",
                m.len()
            )));
        }
    }
    for (i, m) in masks_b.iter().enumerate() {
        if m.len() != b.len() {
            return Err(Error::shape(format!(
                "{module}: mask N_{i} has {} values, B is [{out_f}, {r}]",
                m.len()
            )));
        }
    }
    let rank = d * r;
    let lora_a: Vec<f32> = masks_a
        .iter()
        .flat_map(|m| a.iter().zip(m).map(|(&v, &k)| if k != 0 { v } else { 0.0 }))
        .collect();
    let mut lora_b = vec![0.0f32; out_f * rank];
    for (i, m) in masks_b.iter().enumerate() {
        for o in 0..out_f {
            for j in 0..r {
                if m[o * r + j] != 0 {
                    lora_b[o * rank + i * r + j] = b[o * r + j];
                }
            }
        }
    }
    Ok(PeftLora {
        module: module.to_string(),
        lora_a,
        lora_b,
        rank,
        in_features: in_f,
        out_features: out_f,
    })
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `out_dir` (created
/// if needed), loadable with `PeftModel.from_pretrained(base, out_dir)`.
///
/// PEFT's config holds one `r` (no `rank_pattern` is written), so every adapter must have
/// the same rank. `lora_alpha = scale * r`, so PEFT's `lora_alpha / r` is `scale`.
pub fn write_peft(
    out_dir: &Path,
    adapters: &[PeftLora],
    scale: f32,
    base_model: &str,
    target_modules: &[String],
) -> Result<()> {
    write_peft_with_head(out_dir, adapters, scale, base_model, target_modules, None)
}

/// [`write_peft`] for a model class that carries its head (e.g.
/// `BertForQuestionAnswering`): PEFT's `task_type` is the head's, the head module is in
/// `modules_to_save` and its tensors are saved beside the adapters, as PEFT saves them
/// (`base_model.model.qa_outputs.weight`), so `PeftModel.from_pretrained` restores it.
pub fn write_peft_with_head(
    out_dir: &Path,
    adapters: &[PeftLora],
    scale: f32,
    base_model: &str,
    target_modules: &[String],
    head: Option<&HfHead>,
) -> Result<()> {
    let task_type = head.and_then(|h| h.peft_task_type);
    let names = (base_model, target_modules);
    write_peft_files(out_dir, (adapters, scale), names, head, task_type)
}

/// A PEFT LoRA of a model without a separate head, for PEFT's `task_type` (e.g.
/// `CAUSAL_LM`).
pub fn write_peft_for_task(
    out_dir: &Path,
    adapters: &[PeftLora],
    scale: f32,
    base_model: &str,
    target_modules: &[String],
    task_type: &str,
) -> Result<()> {
    let names = (base_model, target_modules);
    write_peft_files(out_dir, (adapters, scale), names, None, Some(task_type))
}

fn write_peft_files(
    out_dir: &Path,
    (adapters, scale): (&[PeftLora], f32),
    (base_model, target_modules): (&str, &[String]),
    head: Option<&HfHead>,
    task_type: Option<&str>,
) -> Result<()> {
    let first = adapters
        .first()
        .ok_or_else(|| Error::InvalidArgument("no adapters to export".into()))?;
    if !scale.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "adapter scale {scale} is not finite"
        )));
    }
    let r = first.rank;
    if r == 0 {
        return Err(Error::InvalidArgument(format!(
            "{}: rank 0 cannot be exported",
            first.module
        )));
    }
    check_same_rank(adapters, r)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;

    let mut w = TensorWriter::default();
    // PEFT and transformers read this to know the tensors come from PyTorch.
    w.metadata("format", "pt");
    for ad in adapters {
        w.f32(
            format!("{KEY_PREFIX}{}.lora_A.weight", ad.module),
            &[r, ad.in_features],
            &ad.lora_a,
        );
        w.f32(
            format!("{KEY_PREFIX}{}.lora_B.weight", ad.module),
            &[ad.out_features, r],
            &ad.lora_b,
        );
    }
    let mut config = peft_config(base_model, r, scale, target_modules);
    if let Some(h) = head {
        for (name, shape, values) in &h.tensors {
            w.f32(format!("{KEY_PREFIX}{name}"), shape, values);
        }
        config["task_type"] = json!(task_type);
        config["modules_to_save"] = json!([h.module]);
    } else if let Some(t) = task_type {
        config["task_type"] = json!(t);
    }
    w.write(&out_dir.join(MODEL_FILE))?;
    write_json(&out_dir.join(CONFIG_FILE), &config)
}

/// Every adapter valid, of rank `r`, and on its own module.
fn check_same_rank(adapters: &[PeftLora], r: usize) -> Result<()> {
    let first = &adapters[0];
    let mut names = BTreeSet::new();
    for ad in adapters {
        ad.check()?;
        if ad.rank != r {
            return Err(Error::InvalidArgument(format!(
                "adapter {} has rank {} but {} has rank {r}: PEFT's adapter_config.json \
                 holds a single r (rank_pattern is not used), so all exported adapters \
                 must share one rank",
                ad.module, ad.rank, first.module
            )));
        }
        if !names.insert(ad.module.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "module {} is exported twice",
                ad.module
            )));
        }
    }
    Ok(())
}

/// The `adapter_config.json` PEFT writes for a LoRA of rank `r` with scale `scale`.
fn peft_config(base_model: &str, r: usize, scale: f32, target_modules: &[String]) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": base_model,
        "r": r,
        "lora_alpha": scale as f64 * r as f64,
        "use_rslora": false,
        "use_dora": false,
        "target_modules": target_modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "modules_to_save": null,
        "init_lora_weights": true,
        "rank_pattern": {},
        "alpha_pattern": {},
        "layers_to_transform": null,
        "layers_pattern": null,
        "revision": null,
    })
}

pub(crate) fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(path, format!("{text}\n").as_bytes())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Reads what [`write_peft`] wrote: the parsed `adapter_config.json` and the adapters,
/// sorted by module name (tensors of `modules_to_save` are not adapters and are skipped). Checks every tensor's shape against the config's `r`.
pub fn read_peft(dir: &Path) -> Result<(Value, Vec<PeftLora>)> {
    let cfg_path = dir.join(CONFIG_FILE);
    let config = read_json(&cfg_path)?;
    let file_err = |message: String| Error::File {
        path: cfg_path.display().to_string(),
        message,
    };
    if config.get("peft_type").and_then(Value::as_str) != Some("LORA") {
        return Err(file_err("peft_type is not \"LORA\"".into()));
    }
    let r = config
        .get("r")
        .and_then(Value::as_u64)
        .ok_or_else(|| file_err("missing integer 'r'".into()))? as usize;

    let model_path = dir.join(MODEL_FILE);
    let tf = TensorFile::read(&model_path)?;
    let terr = |message: String| Error::File {
        path: model_path.display().to_string(),
        message,
    };
    let saved: Vec<String> = config
        .get("modules_to_save")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(Value::as_str)
                .map(|m| format!("{KEY_PREFIX}{m}."))
                .collect()
        })
        .unwrap_or_default();
    let mut modules = BTreeSet::new();
    for name in tf.names() {
        if saved.iter().any(|m| name.starts_with(m.as_str())) {
            continue;
        }
        let module = name
            .strip_prefix(KEY_PREFIX)
            .and_then(|n| {
                n.strip_suffix(".lora_A.weight")
                    .or_else(|| n.strip_suffix(".lora_B.weight"))
            })
            .ok_or_else(|| terr(format!("unexpected tensor '{name}'")))?;
        modules.insert(module.to_string());
    }
    let mut out = Vec::with_capacity(modules.len());
    for module in modules {
        let ka = format!("{KEY_PREFIX}{module}.lora_A.weight");
        let kb = format!("{KEY_PREFIX}{module}.lora_B.weight");
        let (sa, lora_a) = tf.f32(&ka)?;
        let (sb, lora_b) = tf.f32(&kb)?;
        if sa.len() != 2 || sa[0] != r {
            return Err(terr(format!("'{ka}' has shape {sa:?}, expected [{r}, in]")));
        }
        if sb.len() != 2 || sb[1] != r {
            return Err(terr(format!(
                "'{kb}' has shape {sb:?}, expected [out, {r}]"
            )));
        }
        out.push(PeftLora {
            module,
            lora_a,
            lora_b,
            rank: r,
            in_features: sa[1],
            out_features: sb[0],
        });
    }
    Ok((config, out))
}

/// A classification or regression head on a pooled encoder output.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// `[classes, hidden]`, row-major.
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
    /// Output count.
    pub classes: usize,
    /// Input (hidden) size.
    pub hidden: usize,
    /// Class names, one per output (may be empty for regression).
    pub labels: Vec<String>,
    /// How token states are pooled before the head (e.g. `cls`, `mean`).
    pub pooling: String,
}

/// Writes `head.safetensors` (`weight [classes, hidden]`, `bias [classes]`) and
/// `head_config.json` (`pooling`, `labels`, `num_labels`, `hidden_size`) into `out_dir`.
/// `labels` must name every class or be empty (regression).
pub fn write_head(
    out_dir: &Path,
    weight: &[f32],
    bias: &[f32],
    classes: usize,
    hidden: usize,
    labels: &[String],
    pooling: &str,
) -> Result<()> {
    if weight.len() != classes * hidden {
        return Err(Error::shape(format!(
            "head weight has {} values, expected [classes {classes}, hidden {hidden}]",
            weight.len()
        )));
    }
    if bias.len() != classes {
        return Err(Error::shape(format!(
            "head bias has {} values, expected [classes {classes}]",
            bias.len()
        )));
    }
    if !labels.is_empty() && labels.len() != classes {
        return Err(Error::InvalidArgument(format!(
            "{} labels for {classes} classes",
            labels.len()
        )));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut w = TensorWriter::default();
    w.metadata("format", "pt");
    w.f32("weight", &[classes, hidden], weight);
    w.f32("bias", &[classes], bias);
    w.write(&out_dir.join(HEAD_FILE))?;
    write_json(
        &out_dir.join(HEAD_CONFIG_FILE),
        &json!({
            "pooling": pooling,
            "labels": labels,
            "num_labels": classes,
            "hidden_size": hidden,
        }),
    )
}

/// Reads what [`write_head`] wrote, checking the tensors against the config.
pub fn read_head(dir: &Path) -> Result<Head> {
    let cfg_path = dir.join(HEAD_CONFIG_FILE);
    let cfg = read_json(&cfg_path)?;
    let err = |message: String| Error::File {
        path: cfg_path.display().to_string(),
        message,
    };
    let num = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| err(format!("missing integer '{k}'")))
    };
    let classes = num("num_labels")?;
    let hidden = num("hidden_size")?;
    let pooling = cfg
        .get("pooling")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing string 'pooling'".into()))?
        .to_string();
    let labels = cfg
        .get("labels")
        .and_then(Value::as_array)
        .ok_or_else(|| err("missing array 'labels'".into()))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| err("labels must be strings".into()))
        })
        .collect::<Result<Vec<_>>>()?;
    let model_path = dir.join(HEAD_FILE);
    let tf = TensorFile::read(&model_path)?;
    let (sw, weight) = tf.f32("weight")?;
    let (sb, bias) = tf.f32("bias")?;
    if sw != [classes, hidden] || sb != [classes] {
        return Err(Error::File {
            path: model_path.display().to_string(),
            message: format!(
                "weight {sw:?} / bias {sb:?} do not match num_labels {classes}, hidden_size \
                 {hidden}"
            ),
        });
    }
    Ok(Head {
        weight,
        bias,
        classes,
        hidden,
        labels,
        pooling,
    })
}
