//! The training configuration: one typed struct that is both the `finetune` command's
//! arguments (clap, in groups) and the run folder's `config.json` (serde), validated once
//! right after it is parsed or read.
//!
//! `config.json` is flat as before (`task`, `data`, `model`, `method`, `r`, `alpha`,
//! `targets`, ..., `lr`, `schedule`, `epochs`, ...), except that the mask settings are
//! one object, `mask: {kind, d, density, seed}` (a [`MaskConfig`]), and `targets` is a list.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::kernels::capaboost::RankScaling;
use crate::kernels::masks::{MaskConfig, MaskKind};
use crate::nn::modules::{CapaBoostConfig, Placement};
use crate::nn::optim::Schedule;
use crate::runtime::error::{Error, Result};
use crate::runtime::half::BaseDType;
use crate::tasks::glue::{self, ReadOptions};
use crate::tasks::image::config::ImageConfig;
use crate::tasks::kind::TaskKind;
use crate::tasks::squad::config::QaConfig;
pub use crate::tasks::targets::Targets;

/// Peak learning rate of a GLUE run when `--lr` is not given.
pub const DEFAULT_LR: f32 = 1e-3;

/// What gets trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// LoRA on the targets (d = 1, p = 1).
    Lora,
    /// CapaBoost on the targets.
    Capaboost,
    /// CapaBoost bottleneck adapters (Pfeiffer or Houlsby placement).
    CapaboostAdapter,
    /// Only the classification head.
    HeadOnly,
}

impl Method {
    /// The command-line spelling (`lora`, `capaboost`, `capaboost-adapter`, `head-only`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::Capaboost => "capaboost",
            Method::CapaboostAdapter => "capaboost-adapter",
            Method::HeadOnly => "head-only",
        }
    }
}

/// Where the examples come from.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct DataConfig {
    /// Task: a GLUE task (sst2, cola, mrpc, rte, stsb, qnli, qqp, mnli), squad
    /// (extractive QA) or image (image classification). With no --data and no --resume,
    /// the built-in demo runs instead.
    #[arg(long, value_parser = clap::value_parser!(TaskKind))]
    pub task: Option<TaskKind>,
    /// GLUE-format folder with train.tsv and dev.tsv, or (--task squad) one SQuAD v1.1 /
    /// v2.0 JSON file, split by article, or (--task image) a folder of train/ and dev/
    /// class folders (or one folder of classes, split by --dev-ratio), or of idx files
    /// (train-* and t10k-*, MNIST / Fashion-MNIST).
    #[arg(long, requires = "task")]
    pub data: Option<PathBuf>,
    /// (--task causal-lm) A JSONL file of evaluation examples; without it the last tenth
    /// of --data is held out.
    #[arg(long, requires = "data")]
    #[serde(default)]
    pub eval_data: Option<PathBuf>,
    /// Use only the first N training rows (QA: questions).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N dev rows (QA: evaluation questions; quick runs).
    #[arg(long)]
    #[serde(default)]
    pub dev_limit: Option<usize>,
    /// Truncation length in tokens (QA: window length; causal-lm: an example's length,
    /// the prompt's start cut first); default 64, squad 384, causal-lm 512.
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Text column override.
    #[arg(long)]
    pub text_a: Option<String>,
    /// Second text column override.
    #[arg(long)]
    pub text_b: Option<String>,
    /// Label column override.
    #[arg(long)]
    pub label_column: Option<String>,
}

impl DataConfig {
    /// Column overrides and a row cap for reading one split.
    pub fn read_options(&self, limit: Option<usize>) -> ReadOptions {
        ReadOptions {
            text_a: self.text_a.clone(),
            text_b: self.text_b.clone(),
            label: self.label_column.clone(),
            limit,
            allow_unlabelled: false,
        }
    }
}

/// The pretrained encoder.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct ModelConfig {
    /// BERT-family model folder (config.json, model.safetensors, tokenizer.json), or (--task
    /// image) a ViTModel / Dinov2Model folder, or (--task causal-lm) a Llama-architecture
    /// GGUF file; default: the all-MiniLM-L6-v2 that scripts/fetch-minilm.sh installs.
    #[arg(long, default_value_os_t = crate::models::bert::default_model_dir())]
    pub model: PathBuf,
    /// GPU storage of the encoder's frozen projection weights (query ... output.dense):
    /// f32, or f16 (half their memory; products accumulate in f32). Adapters, the head,
    /// biases, LayerNorms, embeddings, gradients and optimizer state stay f32.
    #[arg(long, value_enum, default_value_t = BaseDType::F32)]
    #[serde(default)]
    pub base_dtype: BaseDType,
}

