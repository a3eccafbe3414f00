//! The attention core as one graph op: head split, scaled scores, masked softmax, the
//! weighted values and the head merge, with one backward. Built from the same kernels in
//! the same order as the separate ops (`swap_middle`, `matmul_scaled`, `softmax`), so it
//! gives the same bits; what it saves is dispatches: the query, key and value (and their
//! gradients) are split and merged three at a time (`kernels::layout::swap_middle3`).

use crate::kernels::gemm::{self, Operand};
use crate::kernels::layout;
use crate::kernels::norms;
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// What the backward needs: the heads of q, k, v (`[b heads, s, dh]`) and the
/// probabilities.
struct Saved {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    alpha: f32,
}

impl Graph {
    /// `softmax(q k^T / sqrt(dh) + mask) v` over `heads` heads, for `q`, `k`, `v` of shape
    /// `[b s, hidden]` (rows are `s` tokens of `b` sequences), heads merged back into
    /// `[b s, hidden]`. `mask` is additive, `[b, s]`.
    pub fn attention(
        &mut self,
        [q, k, v]: [&Var; 3],
        mask: Option<&Tensor>,
        (b, s, heads): (usize, usize, usize),
    ) -> Result<Var> {
        let hidden = q.shape().last().copied().unwrap_or(0);
        if heads == 0 || !hidden.is_multiple_of(heads) || q.value().numel() != b * s * hidden {
            return Err(Error::shape(format!(
                "attention: q {:?} is not [{b} x {s}, hidden] with hidden a multiple of {heads} heads",
                q.shape()
            )));
        }
        let dh = hidden / heads;
        let split = [b, s, heads, dh];
        let rows = |t: &Tensor| t.reshape(&split);
        let (qs, ks, vs) = (rows(q.value())?, rows(k.value())?, rows(v.value())?);
        let rec = self.recorder();
        let heads_of = |t: Tensor| t.reshape(&[b * heads, s, dh]);
        let [qh, kh, vh] = layout::swap_middle3(rec, [&qs, &ks, &vs])?.map(heads_of);
        let (qh, kh, vh) = (qh?, kh?, vh?);
        let alpha = 1.0 / (dh as f32).sqrt();
        let scores = mm(rec, Operand::plain(&qh), Operand::trans(&kh), alpha)?;
        let probs = norms::softmax(rec, &scores, mask, heads * s)?;
        let ctx = mm(rec, Operand::plain(&probs), Operand::plain(&vh), 1.0)?;
        let ctx = layout::swap_middle(rec, &ctx.reshape(&[b, heads, s, dh])?)?;
        let ctx = ctx.reshape(&[b * s, hidden])?;
        let saved = Saved {
            q: qh,
            k: kh,
            v: vh,
            probs,
            alpha,
        };
        let ids = [q.id(), k.id(), v.id()];
        let tracked = [q.tracked(), k.tracked(), v.tracked()];
        let in_shape = q.shape().to_vec();
        Ok(self.record(ctx, &[q, k, v], move |rec, dctx| {
            let grads = attention_backward(rec, &saved, dctx, (split, tracked))?;
            let mut out = Vec::with_capacity(3);
            for (id, g) in ids.into_iter().zip(grads) {
                if let Some(g) = g {
                    out.push((id, g.reshape(&in_shape)?));
                }
            }
            Ok(out)
        }))
    }
}

/// The gradients of the tracked ones of q, k, v (each `[b, s, heads, dh]`) from the
/// context's, as the separate ops' closures compute them (merge, weighted values, softmax,
/// scores, splits): none for an untracked input.
fn attention_backward(
    rec: &mut Recorder,
    sv: &Saved,
    dctx: &Tensor,
    ([b, s, heads, dh], [gq, gk, gv]): ([usize; 4], [bool; 3]),
) -> Result<[Option<Tensor>; 3]> {
    let dc = layout::swap_middle(rec, &dctx.reshape(&[b, s, heads, dh])?)?;
    let dc = dc.reshape(&[b * heads, s, dh])?;
    let (mut dq, mut dk) = (None, None);
    // ctx = probs v: d probs = dc v^T, d v = probs^T dc.
    if gq || gk {
        let dprobs = mm(rec, Operand::plain(&dc), Operand::trans(&sv.v), 1.0)?;
        let ds = norms::softmax_backward(rec, &sv.probs, &dprobs)?;
        // scores = alpha q k^T: d q = alpha dS k, d k = alpha dS^T q.
        let (q, k, a) = (&sv.q, &sv.k, sv.alpha);
        dq = gq.then(|| mm(rec, Operand::plain(&ds), Operand::plain(k), a));
        dk = gk.then(|| mm(rec, Operand::trans(&ds), Operand::plain(q), a));
    }
    let p = &sv.probs;
    let dv = gv.then(|| mm(rec, Operand::trans(p), Operand::plain(&dc), 1.0));
    let (dq, dk, dv) = (dq.transpose()?, dk.transpose()?, dv.transpose()?);
    let four = |t: &Tensor| t.reshape(&[b, heads, s, dh]);
    if let (Some(q), Some(k), Some(v)) = (&dq, &dk, &dv) {
        return Ok(layout::swap_middle3(rec, [&four(q)?, &four(k)?, &four(v)?])?.map(Some));
    }
    let mut merge = |g: Option<Tensor>| -> Result<Option<Tensor>> {
        g.map(|g| layout::swap_middle(rec, &four(&g)?)).transpose()
    };
    Ok([merge(dq)?, merge(dk)?, merge(dv)?])
}

/// `alpha op(a) op(b)`.
fn mm(rec: &mut Recorder, a: Operand, b: Operand, alpha: f32) -> Result<Tensor> {
    gemm::gemm(rec, a, b, alpha, None)
}
