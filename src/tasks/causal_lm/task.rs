//! Causal language modelling as a [`Task`]: each training batch packs its examples into one
//! sequence (each at positions from 0, attending only to itself), the loss is the mean
//! cross-entropy of the learned tokens (the response, or the assistant turns), computed
//! only on the rows that predict them. Evaluation: loss and perplexity of the learned
//! tokens, the share of examples whose every learned token is the argmax after the true
//! prefix (what greedy decoding would write), and the first learned token's accuracy.

use std::path::Path;

use crate::models::common::AdaptedEncoder;
use crate::models::llama::Llama;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::Gguf;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};
use crate::tasks::causal_lm::data::LmSequence;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::task::{Metrics, Model, NamedMask, Task};

/// The decoder with its adapters (the only trainable tensors).
pub struct LmModel {
    /// The decoder.
    pub llama: Llama,
}

impl LmModel {
    /// The model of `cfg`: the GGUF base with LoRA / CapaBoost on `--targets`.
    pub fn build(gpu: &Gpu, cfg: &TrainConfig) -> Result<Self> {
        let g = Gguf::open(&cfg.model.model)?;
        let mut llama = Llama::load(gpu, &g)?;
        let a = &cfg.adapter;
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(cfg.seed());
        llama.add_adapters(gpu, &a.targets.decoder()?, &a.layer_config(), &mut rng)?;
        Ok(Self { llama })
    }
}

impl Model for LmModel {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.llama.adapter_params()
    }

    fn used_params(&self) -> Result<usize> {
        self.llama.adapter_used_params()
    }

    fn encoder(&self) -> Option<&dyn AdaptedEncoder> {
        None
    }

    fn encoder_mut(&mut self) -> Option<&mut dyn AdaptedEncoder> {
        None
    }

    fn masks(&self) -> Result<Vec<NamedMask>> {
        self.llama.adapter_masks()
    }
}

/// Training and evaluation sequences.
pub struct CausalLmTask {
    train: Vec<LmSequence>,
    eval: Vec<LmSequence>,
    /// Tokens per evaluation pass (examples are packed up to it).
    eval_tokens: usize,
}

/// A packed training batch.
pub struct LmBatch {
    ids: Vec<u32>,
    lengths: Vec<usize>,
    /// Rows of the packed sequence that predict a learned token.
    rows: Vec<u32>,
    /// The learned tokens, one per row.
    targets: Indices,
}

/// Packs `seqs` into one sequence: ids, lengths, the rows predicting learned tokens and
/// those tokens.
fn pack(seqs: &[&LmSequence]) -> (Vec<u32>, Vec<usize>, Vec<u32>, Vec<u32>) {
    let (mut ids, mut lengths, mut rows, mut targets) = (vec![], vec![], vec![], vec![]);
    for s in seqs {
        let start = ids.len();
        for i in s.targets() {
            rows.push((start + i - 1) as u32);
            targets.push(s.ids[i]);
        }
        ids.extend_from_slice(&s.ids);
        lengths.push(s.ids.len());
    }
    (ids, lengths, rows, targets)
}

impl CausalLmTask {
    /// The task of encoded training and evaluation sequences.
    pub fn new(train: Vec<LmSequence>, eval: Vec<LmSequence>) -> Self {
        Self {
            train,
            eval,
            eval_tokens: 256,
        }
    }

    /// Logits `[rows, vocab]` of the rows of the packed `ids` that predict learned tokens.
    fn logits(
        g: &mut Graph,
        model: &LmModel,
        (ids, lengths, rows): (&[u32], &[usize], &[u32]),
    ) -> Result<Var> {
        let x = model.llama.embed(g, ids)?;
        let h = model.llama.packed_blocks(g, &x, lengths)?;
        let picked = g.select_rows(&h, rows)?;
        model.llama.logits(g, &picked)
    }

    /// Evaluation examples in packs of about `eval_tokens` tokens (at least one each).
    fn eval_packs(&self) -> Vec<std::ops::Range<usize>> {
        let mut packs = Vec::new();
        let (mut start, mut tokens) = (0, 0);
        for (i, s) in self.eval.iter().enumerate() {
            if i > start && tokens + s.ids.len() > self.eval_tokens {
                packs.push(start..i);
                (start, tokens) = (i, 0);
            }
            tokens += s.ids.len();
        }
        if start < self.eval.len() {
            packs.push(start..self.eval.len());
        }
        packs
    }
}

