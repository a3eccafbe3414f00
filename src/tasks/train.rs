//! Fine-tuning a BERT-family encoder on a GLUE task: data, batches, the training loop with
//! evaluation, checkpoints and exact resume, and scoring a saved run.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kernels::capaboost::RankScaling;
use crate::kernels::masks::{MaskConfig, MaskKind};
use crate::models::bert::{Batch, Bert, BertTokenizer, Encoded, Target};
use crate::nn::modules::{self, CapaBoostConfig, Linear, Placement};
use crate::nn::optim::{AdamW, AdamWConfig, Schedule};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};
use crate::tasks::glue::{self, Label, ReadOptions, Task};
use crate::tasks::run_dir::{Progress, RunDir};

/// What gets trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Parses `lora`, `capaboost`, `capaboost-adapter` or `head-only`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "lora" => Ok(Self::Lora),
            "capaboost" => Ok(Self::Capaboost),
            "capaboost-adapter" => Ok(Self::CapaboostAdapter),
            "head-only" => Ok(Self::HeadOnly),
            _ => Err(Error::InvalidArgument(format!(
                "unknown method {s:?}: expected lora, capaboost, capaboost-adapter or head-only"
            ))),
        }
    }
}

/// Everything that defines a run; saved as the run folder's `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    /// GLUE task name.
    pub task: String,
    /// Data folder used for training.
    pub data: PathBuf,
    /// Model folder.
    pub model: PathBuf,
    /// What is trained.
    pub method: Method,
    /// Rank r.
    pub r: usize,
    /// LoRA alpha.
    pub alpha: f32,
    /// Branches d.
    pub d: u32,
    /// Mask density p.
    pub density: f64,
    /// `exact`, `bernoulli` or `2:4`.
    pub mask: String,
    /// Adapter targets (`query,value`, ..., or `all-linear`).
    pub targets: String,
    /// `lora` or `rslora`.
    pub rank_scaling: String,
    /// Bottleneck width of `capaboost-adapter`.
    pub adapter_width: usize,
    /// `pfeiffer` or `houlsby`.
    pub placement: String,
    /// Dropout on adapter inputs.
    pub dropout: f32,
    /// Epochs.
    pub epochs: u64,
    /// Stop after this many steps (overrides epochs when smaller).
    pub max_steps: Option<u64>,
    /// Use only the first N training rows.
    pub train_limit: Option<usize>,
    /// Use only the first N dev rows (quick runs).
    #[serde(default)]
    pub dev_limit: Option<usize>,
    /// Evaluate every N steps as well as every epoch.
    pub eval_every: Option<u64>,
    /// Examples per step.
    pub batch_size: usize,
    /// Truncation length in tokens.
    pub max_len: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Decoupled weight decay on every trainable tensor.
    pub weight_decay: f32,
    /// Fraction of steps of linear warmup (rounded up).
    pub warmup_ratio: f64,
    /// `linear`, `cosine` or `constant` decay after warmup.
    pub schedule: String,
    /// Global-norm clipping.
    pub max_grad_norm: Option<f32>,
    /// Seed of the head, adapters, masks, data order and dropout.
    pub seed: u64,
    /// Column overrides.
    pub text_a: Option<String>,
    /// Column overrides.
    pub text_b: Option<String>,
    /// Column overrides.
    pub label_column: Option<String>,
    /// Train-loss readback and progress update interval in steps.
    pub log_every: u64,
}

impl TrainConfig {
    fn task(&self) -> Result<Task> {
        Task::parse(&self.task)
    }

    fn read_options(&self, limit: Option<usize>) -> ReadOptions {
        ReadOptions {
            text_a: self.text_a.clone(),
            text_b: self.text_b.clone(),
            label: self.label_column.clone(),
            limit,
            allow_unlabelled: false,
        }
    }

    fn mask_config(&self) -> Result<MaskConfig> {
        let kind = MaskKind::parse(&self.mask)?;
        Ok(MaskConfig::new(kind, self.d, self.density, self.seed))
    }

