//! The Llama decoder on the GPU tape: weights from a GGUF file, the frozen base kept in
//! its block format where the file quantizes it (Q4_0, Q4_1, Q8_0, through
//! `kernels::qgemm`) and f32 otherwise (F32, F16, and the CPU-only k-quants, decoded at
//! load). The embedding table is dequantized to f32 at load for the lookup kernel; a tied
//! head reads the same tensor through its quantized blocks.

use super::LlamaConfig;
use super::adapted::AdaptedProj;
use super::attention::{Attention, causal_attention};
use crate::kernels::rope::RopeTable;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::{Gguf, TensorType};
use crate::runtime::gpu::Gpu;
use crate::runtime::quant::QuantTensor;
use crate::runtime::tensor::{Indices, Tensor};

/// A frozen base weight `[out, in]`.
#[derive(Clone, Debug)]
pub enum FrozenWeight {
    /// Kept in its GGUF block format, decoded inside the GEMM.
    Quant(QuantTensor),
    /// f32.
    Dense(Tensor),
}

impl FrozenWeight {
    /// Reads tensor `name` of `g`, checked against `[out, in]`.
    pub fn load(gpu: &Gpu, g: &Gguf, name: &str, shape: [usize; 2]) -> Result<Self> {
        let info = g.tensor(name)?;
        if info.shape() != shape {
            return Err(Error::File {
                path: g.name().to_string(),
                message: format!(
                    "tensor '{name}' is {:?}, the configuration implies {shape:?}",
                    info.shape()
                ),
            });
        }
        Ok(match info.ty {
            TensorType::Quant(f) => Self::Quant(QuantTensor::from_blocks(
                gpu,
                name,
                f,
                &g.raw(name)?,
                shape,
            )?),
            _ => Self::Dense(Tensor::from_slice(gpu, &g.tensor_f32(name)?, &shape)?),
        })
    }

    /// `x W^T` on the graph; the gradient reaches `x` only.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        match self {
            Self::Quant(w) => g.qlinear(x, w),
            Self::Dense(w) => {
                let w = g.input(w);
                g.linear(x, &w, None)
            }
        }
    }

    /// `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        let s = match self {
            Self::Quant(w) => w.shape(),
            Self::Dense(w) => w.shape(),
        };
        [s[0], s[1]]
    }

    /// Bytes on the GPU.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Quant(w) => w.bytes(),
            Self::Dense(w) => w.bytes(),
        }
    }
}

/// A projection slot of a block: the frozen base, or the base with LoRA / CapaBoost.
#[derive(Clone, Debug)]
pub enum LlamaProj {
    /// The frozen base weight.
    Base(FrozenWeight),
    /// The base with adapters (boxed: much larger than a bare weight).
    Adapted(Box<AdaptedProj>),
}

impl LlamaProj {
    /// The projection's output on the graph.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        match self {
            Self::Base(w) => w.forward(g, x),
            Self::Adapted(a) => a.forward(g, x),
        }
    }

    /// The frozen base weight.
    pub fn base(&self) -> &FrozenWeight {
        match self {
            Self::Base(w) => w,
            Self::Adapted(a) => &a.base,
        }
    }
}

/// The projections of a block in this order (GGUF names `attn_q` .. `ffn_down`; HF
/// `q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`).
pub const PROJ_NAMES: [&str; 7] = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// One decoder block.
#[derive(Clone, Debug)]
pub struct LlamaLayer {
    /// q, k, v, o, gate, up, down ([`PROJ_NAMES`] order).
    pub proj: [LlamaProj; 7],
    /// RMSNorm weight before attention.
    pub attn_norm: Tensor,
    /// RMSNorm weight before the MLP.
    pub ffn_norm: Tensor,
}

