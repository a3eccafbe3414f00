//! A Llama-architecture configuration read from GGUF metadata (`llama.*` keys).

use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::Gguf;

/// The hyperparameters a Llama forward needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Decoder blocks (`llama.block_count`).
    pub layers: usize,
    /// Hidden width (`llama.embedding_length`).
    pub hidden: usize,
    /// SwiGLU width (`llama.feed_forward_length`).
    pub ffn: usize,
    /// Query heads (`llama.attention.head_count`).
    pub heads: usize,
    /// Key/value heads (`llama.attention.head_count_kv`, default `heads`).
    pub kv_heads: usize,
    /// Width of one head (`hidden / heads`).
    pub head_dim: usize,
    /// Rotary base (`llama.rope.freq_base`, default 10000).
    pub rope_theta: f64,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_eps: f64,
    /// Vocabulary (rows of `token_embd.weight`).
    pub vocab: usize,
    /// Longest context (`llama.context_length`).
    pub context: usize,
    /// Whether the output head is the embedding (no `output.weight`).
    pub tied: bool,
}

fn bad(g: &Gguf, message: String) -> Error {
    Error::File {
        path: g.name().to_string(),
        message,
    }
}

impl LlamaConfig {
    /// Reads the configuration; another architecture, a rotary scaling or inconsistent
    /// head counts are errors naming the key.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(bad(
                g,
                format!("general.architecture '{arch}' is not supported (only 'llama')"),
            ));
        }
        if let Some(v) = g.get("llama.rope.scaling.type") {
            if v.as_str() != Some("none") {
                return Err(bad(
                    g,
                    format!("llama.rope.scaling.type {v:?} is not supported (only none)"),
                ));
            }
        }
        let (hidden, heads) = (
            g.usize("llama.embedding_length")?,
            g.usize("llama.attention.head_count")?,
        );
        let kv_heads = match g.get("llama.attention.head_count_kv") {
            Some(_) => g.usize("llama.attention.head_count_kv")?,
            None => heads,
        };
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(bad(
                g,
                format!(
                    "llama.attention.head_count {heads} / head_count_kv {kv_heads} do not divide \
                     llama.embedding_length {hidden}"
                ),
            ));
        }
        let head_dim = hidden / heads;
        if g.get("llama.rope.dimension_count").is_some() {
            let d = g.usize("llama.rope.dimension_count")?;
            if d != head_dim {
                return Err(bad(
                    g,
                    format!(
                        "llama.rope.dimension_count {d} differs from the head width {head_dim}: partial rotary is not supported"
                    ),
                ));
            }
        }
        let emb = g.tensor("token_embd.weight")?.shape();
        if emb.len() != 2 || emb[1] != hidden {
            return Err(bad(
                g,
                format!("tensor 'token_embd.weight' is {emb:?}, expected [vocab, {hidden}]"),
            ));
        }
        let rope_theta = match g.get("llama.rope.freq_base") {
            Some(_) => g.f64("llama.rope.freq_base")?,
            None => 10000.0,
        };
        Ok(Self {
            layers: g.usize("llama.block_count")?,
            hidden,
            ffn: g.usize("llama.feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            rope_theta,
            rms_eps: g.f64("llama.attention.layer_norm_rms_epsilon")?,
            vocab: emb[0],
            context: g.usize("llama.context_length")?,
            tied: g.tensor("output.weight").is_err(),
        })
    }
}
