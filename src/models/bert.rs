//! A BERT-architecture encoder (HF layout) loaded from `config.json`, `model.safetensors`
//! and `tokenizer.json`, run in WGSL through the autograd graph, with LoRA / CapaBoost on any
//! of its linear layers or bottleneck adapters after attention and/or the feed-forward.

use std::path::{Path, PathBuf};

use rand::Rng;
use serde::Deserialize;

use crate::kernels::masks::MaskConfig;
use crate::nn::modules::{
    Activation, CapaBoostAdapter, CapaBoostConfig, CapaBoostLinear, Linear, NamedTensor, Placement,
};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::TensorFile;
use crate::runtime::tensor::{Indices, Tensor};

/// The fields of `config.json` the encoder needs.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct BertConfig {
    /// Must be `bert` (or a BERT-architecture family member such as `roberta` is NOT
    /// accepted: its embeddings differ).
    #[serde(default)]
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width H.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Positions.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    /// Activation (`gelu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

/// A linear layer of an encoder layer that adapters can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "tasks", value(rename_all = "snake_case"))]
pub enum Target {
    /// `attention.self.query`.
    Query,
    /// `attention.self.key`.
    Key,
    /// `attention.self.value`.
    Value,
    /// `attention.output.dense`.
    AttentionOutput,
    /// `intermediate.dense`.
    Intermediate,
    /// `output.dense`.
    Output,
}

impl Target {
    /// Every target, in layer order.
    pub const ALL: [Target; 6] = [
        Target::Query,
        Target::Key,
        Target::Value,
        Target::AttentionOutput,
        Target::Intermediate,
        Target::Output,
    ];

    /// The flag name (`query`, `attention_output`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Target::Query => "query",
            Target::Key => "key",
            Target::Value => "value",
            Target::AttentionOutput => "attention_output",
            Target::Intermediate => "intermediate",
            Target::Output => "output",
        }
    }

    /// The HF module path inside `encoder.layer.{i}`.
    pub fn module(self) -> &'static str {
        match self {
            Target::Query => "attention.self.query",
            Target::Key => "attention.self.key",
            Target::Value => "attention.self.value",
            Target::AttentionOutput => "attention.output.dense",
            Target::Intermediate => "intermediate.dense",
            Target::Output => "output.dense",
        }
    }
}

/// A projection that is either the frozen base layer or the base plus an adapter.
#[derive(Clone, Debug)]
pub enum Proj {
    /// Frozen base layer.
    Base(Linear),
    /// Base layer with LoRA / CapaBoost (boxed: much larger than a bare layer).
    Adapted(Box<CapaBoostLinear>),
}

impl Proj {
    fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        match self {
            Proj::Base(l) => l.forward(g, x),
            Proj::Adapted(l) => l.forward(g, x),
        }
    }

    /// The base layer.
    pub fn base(&self) -> &Linear {
        match self {
            Proj::Base(l) => l,
            Proj::Adapted(l) => &l.base,
        }
    }
}

/// A layer norm's affine parameters (frozen).
#[derive(Clone, Debug)]
pub struct Norm {
    /// Scale.
    pub gamma: Tensor,
    /// Shift.
    pub beta: Tensor,
}

/// One encoder layer.
#[derive(Clone, Debug)]
pub struct BertLayer {
    /// Projections in [`Target::ALL`] order.
    pub proj: [Proj; 6],
    /// `attention.output.LayerNorm`.
    pub attn_norm: Norm,
    /// `output.LayerNorm`.
    pub out_norm: Norm,
    /// Bottleneck adapter after the attention output (Houlsby).
    pub attn_adapter: Option<CapaBoostAdapter>,
    /// Bottleneck adapter after the feed-forward output (Pfeiffer and Houlsby).
    pub ffn_adapter: Option<CapaBoostAdapter>,
}

/// A tokenized, padded batch on the GPU.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, S]` token ids.
    pub ids: Indices,
    /// `[B, S]` token type ids.
    pub type_ids: Indices,
    /// `[B, S]` position ids.
    pub positions: Indices,
    /// `[B, S]`: 1 for tokens, 0 for padding.
    pub mask: Tensor,
    /// `[B, S]`: 0 for tokens, `f32::MIN` for padding (added to attention scores).
    pub additive_mask: Tensor,
    /// Batch size.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
}

/// One tokenized input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids (with `[CLS]` and `[SEP]`).
    pub ids: Vec<u32>,
    /// Token type ids.
    pub type_ids: Vec<u32>,
}

