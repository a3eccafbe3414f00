//! The model of a text task: the frozen encoder with its adapters plus a trainable linear
//! head on mean pooling.

use std::path::Path;

use rand::{SeedableRng, rngs::StdRng};

use crate::models::bert::{Batch, Bert};
use crate::models::common::AdaptedEncoder;
use crate::nn::modules::Linear;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::task::Model;

/// Encoder (frozen) with adapters, and a `Linear(hidden, outputs)` head on mean pooling.
pub struct Classifier {
    /// Encoder (frozen) with its adapters.
    pub bert: Bert,
    /// `Linear(hidden, labels)`, trainable.
    pub head: Linear,
    /// Number of outputs (1 for regression).
    pub labels: usize,
}

impl Classifier {
    /// Builds the model of `cfg` with `outputs` head outputs: head first (right after
    /// seeding), then the adapters.
    /// A size the device cannot hold is an error naming the flags that chose it.
    pub fn build(gpu: &Gpu, cfg: &TrainConfig, outputs: usize) -> Result<Self> {
        let mut bert = Bert::load(gpu, &cfg.model.model)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed());
        let head = Linear::init(gpu, bert.config.hidden_size, outputs, true, &mut rng)?;
        let a = &cfg.adapter;
        let d = a.layer_config().mask.d;
        match a.method {
            Method::Lora | Method::Capaboost => bert
                .add_lora(gpu, &a.targets.encoder()?, &a.layer_config(), &mut rng)
                .map_err(|e| naming_flags(e, format!("--r {} with --d {d}", a.r)))?,
            Method::CapaboostAdapter => bert
                .add_adapters(gpu, a.placement, a.adapter_width, &a.mask, &mut rng)
                .map_err(|e| {
                    naming_flags(
                        e,
                        format!("--adapter-width {} with --d {d}", a.adapter_width),
                    )
                })?,
            Method::HeadOnly => {}
        }
        bert.set_base_dtype(cfg.model.base_dtype)?;
        Ok(Self {
            bert,
            head,
            labels: outputs,
        })
    }

    /// Logits `[B, labels]` (no-grad when `g` is).
    pub fn forward(&self, g: &mut Graph, batch: &Batch) -> Result<Var> {
        let (last, _) = self.bert.forward(g, batch, false)?;
        let pooled = g.mean_pool(&last, &batch.mask)?;
        self.head.forward(g, &pooled)
    }

    /// Writes the head as `head.safetensors` + `head_config.json` with `label_names`.
    pub fn write_head(&self, dir: &Path, label_names: &[String]) -> Result<()> {
        let head_w = self.head.weight.to_vec()?;
        let head_b = self
            .head
            .bias
            .as_ref()
            .map(|b| b.to_vec())
            .transpose()?
            .unwrap_or_default();
        crate::tasks::export::write_head(
            dir,
            &head_w,
            &head_b,
            self.labels,
            self.bert.config.hidden_size,
            label_names,
            "mean",
        )
    }
}

impl Model for Classifier {
    fn params(&self) -> Vec<(String, Tensor)> {
        let mut p = self.bert.params();
        for (n, t) in self.head.params() {
            p.push((format!("head.{n}"), t));
        }
        p
    }

    fn used_params(&self) -> Result<usize> {
        Ok(self.bert.used_params()? + self.head.weight.numel() + self.labels)
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

/// An adapter too large for the device (or for the kernels' u32 indexing) as an error that
/// names the flags which sized it.
pub(crate) fn naming_flags(e: Error, flags: String) -> Error {
    match e {
        Error::TooLarge { .. } | Error::InvalidArgument(_) | Error::Shape(_) => {
            Error::InvalidArgument(format!("{flags}: the adapters do not fit: {e}"))
        }
        e => e,
    }
}
