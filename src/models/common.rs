//! Parts the encoders share: a projection that is frozen or adapted ([`Proj`]), a layer
//! norm's parameters ([`Norm`]), putting LoRA / CapaBoost on a layer's projections, the
//! checkpoint reader with messages naming the tensor, and [`AdaptedEncoder`], what export
//! and merge read from any encoder.

use rand::Rng;

use crate::kernels::capaboost::LayerMasks;
use crate::kernels::masks::MaskConfig;
use crate::models::bert::Target;
use crate::nn::modules::{
    Activation, CapaBoostAdapter, CapaBoostConfig, CapaBoostLinear, Linear, NamedMask, NamedTensor,
    Placement,
};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::half::BaseDType;
use crate::runtime::io::TensorFile;
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
    /// The projection's output on the graph.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
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

    /// The base layer, to change its storage.
    pub fn base_mut(&mut self) -> &mut Linear {
        match self {
            Proj::Base(l) => l,
            Proj::Adapted(l) => &mut l.base,
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

impl Norm {
    /// `LayerNorm(x)` on the graph (no gradient into gamma and beta).
    pub fn forward(&self, g: &mut Graph, x: &Var, eps: f32) -> Result<Var> {
        let gamma = g.input(&self.gamma);
        let beta = g.input(&self.beta);
        g.layer_norm(x, &gamma, &beta, eps)
    }

    /// `LayerNorm(a + b)` on the graph, the residual add fused into the norm's dispatch.
    pub fn forward_add(&self, g: &mut Graph, (a, b): (&Var, &Var), eps: f32) -> Result<Var> {
        let gamma = g.input(&self.gamma);
        let beta = g.input(&self.beta);
        g.add_layer_norm((a, b), &gamma, &beta, eps)
    }
}

/// Puts LoRA / CapaBoost on the `targets` of layer `layer`'s projections (in
/// [`Target::ALL`] order); module ids are `6 * layer + target`.
pub fn adapt_projections(
    gpu: &Gpu,
    proj: &mut [Proj; 6],
    layer: usize,
    (targets, config): (&[Target], &CapaBoostConfig),
    rng: &mut impl Rng,
) -> Result<()> {
    for (k, t) in Target::ALL.iter().enumerate() {
        if !targets.contains(t) {
            continue;
        }
        let base = proj[k].base().clone();
        let module = (6 * layer + k) as u32;
        let l = CapaBoostLinear::new(gpu, base, config.clone(), module, rng)?;
        proj[k] = Proj::Adapted(Box::new(l));
    }
    Ok(())
}

/// What export and merge read from an encoder with adapters, whatever its architecture.
pub trait AdaptedEncoder {
    /// The module path of target `t` inside a layer (`attention.self.query`), as PEFT's
    /// `target_modules` names it.
    fn target_module(&self, t: Target) -> &'static str;
    /// The HF module path of projection `k` ([`Target::ALL`] order) of layer `layer`.
    fn module_name(&self, layer: usize, k: usize) -> String {
        format!(
            "encoder.layer.{layer}.{}",
            self.target_module(Target::ALL[k])
        )
    }
    /// PEFT's name for target `t` (`target_modules`): the module's name in the
    /// transformers model at run time, which transformers 5 changed for ViT and Dinov2
    /// (`attention.q_proj`) while their checkpoints keep the old names.
    fn peft_target_module(&self, t: Target) -> &'static str {
        self.target_module(t)
    }
    /// PEFT's path of projection `k` of layer `layer` (see [`Self::peft_target_module`]).
    fn peft_module_name(&self, layer: usize, k: usize) -> String {
        self.module_name(layer, k)
    }
    /// Every layer's projections.
    fn projections(&self) -> Vec<&[Proj; 6]>;
    /// Every layer's projections, to merge adapters into them.
    fn projections_mut(&mut self) -> Vec<&mut [Proj; 6]>;
    /// Stores every projection's frozen base weight as `dtype` (biases stay f32); adapters
    /// already on the projections keep their f32 factors. A weight beyond the f16 range
    /// is an error naming it.
    fn set_base_dtype(&mut self, dtype: BaseDType) -> Result<()> {
        let names: Vec<Vec<String>> = (0..self.projections().len())
            .map(|i| (0..6).map(|k| self.module_name(i, k)).collect())
            .collect();
        for (proj, names) in self.projections_mut().into_iter().zip(names) {
            for (p, name) in proj.iter_mut().zip(names) {
                let base = p.base_mut();
                let w = base.weight.to_dtype(&format!("{name}.weight"), dtype)?;
                base.weight = w;
            }
        }
        Ok(())
    }
    /// Bytes the projections' base weights take on the GPU.
    fn base_weight_bytes(&self) -> u64 {
        let all = self.projections();
        all.iter()
            .flat_map(|p| p.iter())
            .map(|p| p.base().weight.bytes())
            .sum()
    }
    /// The encoder's own tensors under HF names (the projections with their current,
    /// possibly merged, base weights); a merged folder copies the base checkpoint's other
    /// tensors beside them.
    fn hf_tensors(&self) -> Result<Vec<(String, Tensor)>>;
    /// The prefix of the encoder inside a task model's checkpoint (`bert.`, `vit.`), dropped
    /// when copying the base checkpoint's tensors.
    fn checkpoint_prefix(&self) -> &'static str;
    /// Checkpoint tensors of pretraining or task heads that a merged encoder leaves out
    /// (`cls.`, `classifier.`).
    fn head_prefix(&self) -> &'static str;
}

/// The tensors of every projection of an encoder under their HF names, in f32 (an f16 base
/// weight decoded).
pub fn projection_tensors(e: &dyn AdaptedEncoder) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    for (i, proj) in e.projections().into_iter().enumerate() {
        for (k, p) in proj.iter().enumerate() {
            let base = p.base();
            let name = e.module_name(i, k);
            out.push((format!("{name}.weight"), base.weight.to_f32()?));
            if let Some(b) = &base.bias {
                out.push((format!("{name}.bias"), b.clone()));
            }
        }
    }
    Ok(out)
}

