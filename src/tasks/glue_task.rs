//! GLUE classification and regression as a [`Task`]: tokenized splits, padded batches,
//! cross-entropy or MSE on the head's outputs, the GLUE metrics, and scoring a saved run.

use std::path::Path;

use crate::models::bert::{Batch, BertTokenizer, Encoded};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};
use crate::tasks::classifier::Classifier;
use crate::tasks::config::TrainConfig;
use crate::tasks::glue::{self, Label, ReadOptions};
use crate::tasks::task::{Metrics, Task};

/// Tokenized examples of one split, with their labels.
#[derive(Default)]
struct Data {
    items: Vec<Encoded>,
    labels: Vec<Label>,
    /// 1-based line of each example in its file.
    lines: Vec<usize>,
}

/// A GLUE task with its tokenized training and dev splits.
pub struct GlueTask {
    kind: glue::Task,
    train: Data,
    dev: Data,
    eval_batch: usize,
    /// The training file and the columns read from it (for a trace's recipe).
    train_source: Option<(std::path::PathBuf, glue::Columns)>,
    max_len: usize,
}

/// A training batch: padded token ids and the targets of its examples.
pub struct GlueBatch {
    input: Batch,
    target: Target,
}

enum Target {
    Classes(Indices),
    Scores(Tensor),
}

/// The task's dev split in `dir` (MNLI: dev_matched.tsv, else dev.tsv).
fn read_dev(dir: &Path, task: glue::Task, opts: &ReadOptions) -> Result<glue::Split> {
    let preferred = dir.join(task.dev_file());
    let path = if preferred.exists() {
        preferred
    } else {
        dir.join("dev.tsv")
    };
    glue::read_split(&path, task, opts)
}

/// Encodes every example of `split`. Rows longer than `--max-len` tokens are cut like any
/// other (the model's positions bound `--max-len`, so no row can outgrow them), and said
/// once per file, naming the first such row's line.
fn encode_texts(tok: &BertTokenizer, split: &glue::Split) -> Result<Vec<Encoded>> {
    let (mut cut, mut first) = (0usize, None);
    let mut items = Vec::with_capacity(split.examples.len());
    for e in &split.examples {
        let (enc, truncated) = tok.encode_checked(&e.text_a, e.text_b.as_deref())?;
        if truncated {
            cut += 1;
            first.get_or_insert((e.line, enc.ids.len()));
        }
        items.push(enc);
    }
    if let Some((line, max_len)) = first {
        eprintln!(
            "warning: {}: {cut} rows longer than --max-len {max_len} tokens were truncated \
             (the first at line {line})",
            split.path.display()
        );
    }
    Ok(items)
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
    let lines = split.examples.iter().map(|e| e.line).collect();
    Ok(Data {
        items,
        labels,
        lines,
    })
}

fn report_malformed(s: &glue::Split) {
    if s.malformed > 0 {
        eprintln!(
            "{}: {} malformed rows skipped (e.g. {})",
            s.path.display(),
            s.malformed,
            s.malformed_samples.join("; ")
        );
    }
}

impl GlueTask {
    /// The task without data: enough to build its model and export its head.
    pub fn new(kind: glue::Task) -> Self {
        Self {
            kind,
            train: Data::default(),
            dev: Data::default(),
            eval_batch: 32,
            train_source: None,
            max_len: 0,
        }
    }

