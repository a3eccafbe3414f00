//! Lookups (`shaders/lookup.wgsl`): embedding rows by token id from a frozen table, and
//! masked mean pooling over the sequence (sentence-transformers' pooling) with its
//! backward, with their f64 CPU references.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::LOOKUP;
use crate::runtime::tensor::{Indices, Tensor};

const WORKGROUP: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    grid_x: u32,
    batch: u32,
    seq: u32,
    hidden: u32,
    vocab: u32,
    _pad: [u32; 2],
}

fn count_u32(what: &str, n: usize) -> Result<u32> {
    crate::runtime::error::index_u32(what, n)
}

/// Records one dispatch of `entry` over `p.n` threads.
fn launch(
    rec: &mut Recorder,
    entry: &'static str,
    p: Params,
    bindings: &[(u32, &Binding)],
) -> Result<()> {
    let groups = (p.n as u64).div_ceil(WORKGROUP);
    rec.dispatch_groups(
        &LOOKUP,
        entry,
        groups,
        |grid_x| Params { grid_x, ..p },
        bindings,
    )
}

/// Checks token ids against a vocabulary of `vocab` rows on the host, before upload: the
/// kernel itself turns an out-of-range id into a zero row, which would train silently on
/// garbage, so hosts should call this on every batch they build.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(pos) => Err(Error::InvalidArgument(format!(
            "token id {} at position {pos} is out of range for a vocabulary of {vocab}",
            ids[pos]
        ))),
        None => Ok(()),
    }
}

/// Rows of `table` (`[V, H]`) picked by `ids` (any shape): the result has `ids`' shape
/// with `H` appended. The table is frozen (no gradient flows into it); an id `>= V` gives a
/// row of zeros (see [`check_ids`]).
pub fn embedding(rec: &mut Recorder, table: &Tensor, ids: &Indices) -> Result<Tensor> {
    let &[vocab, hidden] = table.shape() else {
        return Err(Error::shape(format!(
            "embedding: table must be [V, H], got {:?} (ids {:?})",
            table.shape(),
            ids.shape()
        )));
    };
    let mut shape = ids.shape().to_vec();
    shape.push(hidden);
    let out = Tensor::empty(rec.gpu(), &shape)?;
    let p = Params {
        n: count_u32("embedding output", out.numel())?,
        hidden: hidden as u32,
        vocab: count_u32("embedding vocabulary", vocab)?,
        ..Default::default()
    };
    let (bt, bi, bo) = (table.binding(), ids.binding(), out.binding());
    launch(rec, "embedding", p, &[(1, &bt), (2, &bi), (3, &bo)])?;
    Ok(out)
}

fn pool_dims(op: &str, x_shape: &[usize], mask: &Tensor) -> Result<(usize, usize, usize)> {
    let &[b, s, h] = x_shape else {
        return Err(Error::shape(format!(
            "{op}: x must be [B, S, H], got {x_shape:?} (mask {:?})",
            mask.shape()
        )));
    };
    if mask.shape() != [b, s] {
        return Err(Error::shape(format!(
            "{op}: mask must be [B, S] = [{b}, {s}] to match x {x_shape:?}, got {:?}",
            mask.shape()
        )));
    }
    count_u32(op, b * s * h)?;
    Ok((b, s, h))
}

/// Masked mean over the sequence: `x [B, S, H]`, `mask [B, S]` (0/1 as f32) to `[B, H]`,
/// `sum_s mask x / max(sum_s mask, 1e-9)`. A row whose mask is all zero pools to zeros.
pub fn mean_pool(rec: &mut Recorder, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, s, h) = pool_dims("mean_pool", x.shape(), mask)?;
    let out = Tensor::empty(rec.gpu(), &[b, h])?;
    let p = Params {
        n: (b * h) as u32,
        batch: b as u32,
        seq: s as u32,
        hidden: h as u32,
        ..Default::default()
    };
    let (bx, bm, bo) = (x.binding(), mask.binding(), out.binding());
    launch(rec, "mean_pool", p, &[(4, &bx), (5, &bm), (3, &bo)])?;
    Ok(out)
}