/// What is trained on the encoder, and the adapters' shape.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct AdapterConfig {
    /// What is trained.
    #[arg(long, value_enum, default_value_t = Method::Capaboost)]
    pub method: Method,
    /// Rank r.
    #[arg(long, default_value_t = 8)]
    pub r: usize,
    /// LoRA alpha (s = alpha / r).
    #[arg(long, default_value_t = 16.0)]
    pub alpha: f32,
    /// Masks: kind, branches d, density p, seed (the seed also seeds the head, the adapters'
    /// initialization, the data order and dropout).
    #[command(flatten)]
    pub mask: MaskConfig,
    /// Adapted layers: query,key,value,attention_output,intermediate,output or all-linear.
    #[arg(long, default_value = "query,value")]
    pub targets: Targets,
    /// How the update is scaled.
    #[arg(long, value_enum, default_value_t = RankScaling::Lora)]
    pub rank_scaling: RankScaling,
    /// Bottleneck width for capaboost-adapter.
    #[arg(long, default_value_t = 16)]
    pub adapter_width: usize,
    /// Placement of the bottleneck adapters (capaboost-adapter).
    #[arg(long, value_enum, default_value_t = Placement::Pfeiffer)]
    pub placement: Placement,
    /// Dropout on adapter inputs.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
}

impl AdapterConfig {
    /// The LoRA / CapaBoost layer settings (plain LoRA: one dense branch).
    pub fn layer_config(&self) -> CapaBoostConfig {
        let mask = match self.method {
            Method::Lora => MaskConfig::dense(),
            _ => self.mask,
        };
        CapaBoostConfig {
            mask,
            dropout: self.dropout,
            rank_scaling: self.rank_scaling,
            ..CapaBoostConfig::lora(self.r, self.alpha)
        }
    }
}

/// AdamW and its learning-rate schedule.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct OptimConfig {
    /// Peak learning rate (demo default 1e-2, GLUE default 1e-3).
    #[arg(long)]
    pub lr: Option<f32>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// Fraction of steps of linear warmup.
    #[arg(long, default_value_t = 0.06)]
    pub warmup_ratio: f64,
    /// Decay after warmup.
    #[arg(long, value_enum, default_value_t = Schedule::Linear)]
    pub schedule: Schedule,
    /// Global gradient-norm clipping.
    #[arg(long)]
    pub max_grad_norm: Option<f32>,
}

/// How long the run is and how often it reports.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct LoopConfig {
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Stop after N steps.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Also evaluate on dev every N steps.
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Read the loss back (for the progress bar and train_loss.csv) every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
}

/// Everything that defines a run: the `finetune` arguments, and the run folder's
/// `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Task and data.
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataConfig,
    /// Encoder.
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelConfig,
    /// Method and adapters.
    #[command(flatten)]
    #[serde(flatten)]
    pub adapter: AdapterConfig,
    /// Optimizer.
    #[command(flatten)]
    #[serde(flatten)]
    pub optim: OptimConfig,
    /// Length and reporting.
    #[command(flatten)]
    #[serde(flatten)]
    pub run: LoopConfig,
    /// Question-answering settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub qa: QaConfig,
    /// Image-classification settings.
    #[command(flatten)]
    #[serde(flatten)]
    pub image: ImageConfig,
}

fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(msg()))
    }
}

/// Checks the mask settings: `--d` at least 1 and `--density` finite in (0, 1].
pub fn validate_mask(m: &MaskConfig) -> Result<()> {
    check(m.d >= 1, || "--d must be at least 1".into())?;
    check(m.density > 0.0 && m.density <= 1.0, || {
        format!("--density {} is outside (0, 1]", m.density)
    })
}

