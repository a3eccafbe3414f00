//! A BERT-architecture encoder (HF layout) loaded from `config.json`, `model.safetensors`
//! and `tokenizer.json`, run in WGSL through the autograd graph, with LoRA / CapaBoost on any
//! of its linear layers or bottleneck adapters after attention and/or the feed-forward.
//!
//! One file per concern: [`config`](BertConfig) (`config.json`, [`Target`]), the layer
//! parts ([`Proj`], [`Norm`], [`BertLayer`]), the tokenizer and batches ([`BertTokenizer`],
//! [`Batch`]), checkpoint loading ([`Bert::load`]); the encoder itself is here.

mod config;
mod layer;
mod load;
mod tokenizer;

pub use config::{BertConfig, Target};
pub use layer::{BertLayer, Norm, Proj};
pub use tokenizer::{Batch, BertTokenizer, Encoded};

use std::path::PathBuf;

use rand::Rng;

use crate::kernels::masks::MaskConfig;
use crate::models::common::{
    AdaptedEncoder, adapt_projections, adapter_params, add_bottlenecks, projection_tensors,
    self_attention,
};
use crate::nn::modules::{CapaBoostConfig, NamedMask, NamedTensor, Placement};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;

/// A BERT encoder on the GPU.
pub struct Bert {
    /// Its config.
    pub config: BertConfig,
    /// Folder it was loaded from.
    pub dir: PathBuf,
    /// `[V, H]`.
    pub word: Tensor,
    /// `[P, H]`.
    pub position: Tensor,
    /// `[T, H]`.
    pub token_type: Tensor,
    /// Embedding layer norm.
    pub emb_norm: Norm,
    /// Encoder layers.
    pub layers: Vec<BertLayer>,
}

impl Bert {
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

    /// Adds bottleneck adapters of width `m` with `masks.d` branches in the given
    /// placement; module ids are `1000 + 2 * layer` (+1 for the attention adapter).
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

