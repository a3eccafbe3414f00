//! One encoder layer's parts: projections (frozen or adapted), layer norms, adapters.

use crate::nn::modules::{CapaBoostAdapter, CapaBoostLinear, Linear};
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::tensor::Tensor;

/// A projection that is either the frozen base layer or the base plus an adapter.
#[derive(Clone, Debug)]
pub enum Proj {
    /// Frozen base layer.
    Base(Linear),
    /// Base layer with LoRA / CapaBoost (boxed: much larger than a bare layer).
    Adapted(Box<CapaBoostLinear>),
}

impl Proj {
    pub(super) fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
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
    /// Projections in [`Target::ALL`](super::Target::ALL) order.
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
