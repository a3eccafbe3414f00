//! Extractive QA as a [`Task`]: every window of every training question is an example
//! (windows without the answer point at `[CLS]`, as in the reference recipe); the loss is
//! the mean of the start and end cross-entropies (`BertForQuestionAnswering`); evaluation
//! decodes each question's best span over its windows and scores it with the official
//! metrics.

use std::path::Path;

use crate::models::bert::{Batch, Encoded};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Indices;
use crate::tasks::config::TrainConfig;
use crate::tasks::squad::data::SquadFile;
use crate::tasks::squad::metrics::{Rules, evaluate};
use crate::tasks::squad::model::SpanModel;
use crate::tasks::squad::postprocess::{Decode, best_span};
use crate::tasks::squad::windows::{QaTokenizer, Window};
use crate::tasks::task::{HfHead, Metrics, Task};

/// One evaluation question: its id, context, reference answers and windows.
struct EvalQuestion {
    id: String,
    context: String,
    references: Vec<String>,
    windows: Vec<Window>,
}

/// SQuAD-format training and evaluation data, windowed.
pub struct SquadTask {
    train: Vec<Window>,
    eval: Vec<EvalQuestion>,
    decode: Decode,
    rules: Rules,
    max_len: usize,
    eval_batch: usize,
}

/// A training batch: padded windows and their answer start and end tokens.
pub struct SpanBatch {
    input: Batch,
    starts: Indices,
    ends: Indices,
}

impl SquadTask {
    /// Windows every question of `train` and `eval` with `tok`. Under v2.0 rules (a file
    /// with unanswerable questions) the empty answer may be predicted. Training needs at
    /// least one answerable question; questions whose answer no window holds (e.g. a
    /// context with no tokens) train on `[CLS]`, with a warning naming the first.
    pub fn new(
        train: &SquadFile,
        eval: &SquadFile,
        tok: &QaTokenizer,
        decode: Decode,
    ) -> Result<Self> {
        let mut task = Self::for_eval(eval, tok, decode)?;
        let mut lost = Vec::new();
        for (p, q) in train.questions() {
            let w = tok.windows(q, &p.context)?;
            if !q.answers.is_empty() && w.iter().all(|w| w.target == (0, 0)) {
                lost.push(q.id.as_str());
            }
            task.train.extend(w);
        }
        if task.train.iter().all(|w| w.target == (0, 0)) {
            return Err(Error::InvalidArgument(format!(
                "none of the {} training questions has an answer inside a window: nothing \
                 to learn from",
                train.question_count()
            )));
        }
        if let Some(first) = lost.first() {
            eprintln!(
                "warning: {} training question(s) have an answer no window holds (first: \
                 id {first}); they train on [CLS] as the reference recipe does",
                lost.len()
            );
        }
        if train.questions().any(|(_, q)| q.is_impossible) {
            task.allow_v2();
        }
        Ok(task)
    }

