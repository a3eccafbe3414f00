//! A SQuAD run from its configuration: one file split by article into training and
//! evaluation questions, and scoring a saved run (`eval --predictions` writes the official
//! `{id: answer}` form).

use std::path::Path;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::tasks::config::TrainConfig;
use crate::tasks::glue_task::check_max_len;
use crate::tasks::squad::data::{SquadFile, read_squad};
use crate::tasks::squad::task::SquadTask;
use crate::tasks::squad::windows::QaTokenizer;
use crate::tasks::task::{Metrics, Task};

fn report_malformed(path: &Path, f: &SquadFile) {
    if f.malformed > 0 {
        eprintln!(
            "{}: {} malformed questions skipped (e.g. {})",
            path.display(),
            f.malformed,
            f.samples.join("; ")
        );
    }
}

/// Reads `path`, reporting skipped questions; a file without a usable question is an
/// error.
fn read(path: &Path) -> Result<SquadFile> {
    let f = read_squad(path)?;
    report_malformed(path, &f);
    if f.question_count() == 0 {
        return Err(Error::File {
            path: path.display().to_string(),
            message: format!(
                "holds no usable question ({} articles, {} malformed)",
                f.articles.len(),
                f.malformed
            ),
        });
    }
    Ok(f)
}

/// The window tokenizer of `cfg` (`--max-len` checked against the model's positions).
pub fn tokenizer(cfg: &TrainConfig) -> Result<QaTokenizer> {
    check_max_len(&cfg.model.model, cfg.max_len())?;
    QaTokenizer::load(&cfg.model.model, cfg.max_len(), cfg.qa.doc_stride)
}

/// The task of a new or resumed run: `--data` split by `--train-articles` /
/// `--eval-articles`, every question windowed. Everything is checked here, before the
/// run folder is touched.
pub fn load(cfg: &TrainConfig) -> Result<SquadTask> {
    let path = cfg.data_dir()?;
    let file = read(path)?;
    let (train, eval) = cfg.qa.split(file.articles.len())?;
    if train.iter().any(|i| eval.contains(i)) {
        eprintln!(
            "warning: --train-articles and --eval-articles overlap: the evaluation is not \
             held out"
        );
    }
    let (mut train, mut eval) = (file.select(&train)?, file.select(&eval)?);
    if let Some(n) = cfg.data.train_limit {
        train.keep_questions(n);
    }
    if let Some(n) = cfg.data.dev_limit {
        eval.keep_questions(n);
    }
    for (what, f) in [("training", &train), ("evaluation", &eval)] {
        if f.question_count() == 0 {
            return Err(Error::InvalidArgument(format!(
                "the {what} articles of {} hold no usable question",
                path.display()
            )));
        }
    }
    let tok = tokenizer(cfg)?;
    SquadTask::new(&train, &eval, &tok, cfg.qa.decode())
}

/// Whether two paths name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The questions `eval` scores in `data`: the run's evaluation articles when `data` is
/// the run's own file (said on stderr), else every question.
fn eval_questions(cfg: &TrainConfig, data: &Path) -> Result<SquadFile> {
    let file = read(data)?;
    if !cfg.data_dir().is_ok_and(|d| same_file(d, data)) {
        return Ok(file);
    }
    let (_, eval) = cfg.qa.split(file.articles.len())?;
    let picked = file.select(&eval)?;
    let shown: Vec<String> = eval.iter().map(usize::to_string).collect();
    eprintln!(
        "{} is the run's training file: scoring its evaluation articles ({}: {} questions)",
        data.display(),
        shown.join(","),
        picked.question_count()
    );
    Ok(picked)
}

/// Where `eval` writes what it computed for a QA run.
#[derive(Clone, Copy, Debug, Default)]
pub struct EvalOutputs<'a> {
    /// The official predictions file `{id: answer}` (v2.0: `""` for no answer).
    pub predictions: Option<&'a Path>,
    /// One JSON line per window: the question id, the model input (`input_ids`,
    /// `token_type_ids`), each token's character `offsets` in the context (`null` off the
    /// context) and the `start_logits` / `end_logits`, so another stack can be compared
    /// on exactly the same inputs (`scripts/check_hf_qa.py`).
    pub logits: Option<&'a Path>,
}

/// One JSON line per evaluation window (see [`EvalOutputs::logits`]).
fn logits_jsonl(task: &SquadTask, preds: &[f32]) -> String {
    let width = 2 * task.max_len();
    let mut text = String::new();
    for ((id, w), row) in task.eval_windows_with_ids().zip(preds.chunks(width)) {
        let n = w.encoded.ids.len();
        let line = serde_json::json!({
            "id": id,
            "input_ids": w.encoded.ids,
            "token_type_ids": w.encoded.type_ids,
            "offsets": w.context_offsets,
            "start_logits": &row[..n],
            "end_logits": &row[task.max_len()..task.max_len() + n],
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

/// Scores a saved QA run on `data` (see `eval_questions`), writing `out`.
pub fn eval_run(gpu: &Gpu, run_path: &Path, data: &Path, out: EvalOutputs) -> Result<Metrics> {
    let (run, cfg) = crate::tasks::train::read_run(run_path)?;
    let mut inputs = cfg.input_paths(run_path);
    inputs.push(("--data file", data));
    for (flag, p) in [("--predictions", out.predictions), ("--logits", out.logits)] {
        if let Some(p) = p {
            crate::tasks::run::refuse_overwriting_inputs(flag, p, &inputs)?;
        }
    }
    let eval = eval_questions(&cfg, data)?;
    let task = SquadTask::for_eval(&eval, &tokenizer(&cfg)?, cfg.qa.decode())?;
    let model = crate::tasks::train::load_model(gpu, &run, &cfg, &task)?;
    let preds = task.predictions(gpu, &model)?;
    if let Some(path) = out.logits {
        crate::runtime::io::write_atomic(path, logits_jsonl(&task, &preds).as_bytes())?;
    }
    let answers = task.answers(&preds)?;
    if let Some(path) = out.predictions {
        let json: serde_json::Map<String, serde_json::Value> = answers
            .iter()
            .map(|(id, a)| (id.clone(), serde_json::Value::String(a.clone())))
            .collect();
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        crate::runtime::io::write_atomic(path, format!("{text}\n").as_bytes())?;
    }
    Ok(task.score(&answers))
}