impl Batch {
    /// Pads `items` to the longest one and uploads ids, types, positions and masks.
    pub fn new(gpu: &Gpu, items: &[Encoded], vocab: usize) -> Result<Self> {
        let b = items.len();
        let s = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if b == 0 || s == 0 {
            return Err(Error::InvalidArgument("an empty batch".into()));
        }
        let (mut ids, mut types, mut pos, mut mask, mut add) = (
            vec![0u32; b * s],
            vec![0u32; b * s],
            vec![0u32; b * s],
            vec![0f32; b * s],
            vec![f32::MIN; b * s],
        );
        for (i, e) in items.iter().enumerate() {
            crate::kernels::lookup::check_ids(&e.ids, vocab)?;
            for (j, (&id, &t)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                ids[i * s + j] = id;
                types[i * s + j] = t;
                mask[i * s + j] = 1.0;
                add[i * s + j] = 0.0;
            }
            for j in 0..s {
                pos[i * s + j] = j as u32;
            }
        }
        Ok(Self {
            ids: Indices::from_slice(gpu, &ids, &[b, s])?,
            type_ids: Indices::from_slice(gpu, &types, &[b, s])?,
            positions: Indices::from_slice(gpu, &pos, &[b, s])?,
            mask: Tensor::from_slice(gpu, &mask, &[b, s])?,
            additive_mask: Tensor::from_slice(gpu, &add, &[b, s])?,
            batch: b,
            seq: s,
        })
    }
}

/// The HF tokenizer of a model folder, with padding off (batches pad to their longest
/// input) and truncation at `max_len`.
pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
}

impl BertTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::io(
                &path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::InvalidArgument(format!("truncation: {e}")))?;
        Ok(Self { inner })
    }

    /// Tokenizes one sentence or a sentence pair.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        let input: tokenizers::EncodeInput = match b {
            Some(b) => (a, b).into(),
            None => a.into(),
        };
        let e = self
            .inner
            .encode(input, true)
            .map_err(|e| Error::InvalidArgument(format!("tokenizing {a:?}: {e}")))?;
        Ok(Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
        })
    }
}

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

/// Reads named tensors with the checks and messages a user needs.
struct Weights<'a> {
    file: &'a TensorFile,
    prefix: &'a str,
    gpu: &'a Gpu,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        let (s, data) = self.file.f32(&full)?;
        if s != shape {
            return Err(Error::shape(format!(
                "tensor '{full}' has shape {s:?}, the config implies {shape:?}"
            )));
        }
        Tensor::from_slice(self.gpu, &data, shape)
    }

    fn linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        Linear::new(
            self.get(&format!("{name}.weight"), &[out_f, in_f])?,
            Some(self.get(&format!("{name}.bias"), &[out_f])?),
            false,
        )
    }

    fn norm(&self, name: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[n])?,
            beta: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