/// A Llama decoder on the GPU.
pub struct Llama {
    /// Its configuration.
    pub config: LlamaConfig,
    /// `[vocab, hidden]` in f32 (for the lookup).
    pub embedding: Tensor,
    /// Decoder blocks.
    pub layers: Vec<LlamaLayer>,
    /// Final RMSNorm weight.
    pub norm: Tensor,
    /// Output head `[vocab, hidden]` (the embedding's blocks when tied).
    pub head: FrozenWeight,
}

fn vector(gpu: &Gpu, g: &Gguf, name: &str, n: usize) -> Result<Tensor> {
    let v = g.tensor_f32(name)?;
    if v.len() != n {
        return Err(Error::File {
            path: g.name().to_string(),
            message: format!("tensor '{name}' has {} values, expected {n}", v.len()),
        });
    }
    Tensor::from_slice(gpu, &v, &[n])
}

fn load_layer(gpu: &Gpu, g: &Gguf, c: &LlamaConfig, i: usize) -> Result<LlamaLayer> {
    let (h, kv, f) = (c.hidden, c.kv_heads * c.head_dim, c.ffn);
    let shapes = [[h, h], [kv, h], [kv, h], [h, h], [f, h], [f, h], [h, f]];
    let mut proj = Vec::with_capacity(7);
    for (name, shape) in PROJ_NAMES.iter().zip(shapes) {
        let full = format!("blk.{i}.{name}.weight");
        proj.push(LlamaProj::Base(FrozenWeight::load(gpu, g, &full, shape)?));
    }
    Ok(LlamaLayer {
        proj: proj.try_into().expect("seven projections"),
        attn_norm: vector(gpu, g, &format!("blk.{i}.attn_norm.weight"), h)?,
        ffn_norm: vector(gpu, g, &format!("blk.{i}.ffn_norm.weight"), h)?,
    })
}