    fn adapter_config(&self) -> Result<CapaBoostConfig> {
        let mask = match self.method {
            Method::Lora => MaskConfig::dense(),
            _ => self.mask_config()?,
        };
        Ok(CapaBoostConfig {
            mask,
            dropout: self.dropout,
            rank_scaling: RankScaling::parse(&self.rank_scaling)?,
            ..CapaBoostConfig::lora(self.r, self.alpha)
        })
    }
}

/// The model of a run: encoder with adapters plus a trainable head on mean pooling.
pub struct Classifier {
    /// Encoder (frozen) with its adapters.
    pub bert: Bert,
    /// `Linear(hidden, labels)`, trainable.
    pub head: Linear,
    /// Number of outputs (1 for regression).
    pub labels: usize,
}

impl Classifier {
    /// Builds the model of `cfg`: head first (right after seeding), then adapters.
    pub fn build(gpu: &Gpu, cfg: &TrainConfig) -> Result<Self> {
        let task = cfg.task()?;
        let mut bert = Bert::load(gpu, &cfg.model)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let labels = task.num_labels();
        let head = Linear::init(gpu, bert.config.hidden_size, labels, true, &mut rng)?;
        match cfg.method {
            Method::Lora | Method::Capaboost => {
                let targets = Target::parse_list(&cfg.targets)?;
                bert.add_lora(gpu, &targets, &cfg.adapter_config()?, &mut rng)?;
            }
            Method::CapaboostAdapter => {
                let placement = match cfg.placement.as_str() {
                    "pfeiffer" => Placement::Pfeiffer,
                    "houlsby" => Placement::Houlsby,
                    p => {
                        return Err(Error::InvalidArgument(format!(
                            "unknown placement {p:?}: pfeiffer or houlsby"
                        )));
                    }
                };
                let masks = cfg.mask_config()?;
                bert.add_adapters(gpu, placement, cfg.adapter_width, &masks, &mut rng)?;
            }
            Method::HeadOnly => {}
        }
        Ok(Self { bert, head, labels })
    }

    /// Every trainable tensor with a stable name.
    pub fn params(&self) -> Vec<(String, Tensor)> {
        let mut p = self.bert.params();
        for (n, t) in self.head.params() {
            p.push((format!("head.{n}"), t));
        }
        p
    }

    /// Logits `[B, labels]` (no-grad when `g` is).
    pub fn forward(&self, g: &mut Graph, batch: &Batch) -> Result<Var> {
        let (last, _) = self.bert.forward(g, batch, false)?;
        let pooled = g.mean_pool(&last, &batch.mask)?;
        self.head.forward(g, &pooled)
    }
}

/// Tokenized examples of one split.
struct Data {
    items: Vec<Encoded>,
    labels: Vec<Label>,
}

/// Encodes a split; its labels must all be present.
fn tokenize(tok: &BertTokenizer, split: &glue::Split) -> Result<Data> {
    let labels = split
        .examples
        .iter()
        .map(|e| e.label)
        .collect::<Option<Vec<Label>>>()
        .ok_or_else(|| Error::File {
            path: split.path.display().to_string(),
            message: "has no labels".into(),
        })?;
    let items = encode_texts(tok, split)?;
    Ok(Data { items, labels })
}

fn encode_texts(tok: &BertTokenizer, split: &glue::Split) -> Result<Vec<Encoded>> {
    split
        .examples
        .iter()
        .map(|e| tok.encode(&e.text_a, e.text_b.as_deref()))
        .collect()
}

/// Length-bucketed batches for one epoch: a seeded shuffle, then sorting by length inside
/// windows of 50 batches, so each batch pads to a similar length; batch order shuffled.
fn epoch_batches(lengths: &[usize], batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed_0000 + epoch));
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.shuffle(&mut rng);
    for window in idx.chunks_mut(batch * 50) {
        window.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<Vec<usize>> = idx.chunks(batch).map(<[usize]>::to_vec).collect();
    batches.shuffle(&mut rng);
    batches
}

