//! A small tape-based autograd: each op runs its forward dispatches at once and records a
//! closure holding what its backward needs; [`Graph::backward`] replays the closures in
//! reverse into the same command encoder, so a whole step (forward, backward, optimizer)
//! is one submit with no readback.
//!
//! Gradients accumulate across uses of a tensor (micrograd's rule). A graph built with
//! [`Graph::no_grad`] records nothing (evaluation, inference). A graph lives for one step:
//! dropping it (or calling backward) releases every saved activation.

use std::collections::HashMap;

use crate::kernels::capaboost::LayerMasks;
use crate::kernels::gemm::{self, Operand, View};
use crate::kernels::masks::{Factor, MaskBits, masked_sum};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;
use crate::{kernels::capaboost as cb, kernels::elementwise};

/// A value in a graph: a tensor plus its identity on the tape.
#[derive(Clone, Debug)]
pub struct Var {
    id: usize,
    value: Tensor,
    tracked: bool,
}

impl Var {
    /// The tensor.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// Whether gradients flow to or through this value.
    pub fn tracked(&self) -> bool {
        self.tracked
    }

    /// Id on the tape (unique within its graph).
    pub fn id(&self) -> usize {
        self.id
    }
}

/// Gradient contributions of one backward closure: (input id, gradient).
pub type Contributions = Vec<(usize, Tensor)>;

type BackwardFn = Box<dyn FnOnce(&mut Recorder, &Tensor) -> Result<Contributions> + Send>;

struct Node {
    out: usize,
    backward: BackwardFn,
}

/// Gradients of the parameters a backward pass reached, found by the parameter tensor
/// (its storage) or by its `Var`. Optimizers take them whole: see
/// [`AdamW::step`](crate::nn::optim::AdamW::step).
#[derive(Debug, Default)]
pub struct Gradients {
    by_storage: HashMap<u64, Tensor>,
    var_storage: HashMap<usize, u64>,
}

impl Gradients {
    /// An empty set, for gradients computed outside a [`Graph`] (see [`Gradients::insert`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the gradient of parameter `param` (replacing any earlier one); its shape must
    /// be the parameter's.
    pub fn insert(&mut self, param: &Tensor, grad: Tensor) -> Result<()> {
        if grad.shape() != param.shape() {
            return Err(Error::shape(format!(
                "gradient {:?} does not match its parameter {:?}",
                grad.shape(),
                param.shape()
            )));
        }
        self.by_storage.insert(param.storage_id(), grad);
        Ok(())
    }

    /// The gradient of the parameter tensor `t` (as passed to [`Graph::param`]).
    pub fn of(&self, t: &Tensor) -> Option<&Tensor> {
        self.by_storage.get(&t.storage_id())
    }

    /// The gradient of `param`, if the loss depends on it.
    pub fn get(&self, param: &Var) -> Option<&Tensor> {
        self.var_storage
            .get(&param.id)
            .and_then(|s| self.by_storage.get(s))
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.by_storage.len()
    }

    /// Whether no parameter received a gradient.
    pub fn is_empty(&self) -> bool {
        self.by_storage.is_empty()
    }
}

/// One step's computation: a recorder for its dispatches and the tape of backward closures.
///
/// ```
/// # fn main() -> capaboost::Result<()> {
/// # let Some(gpu) = capaboost::Gpu::new_or_skip()? else { return Ok(()) };
/// use capaboost::{Tensor, nn::Graph};
/// let w = Tensor::from_slice(&gpu, &[0.5, -1.0, 2.0], &[1, 3])?;
/// let x = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// let mut g = Graph::new(&gpu);
/// let (wv, xv) = (g.param(&w), g.input(&x));
/// let y = g.linear(&xv, &wv, None)?; // [2, 1]
/// let loss = g.sum(&y)?;
/// let grads = g.backward(&loss)?;
/// g.submit()?;
/// // d sum(x w^T) / dw = column sums of x
/// assert_eq!(grads.of(&w).unwrap().to_vec()?, vec![5.0, 7.0, 9.0]);
/// # Ok(()) }
/// ```
pub struct Graph {
    rec: Recorder,
    nodes: Vec<Node>,
    param_by_storage: HashMap<u64, Var>,
    seed: u64,
    next_id: usize,
    grad_enabled: bool,
}

impl Graph {
    /// A graph that records backward closures (training).
    pub fn new(gpu: &Gpu) -> Self {
        Self::build(gpu.recorder(), true)
    }

