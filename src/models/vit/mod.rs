//! A vision transformer encoder for the transformers `ViTModel` and `Dinov2Model`
//! checkpoint layouts ([`VitLayout`]): patch embedding as one GEMM over unfolded patches
//! ([`PixelBatch`]), CLS token, position embeddings resampled bicubically to the input's
//! grid as transformers does ([`position::interpolate`]), pre-norm blocks with GELU, layer
//! scale (Dinov2), final layer norm. Adapters as on BERT: LoRA / CapaBoost on any of the six
//! projections, or bottleneck adapters after the attention and/or the MLP.

mod batch;
mod config;
mod load;
pub mod position;

pub use batch::PixelBatch;
pub use config::{VitConfig, VitLayout};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;

use crate::kernels::masks::MaskConfig;
use crate::models::bert::Target;
use crate::models::common::{
    AdaptedEncoder, Norm, Proj, adapt_projections, adapter_masks, adapter_params, add_bottlenecks,
    projection_tensors, self_attention,
};
use crate::nn::modules::{
    CapaBoostAdapter, CapaBoostConfig, Linear, NamedMask, NamedTensor, Placement,
};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;

/// One pre-norm encoder layer.
#[derive(Clone, Debug)]
pub struct VitLayer {
    /// Projections in [`Target::ALL`] order (the MLP's fc1 / fc2 are `intermediate` /
    /// `output`).
    pub proj: [Proj; 6],
    /// Norm before attention (`layernorm_before` / `norm1`).
    pub norm1: Norm,
    /// Norm before the MLP (`layernorm_after` / `norm2`).
    pub norm2: Norm,
    /// Dinov2's `layer_scale1.lambda1` and `layer_scale2.lambda1`, each `[1, H]`.
    pub layer_scale: Option<[Tensor; 2]>,
    /// Bottleneck adapter after the attention output (Houlsby).
    pub attn_adapter: Option<CapaBoostAdapter>,
    /// Bottleneck adapter after the MLP output (Pfeiffer and Houlsby).
    pub ffn_adapter: Option<CapaBoostAdapter>,
}

/// A ViT / DINOv2 encoder on the GPU.
pub struct Vit {
    /// Its config.
    pub config: VitConfig,
    /// Folder it was loaded from.
    pub dir: PathBuf,
    /// The patch Conv2d as a linear layer `[H, C * p * p]`.
    pub patch: Linear,
    /// `embeddings.cls_token`, `[H]` (host).
    pub cls: Vec<f32>,
    /// `embeddings.position_embeddings`, `[1 + grid^2, H]` (host).
    pub position: Vec<f32>,
    /// Encoder layers.
    pub layers: Vec<VitLayer>,
    /// The final `layernorm`.
    pub final_norm: Norm,
    /// `[1 + n^2, H]` tables per input grid n: the (resampled) positions, with row 0 the
    /// CLS token + its position - the patch bias (the CLS row of the patch GEMM is zero).
    tables: Mutex<HashMap<usize, Tensor>>,
}

impl Vit {
    /// The token table for an input grid of side `n` (computed once per n).
    fn token_table(&self, gpu: &Gpu, n: usize) -> Result<Tensor> {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(&n) {
            return Ok(t.clone());
        }
        let h = self.config.hidden_size;
        let g = self.config.grid();
        let grid = position::interpolate(&self.position[h..], (g, g), h, (n, n));
        let bias = match &self.patch.bias {
            Some(b) => b.to_vec()?,
            None => vec![0.0; h],
        };
        let mut table = Vec::with_capacity((1 + n * n) * h);
        table.extend((0..h).map(|c| self.cls[c] + self.position[c] - bias[c]));
        table.extend(grid);
        let t = Tensor::from_slice(gpu, &table, &[1 + n * n, h])?;
        tables.insert(n, t.clone());
        Ok(t)
    }