/// The items at `idx`, padded into one batch.
fn make_batch(gpu: &Gpu, items: &[Encoded], idx: &[usize], vocab: usize) -> Result<Batch> {
    let picked: Vec<Encoded> = idx.iter().map(|&i| items[i].clone()).collect();
    Batch::new(gpu, &picked, vocab)
}

fn loss_of(
    g: &mut Graph,
    gpu: &Gpu,
    logits: &Var,
    data: &Data,
    idx: &[usize],
    regression: bool,
) -> Result<Var> {
    if regression {
        let target: Vec<f32> = idx
            .iter()
            .map(|&i| match data.labels[i] {
                Label::Score(s) => s,
                Label::Class(c) => c as f32,
            })
            .collect();
        let t = Tensor::from_slice(gpu, &target, &[idx.len(), 1])?;
        let tv = g.input(&t);
        g.mse(logits, &tv)
    } else {
        let labels: Vec<u32> = idx
            .iter()
            .map(|&i| match data.labels[i] {
                Label::Class(c) => c as u32,
                Label::Score(s) => s as u32,
            })
            .collect();
        let l = Indices::from_slice(gpu, &labels, &[idx.len()])?;
        g.cross_entropy(logits, &l)
    }
}

/// The model's logits for every item, in `items`' order (`[items, labels]` row-major).
/// Batches are formed over items sorted by length, so padding stays small.
fn predict(gpu: &Gpu, model: &Classifier, items: &[Encoded], batch: usize) -> Result<Vec<f32>> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].ids.len());
    let width = model.labels;
    let mut out = vec![0f32; order.len() * width];
    for chunk in order.chunks(batch.max(1)) {
        let b = make_batch(gpu, items, chunk, model.bert.config.vocab_size)?;
        let mut g = Graph::no_grad(gpu);
        let logits = model.forward(&mut g, &b)?;
        g.submit()?;
        let v = logits.value().to_vec()?;
        for (k, &i) in chunk.iter().enumerate() {
            out[i * width..(i + 1) * width].copy_from_slice(&v[k * width..(k + 1) * width]);
        }
    }
    Ok(out)
}

/// The predicted class of each logits row (the first maximum), or the score itself for
/// regression heads.
fn argmax_rows(logits: &[f32], width: usize) -> Vec<usize> {
    logits
        .chunks(width)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold(0, |best, (j, &x)| if x > row[best] { j } else { best })
        })
        .collect()
}

/// The task's metrics by name for `logits` against `data`'s labels.
fn score(
    task: Task,
    logits: &[f32],
    width: usize,
    labels: &[Label],
) -> Result<Vec<(&'static str, f64)>> {
    if task.is_regression() {
        let scores: Vec<f64> = logits.chunks(width).map(|r| r[0] as f64).collect();
        crate::tasks::metrics::task_metrics(task, None, Some(&scores), labels)
    } else {
        let classes = argmax_rows(logits, width);
        crate::tasks::metrics::task_metrics(task, Some(&classes), None, labels)
    }
}

/// Scores `data` with the model: the task's metrics by name.
fn evaluate(
    gpu: &Gpu,
    model: &Classifier,
    task: Task,
    data: &Data,
    batch: usize,
) -> Result<Vec<(&'static str, f64)>> {
    let logits = predict(gpu, model, &data.items, batch)?;
    score(task, &logits, model.labels, &data.labels)
}

/// Where a run stands: saved in `trainer_state.json` of each checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    epoch: u64,
    batch_in_epoch: usize,
    examples_seen: u64,
}