    /// A graph that records nothing for backward (evaluation, inference).
    pub fn no_grad(gpu: &Gpu) -> Self {
        Self::build(gpu.recorder(), false)
    }

    /// A training graph that records into `rec`, e.g. a [`Recorder::wrap`] of a host
    /// program's encoder; finish with [`Graph::into_encoder`] instead of submitting.
    pub fn with_recorder(rec: Recorder) -> Self {
        Self::build(rec, true)
    }

    /// Ends the step without submitting: the encoder (with forward, backward and anything
    /// recorded into [`Graph::recorder`]) and the buffers it needs until submitted.
    pub fn into_encoder(self) -> (wgpu::CommandEncoder, crate::runtime::recorder::KeepAlive) {
        self.rec.into_encoder()
    }

    fn build(rec: Recorder, grad_enabled: bool) -> Self {
        Self {
            rec,
            nodes: Vec::new(),
            param_by_storage: HashMap::new(),
            seed: 0,
            next_id: 0,
            grad_enabled,
        }
    }

    /// The recorder the graph's dispatches go into (for kernels outside the graph, such as
    /// the optimizer step, that belong to the same submit).
    pub fn recorder(&mut self) -> &mut Recorder {
        &mut self.rec
    }

    /// The GPU.
    pub fn gpu(&self) -> &Gpu {
        self.rec.gpu()
    }

    /// Whether this graph records backward closures.
    pub fn grad_enabled(&self) -> bool {
        self.grad_enabled
    }

    /// Backward closures currently on the tape.
    pub fn tape_len(&self) -> usize {
        self.nodes.len()
    }

    /// Submits everything recorded (forward, backward, optimizer) in one go.
    pub fn submit(self) -> Result<usize> {
        self.rec.submit()
    }

    fn var(&mut self, value: Tensor, tracked: bool) -> Var {
        let id = self.next_id;
        self.next_id += 1;
        Var { id, value, tracked }
    }

    /// A value that needs no gradient (data, frozen weights).
    pub fn input(&mut self, t: &Tensor) -> Var {
        self.var(t.clone(), false)
    }

    /// A trainable parameter: backward returns its gradient. Asking twice for the same
    /// tensor gives the same `Var`, so a parameter used twice accumulates one gradient.
    pub fn param(&mut self, t: &Tensor) -> Var {
        if let Some(v) = self.param_by_storage.get(&t.storage_id()) {
            return v.clone();
        }
        let v = self.var(t.clone(), self.grad_enabled);
        self.param_by_storage.insert(t.storage_id(), v.clone());
        v
    }

    /// Seed for this step's dropout masks (stateless: the same seed replays a step).
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    /// This step's dropout seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Records `value` as the output of an op over `inputs`; `backward` is kept only when
    /// some input is tracked.
    pub fn record(
        &mut self,
        value: Tensor,
        inputs: &[&Var],
        backward: impl FnOnce(&mut Recorder, &Tensor) -> Result<Contributions> + Send + 'static,
    ) -> Var {
        let tracked = self.grad_enabled && inputs.iter().any(|v| v.tracked);
        let out = self.var(value, tracked);
        if tracked {
            self.nodes.push(Node {
                out: out.id,
                backward: Box::new(backward),
            });
        }
        out
    }

    /// Replays the tape in reverse from `loss` (a `[1]` tensor, seeded with 1) and returns
    /// the parameters' gradients. The tape is empty afterwards; saved tensors are released
    /// as each closure runs.
    pub fn backward(&mut self, loss: &Var) -> Result<Gradients> {
        if loss.value.numel() != 1 {
            return Err(Error::shape(format!(
                "backward needs a scalar loss, got shape {:?}",
                loss.shape()
            )));
        }
        let seed = Tensor::empty(self.rec.gpu(), loss.shape())?;
        elementwise::fill(&mut self.rec, &seed, 1.0)?;
        self.backward_with(loss, seed)
    }

    /// Like [`Graph::backward`] with an explicit upstream gradient for `out`.
    pub fn backward_with(&mut self, out: &Var, grad: Tensor) -> Result<Gradients> {
        if grad.shape() != out.shape() {
            return Err(Error::shape(format!(
                "upstream gradient {:?} does not match {:?}",
                grad.shape(),
                out.shape()
            )));
        }
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(out.id, grad);
        let nodes = std::mem::take(&mut self.nodes);
        for node in nodes.into_iter().rev() {
            // Every contribution to this node's output came from later nodes, which have run.
            let Some(g) = grads.remove(&node.out) else {
                continue;
            };
            for (id, contribution) in (node.backward)(&mut self.rec, &g)? {
                accumulate(&mut self.rec, &mut grads, id, contribution)?;
            }
        }
        let mut out = Gradients::default();
        for (storage, v) in &self.param_by_storage {
            if let Some(g) = grads.remove(&v.id) {
                out.by_storage.insert(*storage, g);
                out.var_storage.insert(v.id, *storage);
            }
        }
        Ok(out)
    }