    /// `last_hidden_state` `[B, 1 + n^2, H]` (after the final layer norm).
    pub fn forward(&self, g: &mut Graph, batch: &PixelBatch) -> Result<Var> {
        let (b, s) = (batch.batch, batch.seq);
        let c = &self.config;
        let (h, heads, eps) = (c.hidden_size, c.num_attention_heads, c.layer_norm_eps);
        let cols = batch.patches.shape()[1];
        if cols != self.patch.in_features() {
            return Err(Error::shape(format!(
                "patches of {cols} values do not fit the model's {}x{}x{} patches",
                c.num_channels, c.patch_size, c.patch_size
            )));
        }
        let table = self.token_table(g.gpu(), batch.grid)?;
        let px = g.input(&batch.patches);
        let x = self.patch.forward(g, &px)?;
        let pos = g.embedding(&table, &batch.positions)?;
        let mut x = g.add(&x, &pos)?;
        for layer in &self.layers {
            let scale = |g: &mut Graph, y: &Var, k: usize| -> Result<Var> {
                match &layer.layer_scale {
                    Some(ls) => {
                        let row = g.embedding(&ls[k], &batch.zeros)?;
                        g.mul(y, &row)
                    }
                    None => Ok(y.clone()),
                }
            };
            let n1 = layer.norm1.forward(g, &x, eps)?;
            let mut attn = self_attention(g, &layer.proj, &n1, (b, s, heads), None)?;
            if let Some(a) = &layer.attn_adapter {
                attn = a.forward(g, &attn)?;
            }
            let attn = scale(g, &attn, 0)?;
            let x1 = g.add(&attn, &x)?;
            let n2 = layer.norm2.forward(g, &x1, eps)?;
            let inter = layer.proj[4].forward(g, &n2)?;
            let inter = g.gelu(&inter)?;
            let mut out = layer.proj[5].forward(g, &inter)?;
            if let Some(a) = &layer.ffn_adapter {
                out = a.forward(g, &out)?;
            }
            let out = scale(g, &out, 1)?;
            x = g.add(&out, &x1)?;
        }
        let x = self.final_norm.forward(g, &x, eps)?;
        g.reshape(&x, &[b, s, h])
    }

    /// Puts LoRA / CapaBoost on `targets` of every layer; module ids are `6 * layer + target`.
    pub fn add_lora(
        &mut self,
        gpu: &Gpu,
        targets: &[Target],
        config: &CapaBoostConfig,
        rng: &mut impl Rng,
    ) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            adapt_projections(gpu, &mut layer.proj, i, (targets, config), rng)?;
        }
        Ok(())
    }

    /// Bottleneck adapters of width `m` with `masks.d` branches in the given placement;
    /// module ids are `1000 + 2 * layer` (+1 for the attention adapter), as on BERT.
    pub fn add_adapters(
        &mut self,
        gpu: &Gpu,
        placement: Placement,
        m: usize,
        masks: &MaskConfig,
        rng: &mut impl Rng,
    ) -> Result<()> {
        let slots = self
            .layers
            .iter_mut()
            .map(|l| [&mut l.attn_adapter, &mut l.ffn_adapter])
            .collect();
        let sizes = (self.config.hidden_size, m);
        add_bottlenecks(gpu, slots, sizes, (placement, masks), rng)
    }

    /// Trainable tensors with their HF module names.
    pub fn params(&self) -> Vec<NamedTensor> {
        let slots = self
            .layers
            .iter()
            .map(|l| [&l.attn_adapter, &l.ffn_adapter])
            .collect();
        adapter_params(self, slots)
    }

    /// Every static mask of the adapters, named after the tensor it masks (see
    /// [`crate::models::common::adapter_masks`]); reads them back.
    pub fn masks(&self) -> Result<Vec<NamedMask>> {
        let slots = self
            .layers
            .iter()
            .map(|l| [&l.attn_adapter, &l.ffn_adapter])
            .collect();
        adapter_masks(self, slots)
    }

    /// Entries some mask lets through, over all adapters.
    pub fn used_params(&self) -> Result<usize> {
        let mut n = 0;
        for layer in &self.layers {
            for p in &layer.proj {
                if let Proj::Adapted(l) = p {
                    n += l.used_params()?;
                }
            }
            for a in [&layer.attn_adapter, &layer.ffn_adapter]
                .into_iter()
                .flatten()
            {
                n += a.used_params()?;
            }
        }
        Ok(n)
    }
}

impl AdaptedEncoder for Vit {
    fn target_module(&self, t: Target) -> &'static str {
        self.config.layout.module(t)
    }

    fn peft_target_module(&self, t: Target) -> &'static str {
        self.config.layout.peft_module(t)
    }

    fn peft_module_name(&self, layer: usize, k: usize) -> String {
        let layout = self.config.layout;
        format!(
            "{}.{}",
            layout.peft_layer(layer),
            layout.peft_module(Target::ALL[k])
        )
    }

    fn projections(&self) -> Vec<&[Proj; 6]> {
        self.layers.iter().map(|l| &l.proj).collect()
    }

    fn projections_mut(&mut self) -> Vec<&mut [Proj; 6]> {
        self.layers.iter_mut().map(|l| &mut l.proj).collect()
    }

    fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        projection_tensors(self)
    }

    fn checkpoint_prefix(&self) -> &'static str {
        match self.config.layout {
            VitLayout::Vit => "vit.",
            VitLayout::Dinov2 => "dinov2.",
        }
    }

    fn head_prefix(&self) -> &'static str {
        "classifier."
    }
}