/// Reads named tensors with the checks and messages a user needs.
pub(crate) struct Weights<'a> {
    pub file: &'a TensorFile,
    pub prefix: &'a str,
    pub gpu: &'a Gpu,
}

impl Weights<'_> {
    /// The tensor `name` as f32 on the host, checked against `shape`.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let (s, data) = self.file.f32(&full)?;
        if s != shape {
            return Err(Error::shape(format!(
                "tensor '{full}' has shape {s:?}, the config implies {shape:?}"
            )));
        }
        Ok(data)
    }

    /// The tensor `name` on the GPU, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_slice(self.gpu, &self.host(name, shape)?, shape)
    }

    /// `name.weight` `[out, in]` and `name.bias` `[out]` (absent when `!bias`), frozen.
    pub fn linear_with(&self, name: &str, out_f: usize, in_f: usize, bias: bool) -> Result<Linear> {
        let b = if bias {
            Some(self.get(&format!("{name}.bias"), &[out_f])?)
        } else {
            None
        };
        Linear::new(
            self.get(&format!("{name}.weight"), &[out_f, in_f])?,
            b,
            false,
        )
    }

    /// `name.weight` `[out, in]` and `name.bias` `[out]`, frozen.
    pub fn linear(&self, name: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        self.linear_with(name, out_f, in_f, true)
    }

    /// A layer norm `name` of width `n`.
    pub fn norm(&self, name: &str, n: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[n])?,
            beta: self.get(&format!("{name}.bias"), &[n])?,
        })
    }
}

/// Multi-head self-attention of `x` `[B * S, H]` through a layer's projections
/// (`[Target::ALL]` order): `softmax(q k^T / sqrt(dh) + mask) v`, heads merged, then the
/// attention output projection. `mask` is additive `[B, S]`.
pub fn self_attention(
    g: &mut Graph,
    proj: &[Proj; 6],
    x: &Var,
    (b, s, heads): (usize, usize, usize),
    mask: Option<&Tensor>,
) -> Result<Var> {
    let q = proj[0].forward(g, x)?;
    let k = proj[1].forward(g, x)?;
    let v = proj[2].forward(g, x)?;
    // The 1/sqrt(dh) scale rides in the score GEMM's alpha (no separate scale pass).
    let ctx = g.attention([&q, &k, &v], mask, (b, s, heads))?;
    proj[3].forward(g, &ctx)
}