/// Names a float setting of `config.json` that is not a number (`null` is what an older
/// capaboost wrote for a NaN flag), which serde would report without its key.
fn check_numbers(v: &serde_json::Value, path: &Path) -> Result<()> {
    let required = ["alpha", "dropout", "weight_decay", "warmup_ratio"];
    let optional = ["lr", "max_grad_norm"];
    let mask_density = v.get("mask").and_then(|m| m.get("density"));
    let fields = required
        .iter()
        .map(|k| (*k, v.get(*k), true))
        .chain(optional.iter().map(|k| (*k, v.get(*k), false)))
        .chain([("mask.density", mask_density, true)]);
    for (key, value, needed) in fields {
        let bad = match value {
            Some(x) if x.is_number() => false,
            Some(serde_json::Value::Null) | None => needed && value.is_some(),
            Some(_) => true,
        };
        if bad {
            return Err(Error::File {
                path: path.display().to_string(),
                message: format!(
                    "{key:?} is {}, not a finite number",
                    value.map_or_else(String::new, ToString::to_string)
                ),
            });
        }
    }
    Ok(())
}

impl TrainConfig {
    /// Checks every numeric setting (the demo reads only some of them, but all are
    /// checked); errors name the flag. Called right after parsing and after reading a
    /// run's `config.json`, before anything is written.
    pub fn validate(&self) -> Result<()> {
        let a = &self.adapter;
        check(a.r >= 1, || "--r must be at least 1".into())?;
        validate_mask(&a.mask)?;
        check(a.alpha.is_finite() && a.alpha > 0.0, || {
            format!("--alpha {} must be finite and positive", a.alpha)
        })?;
        check(
            a.dropout.is_finite() && (0.0..1.0).contains(&a.dropout),
            || format!("--dropout {} is outside [0, 1)", a.dropout),
        )?;
        check(a.adapter_width >= 1, || {
            "--adapter-width must be at least 1".into()
        })?;
        let o = &self.optim;
        check(o.lr.is_none_or(|lr| lr.is_finite() && lr > 0.0), || {
            format!(
                "--lr {:?} must be finite and positive",
                o.lr.unwrap_or_default()
            )
        })?;
        check(o.weight_decay.is_finite() && o.weight_decay >= 0.0, || {
            format!("--weight-decay {} must be finite and >= 0", o.weight_decay)
        })?;
        check((0.0..=1.0).contains(&o.warmup_ratio), || {
            format!("--warmup-ratio {} is outside [0, 1]", o.warmup_ratio)
        })?;
        check(
            o.max_grad_norm.is_none_or(|n| n.is_finite() && n > 0.0),
            || "--max-grad-norm must be finite and positive".into(),
        )?;
        self.validate_loop()?;
        self.validate_targets()?;
        self.qa.validate()?;
        self.image.validate()?;
        let squad = self.data.task == Some(TaskKind::Squad);
        check(!squad || self.qa.doc_stride < self.max_len(), || {
            format!(
                "--doc-stride {} must be below --max-len {} (windows overlap by the stride)",
                self.qa.doc_stride,
                self.max_len()
            )
        })?;
        // [CLS], one word-piece, [SEP]: less keeps no text at all.
        check(self.max_len() >= 3, || {
            format!("--max-len {} must be at least 3", self.max_len())
        })
    }

    /// The targets fit the task's model; a decoder (causal-lm) trains LoRA or CapaBoost on
    /// its GGUF base as the file stores it.
    fn validate_targets(&self) -> Result<()> {
        if self.data.task != Some(TaskKind::CausalLm) {
            return self.adapter.targets.encoder().map(drop);
        }
        self.adapter.targets.decoder()?;
        let m = self.adapter.method;
        check(matches!(m, Method::Lora | Method::Capaboost), || {
            format!(
                "--task causal-lm trains lora or capaboost adapters, not --method {}",
                m.name()
            )
        })?;
        check(self.model.base_dtype == BaseDType::F32, || {
            "--base-dtype is for encoders; a GGUF base stays in its file's format (Q4_0, \
             Q4_1, Q8_0 quantized on the GPU)"
                .into()
        })
    }

    fn validate_loop(&self) -> Result<()> {
        let r = &self.run;
        check(r.batch_size >= 1, || {
            "--batch-size must be at least 1".into()
        })?;
        check(r.epochs >= 1, || "--epochs must be at least 1".into())?;
        check(r.log_every >= 1, || "--log-every must be at least 1".into())?;
        check(r.max_steps.is_none_or(|n| n >= 1), || {
            "--max-steps must be at least 1".into()
        })?;
        check(r.eval_every.is_none_or(|n| n >= 1), || {
            "--eval-every must be at least 1".into()
        })
    }

    /// The task; only a configuration without `--data` (the demo) lacks one.
    pub fn kind(&self) -> Result<TaskKind> {
        self.data.task.ok_or_else(|| {
            Error::InvalidArgument("--data needs --task (sst2, cola, ..., squad)".into())
        })
    }

