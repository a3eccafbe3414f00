//! The image classifier: the frozen ViT / DINOv2 encoder with its adapters and a
//! trainable linear head on the CLS token or the mean of the patch tokens.

use rand::{SeedableRng, rngs::StdRng};

use crate::models::common::AdaptedEncoder;
use crate::models::vit::{PixelBatch, Vit};
use crate::nn::modules::Linear;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::classifier::naming_flags;
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::image::config::Pooling;
use crate::tasks::task::Model;

/// Encoder (frozen) with adapters, and `Linear(hidden, classes)` on the pooled tokens.
pub struct ImageModel {
    /// Encoder with its adapters.
    pub vit: Vit,
    /// `Linear(hidden, classes)`, trainable.
    pub head: Linear,
    /// What the head reads.
    pub pooling: Pooling,
}

impl ImageModel {
    /// Builds the model of `cfg` with `classes` outputs: head first (right after seeding),
    /// then the adapters, as the text classifier does.
    pub fn build(gpu: &Gpu, cfg: &TrainConfig, classes: usize) -> Result<Self> {
        let mut vit = Vit::load(gpu, &cfg.model.model)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed());
        let head = Linear::init(gpu, vit.config.hidden_size, classes, true, &mut rng)?;
        let a = &cfg.adapter;
        let d = a.layer_config().mask.d;
        match a.method {
            Method::Lora | Method::Capaboost => vit
                .add_lora(gpu, &a.targets.encoder()?, &a.layer_config(), &mut rng)
                .map_err(|e| naming_flags(e, format!("--r {} with --d {d}", a.r)))?,
            Method::CapaboostAdapter => vit
                .add_adapters(gpu, a.placement, a.adapter_width, &a.mask, &mut rng)
                .map_err(|e| {
                    let flags = format!("--adapter-width {} with --d {d}", a.adapter_width);
                    naming_flags(e, flags)
                })?,
            Method::HeadOnly => {}
        }
        vit.set_base_dtype(cfg.model.base_dtype)?;
        Ok(Self {
            vit,
            head,
            pooling: cfg.image.pooling,
        })
    }

    /// Logits `[B, classes]`.
    pub fn forward(&self, g: &mut Graph, batch: &PixelBatch) -> Result<Var> {
        let last = self.vit.forward(g, batch)?;
        let mask = match self.pooling {
            Pooling::Cls => &batch.cls_mask,
            Pooling::Mean => &batch.patch_mask,
        };
        let pooled = g.mean_pool(&last, mask)?;
        self.head.forward(g, &pooled)
    }

    /// The head's weight `[classes, hidden]` and bias `[classes]`.
    pub fn head_values(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let w = self.head.weight.to_vec()?;
        let b = match &self.head.bias {
            Some(b) => b.to_vec()?,
            None => vec![0.0; self.head.out_features()],
        };
        Ok((w, b))
    }
}

impl Model for ImageModel {
    fn params(&self) -> Vec<(String, Tensor)> {
        let mut p = self.vit.params();
        for (n, t) in self.head.params() {
            p.push((format!("head.{n}"), t));
        }
        p
    }

    fn used_params(&self) -> Result<usize> {
        let head = self.head.weight.numel() + self.head.out_features();
        Ok(self.vit.used_params()? + head)
    }

    fn encoder(&self) -> Option<&dyn AdaptedEncoder> {
        Some(&self.vit)
    }

    fn encoder_mut(&mut self) -> Option<&mut dyn AdaptedEncoder> {
        Some(&mut self.vit)
    }

    fn masks(&self) -> Result<Vec<crate::tasks::task::NamedMask>> {
        self.vit.masks()
    }
}
