//! The f64 CPU reference of a Llama decoder read from GGUF: RMSNorm, rotary embeddings,
//! grouped-query causal attention, SwiGLU, output head. Weights are dequantized one tensor
//! at a time (f64 per layer, never the whole model at once). It is the twin the GPU path is
//! checked against, and slow: for tests.
//!
//! Rotary layout: GGUF converters permute the rows of `attn_q` / `attn_k` within each head
//! so that llama.cpp rotates adjacent pairs `(2i, 2i + 1)`; transformers un-permutes on load
//! and rotates halves `(i, i + d/2)`. Both give the same attention scores; this reference
//! reads the file's rows as they are and rotates adjacent pairs.

use super::LlamaConfig;
use crate::runtime::error::Result;
use crate::runtime::gguf::Gguf;

/// A `[rows, cols]` weight in f64.
struct Mat {
    data: Vec<f64>,
    rows: usize,
    cols: usize,
}

fn mat(g: &Gguf, name: &str) -> Result<Mat> {
    let info = g.tensor(name)?;
    let shape = info.shape();
    let (rows, cols) = match shape[..] {
        [r, c] => (r, c),
        [c] => (1, c),
        _ => (
            shape[..shape.len() - 1].iter().product(),
            shape[shape.len() - 1],
        ),
    };
    let data = g.tensor_f32(name)?.into_iter().map(f64::from).collect();
    Ok(Mat { data, rows, cols })
}

/// `x W^T` for `x [t, cols]`.
fn linear(x: &[f64], w: &Mat) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len() / w.cols * w.rows);
    for xr in x.chunks_exact(w.cols) {
        for wr in w.data.chunks_exact(w.cols) {
            out.push(xr.iter().zip(wr).map(|(a, b)| a * b).sum());
        }
    }
    out
}

fn rms_norm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let n = w.len();
    x.chunks_exact(n)
        .flat_map(|r| {
            let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f64>() / n as f64 + eps).sqrt();
            r.iter().zip(w).map(move |(v, g)| v * inv * g)
        })
        .collect()
}

/// Rotates adjacent pairs of every head of `x [t, heads * dim]` by position.
fn rope(x: &mut [f64], heads: usize, dim: usize, theta: f64) {
    for (pos, row) in x.chunks_exact_mut(heads * dim).enumerate() {
        for head in row.chunks_exact_mut(dim) {
            for i in 0..dim / 2 {
                let freq = theta.powf(-2.0 * i as f64 / dim as f64);
                let (s, c) = (pos as f64 * freq).sin_cos();
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * c - b * s;
                head[2 * i + 1] = a * s + b * c;
            }
        }
    }
}

/// Causal grouped-query attention: `q [t, heads*d]`, `k`, `v [t, kv_heads*d]`.
fn attention(c: &LlamaConfig, q: &[f64], k: &[f64], v: &[f64], t: usize) -> Vec<f64> {
    let (d, kvw) = (c.head_dim, c.kv_heads * c.head_dim);
    let group = c.heads / c.kv_heads;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; t * c.heads * d];
    for h in 0..c.heads {
        let kh = h / group;
        for i in 0..t {
            let qi = &q[i * c.heads * d + h * d..][..d];
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    let kj = &k[j * kvw + kh * d..][..d];
                    qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f64 = exp.iter().sum();
            let o = &mut out[i * c.heads * d + h * d..][..d];
            for (j, e) in exp.iter().enumerate() {
                let vj = &v[j * kvw + kh * d..][..d];
                for (oo, vv) in o.iter_mut().zip(vj) {
                    *oo += e / sum * vv;
                }
            }
        }
    }
    out
}

fn add(x: &mut [f64], y: &[f64]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// One decoder block on `x [t, hidden]` in place.
fn block(g: &Gguf, c: &LlamaConfig, i: usize, x: &mut [f64], t: usize) -> Result<()> {
    let w = |n: &str| mat(g, &format!("blk.{i}.{n}.weight"));
    let h = rms_norm(x, &w("attn_norm")?.data, c.rms_eps);
    let mut q = linear(&h, &w("attn_q")?);
    let mut k = linear(&h, &w("attn_k")?);
    let v = linear(&h, &w("attn_v")?);
    rope(&mut q, c.heads, c.head_dim, c.rope_theta);
    rope(&mut k, c.kv_heads, c.head_dim, c.rope_theta);
    let a = attention(c, &q, &k, &v, t);
    add(x, &linear(&a, &w("attn_output")?));
    let h = rms_norm(x, &w("ffn_norm")?.data, c.rms_eps);
    let gate = linear(&h, &w("ffn_gate")?);
    let up = linear(&h, &w("ffn_up")?);
    let act: Vec<f64> = gate
        .iter()
        .zip(&up)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    add(x, &linear(&act, &w("ffn_down")?));
    Ok(())
}

/// The logits `[ids.len(), vocab]` (row-major) of every position of `ids`.
pub fn logits(g: &Gguf, ids: &[u32]) -> Result<Vec<f64>> {
    let c = LlamaConfig::from_gguf(g)?;
    crate::kernels::lookup::check_ids(ids, c.vocab)?;
    let emb = mat(g, "token_embd.weight")?;
    let x: Vec<f64> = ids
        .iter()
        .flat_map(|&id| emb.data[id as usize * c.hidden..][..c.hidden].to_vec())
        .collect();
    logits_of_embeddings(g, x)
}

/// The logits `[t, vocab]` of embeddings `x [t, hidden]` (row-major) at positions `0..t`.
pub fn logits_of_embeddings(g: &Gguf, mut x: Vec<f64>) -> Result<Vec<f64>> {
    let c = LlamaConfig::from_gguf(g)?;
    let t = x.len() / c.hidden;
    if t == 0 || !x.len().is_multiple_of(c.hidden) {
        return Err(crate::runtime::error::Error::shape(format!(
            "cpu::logits_of_embeddings: {} values are not whole rows of {}",
            x.len(),
            c.hidden
        )));
    }
    for i in 0..c.layers {
        block(g, &c, i, &mut x, t)?;
    }
    let x = rms_norm(&x, &mat(g, "output_norm.weight")?.data, c.rms_eps);
    let head = if c.tied {
        mat(g, "token_embd.weight")?
    } else {
        mat(g, "output.weight")?
    };
    Ok(linear(&x, &head))
}