/// Gradient of [`mean_pool`] with respect to `x`: `dy [B, H]` to `dx [B, seq, H]`,
/// `dx[b, s, :] = mask[b, s] / max(sum_s mask[b, s], 1e-9) * dy[b, :]`.
pub fn mean_pool_backward(
    rec: &mut Recorder,
    mask: &Tensor,
    dy: &Tensor,
    seq: usize,
) -> Result<Tensor> {
    let &[b, h] = dy.shape() else {
        return Err(Error::shape(format!(
            "mean_pool_backward: dy must be [B, H], got {:?} (mask {:?})",
            dy.shape(),
            mask.shape()
        )));
    };
    let (b, s, h) = pool_dims("mean_pool_backward", &[b, seq, h], mask)?;
    let dx = Tensor::empty(rec.gpu(), &[b, s, h])?;
    let denom = Tensor::empty(rec.gpu(), &[b])?;
    let base = Params {
        batch: b as u32,
        seq: s as u32,
        hidden: h as u32,
        ..Default::default()
    };
    let (bm, bdy, bden, bdx) = (mask.binding(), dy.binding(), denom.binding(), dx.binding());
    if h > 0 {
        launch(
            rec,
            "pool_denominator",
            Params {
                n: b as u32,
                ..base
            },
            &[(5, &bm), (7, &bden)],
        )?;
    }
    launch(
        rec,
        "mean_pool_backward",
        Params {
            n: (b * s * h) as u32,
            ..base
        },
        &[(5, &bm), (6, &bdy), (7, &bden), (3, &bdx)],
    )?;
    Ok(dx)
}

/// f64 CPU references for the kernels above.
pub mod cpu {
    /// Rows of `table` (`[vocab, hidden]`) by id; out-of-range ids give zero rows.
    pub fn embedding(table: &[f32], vocab: usize, hidden: usize, ids: &[u32]) -> Vec<f64> {
        let mut out = Vec::with_capacity(ids.len() * hidden);
        for &id in ids {
            let id = id as usize;
            if id < vocab {
                out.extend(
                    table[id * hidden..(id + 1) * hidden]
                        .iter()
                        .map(|&v| v as f64),
                );
            } else {
                out.extend(std::iter::repeat_n(0.0, hidden));
            }
        }
        out
    }

    /// Masked mean pooling in f64 (`x [b, s, h]`, `mask [b, s]`), for finite differences.
    pub fn mean_pool_f64(x: &[f64], mask: &[f64], b: usize, s: usize, h: usize) -> Vec<f64> {
        let mut out = vec![0.0; b * h];
        for bi in 0..b {
            let count: f64 = mask[bi * s..(bi + 1) * s].iter().sum();
            let denom = count.max(1e-9);
            for si in 0..s {
                let w = mask[bi * s + si];
                for hi in 0..h {
                    out[bi * h + hi] += w * x[(bi * s + si) * h + hi];
                }
            }
            for v in &mut out[bi * h..(bi + 1) * h] {
                *v /= denom;
            }
        }
        out
    }

    /// Masked mean pooling.
    pub fn mean_pool(x: &[f32], mask: &[f32], b: usize, s: usize, h: usize) -> Vec<f64> {
        mean_pool_f64(&widen(x), &widen(mask), b, s, h)
    }

    /// Gradient of masked mean pooling with respect to `x`, `[b, s, h]`.
    pub fn mean_pool_backward(mask: &[f32], dy: &[f32], b: usize, s: usize, h: usize) -> Vec<f64> {
        let mut dx = vec![0.0; b * s * h];
        for bi in 0..b {
            let count: f64 = mask[bi * s..(bi + 1) * s].iter().map(|&m| m as f64).sum();
            let denom = count.max(1e-9);
            for si in 0..s {
                let w = mask[bi * s + si] as f64 / denom;
                for hi in 0..h {
                    dx[(bi * s + si) * h + hi] = w * dy[bi * h + hi] as f64;
                }
            }
        }
        dx
    }

    /// `v` as f64.
    pub fn widen(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| x as f64).collect()
    }
}
