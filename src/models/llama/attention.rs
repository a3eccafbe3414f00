//! Grouped-query causal self-attention of the Llama decoder on the tape, from the existing
//! building blocks: the query heads of one key/value head are laid out as one batch entry
//! (`[kv_heads, group * t, head_dim]`), so the batched GEMMs share each key/value head with
//! its group without copying it; the causal mask is an additive `[heads * t, T]` mask of
//! the softmax (no new kernel). A [`KvCache`] keeps each layer's rotated keys and values
//! for generation.

use super::LlamaConfig;
use super::model::LlamaProj;
use crate::kernels::layout::copy_into;
use crate::kernels::rope::RopeTable;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;

/// One layer's cached keys and values `[T, kv_heads, head_dim]` (rotated keys).
#[derive(Clone, Debug, Default)]
pub struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

impl LayerKv {
    /// Cached positions.
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.shape()[0])
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `old ++ new` along the positions (a fresh tensor; the old one is left as it is).
    fn append(g: &mut Graph, old: &Option<Tensor>, new: &Tensor) -> Result<Tensor> {
        let Some(old) = old else {
            return Ok(new.clone());
        };
        let mut shape = new.shape().to_vec();
        shape[0] += old.shape()[0];
        let out = Tensor::empty(g.gpu(), &shape)?;
        copy_into(g.recorder(), old, &out, 0)?;
        copy_into(g.recorder(), new, &out, old.numel())?;
        Ok(out)
    }
}

/// The keys and values of every layer for incremental decoding (inference only).
#[derive(Clone, Debug)]
pub struct KvCache {
    /// One entry per layer.
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache for `layers` layers.
    pub fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); layers],
        }
    }

    /// Cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What one layer's attention reads.
pub struct Attention<'a> {
    /// The configuration.
    pub config: &'a LlamaConfig,
    /// The layer's projections (q, k, v, o first).
    pub proj: &'a [LlamaProj; 7],
    /// Rotary angles of the new positions.
    pub table: &'a RopeTable,
    /// The causal mask `[heads * t, T]` (none when a single new token sees everything).
    pub mask: Option<&'a Tensor>,
}

/// The additive causal mask for `t` new queries at positions `start..start + t` over keys
/// `0..start + t`, repeated for each of `heads` query heads: `[heads * t, start + t]`.
pub fn causal_mask(gpu: &Gpu, heads: usize, t: usize, start: usize) -> Result<Tensor> {
    let keys = start + t;
    let mut m = Vec::new();
    m.try_reserve_exact(heads * t * keys).map_err(|e| {
        Error::InvalidArgument(format!("causal mask [{} x {keys}]: {e}", heads * t))
    })?;
    for _ in 0..heads {
        for i in 0..t {
            m.extend((0..keys).map(|j| if j <= start + i { 0.0 } else { f32::MIN }));
        }
    }
    Tensor::from_slice(gpu, &m, &[heads * t, keys])
}

/// The additive mask of sequences of `lengths` packed into one of `t = sum(lengths)`
/// positions: query `i` sees key `j` when both lie in the same sequence and `j <= i`;
/// repeated for each of `heads` query heads: `[heads * t, t]`.
pub fn packed_mask(gpu: &Gpu, heads: usize, lengths: &[usize]) -> Result<Tensor> {
    let t: usize = lengths.iter().sum();
    let mut row_mask = Vec::new();
    row_mask
        .try_reserve_exact(t * t)
        .map_err(|e| Error::InvalidArgument(format!("packed causal mask [{t} x {t}]: {e}")))?;
    let mut start = 0;
    for &n in lengths {
        for i in 0..n {
            row_mask.extend((0..t).map(|j| {
                if j >= start && j <= start + i {
                    0.0
                } else {
                    f32::MIN
                }
            }));
        }
        start += n;
    }
    let mut m = Vec::with_capacity(heads * t * t);
    for _ in 0..heads {
        m.extend_from_slice(&row_mask);
    }
    Tensor::from_slice(gpu, &m, &[heads * t, t])
}

/// `[t, n * d]` → `[t, n, d]` with the heads rotated.
fn heads_of(g: &mut Graph, x: &Var, n: usize, d: usize, table: Option<&RopeTable>) -> Result<Var> {
    let t = x.shape()[0];
    let x = g.reshape(x, &[t, n, d])?;
    match table {
        Some(table) => g.rope(&x, table),
        None => Ok(x),
    }
}

/// `[T, n, d]` → `[n, T, d]`, then reshaped to `[batch, rows, d]`.
fn head_major(g: &mut Graph, x: &Var, batch: usize, rows: usize) -> Result<Var> {
    let (t, n, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let x = g.reshape(x, &[1, t, n, d])?;
    let x = g.swap_middle(&x)?;
    g.reshape(&x, &[batch, rows, d])
}

/// Causal grouped-query attention of the normed hidden states `h [t, hidden]` including
/// the output projection; with `kv`, the new keys and values are appended to it and the
/// queries also attend to the cached positions (inference: no gradient into the cache).
pub fn causal_attention(
    g: &mut Graph,
    at: &Attention,
    h: &Var,
    kv: Option<&mut LayerKv>,
) -> Result<Var> {
    let c = at.config;
    let (t, d, heads, kvh) = (h.shape()[0], c.head_dim, c.heads, c.kv_heads);
    let group = heads / kvh;
    let q = at.proj[0].forward(g, h)?;
    let q = heads_of(g, &q, heads, d, Some(at.table))?;
    let k = at.proj[1].forward(g, h)?;
    let mut k = heads_of(g, &k, kvh, d, Some(at.table))?;
    let v = at.proj[2].forward(g, h)?;
    let mut v = heads_of(g, &v, kvh, d, None)?;
    if let Some(kv) = kv {
        let (kt, vt) = (k.value().clone(), v.value().clone());
        kv.k = Some(LayerKv::append(g, &kv.k, &kt)?);
        kv.v = Some(LayerKv::append(g, &kv.v, &vt)?);
        let (kc, vc) = (kv.k.clone(), kv.v.clone());
        k = g.input(kc.as_ref().expect("just set"));
        v = g.input(vc.as_ref().expect("just set"));
    }
    let keys = k.shape()[0];
    let q = head_major(g, &q, kvh, group * t)?;
    let k = head_major(g, &k, kvh, keys)?;
    let v = head_major(g, &v, kvh, keys)?;
    let scores = g.matmul(&q, false, &k, true)?;
    let scores = g.scale(&scores, 1.0 / (d as f32).sqrt())?;
    let probs = g.softmax(&scores, at.mask, 1)?;
    let ctx = g.matmul(&probs, false, &v, false)?;
    let ctx = g.reshape(&ctx, &[1, heads, t, d])?;
    let ctx = g.swap_middle(&ctx)?;
    let ctx = g.reshape(&ctx, &[t, heads * d])?;
    at.proj[3].forward(g, &ctx)
}