impl Llama {
    /// Loads the model of a GGUF file (see the module notes on what stays quantized).
    pub fn load(gpu: &Gpu, g: &Gguf) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        let (v, h) = (config.vocab, config.hidden);
        let embedding = Tensor::from_slice(gpu, &g.tensor_f32("token_embd.weight")?, &[v, h])?;
        let layers = (0..config.layers)
            .map(|i| load_layer(gpu, g, &config, i))
            .collect::<Result<Vec<_>>>()?;
        let head_name = if config.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        let head = match (config.tied, g.tensor(head_name)?.ty) {
            (true, TensorType::Quant(_)) | (false, _) => {
                FrozenWeight::load(gpu, g, head_name, [v, h])?
            }
            (true, _) => FrozenWeight::Dense(embedding.clone()),
        };
        Ok(Self {
            norm: vector(gpu, g, "output_norm.weight", h)?,
            config,
            embedding,
            layers,
            head,
        })
    }

    /// Bytes the frozen projection and head weights take on the GPU.
    pub fn base_bytes(&self) -> u64 {
        let proj: u64 = self
            .layers
            .iter()
            .flat_map(|l| l.proj.iter())
            .map(|p| p.base().bytes())
            .sum();
        proj + self.head.bytes()
    }

    /// The logits `[ids.len(), vocab]` of a sequence of token ids at positions
    /// `0..ids.len()` (one sequence, causal).
    pub fn forward(&self, g: &mut Graph, ids: &[u32]) -> Result<Var> {
        let x = self.embed(g, ids)?;
        let x = self.blocks(g, &x, 0, None)?;
        self.head.forward(g, &x)
    }

    /// The embeddings `[t, hidden]` of `ids` (no gradient into the table).
    pub fn embed(&self, g: &mut Graph, ids: &[u32]) -> Result<Var> {
        crate::kernels::lookup::check_ids(ids, self.config.vocab)?;
        let idx = Indices::from_slice(g.gpu(), ids, &[ids.len()])?;
        g.embedding(&self.embedding, &idx)
    }

    /// The output head's logits `[t, vocab]` of final-normed hidden states.
    pub fn logits(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        self.head.forward(g, x)
    }

    /// The final-normed hidden states `[t, hidden]` of the embeddings `x [t, hidden]` at
    /// positions `start..`, every block then the final norm; with `cache`, each layer's
    /// keys and values are appended to it and attention also sees the cached positions
    /// `0..start` (`start` must then be the cache's length).
    pub fn blocks(
        &self,
        g: &mut Graph,
        x: &Var,
        start: usize,
        cache: Option<&mut super::KvCache>,
    ) -> Result<Var> {
        let c = &self.config;
        let t = x.shape()[0];
        self.check_hidden(x, start + t)?;
        if let Some(k) = cache.as_deref() {
            if k.len() != start || k.layers.len() != c.layers {
                return Err(Error::InvalidArgument(format!(
                    "llama: a KV cache of {} positions and {} layers cannot continue at \
                     position {start} of a {}-layer model",
                    k.len(),
                    k.layers.len(),
                    c.layers
                )));
            }
        }
        let positions: Vec<usize> = (start..start + t).collect();
        let table = RopeTable::new(g.gpu(), c.rope_theta, c.head_dim, &positions)?;
        let mask = match t {
            1 => None,
            _ => Some(super::causal_mask(g.gpu(), c.heads, t, start)?),
        };
        self.run_blocks(g, x, (&table, mask.as_ref()), cache)
    }

    /// The final-normed hidden states `[t, hidden]` of several sequences packed into one
    /// (`lengths` sum to `t`): each starts at position 0 and attends only to itself (a
    /// block-diagonal causal mask), so the result is each sequence's own forward.
    pub fn packed_blocks(&self, g: &mut Graph, x: &Var, lengths: &[usize]) -> Result<Var> {
        let c = &self.config;
        let t = x.shape()[0];
        let longest = lengths.iter().copied().max().unwrap_or(0);
        self.check_hidden(x, longest)?;
        if lengths.iter().sum::<usize>() != t || lengths.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "llama: packed lengths {lengths:?} must be positive and sum to {t}"
            )));
        }
        let positions: Vec<usize> = lengths.iter().flat_map(|&n| 0..n).collect();
        let table = RopeTable::new(g.gpu(), c.rope_theta, c.head_dim, &positions)?;
        let mask = super::packed_mask(g.gpu(), c.heads, lengths)?;
        self.run_blocks(g, x, (&table, Some(&mask)), None)
    }

    fn check_hidden(&self, x: &Var, end: usize) -> Result<()> {
        let c = &self.config;
        let t = x.shape()[0];
        if x.shape() != [t, c.hidden] || t == 0 || end > c.context {
            return Err(Error::InvalidArgument(format!(
                "llama: hidden states {:?} reaching position {end} must be [t > 0, {}] and \
                 fit the context of {}",
                x.shape(),
                c.hidden,
                c.context
            )));
        }
        Ok(())
    }

    fn run_blocks(
        &self,
        g: &mut Graph,
        x: &Var,
        (table, mask): (&RopeTable, Option<&Tensor>),
        mut cache: Option<&mut super::KvCache>,
    ) -> Result<Var> {
        let c = &self.config;
        let eps = c.rms_eps as f32;
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let h = g.rms_norm(&x, &layer.attn_norm, eps)?;
            let at = Attention {
                config: c,
                proj: &layer.proj,
                table,
                mask,
            };
            let kv = cache.as_deref_mut().map(|k| &mut k.layers[i]);
            let a = causal_attention(g, &at, &h, kv)?;
            x = g.add(&x, &a)?;
            let h = g.rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = layer.proj[4].forward(g, &h)?;
            let up = layer.proj[5].forward(g, &h)?;
            let act = g.swiglu(&gate, &up)?;
            let down = layer.proj[6].forward(g, &act)?;
            x = g.add(&x, &down)?;
        }
        g.rms_norm(&x, &self.norm, eps)
    }
}