fn save_checkpoint(
    run: &RunDir,
    model: &Classifier,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<()> {
    let tmp = run.path().join(".params.tmp");
    modules::save_params(&tmp, &model.params())?;
    let params = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let tmp_opt = run.path().join(".optim.tmp");
    opt.save(&tmp_opt)?;
    let optim = std::fs::read(&tmp_opt).map_err(|e| Error::io(&tmp_opt, e))?;
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_file(&tmp_opt);
    let state = serde_json::to_value(state).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    run.save_checkpoint(
        &[
            ("adapter.safetensors", params),
            ("optimizer.safetensors", optim),
        ],
        &state,
    )
}

/// Loads a run's configuration and its latest checkpoint's weights into a fresh model.
pub fn load_run(gpu: &Gpu, run_path: &Path) -> Result<(RunDir, TrainConfig, Classifier)> {
    let run = RunDir::open(run_path)?;
    let cfg: TrainConfig = serde_json::from_value(run.config()?).map_err(|e| Error::File {
        path: run_path.join("config.json").display().to_string(),
        message: format!("not a capaboost training config: {e}"),
    })?;
    let model = Classifier::build(gpu, &cfg)?;
    let ckpt = run.checkpoint_dir().join("adapter.safetensors");
    modules::load_params(&ckpt, &model.params())?;
    Ok((run, cfg, model))
}

/// The task's dev split in `dir` (MNLI: dev_matched.tsv, else dev.tsv).
fn read_dev(dir: &Path, task: Task, opts: &ReadOptions) -> Result<glue::Split> {
    let preferred = dir.join(task.dev_file());
    let path = if preferred.exists() {
        preferred
    } else {
        dir.join("dev.tsv")
    };
    glue::read_split(&path, task, opts)
}

/// Options of one `finetune` invocation that are not part of the run's identity.
pub struct RunOptions {
    /// Stop this invocation after N steps with a checkpoint (as Ctrl-C does); `--resume`
    /// continues exactly.
    pub stop_after: Option<u64>,
    /// Folder of the run (created, or resumed).
    pub out: PathBuf,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
}

/// Summary of a finished (or interrupted) run.
#[derive(Debug)]
pub struct RunSummary {
    /// Steps done.
    pub steps: u64,
    /// Last dev metrics.
    pub dev: Vec<(&'static str, f64)>,
    /// Training examples per second (evaluation and checkpoint time excluded).
    pub examples_per_s: f64,
    /// Trainable parameters stored.
    pub trainable: usize,
    /// Whether Ctrl-C stopped it.
    pub interrupted: bool,
}

/// Trains (or resumes) a run.
pub fn finetune(gpu: &Gpu, cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    let task = cfg.task()?;
    let run = if opts.resume {
        RunDir::open(&opts.out)?
    } else {
        let v = serde_json::to_value(cfg).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        RunDir::create(&opts.out, &v)?
    };
    let train_split = glue::read_split(
        &cfg.data.join("train.tsv"),
        task,
        &cfg.read_options(cfg.train_limit),
    )?;
    let dev_split = read_dev(&cfg.data, task, &cfg.read_options(cfg.dev_limit))?;
    for s in [&train_split, &dev_split] {
        if s.malformed > 0 {
            eprintln!(
                "{}: {} malformed rows skipped (e.g. {})",
                s.path.display(),
                s.malformed,
                s.malformed_samples.join("; ")
            );
        }
    }
    if train_split.examples.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} has no usable rows",
            train_split.path.display()
        )));
    }
    let tok = BertTokenizer::load(&cfg.model, cfg.max_len)?;
    let train = tokenize(&tok, &train_split)?;
    let dev = tokenize(&tok, &dev_split)?;
    let model = Classifier::build(gpu, cfg)?;
    let params = model.params();
    let tensors: Vec<Tensor> = params.iter().map(|(_, t)| t.clone()).collect();
    let trainable: usize = tensors.iter().map(|t| t.numel()).sum();
    let lengths: Vec<usize> = train.items.iter().map(|e| e.ids.len()).collect();
    let per_epoch = train.items.len().div_ceil(cfg.batch_size.max(1)) as u64;
    let total = (per_epoch * cfg.epochs).min(cfg.max_steps.unwrap_or(u64::MAX));
    let warmup = (total as f64 * cfg.warmup_ratio).ceil() as u64;
    let schedule = Schedule::parse(&cfg.schedule)?;
    let opt_cfg = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        max_grad_norm: cfg.max_grad_norm,
        warmup_steps: warmup,
        total_steps: total,
        schedule,
        ..AdamWConfig::default()
    };
    let (mut opt, mut state) = if opts.resume {
        let st: TrainerState = match run.load_checkpoint_state()? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::InvalidArgument(format!("trainer_state.json: {e}")))?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "{} has no checkpoint to resume",
                    run.path().display()
                )));
            }
        };
        modules::load_params(&run.checkpoint_dir().join("adapter.safetensors"), &params)?;
        let opt = AdamW::load(
            gpu,
            &run.checkpoint_dir().join("optimizer.safetensors"),
            &tensors,
        )?;
        (opt, st)
    } else {
        (AdamW::new(gpu, opt_cfg, &tensors)?, TrainerState::default())
    };
    eprintln!(
        "{} on {}: {} train / {} dev examples, {} trainable parameters ({} used by masks), {} steps",
        cfg.task,
        gpu.adapter_info().name,
        train.items.len(),
        dev.items.len(),
        trainable,
        model.bert.used_params()? + model.head.weight.numel() + model.labels,
        total
    );
    let interrupt = crate::tasks::run_dir::install_interrupt_flag()?;
    let progress = Progress::new(total, opts.progress);
    let regression = task.is_regression();
    let vocab = model.bert.config.vocab_size;
    let start = Instant::now();
    let start_examples = state.examples_seen;
    let start_step = state.step;
    // Throughput counts training only: evaluation and checkpoint time is set aside.
    let mut paused = std::time::Duration::ZERO;
    let mut dev_metrics = Vec::new();
    let mut interrupted = false;
    let mut running_loss = None;
    let mut shown_eps = None;
    'epochs: while state.step < total && state.epoch < cfg.epochs {
        let batches = epoch_batches(&lengths, cfg.batch_size, cfg.seed, state.epoch);
        while state.batch_in_epoch < batches.len() {
            if state.step >= total {
                break 'epochs;
            }
            let stop_here = opts
                .stop_after
                .is_some_and(|n| state.step >= start_step + n);
            if interrupt.load(Ordering::SeqCst) || stop_here {
                interrupted = true;
                break 'epochs;
            }
            let idx = &batches[state.batch_in_epoch];
            let batch = make_batch(gpu, &train.items, idx, vocab)?;
            let mut g = Graph::new(gpu);
            g.set_seed(cfg.seed.wrapping_mul(1_000_003).wrapping_add(state.step));
            let logits = model.forward(&mut g, &batch)?;
            let loss = loss_of(&mut g, gpu, &logits, &train, idx, regression)?;
            let grads = g.backward(&loss)?;
            let lr = opt.next_lr();
            if opt.step(g.recorder(), &grads)? != tensors.len() {
                let missing = params.iter().find(|(_, t)| grads.of(t).is_none());
                let name = missing.map_or("?", |(n, _)| n.as_str());
                return Err(Error::InvalidArgument(format!(
                    "trainable tensor {name} got no gradient"
                )));
            }
            g.submit()?;
            state.step += 1;
            state.batch_in_epoch += 1;
            state.examples_seen += idx.len() as u64;
            let epoch_f = state.epoch as f64 + state.batch_in_epoch as f64 / batches.len() as f64;
            let epoch_end = state.batch_in_epoch == batches.len();
            let periodic = cfg.eval_every.is_some_and(|n| n > 0 && state.step % n == 0);
            let eval_now = epoch_end || periodic || state.step == total;
            let synced = state.step % cfg.log_every.max(1) == 0 || eval_now;
            if synced {
                // The one readback a training step allows: the loss, when logging (and at
                // evaluations, so every metrics.jsonl record carries this step's loss).
                let l = loss.value().to_vec()?[0] as f64;
                if !l.is_finite() {
                    save_checkpoint(&run, &model, &opt, &state)?;
                    return Err(Error::InvalidArgument(format!(
                        "loss is {l} at step {}: lower --lr (checkpoint saved)",
                        state.step
                    )));
                }
                running_loss = Some(l);
                run.log_train_loss(state.step, epoch_f, l, lr as f64)?;
            }
            if synced {
                // Submits return before the GPU is done, so only a step that waited for its
                // loss tells how fast the GPU really goes.
                let train_secs = (start.elapsed() - paused).as_secs_f64().max(1e-9);
                shown_eps = Some((state.examples_seen - start_examples) as f64 / train_secs);
            }
            progress.update(state.step, running_loss, shown_eps);
            if eval_now {
                let eval_start = Instant::now();
                dev_metrics = evaluate(gpu, &model, task, &dev, cfg.batch_size.max(32))?;
                let mut rec = json!({
                    "step": state.step,
                    "epoch": epoch_f,
                    "split": "dev",
                    "train_loss": running_loss,
                });
                for (k, v) in &dev_metrics {
                    rec[*k] = json!(v);
                }
                run.log_metrics(&rec)?;
                run.write_curves()?;
                let shown: Vec<String> = dev_metrics
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                progress.println(&format!(
                    "step {} epoch {epoch_f:.2}: dev {}",
                    state.step,
                    shown.join(", ")
                ));
                if epoch_end {
                    state.epoch += 1;
                    state.batch_in_epoch = 0;
                }
                save_checkpoint(&run, &model, &opt, &state)?;
                paused += eval_start.elapsed();
            }
        }
        if state.batch_in_epoch >= batches.len() {
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
    }
    gpu.wait()?;
    save_checkpoint(&run, &model, &opt, &state)?;
    progress.finish();
    let train_secs = (start.elapsed() - paused).as_secs_f64().max(1e-9);
    let examples_per_s = (state.examples_seen - start_examples) as f64 / train_secs;
    Ok(RunSummary {
        steps: state.step,
        dev: dev_metrics,
        examples_per_s,
        trainable,
        interrupted,
    })
}

