//! One encoder layer's parts: projections (frozen or adapted), layer norms, adapters.

pub use crate::models::common::{Norm, Proj};
use crate::nn::modules::CapaBoostAdapter;

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