    /// The GLUE task (an error for a QA run).
    pub fn task(&self) -> Result<glue::Task> {
        match self.kind()? {
            TaskKind::Glue(t) => Ok(t),
            k => Err(Error::InvalidArgument(format!(
                "--task {k} is not a GLUE task"
            ))),
        }
    }

    /// The truncation (QA: window) length: `--max-len`, else the task's default.
    pub fn max_len(&self) -> usize {
        let default = self.data.task.map_or(64, |k| k.default_max_len());
        self.data.max_len.unwrap_or(default)
    }

    /// The data folder (GLUE) or file (SQuAD).
    pub fn data_dir(&self) -> Result<&Path> {
        self.data
            .data
            .as_deref()
            .ok_or_else(|| Error::InvalidArgument("a run needs --data".into()))
    }

    /// The peak learning rate ([`DEFAULT_LR`] unless given).
    pub fn lr(&self) -> f32 {
        self.optim.lr.unwrap_or(DEFAULT_LR)
    }

    /// The user seed (head, adapters, masks, data order, dropout).
    pub fn seed(&self) -> u64 {
        self.adapter.mask.seed
    }

    /// Reads and validates a run's `config.json` (as [`crate::tasks::run::RunDir::config`]
    /// returns it).
    pub fn from_json(value: serde_json::Value, path: &Path) -> Result<TrainConfig> {
        check_numbers(&value, path)?;
        let cfg: TrainConfig = serde_json::from_value(value).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: format!("not a capaboost training config: {e}"),
        })?;
        cfg.validate()?;
        cfg.kind()?;
        Ok(cfg)
    }

    /// What a run of this configuration in `run` reads: the run folder, the base model
    /// folder and the data folder (outputs must stay clear of them).
    pub fn input_paths<'a>(&'a self, run: &'a Path) -> Vec<(&'static str, &'a Path)> {
        let mut v = vec![
            ("run folder", run),
            ("base model folder", self.model.model.as_path()),
        ];
        if let Some(d) = &self.data.data {
            let what = self.data.task.map_or("data folder", |k| k.data_label());
            v.push((what, d.as_path()));
        }
        if let Some(d) = &self.data.eval_data {
            v.push(("--eval-data file", d.as_path()));
        }
        v
    }

    /// The configuration as the JSON object `config.json` holds.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).map_err(|e| Error::InvalidArgument(e.to_string()))
    }
}

// The mask settings as a flag group (`--mask`, `--d`, `--density`, `--seed`), written by
// hand because `MaskConfig` lives in the kernel layer, which knows nothing of clap.
const MASK: &str = "mask";
const D: &str = "d";
const DENSITY: &str = "density";
const SEED: &str = "seed";

impl clap::FromArgMatches for MaskConfig {
    fn from_arg_matches(m: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        let mut cfg = MaskConfig::new(MaskKind::Exact, 2, 0.5, 0);
        cfg.update_from_arg_matches(m)?;
        Ok(cfg)
    }

    fn update_from_arg_matches(
        &mut self,
        m: &clap::ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        if let Some(&k) = m.get_one::<MaskKind>(MASK) {
            self.kind = k;
        }
        if let Some(&d) = m.get_one::<u32>(D) {
            self.d = d;
        }
        if let Some(&p) = m.get_one::<f64>(DENSITY) {
            self.density = p;
        }
        if let Some(&s) = m.get_one::<u64>(SEED) {
            self.seed = s;
        }
        Ok(())
    }
}

impl clap::Args for MaskConfig {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        use clap::{Arg, value_parser};
        cmd.arg(
            Arg::new(MASK)
                .long(MASK)
                .value_name("MASK")
                .help("Mask kind")
                .value_parser(value_parser!(MaskKind))
                .default_value("exact"),
        )
        .arg(
            Arg::new(D)
                .long(D)
                .value_name("D")
                .help("Branches d")
                .value_parser(value_parser!(u32))
                .default_value("2"),
        )
        .arg(
            Arg::new(DENSITY)
                .long(DENSITY)
                .value_name("DENSITY")
                .help("Mask density p in (0, 1]")
                .value_parser(value_parser!(f64))
                .default_value("0.5"),
        )
        .arg(
            Arg::new(SEED)
                .long(SEED)
                .value_name("SEED")
                .help("Seed")
                .value_parser(value_parser!(u64))
                .default_value("0"),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