    // ---- ops ----------------------------------------------------------------------------

    /// `op(a) op(b)` (2-D, or batched with equal batch dims).
    pub fn matmul(&mut self, a: &Var, ta: bool, b: &Var, tb: bool) -> Result<Var> {
        let (sa, sb) = (a.shape(), b.shape());
        if sa.len() != sb.len()
            || sa[..sa.len().saturating_sub(2)] != sb[..sb.len().saturating_sub(2)]
        {
            return Err(Error::shape(format!(
                "matmul: batch dims of {sa:?} and {sb:?} differ"
            )));
        }
        let out = gemm::matmul(&mut self.rec, &a.value, ta, &b.value, tb)?;
        let (av, bv) = (a.value.clone(), b.value.clone());
        let (ia, ib, ga, gb) = (a.id, b.id, a.tracked, b.tracked);
        Ok(self.record(out, &[a, b], move |rec, dc| {
            let mut c = Vec::new();
            if ga {
                // d op(A) = dC op(B)^T; stored A^T when ta.
                let da = if ta {
                    gemm::gemm(rec, op(&bv, tb), Operand::trans(dc), 1.0, None)?
                } else {
                    gemm::gemm(rec, Operand::plain(dc), op(&bv, !tb), 1.0, None)?
                };
                c.push((ia, da));
            }
            if gb {
                // d op(B) = op(A)^T dC; stored B^T when tb.
                let db = if tb {
                    gemm::gemm(rec, Operand::trans(dc), op(&av, ta), 1.0, None)?
                } else {
                    gemm::gemm(rec, op(&av, !ta), Operand::plain(dc), 1.0, None)?
                };
                c.push((ib, db));
            }
            Ok(c)
        }))
    }

    /// `x W^T + bias` for `x [.., in]`, `W [out, in]`, `bias [out]` (nn.Linear); gradients
    /// flow to whichever of x, W, bias are tracked.
    pub fn linear(&mut self, x: &Var, w: &Var, bias: Option<&Var>) -> Result<Var> {
        let (xs, rows, x2) = as_rows("linear", x)?;
        let y = gemm::linear(&mut self.rec, &x2, &w.value, bias.map(|b| &b.value))?;
        let out_f = y.shape()[1];
        let y = y.reshape(&with_last(&xs, out_f))?;
        let wv = w.value.clone();
        let (ix, iw, gx, gw) = (x.id, w.id, x.tracked, w.tracked);
        let (ib, gbias) = bias.map_or((0, false), |b| (b.id, b.tracked));
        let mut inputs = vec![x, w];
        if let Some(b) = bias {
            inputs.push(b);
        }
        Ok(self.record(y, &inputs, move |rec, dy| {
            let dy2 = dy.reshape(&[rows, out_f])?;
            let mut c = Vec::new();
            if gx {
                let dx = gemm::gemm(rec, Operand::plain(&dy2), Operand::plain(&wv), 1.0, None)?;
                c.push((ix, dx.reshape(&xs)?));
            }
            if gw {
                c.push((
                    iw,
                    gemm::gemm(rec, Operand::trans(&dy2), Operand::plain(&x2), 1.0, None)?,
                ));
            }
            if gbias {
                c.push((ib, crate::kernels::activations::sum_rows(rec, &dy2)?));
            }
            Ok(c)
        }))
    }