    /// Reads and tokenizes the training and dev splits of `cfg`; malformed rows are
    /// reported on stderr, a training file without usable rows is an error.
    pub fn load(cfg: &TrainConfig) -> Result<Self> {
        let kind = cfg.task()?;
        let dir = cfg.data_dir()?;
        let d = &cfg.data;
        let train = glue::read_split(&dir.join("train.tsv"), kind, &d.read_options(d.train_limit))?;
        let dev = read_dev(dir, kind, &d.read_options(d.dev_limit))?;
        report_malformed(&train);
        report_malformed(&dev);
        if train.examples.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} has no usable rows",
                train.path.display()
            )));
        }
        if dev.examples.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} has no usable rows (the dev split is needed to evaluate the run)",
                dev.path.display()
            )));
        }
        check_max_len(&cfg.model.model, cfg.max_len())?;
        let tok = BertTokenizer::load(&cfg.model.model, cfg.max_len())?;
        Ok(Self {
            kind,
            train: tokenize(&tok, &train)?,
            dev: tokenize(&tok, &dev)?,
            eval_batch: cfg.run.batch_size.max(32),
            train_source: Some((train.path.clone(), train.columns.clone())),
            max_len: cfg.max_len(),
        })
    }

    /// The GLUE task.
    pub fn kind(&self) -> glue::Task {
        self.kind
    }
}

/// `--max-len` must fit the model's positions, or a long row would fail mid-run. A
/// `config.json` that does not parse is left to the model loader to report.
pub(crate) fn check_max_len(model: &Path, max_len: usize) -> Result<()> {
    let path = model.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let Ok(c) = serde_json::from_str::<crate::models::bert::BertConfig>(&text) else {
        return Ok(());
    };
    if max_len > c.max_position_embeddings {
        return Err(Error::InvalidArgument(format!(
            "--max-len {max_len} exceeds the model's {} positions (max_position_embeddings in {})",
            c.max_position_embeddings,
            path.display()
        )));
    }
    Ok(())
}

impl Task for GlueTask {
    type Model = Classifier;
    type Batch = GlueBatch;

    fn name(&self) -> &str {
        self.kind.id()
    }

    fn build_model(&self, gpu: &Gpu, cfg: &TrainConfig) -> Result<Classifier> {
        Classifier::build(gpu, cfg, self.kind.num_labels())
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.items.iter().map(|e| e.ids.len()).collect()
    }

    fn eval_len(&self) -> usize {
        self.dev.items.len()
    }

    fn make_batch(&self, gpu: &Gpu, model: &Classifier, idx: &[usize]) -> Result<GlueBatch> {
        let input = make_batch(gpu, &self.train.items, idx, model.bert.config.vocab_size)?;
        let labels = idx.iter().map(|&i| self.train.labels[i]);
        let target = if self.kind.is_regression() {
            let t: Vec<f32> = labels.map(label_score).collect();
            Target::Scores(Tensor::from_slice(gpu, &t, &[idx.len(), 1])?)
        } else {
            let l: Vec<u32> = labels.map(label_class).collect();
            Target::Classes(Indices::from_slice(gpu, &l, &[idx.len()])?)
        };
        Ok(GlueBatch { input, target })
    }

    fn loss(&self, g: &mut Graph, model: &Classifier, batch: &GlueBatch) -> Result<Var> {
        let logits = model.forward(g, &batch.input)?;
        match &batch.target {
            Target::Scores(t) => {
                let tv = g.input(t);
                g.mse(&logits, &tv)
            }
            Target::Classes(l) => g.cross_entropy(&logits, l),
        }
    }

    fn predictions(&self, gpu: &Gpu, model: &Classifier) -> Result<Vec<f32>> {
        predict(gpu, model, &self.dev.items, self.eval_batch)
    }

    fn metrics(&self, predictions: &[f32]) -> Result<Metrics> {
        score(
            self.kind,
            predictions,
            self.kind.num_labels(),
            &self.dev.labels,
        )
    }

    fn export_head(&self, model: &Classifier, dir: &Path) -> Result<()> {
        model.write_head(dir, &self.kind.label_names())
    }

    fn example_ids(&self, idx: &[usize]) -> Vec<u64> {
        idx.iter().map(|&i| self.train.lines[i] as u64).collect()
    }