    /// Every adapter's masks as 0/1 bytes, named after the module they belong to:
    /// `encoder.layer.{i}.{module}.mask_A.{branch}` (`[r, in]`, masks `lora_A`) and
    /// `.mask_B.{branch}` (`[out, r]`, masks `lora_B`) for LoRA / CapaBoost projections;
    /// `encoder.layer.{i}.{attention,output}_adapter.mask_A.{branch}` (`[m, hidden]`, masks
    /// `down.weight`) and `.mask_B.{branch}` (`[hidden, m]`, masks `up.weight`) for
    /// bottleneck adapters. Reads the masks back.
    pub fn masks(&self) -> Result<Vec<NamedMask>> {
        fn push(
            out: &mut Vec<NamedMask>,
            prefix: &str,
            m: &crate::kernels::capaboost::LayerMasks,
        ) -> Result<()> {
            let (ma, mb) = m.to_u8()?;
            for (factor, bits, masks) in [("A", &m.a, ma), ("B", &m.b, mb)] {
                for (i, v) in masks.into_iter().enumerate() {
                    let name = format!("{prefix}.mask_{factor}.{i}");
                    out.push((name, vec![bits.rows, bits.cols], v));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (k, p) in layer.proj.iter().enumerate() {
                if let Proj::Adapted(l) = p {
                    let prefix = format!("encoder.layer.{i}.{}", Target::ALL[k].module());
                    push(&mut out, &prefix, &l.masks)?;
                }
            }
            for (name, a) in [
                ("attention_adapter", &layer.attn_adapter),
                ("output_adapter", &layer.ffn_adapter),
            ] {
                if let Some(a) = a {
                    push(&mut out, &format!("encoder.layer.{i}.{name}"), &a.masks)?;
                }
            }
        }
        Ok(out)
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

    /// Last hidden state `[B, S, H]`, and every layer's output when `keep_hidden`.
    pub fn forward(
        &self,
        g: &mut Graph,
        batch: &Batch,
        keep_hidden: bool,
    ) -> Result<(Var, Vec<Var>)> {
        let (b, s) = (batch.batch, batch.seq);
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        if s > self.config.max_position_embeddings {
            return Err(Error::InvalidArgument(format!(
                "sequence of {s} tokens exceeds the model's {} positions",
                self.config.max_position_embeddings
            )));
        }
        let word = g.embedding(&self.word, &batch.ids)?;
        let pos = g.embedding(&self.position, &batch.positions)?;
        let typ = g.embedding(&self.token_type, &batch.type_ids)?;
        let x = g.add(&word, &pos)?;
        let (x, typ) = (g.reshape(&x, &[b * s, h])?, g.reshape(&typ, &[b * s, h])?);
        let eps = self.config.layer_norm_eps;
        let mut x = self.emb_norm.forward_add(g, (&x, &typ), eps)?;
        let mut hidden = Vec::new();
        if keep_hidden {
            hidden.push(x.clone());
        }
        for layer in &self.layers {
            let mask = Some(&batch.additive_mask);
            let mut attn = self_attention(g, &layer.proj, &x, (b, s, heads), mask)?;
            if let Some(a) = &layer.attn_adapter {
                attn = a.forward(g, &attn)?;
            }
            let attn = layer.attn_norm.forward_add(g, (&attn, &x), eps)?;
            let inter = layer.proj[4].forward(g, &attn)?;
            let inter = g.gelu(&inter)?;
            let mut out = layer.proj[5].forward(g, &inter)?;
            if let Some(a) = &layer.ffn_adapter {
                out = a.forward(g, &out)?;
            }
            x = layer.out_norm.forward_add(g, (&out, &attn), eps)?;
            if keep_hidden {
                hidden.push(x.clone());
            }
        }
        let x = g.reshape(&x, &[b, s, h])?;
        Ok((x, hidden))
    }
}

impl AdaptedEncoder for Bert {
    fn target_module(&self, t: Target) -> &'static str {
        t.module()
    }

    fn projections(&self) -> Vec<&[Proj; 6]> {
        self.layers.iter().map(|l| &l.proj).collect()
    }

    fn projections_mut(&mut self) -> Vec<&mut [Proj; 6]> {
        self.layers.iter_mut().map(|l| &mut l.proj).collect()
    }

    fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (name, t) in [
            ("word_embeddings.weight", &self.word),
            ("position_embeddings.weight", &self.position),
            ("token_type_embeddings.weight", &self.token_type),
            ("LayerNorm.weight", &self.emb_norm.gamma),
            ("LayerNorm.bias", &self.emb_norm.beta),
        ] {
            out.push((format!("embeddings.{name}"), t.clone()));
        }
        out.extend(projection_tensors(self)?);
        for (i, layer) in self.layers.iter().enumerate() {
            for (n, norm) in [
                ("attention.output.LayerNorm", &layer.attn_norm),
                ("output.LayerNorm", &layer.out_norm),
            ] {
                let name = format!("encoder.layer.{i}.{n}");
                out.push((format!("{name}.weight"), norm.gamma.clone()));
                out.push((format!("{name}.bias"), norm.beta.clone()));
            }
        }
        Ok(out)
    }

    fn checkpoint_prefix(&self) -> &'static str {
        "bert."
    }

    fn head_prefix(&self) -> &'static str {
        "cls."
    }
}

/// Where the CLI looks for a model when `--model` is not given:
/// `$CAPABOOST_CACHE_DIR/all-MiniLM-L6-v2` (default `~/.cache/capaboost`), as
/// `scripts/fetch-minilm.sh` fills it.
pub fn default_model_dir() -> PathBuf {
    let cache = std::env::var_os("CAPABOOST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|p| PathBuf::from(p).join("capaboost")))
        .or_else(|| std::env::var_os("HOME").map(|p| PathBuf::from(p).join(".cache/capaboost")))
        .unwrap_or_else(|| PathBuf::from(".cache/capaboost"));
    cache.join("all-MiniLM-L6-v2")
}