    /// `x · V(f)`: a product with a masked-stacked view of a shared factor `f`.
    /// `Factor::A`: `f [r, in]`, `x [T, in]` → `x A_s^T [T, d r]`.
    /// `Factor::B`: `f [out, r]`, `x [T, d r]` → `x B_s^T [T, out]`.
    /// The factor's gradient is the masked sum over branches.
    pub fn masked_matmul(
        &mut self,
        x: &Var,
        f: &Var,
        masks: &MaskBits,
        factor: Factor,
    ) -> Result<Var> {
        let (fwd, bwd) = match factor {
            Factor::A => (View::AStackedT, View::AStacked),
            Factor::B => (View::BStackedT, View::BStacked),
        };
        let y = gemm::gemm(
            &mut self.rec,
            Operand::plain(&x.value),
            Operand::stacked(&f.value, fwd, masks),
            1.0,
            None,
        )?;
        let (xv, fv, m) = (x.value.clone(), f.value.clone(), masks.clone());
        let (ix, iff, gx, gf) = (x.id, f.id, x.tracked, f.tracked);
        Ok(self.record(y, &[x, f], move |rec, dy| {
            let mut c = Vec::new();
            if gx {
                c.push((
                    ix,
                    gemm::gemm(
                        rec,
                        Operand::plain(dy),
                        Operand::stacked(&fv, bwd, &m),
                        1.0,
                        None,
                    )?,
                ));
            }
            if gf {
                let stacked = gemm::gemm(rec, Operand::trans(dy), Operand::plain(&xv), 1.0, None)?;
                c.push((iff, masked_sum(rec, &m, factor, &stacked)?));
            }
            Ok(c)
        }))
    }

    /// The CapaBoost-LoRA update added to a base output:
    /// `y_base + s (x A_s^T) B_s^T`, fused (the update accumulates into y_base's buffer,
    /// which must not be used elsewhere). Gradients: y_base (identity), x, A, B.
    pub fn capaboost_update(
        &mut self,
        y_base: &Var,
        x: &Var,
        lora_a: &Var,
        lora_b: &Var,
        masks: &LayerMasks,
        s: f32,
    ) -> Result<Var> {
        let (xs, rows, x2) = as_rows("capaboost", x)?;
        let out_f = *y_base.shape().last().unwrap_or(&0);
        let y2 = y_base.value.reshape(&[rows, out_f]).map_err(|_| {
            Error::shape(format!(
                "capaboost: base output {:?} does not fit x {:?}",
                y_base.shape(),
                xs
            ))
        })?;
        let h = gemm::gemm(
            &mut self.rec,
            Operand::plain(&x2),
            Operand::stacked(&lora_a.value, View::AStackedT, &masks.a),
            1.0,
            None,
        )?;
        gemm::gemm_into(
            &mut self.rec,
            Operand::plain(&h),
            Operand::stacked(&lora_b.value, View::BStackedT, &masks.b),
            &y2,
            s,
            1.0,
            None,
        )?;
        let (av, bv, m) = (lora_a.value.clone(), lora_b.value.clone(), masks.clone());
        let (iy, ix, ia, ib) = (y_base.id, x.id, lora_a.id, lora_b.id);
        let (gy, gx, ga, gb) = (y_base.tracked, x.tracked, lora_a.tracked, lora_b.tracked);
        Ok(self.record(
            y_base.value.clone(),
            &[y_base, x, lora_a, lora_b],
            move |rec, dy| {
                let dy2 = dy.reshape(&[rows, out_f])?;
                let mut c = Vec::new();
                if gb {
                    let st = gemm::gemm(rec, Operand::trans(&dy2), Operand::plain(&h), s, None)?;
                    c.push((ib, masked_sum(rec, &m.b, Factor::B, &st)?));
                }
                if ga || gx {
                    let dh = gemm::gemm(
                        rec,
                        Operand::plain(&dy2),
                        Operand::stacked(&bv, View::BStacked, &m.b),
                        s,
                        None,
                    )?;
                    if ga {
                        let st =
                            gemm::gemm(rec, Operand::trans(&dh), Operand::plain(&x2), 1.0, None)?;
                        c.push((ia, masked_sum(rec, &m.a, Factor::A, &st)?));
                    }
                    if gx {
                        let dx = gemm::gemm(
                            rec,
                            Operand::plain(&dh),
                            Operand::stacked(&av, View::AStacked, &m.a),
                            1.0,
                            None,
                        )?;
                        c.push((ix, dx.reshape(&xs)?));
                    }
                }
                if gy {
                    c.push((iy, dy.clone()));
                }
                Ok(c)
            },
        ))
    }