/// Scores a saved run on a data folder's dev split (or `split_file` inside it). With
/// `predictions`, also writes one TSV row per scored example: its 1-based line in the
/// file, the prediction (label name, or the score for regression) and the raw head
/// outputs (`logit_<label>` columns; `score` for regression), so that the same numbers can
/// be compared with the exported adapters run elsewhere. With `predictions`, a file without
/// a label column (GLUE's official test files) is accepted: the result's metrics are then
/// empty.
pub fn eval_run(
    gpu: &Gpu,
    run_path: &Path,
    data: &Path,
    split_file: Option<&str>,
    predictions: Option<&Path>,
) -> Result<Vec<(&'static str, f64)>> {
    let (_, cfg, model) = load_run(gpu, run_path)?;
    let task = cfg.task()?;
    let opts = ReadOptions {
        allow_unlabelled: predictions.is_some(),
        ..cfg.read_options(None)
    };
    let split = match split_file {
        Some(f) => glue::read_split(&data.join(f), task, &opts)?,
        None => read_dev(data, task, &opts)?,
    };
    let tok = BertTokenizer::load(&cfg.model, cfg.max_len)?;
    let items = encode_texts(&tok, &split)?;
    let logits = predict(gpu, &model, &items, cfg.batch_size.max(32))?;
    if let Some(path) = predictions {
        let names = task.label_names();
        let text = predictions_tsv(task, &names, &split, &logits, model.labels);
        crate::runtime::io::write_atomic(path, text.as_bytes())?;
    }
    if split.columns.label.is_none() {
        return Ok(Vec::new());
    }
    let labels: Vec<Label> = split.examples.iter().filter_map(|e| e.label).collect();
    score(task, &logits, model.labels, &labels)
}