    /// The task with evaluation questions only (scoring a saved run); `eval` may be empty
    /// for a task used only to build and export a model.
    pub fn for_eval(eval: &SquadFile, tok: &QaTokenizer, decode: Decode) -> Result<Self> {
        let eval = eval
            .questions()
            .map(|(p, q)| {
                Ok(EvalQuestion {
                    id: q.id.clone(),
                    context: p.context.clone(),
                    references: q.answers.iter().map(|a| a.text.clone()).collect(),
                    windows: tok.windows(q, &p.context)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut task = Self::without_data(tok.max_len(), decode);
        task.eval = eval;
        if task.eval.iter().any(|q| q.references.is_empty()) {
            task.allow_v2();
        }
        Ok(task)
    }

    /// The task without data: enough to build its model and export its head.
    pub fn without_data(max_len: usize, decode: Decode) -> Self {
        Self {
            train: Vec::new(),
            eval: Vec::new(),
            decode,
            rules: Rules::V1,
            max_len,
            eval_batch: 32,
        }
    }

    /// SQuAD v2.0 rules: the empty answer may win and is scored as v2 does.
    fn allow_v2(&mut self) {
        self.decode.allow_empty = true;
        self.rules = Rules::V2;
    }

    /// The evaluation windows in order (question by question).
    fn eval_windows(&self) -> impl Iterator<Item = &Window> {
        self.eval.iter().flat_map(|q| q.windows.iter())
    }

    /// Every evaluation window with its question's id, in the order of
    /// [`Task::predictions`]' rows.
    pub fn eval_windows_with_ids(&self) -> impl Iterator<Item = (&str, &Window)> {
        self.eval
            .iter()
            .flat_map(|q| q.windows.iter().map(move |w| (q.id.as_str(), w)))
    }

    /// The window length: each row of [`Task::predictions`] is `2 * max_len` values.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Exact match and F1 of [`SquadTask::answers`]' output against the references.
    pub fn score(&self, answers: &[(String, String)]) -> Metrics {
        let items = self.eval.iter().zip(answers).map(|(q, (_, a))| {
            let refs: Vec<&str> = q.references.iter().map(String::as_str).collect();
            (Some(a.as_str()), refs)
        });
        let (em, f1) = evaluate(items, self.rules);
        vec![("exact_match", em), ("f1", f1)]
    }

    /// Each evaluation question's id and predicted answer, from [`Task::predictions`].
    pub fn answers(&self, predictions: &[f32]) -> Result<Vec<(String, String)>> {
        let width = 2 * self.max_len;
        let total = self.eval_windows().count();
        if predictions.len() != total * width {
            return Err(Error::shape(format!(
                "{} prediction values for {total} windows of {width}",
                predictions.len()
            )));
        }
        let mut rows = predictions.chunks(width);
        let mut out = Vec::with_capacity(self.eval.len());
        for q in &self.eval {
            let logits: Vec<(Vec<f32>, Vec<f32>)> = q
                .windows
                .iter()
                .zip(rows.by_ref())
                .map(|(w, r)| {
                    let n = w.encoded.ids.len();
                    (r[..n].to_vec(), r[self.max_len..self.max_len + n].to_vec())
                })
                .collect();
            let span = best_span(&q.context, &q.windows, &logits, self.decode);
            out.push((q.id.clone(), span.text));
        }
        Ok(out)
    }
}

fn batch_of(gpu: &Gpu, windows: &[&Window], vocab: usize) -> Result<Batch> {
    let items: Vec<Encoded> = windows.iter().map(|w| w.encoded.clone()).collect();
    Batch::new(gpu, &items, vocab)
}

impl Task for SquadTask {
    type Model = SpanModel;
    type Batch = SpanBatch;

    fn name(&self) -> &str {
        "squad"
    }

    fn build_model(&self, gpu: &Gpu, cfg: &TrainConfig) -> Result<SpanModel> {
        SpanModel::build(gpu, cfg)
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|w| w.encoded.ids.len()).collect()
    }

    fn eval_len(&self) -> usize {
        self.eval_windows().count()
    }

    fn make_batch(&self, gpu: &Gpu, model: &SpanModel, idx: &[usize]) -> Result<SpanBatch> {
        let picked: Vec<&Window> = idx.iter().map(|&i| &self.train[i]).collect();
        let input = batch_of(gpu, &picked, model.bert.config.vocab_size)?;
        let starts: Vec<u32> = picked.iter().map(|w| w.target.0 as u32).collect();
        let ends: Vec<u32> = picked.iter().map(|w| w.target.1 as u32).collect();
        Ok(SpanBatch {
            input,
            starts: Indices::from_slice(gpu, &starts, &[idx.len()])?,
            ends: Indices::from_slice(gpu, &ends, &[idx.len()])?,
        })
    }

    fn loss(&self, g: &mut Graph, model: &SpanModel, batch: &SpanBatch) -> Result<Var> {
        let (start, end) = model.forward(g, &batch.input)?;
        let ls = g.cross_entropy(&start, &batch.starts)?;
        let le = g.cross_entropy(&end, &batch.ends)?;
        let sum = g.add(&ls, &le)?;
        g.scale(&sum, 0.5)
    }

    /// Per evaluation window, `2 * max_len` values: the start scores then the end scores,
    /// each padded with `f32::MIN` past the window's length.
    fn predictions(&self, gpu: &Gpu, model: &SpanModel) -> Result<Vec<f32>> {
        let windows: Vec<&Window> = self.eval_windows().collect();
        let width = 2 * self.max_len;
        let mut out = vec![f32::MIN; windows.len() * width];
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&i| windows[i].encoded.ids.len());
        for chunk in order.chunks(self.eval_batch) {
            let picked: Vec<&Window> = chunk.iter().map(|&i| windows[i]).collect();
            let batch = batch_of(gpu, &picked, model.bert.config.vocab_size)?;
            let mut g = Graph::no_grad(gpu);
            let (start, end) = model.forward(&mut g, &batch)?;
            g.submit()?;
            let (s, e) = (start.value().to_vec()?, end.value().to_vec()?);
            let seq = batch.seq;
            for (k, &i) in chunk.iter().enumerate() {
                let n = windows[i].encoded.ids.len();
                let row = &mut out[i * width..(i + 1) * width];
                row[..n].copy_from_slice(&s[k * seq..k * seq + n]);
                row[self.max_len..self.max_len + n].copy_from_slice(&e[k * seq..k * seq + n]);
            }
        }
        Ok(out)
    }

    fn metrics(&self, predictions: &[f32]) -> Result<Metrics> {
        Ok(self.score(&self.answers(predictions)?))
    }

    fn export_head(&self, model: &SpanModel, dir: &Path) -> Result<()> {
        let (w, b) = model.qa_outputs()?;
        let labels = ["start".to_string(), "end".to_string()];
        let hidden = model.bert.config.hidden_size;
        crate::tasks::export::write_head(dir, &w, &b, 2, hidden, &labels, "token")
    }

    fn hf_head(&self, model: &SpanModel) -> Result<Option<HfHead>> {
        let (w, b) = model.qa_outputs()?;
        let hidden = model.bert.config.hidden_size;
        Ok(Some(HfHead {
            architecture: "BertForQuestionAnswering",
            peft_task_type: Some("QUESTION_ANS"),
            module: "qa_outputs",
            encoder_prefix: "bert.",
            tensors: vec![
                ("qa_outputs.weight".into(), vec![2, hidden], w),
                ("qa_outputs.bias".into(), vec![2], b),
            ],
            labels: Vec::new(),
        }))
    }
}