/// Per learned token: its negative log-likelihood, whether it is the argmax.
fn score_row(row: &[f32], target: usize) -> (f64, bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    let nll = max + sum.ln() - row[target] as f64;
    (nll, crate::models::llama::argmax(row) == target)
}

/// Values per evaluation example in [`Task::predictions`].
const PRED_WIDTH: usize = 4;

impl Task for CausalLmTask {
    type Model = LmModel;
    type Batch = LmBatch;

    fn name(&self) -> &str {
        "causal-lm"
    }

    fn build_model(&self, gpu: &Gpu, cfg: &TrainConfig) -> Result<LmModel> {
        if matches!(
            cfg.adapter.method,
            Method::HeadOnly | Method::CapaboostAdapter
        ) {
            return Err(Error::InvalidArgument(format!(
                "--task causal-lm trains lora or capaboost adapters, not --method {}",
                cfg.adapter.method.name()
            )));
        }
        LmModel::build(gpu, cfg)
    }

    fn train_lengths(&self) -> Vec<usize> {
        self.train.iter().map(|s| s.ids.len()).collect()
    }

    fn eval_len(&self) -> usize {
        self.eval.len()
    }

    fn make_batch(&self, gpu: &Gpu, _model: &LmModel, idx: &[usize]) -> Result<LmBatch> {
        let seqs: Vec<&LmSequence> = idx.iter().map(|&i| &self.train[i]).collect();
        let (ids, lengths, rows, targets) = pack(&seqs);
        let n = targets.len();
        Ok(LmBatch {
            ids,
            lengths,
            rows,
            targets: Indices::from_slice(gpu, &targets, &[n])?,
        })
    }

    fn loss(&self, g: &mut Graph, model: &LmModel, b: &LmBatch) -> Result<Var> {
        let logits = Self::logits(g, model, (&b.ids, &b.lengths, &b.rows))?;
        g.cross_entropy(&logits, &b.targets)
    }

    /// Per evaluation example: the summed NLL of its learned tokens, their count, whether
    /// all are the argmax, whether the first is.
    fn predictions(&self, gpu: &Gpu, model: &LmModel) -> Result<Vec<f32>> {
        let vocab = model.llama.config.vocab;
        let mut out = Vec::with_capacity(self.eval.len() * PRED_WIDTH);
        for range in self.eval_packs() {
            let seqs: Vec<&LmSequence> = self.eval[range].iter().collect();
            let (ids, lengths, rows, targets) = pack(&seqs);
            let mut g = Graph::no_grad(gpu);
            let y = Self::logits(&mut g, model, (&ids, &lengths, &rows))?;
            g.submit()?;
            let logits = y.value().to_vec()?;
            let mut k = 0;
            for s in seqs {
                let (mut nll, mut all, mut first, mut n) = (0.0, true, None, 0);
                for _ in s.targets() {
                    let t = targets[k] as usize;
                    let (l, hit) = score_row(&logits[k * vocab..(k + 1) * vocab], t);
                    (nll, all, n, k) = (nll + l, all && hit, n + 1, k + 1);
                    first.get_or_insert(hit);
                }
                let first = first.unwrap_or(false);
                out.extend([nll as f32, n as f32, all as u8 as f32, first as u8 as f32]);
            }
        }
        Ok(out)
    }

    fn metrics(&self, p: &[f32]) -> Result<Metrics> {
        if p.len() != self.eval.len() * PRED_WIDTH || self.eval.is_empty() {
            return Err(Error::shape(format!(
                "{} prediction values for {} evaluation examples",
                p.len(),
                self.eval.len()
            )));
        }
        let rows = p.chunks_exact(PRED_WIDTH);
        let (nll, tokens): (f64, f64) = rows
            .clone()
            .fold((0.0, 0.0), |(a, b), r| (a + r[0] as f64, b + r[1] as f64));
        let n = self.eval.len() as f64;
        let exact = rows.clone().map(|r| r[2] as f64).sum::<f64>() / n;
        let first = rows.map(|r| r[3] as f64).sum::<f64>() / n;
        let loss = nll / tokens.max(1.0);
        Ok(vec![
            ("loss", loss),
            ("perplexity", loss.exp()),
            ("exact_match", exact),
            ("first_token_accuracy", first),
        ])
    }

    fn export_head(&self, _model: &LmModel, _dir: &Path) -> Result<()> {
        Ok(())
    }

    fn example_ids(&self, idx: &[usize]) -> Vec<u64> {
        idx.iter().map(|&i| self.train[i].line).collect()
    }
}