fn predictions_tsv(
    task: Task,
    names: &[String],
    split: &glue::Split,
    logits: &[f32],
    width: usize,
) -> String {
    let mut text = String::from("line\tprediction");
    if task.is_regression() {
        text.push_str("\tscore");
    } else {
        for name in names {
            text.push_str(&format!("\tlogit_{name}"));
        }
    }
    text.push('\n');
    let classes = argmax_rows(logits, width);
    for ((e, row), class) in split.examples.iter().zip(logits.chunks(width)).zip(classes) {
        let pred = if task.is_regression() {
            format!("{}", row[0])
        } else {
            names
                .get(class)
                .cloned()
                .unwrap_or_else(|| class.to_string())
        };
        text.push_str(&format!("{}\t{pred}", e.line));
        for v in row {
            // Rust's shortest round-trip form: the f32 is recovered exactly.
            text.push_str(&format!("\t{v}"));
        }
        text.push('\n');
    }
    text
}

/// Loss and metrics values as one JSON object (for printing).
pub fn metrics_json(m: &[(&'static str, f64)]) -> Value {
    let mut v = json!({});
    for (k, x) in m {
        v[*k] = json!(x);
    }
    v
}

fn adapted_layers(model: &Classifier) -> Vec<(String, &crate::nn::modules::CapaBoostLinear)> {
    let mut out = Vec::new();
    for (i, layer) in model.bert.layers.iter().enumerate() {
        for (k, p) in layer.proj.iter().enumerate() {
            if let crate::models::bert::Proj::Adapted(l) = p {
                out.push((
                    format!("encoder.layer.{i}.{}", Target::ALL[k].module()),
                    l.as_ref(),
                ));
            }
        }
    }
    out
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Adapter weights, head and the run config (masks are regenerated from their keys).
    Native,
    /// HF PEFT LoRA (`adapter_config.json` + `adapter_model.safetensors`) plus the head.
    Peft,
}

/// Writes a run's adapters and head to `out` in `format`.
pub fn export_run(gpu: &Gpu, run_path: &Path, format: ExportFormat, out: &Path) -> Result<()> {
    let (run, cfg, model) = load_run(gpu, run_path)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let task = cfg.task()?;
    let head_w = model.head.weight.to_vec()?;
    let head_b = model
        .head
        .bias
        .as_ref()
        .map(|b| b.to_vec())
        .transpose()?
        .unwrap_or_default();
    let hidden = model.bert.config.hidden_size;
    crate::tasks::export::write_head(
        out,
        &head_w,
        &head_b,
        model.labels,
        hidden,
        &task.label_names(),
        "mean",
    )?;
    match format {
        ExportFormat::Native => {
            let src = run.checkpoint_dir().join("adapter.safetensors");
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::runtime::io::write_atomic(&out.join("adapter.safetensors"), &bytes)?;
            let mut c = run.config()?;
            // The masks are a pure function of these keys (seed, module = 6 * layer + target,
            // factor, branch), so they are regenerated on load and never stored.
            c["mask_keys"] = json!({
                "seed": cfg.seed, "kind": cfg.mask, "density": cfg.density, "d": cfg.d,
                "module_id": "6 * layer + target index (query, key, value, attention_output, intermediate, output)",
            });
            let text =
                serde_json::to_vec_pretty(&c).map_err(|e| Error::InvalidArgument(e.to_string()))?;
            crate::runtime::io::write_atomic(&out.join("capaboost_config.json"), &text)
        }
        ExportFormat::Peft => {
            if cfg.method == Method::CapaboostAdapter {
                return Err(Error::InvalidArgument(
                    "bottleneck adapters have no PEFT LoRA equivalent: export --format native"
                        .into(),
                ));
            }
            let layers = adapted_layers(&model);
            if layers.is_empty() {
                // head-only: the head beside the base model is the whole export.
                return Ok(());
            }
            let mut loras = Vec::new();
            let mut scale = 0.0;
            for (module, l) in &layers {
                let (ma, mb) = l.masks.to_u8()?;
                let (in_f, out_f) = (l.base.in_features(), l.base.out_features());
                loras.push(crate::tasks::export::capaboost_as_lora(
                    module,
                    &l.lora_a.to_vec()?,
                    &l.lora_b.to_vec()?,
                    l.config.r,
                    in_f,
                    out_f,
                    &ma,
                    &mb,
                )?);
                scale = l.config.scale();
            }
            let targets: Vec<String> = Target::parse_list(&cfg.targets)?
                .iter()
                .map(|t| t.module().to_string())
                .collect();
            let base = cfg.model.display().to_string();
            crate::tasks::export::write_peft(out, &loras, scale, &base, &targets)
        }
    }
}

/// Writes the full model with the adapters merged (`model.safetensors`, `config.json` and
/// the tokenizer files), loadable by HF transformers as a plain BERT model.
pub fn merge_run(gpu: &Gpu, run_path: &Path, out: &Path) -> Result<()> {
    let (_, cfg, mut model) = load_run(gpu, run_path)?;
    if cfg.method == Method::CapaboostAdapter {
        return Err(Error::InvalidArgument(
            "bottleneck adapters sit behind a nonlinearity and cannot be merged".into(),
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut w = crate::runtime::io::TensorWriter::default();
    let put = |w: &mut crate::runtime::io::TensorWriter, name: String, t: &Tensor| -> Result<()> {
        w.f32(name, t.shape(), &t.to_vec()?);
        Ok(())
    };
    let b = &mut model.bert;
    put(&mut w, "embeddings.word_embeddings.weight".into(), &b.word)?;
    put(
        &mut w,
        "embeddings.position_embeddings.weight".into(),
        &b.position,
    )?;
    put(
        &mut w,
        "embeddings.token_type_embeddings.weight".into(),
        &b.token_type,
    )?;
    put(
        &mut w,
        "embeddings.LayerNorm.weight".into(),
        &b.emb_norm.gamma,
    )?;
    put(&mut w, "embeddings.LayerNorm.bias".into(), &b.emb_norm.beta)?;
    for (i, layer) in b.layers.iter_mut().enumerate() {
        for (k, p) in layer.proj.iter_mut().enumerate() {
            if let crate::models::bert::Proj::Adapted(l) = p {
                l.merge(gpu)?;
            }
            let base = p.base();
            let name = format!("encoder.layer.{i}.{}", Target::ALL[k].module());
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
    // The base checkpoint's other encoder tensors (the pooler, position ids) are copied
    // as they are, so the merged folder loads as a complete BertModel; pretraining heads
    // (`cls.*`) are left out, and a `bert.` prefix is dropped to match the names above.
    let src = crate::runtime::io::TensorFile::read(&cfg.model.join("model.safetensors"))?;
    for name in src.names() {
        let short = name.strip_prefix("bert.").unwrap_or(name);
        if !short.starts_with("cls.") && !w.contains(short) {
            if let Some(t) = src.raw(name) {
                w.raw(short, t);
            }
        }
    }
    w.write(&out.join("model.safetensors"))?;
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        let src = cfg.model.join(f);
        if src.exists() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::runtime::io::write_atomic(&out.join(f), &bytes)?;
        }
    }
    let task = cfg.task()?;
    let head_w = model.head.weight.to_vec()?;
    let head_b = model
        .head
        .bias
        .as_ref()
        .map(|b| b.to_vec())
        .transpose()?
        .unwrap_or_default();
    crate::tasks::export::write_head(
        out,
        &head_w,
        &head_b,
        model.labels,
        model.bert.config.hidden_size,
        &task.label_names(),
        "mean",
    )
}
