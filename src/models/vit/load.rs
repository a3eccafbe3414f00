//! Loading a `ViTModel` / `Dinov2Model` checkpoint folder (`config.json`,
//! `model.safetensors`); a task model's checkpoint (`vit.` / `dinov2.` prefix) works too.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::{Vit, VitConfig, VitLayer, VitLayout};
use crate::models::bert::Target;
use crate::models::common::{Proj, Weights};
use crate::nn::modules::Linear;
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::io::TensorFile;
use crate::runtime::tensor::Tensor;

impl Weights<'_> {
    fn vit_layer(&self, c: &VitConfig, i: usize) -> Result<VitLayer> {
        let (h, ffn) = (c.hidden_size, c.intermediate_size);
        let p = format!("encoder.layer.{i}.");
        let l = |t: Target| -> Result<Proj> {
            let (o, n) = match t {
                Target::Intermediate => (ffn, h),
                Target::Output => (h, ffn),
                _ => (h, h),
            };
            let bias = c.qkv_bias || !matches!(t, Target::Query | Target::Key | Target::Value);
            let name = format!("{p}{}", c.layout.module(t));
            Ok(Proj::Base(self.linear_with(&name, o, n, bias)?))
        };
        let [n1, n2] = c.layout.norms();
        let layer_scale = match c.layout {
            VitLayout::Vit => None,
            VitLayout::Dinov2 => Some([
                self.get(&format!("{p}layer_scale1.lambda1"), &[h])?
                    .reshape(&[1, h])?,
                self.get(&format!("{p}layer_scale2.lambda1"), &[h])?
                    .reshape(&[1, h])?,
            ]),
        };
        Ok(VitLayer {
            proj: [
                l(Target::Query)?,
                l(Target::Key)?,
                l(Target::Value)?,
                l(Target::AttentionOutput)?,
                l(Target::Intermediate)?,
                l(Target::Output)?,
            ],
            norm1: self.norm(&format!("{p}{n1}"), h)?,
            norm2: self.norm(&format!("{p}{n2}"), h)?,
            layer_scale,
            attn_adapter: None,
            ffn_adapter: None,
        })
    }
}

impl Vit {
    /// Loads a ViT / DINOv2 checkpoint folder; errors name the file or tensor.
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<Self> {
        let config = VitConfig::read(dir)?;
        let file = TensorFile::read(&dir.join("model.safetensors"))?;
        let task_prefix = format!("{}.", config.layout.model_type());
        let prefix = if file.contains(&format!("{task_prefix}embeddings.cls_token")) {
            task_prefix.as_str()
        } else {
            ""
        };
        let w = Weights {
            file: &file,
            prefix,
            gpu,
        };
        let (h, p, ch, g) = (
            config.hidden_size,
            config.patch_size,
            config.num_channels,
            config.grid(),
        );
        let conv = "embeddings.patch_embeddings.projection";
        let weight = w.get(&format!("{conv}.weight"), &[h, ch, p, p])?;
        let patch = Linear::new(
            weight.reshape(&[h, ch * p * p])?,
            Some(w.get(&format!("{conv}.bias"), &[h])?),
            false,
        )?;
        let cls = w.host("embeddings.cls_token", &[1, 1, h])?;
        let position = w.host("embeddings.position_embeddings", &[1, 1 + g * g, h])?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| w.vit_layer(&config, i))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = w.norm("layernorm", h)?;
        Ok(Self {
            config,
            dir: dir.to_path_buf(),
            patch,
            cls,
            position,
            layers,
            final_norm,
            tables: Mutex::new(HashMap::<usize, Tensor>::new()),
        })
    }
}