    fn recipe(&self) -> serde_json::Value {
        let (file, columns) = match &self.train_source {
            Some((f, c)) => (Some(f.display().to_string()), Some(c)),
            None => (None, None),
        };
        let loss = if self.kind.is_regression() {
            "mse: mean over the batch of (output - score)^2, one output"
        } else {
            "cross_entropy: mean over the batch of -log softmax(logits)[label]"
        };
        serde_json::json!({
            "task": self.kind.id(),
            "train_file": file,
            "example_ids": "1-based line of train_file (the header is line 1)",
            "columns": columns.map(|c| serde_json::json!({
                "text_a": c.text_a, "text_b": c.text_b, "label": c.label,
            })),
            "label_names": self.kind.label_names(),
            "labels": "a class index, or its name (case-insensitive); STS-B: the score",
            "num_outputs": self.kind.num_labels(),
            "tokenizer": "the model folder's tokenizer.json with special tokens ([CLS] a [SEP] (b [SEP]))",
            "max_len": self.max_len,
            "truncation": "longest_first from the right, to max_len tokens counting [CLS] and [SEP]",
            "padding": "right, with id 0 (type 0), to the batch's longest example",
            "pooling": "mean of the last hidden states over non-padding tokens",
            "head": "Linear(hidden, num_outputs) on the pooled vector (head.weight, head.bias)",
            "loss": loss,
        })
    }
}

fn label_score(l: Label) -> f32 {
    match l {
        Label::Score(s) => s,
        Label::Class(c) => c as f32,
    }
}

fn label_class(l: Label) -> u32 {
    match l {
        Label::Class(c) => c as u32,
        Label::Score(s) => s as u32,
    }
}

/// The items at `idx`, padded into one batch.
fn make_batch(gpu: &Gpu, items: &[Encoded], idx: &[usize], vocab: usize) -> Result<Batch> {
    let picked: Vec<Encoded> = idx.iter().map(|&i| items[i].clone()).collect();
    Batch::new(gpu, &picked, vocab)
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

/// The predicted class of each logits row (the first maximum).
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

/// The task's metrics for `logits` against `labels`.
fn score(task: glue::Task, logits: &[f32], width: usize, labels: &[Label]) -> Result<Metrics> {
    if task.is_regression() {
        let scores: Vec<f64> = logits.chunks(width).map(|r| r[0] as f64).collect();
        crate::tasks::metrics::task_metrics(task, None, Some(&scores), labels)
    } else {
        let classes = argmax_rows(logits, width);
        crate::tasks::metrics::task_metrics(task, Some(&classes), None, labels)
    }
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
) -> Result<Metrics> {
    let (_, cfg, model) = crate::tasks::train::load_run(gpu, run_path)?;
    if let Some(p) = predictions {
        let mut inputs = cfg.input_paths(run_path);
        inputs.push(("--data folder", data));
        crate::tasks::run::refuse_overwriting_inputs("--predictions", p, &inputs)?;
    }
    let task = cfg.task()?;
    let opts = ReadOptions {
        allow_unlabelled: predictions.is_some(),
        ..cfg.data.read_options(None)
    };
    let split = match split_file {
        Some(f) => glue::read_split(&data.join(f), task, &opts)?,
        None => read_dev(data, task, &opts)?,
    };
    let tok = BertTokenizer::load(&cfg.model.model, cfg.max_len())?;
    let items = encode_texts(&tok, &split)?;
    let logits = predict(gpu, &model, &items, cfg.run.batch_size.max(32))?;
    if let Some(path) = predictions {
        let text = predictions_tsv(task, &split, &logits, model.labels);
        crate::runtime::io::write_atomic(path, text.as_bytes())?;
    }
    if split.columns.label.is_none() {
        return Ok(Vec::new());
    }
    let labels: Vec<Label> = split.examples.iter().filter_map(|e| e.label).collect();
    score(task, &logits, model.labels, &labels)
}

fn predictions_tsv(task: glue::Task, split: &glue::Split, logits: &[f32], width: usize) -> String {
    let names = task.label_names();
    let mut text = String::from("line\tprediction");
    if task.is_regression() {
        text.push_str("\tscore");
    } else {
        for name in &names {
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