/// A layer's bottleneck adapter slots: after attention, after the feed-forward block.
pub type AdapterSlots<'a> = [&'a Option<CapaBoostAdapter>; 2];

/// Bottleneck adapters of width `m` with `masks.d` branches in `placement` on every layer
/// (`slots`: each layer's attention and feed-forward slot); module ids are
/// `1000 + 2 * layer` (+1 for the attention adapter). Shared by BERT and ViT.
pub fn add_bottlenecks(
    gpu: &Gpu,
    slots: Vec<[&mut Option<CapaBoostAdapter>; 2]>,
    (hidden, m): (usize, usize),
    (placement, masks): (Placement, &MaskConfig),
    rng: &mut impl Rng,
) -> Result<()> {
    let act = Activation::Relu;
    for (i, [attn, ffn]) in slots.into_iter().enumerate() {
        let module = 1000 + 2 * i as u32;
        *ffn = Some(CapaBoostAdapter::new(
            gpu, hidden, m, masks, module, act, rng,
        )?);
        if placement == Placement::Houlsby {
            *attn = Some(CapaBoostAdapter::new(
                gpu,
                hidden,
                m,
                masks,
                module + 1,
                act,
                rng,
            )?);
        }
    }
    Ok(())
}

/// The trainable tensors of an encoder's adapters under their HF module names: every
/// adapted projection (`{module_name}.lora_A` ...) and every bottleneck adapter
/// (`encoder.layer.{i}.{attention,output}_adapter.*`), layer by layer.
pub fn adapter_params(e: &dyn AdaptedEncoder, slots: Vec<AdapterSlots<'_>>) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for (i, (proj, [attn, ffn])) in e.projections().into_iter().zip(slots).enumerate() {
        for (k, p) in proj.iter().enumerate() {
            if let Proj::Adapted(l) = p {
                let module = e.module_name(i, k);
                out.extend(
                    l.params()
                        .into_iter()
                        .map(|(n, t)| (format!("{module}.{n}"), t)),
                );
            }
        }
        for (name, a) in [("attention_adapter", attn), ("output_adapter", ffn)] {
            if let Some(a) = a {
                for (n, t) in a.params() {
                    out.push((format!("encoder.layer.{i}.{name}.{n}"), t));
                }
            }
        }
    }
    out
}

/// Appends the masks of one adapted module, read back, as `{prefix}.mask_A.{i}` (`[r, in]`)
/// and `{prefix}.mask_B.{i}` (`[out, r]`), branch by branch.
pub(crate) fn push_masks(out: &mut Vec<NamedMask>, prefix: &str, m: &LayerMasks) -> Result<()> {
    let (ma, mb) = m.to_u8()?;
    for (factor, bits, masks) in [("A", &m.a, ma), ("B", &m.b, mb)] {
        for (i, v) in masks.into_iter().enumerate() {
            out.push((
                format!("{prefix}.mask_{factor}.{i}"),
                vec![bits.rows, bits.cols],
                v,
            ));
        }
    }
    Ok(())
}

/// Every static mask of an encoder's adapters, read back, named as [`adapter_params`]
/// names the tensor it masks: `{module_name}.mask_A.{i}` masks `lora_A` in branch `i`
/// (`[r, in]`), `{module_name}.mask_B.{i}` masks `lora_B` (`[out, r]`); bottleneck
/// adapters `encoder.layer.{i}.{attention,output}_adapter.mask_{A,B}.{i}`.
pub fn adapter_masks(
    e: &dyn AdaptedEncoder,
    slots: Vec<AdapterSlots<'_>>,
) -> Result<Vec<NamedMask>> {
    let mut out = Vec::new();
    for (i, (proj, [attn, ffn])) in e.projections().into_iter().zip(slots).enumerate() {
        for (k, p) in proj.iter().enumerate() {
            if let Proj::Adapted(l) = p {
                push_masks(&mut out, &e.module_name(i, k), &l.masks)?;
            }
        }
        for (name, a) in [("attention_adapter", attn), ("output_adapter", ffn)] {
            if let Some(a) = a {
                push_masks(&mut out, &format!("encoder.layer.{i}.{name}"), &a.masks)?;
            }
        }
    }
    Ok(out)
}