    /// The whole CapaBoost-LoRA layer without dropout: `x W0^T + b0 + s (x A_s^T) B_s^T`
    /// through the fused layer kernels (three forward GEMMs).
    #[allow(clippy::too_many_arguments)]
    pub fn capaboost_linear(
        &mut self,
        x: &Var,
        w0: &Tensor,
        b0: Option<&Tensor>,
        lora_a: &Var,
        lora_b: &Var,
        masks: &LayerMasks,
        s: f32,
    ) -> Result<Var> {
        let (xs, rows, x2) = as_rows("capaboost", x)?;
        let f = cb::forward(
            &mut self.rec,
            &x2,
            w0,
            b0,
            &lora_a.value,
            &lora_b.value,
            masks,
            s,
        )?;
        let out_f = w0.shape()[0];
        let y = f.y.reshape(&with_last(&xs, out_f))?;
        let (w, av, bv, m, h) = (
            w0.clone(),
            lora_a.value.clone(),
            lora_b.value.clone(),
            masks.clone(),
            f.h,
        );
        let (ix, ia, ib) = (x.id, lora_a.id, lora_b.id);
        let (gx, ga, gb) = (x.tracked, lora_a.tracked, lora_b.tracked);
        Ok(self.record(y, &[x, lora_a, lora_b], move |rec, dy| {
            let dy2 = dy.reshape(&[rows, out_f])?;
            let g = cb::backward(rec, &x2, &w, &av, &bv, &m, s, &h, &dy2, gx)?;
            let mut c = Vec::new();
            if ga {
                c.push((ia, g.da));
            }
            if gb {
                c.push((ib, g.db));
            }
            if let Some(dx) = g.dx {
                c.push((ix, dx.reshape(&xs)?));
            }
            Ok(c)
        }))
    }

    /// `a + b` (same shapes).
    pub fn add(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::add(&mut self.rec, &a.value, &b.value)?;
        let (ia, ib, ga, gb) = (a.id, b.id, a.tracked, b.tracked);
        Ok(self.record(y, &[a, b], move |_, dy| {
            let mut c = Vec::new();
            if ga {
                c.push((ia, dy.clone()));
            }
            if gb {
                c.push((ib, dy.clone()));
            }
            Ok(c)
        }))
    }

    /// `a * b` elementwise (same shapes).
    pub fn mul(&mut self, a: &Var, b: &Var) -> Result<Var> {
        let y = elementwise::mul(&mut self.rec, &a.value, &b.value)?;
        let (av, bv) = (a.value.clone(), b.value.clone());
        let (ia, ib, ga, gb) = (a.id, b.id, a.tracked, b.tracked);
        Ok(self.record(y, &[a, b], move |rec, dy| {
            let mut c = Vec::new();
            if ga {
                c.push((ia, elementwise::mul(rec, dy, &bv)?));
            }
            if gb {
                c.push((ib, elementwise::mul(rec, dy, &av)?));
            }
            Ok(c)
        }))
    }

    /// `alpha * a`.
    pub fn scale(&mut self, a: &Var, alpha: f32) -> Result<Var> {
        let y = elementwise::scale(&mut self.rec, &a.value, alpha)?;
        let ia = a.id;
        Ok(self.record(y, &[a], move |rec, dy| {
            Ok(vec![(ia, elementwise::scale(rec, dy, alpha)?)])
        }))
    }

    /// The same values under another shape.
    pub fn reshape(&mut self, a: &Var, shape: &[usize]) -> Result<Var> {
        let y = a.value.reshape(shape)?;
        let (ia, old) = (a.id, a.shape().to_vec());
        Ok(self.record(y, &[a], move |_, dy| Ok(vec![(ia, dy.reshape(&old)?)])))
    }
}

/// `x [.., in]` viewed as `[rows, in]`: its full shape, the row count, and the 2-D view.
fn as_rows(op: &str, x: &Var) -> Result<(Vec<usize>, usize, Tensor)> {
    let xs = x.shape().to_vec();
    let in_f = *xs
        .last()
        .ok_or_else(|| Error::shape(format!("{op}: x is 0-D")))?;
    let rows = x.value.numel() / in_f.max(1);
    let x2 = x.value.reshape(&[rows, in_f])?;
    Ok((xs, rows, x2))
}

/// `shape` with its last dimension replaced by `last`.
fn with_last(shape: &[usize], last: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    if let Some(l) = s.last_mut() {
        *l = last;
    }
    s
}

fn op(t: &Tensor, trans: bool) -> Operand<'_> {
    if trans {
        Operand::trans(t)
    } else {
        Operand::plain(t)
    }
}

/// Adds a gradient contribution, summing with any earlier one for the same value.
fn accumulate(
    rec: &mut Recorder,
    grads: &mut HashMap<usize, Tensor>,
    id: usize,
    g: Tensor,
) -> Result<()> {
    let sum = match grads.remove(&id) {
        Some(prev) => elementwise::add(rec, &prev, &g)?,
        None => g,
    };
    grads.insert(id, sum);
    Ok(())
}
