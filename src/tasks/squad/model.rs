//! The span model of extractive QA: the frozen encoder with its adapters and a span head,
//! transformers' `qa_outputs = Linear(hidden, 2)` (row 0 scores a token as the answer's
//! start, row 1 as its end). The head is kept as two rows of its own so each gives a
//! `[B, S]` score map directly; exported, they are stacked back into `qa_outputs`.

use rand::{SeedableRng, rngs::StdRng};

use crate::models::bert::{Batch, Bert};
use crate::models::common::AdaptedEncoder;
use crate::nn::modules::Linear;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::task::Model;

/// Encoder (frozen) with adapters, and the span head.
pub struct SpanModel {
    /// Encoder with its adapters.
    pub bert: Bert,
    /// Row 0 of `qa_outputs`: `Linear(hidden, 1)`, the start scores.
    pub start: Linear,
    /// Row 1 of `qa_outputs`: `Linear(hidden, 1)`, the end scores.
    pub end: Linear,
}

impl SpanModel {
    /// Builds the model of `cfg`: the head right after seeding (as the classifier does),
    /// then the adapters.
    pub fn build(gpu: &Gpu, cfg: &TrainConfig) -> Result<Self> {
        let mut bert = Bert::load(gpu, &cfg.model.model)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed());
        let h = bert.config.hidden_size;
        let start = Linear::init(gpu, h, 1, true, &mut rng)?;
        let end = Linear::init(gpu, h, 1, true, &mut rng)?;
        let a = &cfg.adapter;
        match a.method {
            Method::Lora | Method::Capaboost => {
                bert.add_lora(gpu, &a.targets.encoder()?, &a.layer_config(), &mut rng)?;
            }
            Method::CapaboostAdapter => {
                bert.add_adapters(gpu, a.placement, a.adapter_width, &a.mask, &mut rng)?;
            }
            Method::HeadOnly => {}
        }
        bert.set_base_dtype(cfg.model.base_dtype)?;
        Ok(Self { bert, start, end })
    }

    /// Start and end scores, each `[B, S]`; padded positions score `f32::MIN`, so no
    /// softmax over a row gives them weight.
    pub fn forward(&self, g: &mut Graph, batch: &Batch) -> Result<(Var, Var)> {
        let (last, _) = self.bert.forward(g, batch, false)?;
        let (b, s) = (batch.batch, batch.seq);
        let mask = g.input(&batch.additive_mask);
        let mut score = |head: &Linear| -> Result<Var> {
            let y = head.forward(g, &last)?;
            let y = g.reshape(&y, &[b, s])?;
            g.add(&y, &mask)
        };
        Ok((score(&self.start)?, score(&self.end)?))
    }

    /// `qa_outputs.weight [2, hidden]` and `qa_outputs.bias [2]` as transformers stores
    /// them.
    pub fn qa_outputs(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let mut w = self.start.weight.to_vec()?;
        w.extend(self.end.weight.to_vec()?);
        let bias = |l: &Linear| -> Result<f32> {
            Ok(l.bias
                .as_ref()
                .map(Tensor::to_vec)
                .transpose()?
                .map_or(0.0, |b| b[0]))
        };
        Ok((w, vec![bias(&self.start)?, bias(&self.end)?]))
    }
}

impl Model for SpanModel {
    fn params(&self) -> Vec<(String, Tensor)> {
        let mut p = self.bert.params();
        for (head, l) in [("start", &self.start), ("end", &self.end)] {
            for (n, t) in l.params() {
                p.push((format!("qa_outputs.{head}.{n}"), t));
            }
        }
        p
    }

    fn used_params(&self) -> Result<usize> {
        let head = 2 * (self.start.weight.numel() + 1);
        Ok(self.bert.used_params()? + head)
    }

    fn encoder(&self) -> Option<&dyn AdaptedEncoder> {
        Some(&self.bert)
    }

    fn encoder_mut(&mut self) -> Option<&mut dyn AdaptedEncoder> {
        Some(&mut self.bert)
    }

    fn masks(&self) -> Result<Vec<crate::tasks::task::NamedMask>> {
        self.bert.masks()
    }
}
