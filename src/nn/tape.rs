//! A small tape-based autograd: each op runs its forward dispatches at once and records a
//! closure holding what its backward needs (the ops live in [`crate::nn::ops`], one file per
//! kernel family; the tape knows none of them); [`Graph::backward`] replays the closures in
//! reverse into the same command encoder, so a whole step (forward, backward, optimizer)
//! is one submit with no readback.
//!
//! Gradients accumulate across uses of a tensor (micrograd's rule). A graph built with
//! [`Graph::no_grad`] records nothing (evaluation, inference). A graph lives for one step:
//! dropping it (or calling backward) releases every saved activation.

use rustc_hash::FxHashMap;

use crate::kernels::elementwise;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

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
    by_storage: FxHashMap<u64, Tensor>,
    var_storage: FxHashMap<usize, u64>,
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
    param_by_storage: FxHashMap<u64, Var>,
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

    /// Ends the step without submitting and hands back its recorder (with everything
    /// recorded so far), e.g. to submit it another way.
    pub fn into_recorder(self) -> Recorder {
        self.rec
    }

    fn build(rec: Recorder, grad_enabled: bool) -> Self {
        Self {
            rec,
            nodes: Vec::new(),
            param_by_storage: FxHashMap::default(),
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
        let nodes = std::mem::take(&mut self.nodes);
        // The reverse pass's frontier is small: the map stays far below the node count.
        let mut grads: FxHashMap<usize, Parts> = FxHashMap::default();
        grads.reserve(64);
        grads.insert(out.id, Parts::One(grad));
        for node in nodes.into_iter().rev() {
            // Every contribution to this node's output came from later nodes, which have run.
            let Some(g) = take(&mut self.rec, &mut grads, node.out)? else {
                continue;
            };
            for (id, contribution) in (node.backward)(&mut self.rec, &g)? {
                accumulate(&mut self.rec, &mut grads, id, contribution)?;
            }
        }
        let mut out = Gradients::default();
        for (storage, v) in &self.param_by_storage {
            if let Some(g) = take(&mut self.rec, &mut grads, v.id)? {
                out.by_storage.insert(*storage, g);
                out.var_storage.insert(v.id, *storage);
            }
        }
        Ok(out)
    }
}

/// The gradient contributions to one value not yet summed: one (no allocation) or several.
enum Parts {
    One(Tensor),
    Many(Vec<Tensor>),
}

/// Notes a gradient contribution to value `id`. Contributions wait to be summed in one
/// dispatch when the value's gradient is taken ([`take`]), or as soon as
/// [`elementwise::ADD_MANY_MAX`] wait, so at most that many are held per value.
fn accumulate(
    rec: &mut Recorder,
    grads: &mut FxHashMap<usize, Parts>,
    id: usize,
    g: Tensor,
) -> Result<()> {
    let parts = match grads.remove(&id) {
        None => Parts::One(g),
        Some(Parts::One(first)) => Parts::Many(vec![first, g]),
        Some(Parts::Many(mut v)) => {
            v.push(g);
            if v.len() == elementwise::ADD_MANY_MAX {
                Parts::One(elementwise::add_many(rec, &v)?)
            } else {
                Parts::Many(v)
            }
        }
    };
    grads.insert(id, parts);
    Ok(())
}

/// The gradient of value `id`, its contributions summed in arrival order (the bits of
/// adding them one at a time); `None` when nothing reached it.
fn take(
    rec: &mut Recorder,
    grads: &mut FxHashMap<usize, Parts>,
    id: usize,
) -> Result<Option<Tensor>> {
    match grads.remove(&id) {
        Some(Parts::One(g)) => Ok(Some(g)),
        Some(Parts::Many(v)) => elementwise::add_many(rec, &v).map(Some),
        None => Ok(None),
    }
}