impl Bert {
    /// Loads a BERT-architecture checkpoint folder (HF layout).
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let config: BertConfig = serde_json::from_str(&text).map_err(|e| Error::File {
            path: cfg_path.display().to_string(),
            message: format!("not a BERT config: {e}"),
        })?;
        if config.model_type != "bert" {
            return Err(Error::File {
                path: cfg_path.display().to_string(),
                message: format!(
                    "model_type {:?} is not supported: capaboost runs BERT-architecture \
                     encoders (model_type \"bert\")",
                    config.model_type
                ),
            });
        }
        if config.hidden_act != "gelu" {
            return Err(Error::File {
                path: cfg_path.display().to_string(),
                message: format!(
                    "hidden_act {:?} is not supported (gelu only)",
                    config.hidden_act
                ),
            });
        }
        let (h, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || !h.is_multiple_of(heads) {
            return Err(Error::File {
                path: cfg_path.display().to_string(),
                message: format!("hidden_size {h} is not a multiple of {heads} heads"),
            });
        }
        let file = TensorFile::read(&dir.join("model.safetensors"))?;
        let prefix = if file.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let w = Weights {
            file: &file,
            prefix,
            gpu,
        };
        let ffn = config.intermediate_size;
        let word = w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = w.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = w.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = w.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}.");
            let l = |t: Target| -> Result<Proj> {
                let (o, n) = match t {
                    Target::Intermediate => (ffn, h),
                    Target::Output => (h, ffn),
                    _ => (h, h),
                };
                Ok(Proj::Base(w.linear(&format!("{p}{}", t.module()), o, n)?))
            };
            layers.push(BertLayer {
                proj: [
                    l(Target::Query)?,
                    l(Target::Key)?,
                    l(Target::Value)?,
                    l(Target::AttentionOutput)?,
                    l(Target::Intermediate)?,
                    l(Target::Output)?,
                ],
                attn_norm: w.norm(&format!("{p}attention.output.LayerNorm"), h)?,
                out_norm: w.norm(&format!("{p}output.LayerNorm"), h)?,
                attn_adapter: None,
                ffn_adapter: None,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            config,
            dir: dir.to_path_buf(),
        })
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
            for (k, t) in Target::ALL.iter().enumerate() {
                if !targets.contains(t) {
                    continue;
                }
                let base = layer.proj[k].base().clone();
                let module = (6 * i + k) as u32;
                layer.proj[k] = Proj::Adapted(Box::new(CapaBoostLinear::new(
                    gpu,
                    base,
                    config.clone(),
                    module,
                    rng,
                )?));
            }
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
        let h = self.config.hidden_size;
        let act = Activation::Relu;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let module = 1000 + 2 * i as u32;
            layer.ffn_adapter = Some(CapaBoostAdapter::new(gpu, h, m, masks, module, act, rng)?);
            if placement == Placement::Houlsby {
                let attn = CapaBoostAdapter::new(gpu, h, m, masks, module + 1, act, rng)?;
                layer.attn_adapter = Some(attn);
            }
        }
        Ok(())
    }

    /// Trainable tensors with their HF module names.
    pub fn params(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (k, p) in layer.proj.iter().enumerate() {
                if let Proj::Adapted(l) = p {
                    for (n, t) in l.params() {
                        out.push((
                            format!("encoder.layer.{i}.{}.{n}", Target::ALL[k].module()),
                            t,
                        ));
                    }
                }
            }
            for (name, a) in [
                ("attention_adapter", &layer.attn_adapter),
                ("output_adapter", &layer.ffn_adapter),
            ] {
                if let Some(a) = a {
                    for (n, t) in a.params() {
                        out.push((format!("encoder.layer.{i}.{name}.{n}"), t));
                    }
                }
            }
        }
        out
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
        let dh = h / heads;
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
        let x = g.add(&x, &typ)?;
        let x = g.reshape(&x, &[b * s, h])?;
        let eps = self.config.layer_norm_eps;
        let mut x = self.norm(g, &x, &self.emb_norm, eps)?;
        let mut hidden = Vec::new();
        if keep_hidden {
            hidden.push(x.clone());
        }
        let scale = 1.0 / (dh as f32).sqrt();
        for layer in &self.layers {
            let split = |g: &mut Graph, t: &Var| -> Result<Var> {
                let t = g.reshape(t, &[b, s, heads, dh])?;
                let t = g.swap_middle(&t)?;
                g.reshape(&t, &[b * heads, s, dh])
            };
            let q = layer.proj[0].forward(g, &x)?;
            let k = layer.proj[1].forward(g, &x)?;
            let v = layer.proj[2].forward(g, &x)?;
            let (q, k, v) = (split(g, &q)?, split(g, &k)?, split(g, &v)?);
            let scores = g.matmul(&q, false, &k, true)?;
            let scores = g.scale(&scores, scale)?;
            let probs = g.softmax(&scores, Some(&batch.additive_mask), heads * s)?;
            let ctx = g.matmul(&probs, false, &v, false)?;
            let ctx = g.reshape(&ctx, &[b, heads, s, dh])?;
            let ctx = g.swap_middle(&ctx)?;
            let ctx = g.reshape(&ctx, &[b * s, h])?;
            let mut attn = layer.proj[3].forward(g, &ctx)?;
            if let Some(a) = &layer.attn_adapter {
                attn = a.forward(g, &attn)?;
            }
            let attn = g.add(&attn, &x)?;
            let attn = self.norm(g, &attn, &layer.attn_norm, eps)?;
            let inter = layer.proj[4].forward(g, &attn)?;
            let inter = g.gelu(&inter)?;
            let mut out = layer.proj[5].forward(g, &inter)?;
            if let Some(a) = &layer.ffn_adapter {
                out = a.forward(g, &out)?;
            }
            let out = g.add(&out, &attn)?;
            x = self.norm(g, &out, &layer.out_norm, eps)?;
            if keep_hidden {
                hidden.push(x.clone());
            }
        }
        let x = g.reshape(&x, &[b, s, h])?;
        Ok((x, hidden))
    }

    fn norm(&self, g: &mut Graph, x: &Var, n: &Norm, eps: f32) -> Result<Var> {
        let gamma = g.input(&n.gamma);
        let beta = g.input(&n.beta);
        g.layer_norm(x, &gamma, &beta, eps)
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
