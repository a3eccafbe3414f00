//! LoRA / CapaBoost adapters on the Llama decoder's projections: the frozen base (often
//! quantized) plus `s sum_i (B*N_i)(A*M_i) x`, trained in f32. Module ids are
//! `7 * layer + projection` (projections in [`LlamaTarget::ALL`] order), so the masks are
//! a function of (seed, layer, projection) as in the encoders.

use rand::Rng;

use super::model::{FrozenWeight, Llama, LlamaProj};
use crate::kernels::capaboost::{Adapter, LayerMasks};
use crate::models::common::push_masks;
use crate::nn::modules::{CapaBoostConfig, NamedMask, NamedTensor, uniform};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;

/// A projection of a decoder block that adapters can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LlamaTarget {
    /// `self_attn.q_proj` (GGUF `attn_q`).
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl LlamaTarget {
    /// Every projection, in block order (the order of [`super::PROJ_NAMES`]).
    pub const ALL: [LlamaTarget; 7] = [
        LlamaTarget::Q,
        LlamaTarget::K,
        LlamaTarget::V,
        LlamaTarget::O,
        LlamaTarget::Gate,
        LlamaTarget::Up,
        LlamaTarget::Down,
    ];

    /// The short name (`q`, ..., `gate`, `up`, `down`).
    pub fn name(self) -> &'static str {
        ["q", "k", "v", "o", "gate", "up", "down"][self.index()]
    }

    /// The HF module path inside `model.layers.{i}` (`self_attn.q_proj`).
    pub fn module(self) -> &'static str {
        [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ][self.index()]
    }

    /// PEFT's `target_modules` name (`q_proj`).
    pub fn peft_name(self) -> &'static str {
        let m = self.module();
        &m[m.find('.').map_or(0, |i| i + 1)..]
    }

    /// Position in [`LlamaTarget::ALL`].
    pub fn index(self) -> usize {
        LlamaTarget::ALL
            .iter()
            .position(|&t| t == self)
            .expect("listed")
    }

    /// A target by its short name, PEFT name (`q_proj`) or HF path.
    pub fn parse(s: &str) -> Option<LlamaTarget> {
        let s = s.trim();
        LlamaTarget::ALL
            .into_iter()
            .find(|t| t.name() == s || t.peft_name() == s || t.module() == s)
    }
}

/// The rows of a q or k projection's output (`rows` of `cols` values, `heads` heads) from
/// the GGUF order to transformers': GGUF converters permute each head's rows so that
/// llama.cpp rotates adjacent pairs; transformers' row `h d + s d/2 + j` is the file's
/// row `h d + 2 j + s`. An adapter's `lora_B` on q or k is exported through this.
pub fn gguf_rows_to_hf(values: &[f32], (rows, cols): (usize, usize), heads: usize) -> Vec<f32> {
    let d = rows / heads;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for s in 0..2 {
            for j in 0..d / 2 {
                let (hf, file) = (h * d + s * d / 2 + j, h * d + 2 * j + s);
                out[hf * cols..(hf + 1) * cols]
                    .copy_from_slice(&values[file * cols..(file + 1) * cols]);
            }
        }
    }
    out
}

/// A frozen base projection with LoRA / CapaBoost factors.
#[derive(Clone, Debug)]
pub struct AdaptedProj {
    /// The frozen base weight `[out, in]`.
    pub base: FrozenWeight,
    /// `[r, in]`, LoRA's init.
    pub lora_a: Tensor,
    /// `[out, r]`, zero at init: the model starts as the base model.
    pub lora_b: Tensor,
    /// The static masks.
    pub masks: LayerMasks,
    /// Hyper-parameters.
    pub config: CapaBoostConfig,
    /// Module id (keys the masks and the dropout stream).
    pub module_id: u32,
}

impl AdaptedProj {
    /// Adapters of `config` on `base` (`[out, in]`), masks generated on the GPU.
    pub fn new(
        gpu: &Gpu,
        base: FrozenWeight,
        config: CapaBoostConfig,
        module_id: u32,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        config.validate()?;
        let [out_f, in_f] = base.shape();
        let r = config.r;
        let lora_a = uniform(gpu, rng, &[r, in_f], 1.0 / (in_f as f32).sqrt())?;
        let lora_b = Tensor::zeros(gpu, &[out_f, r])?;
        let masks =
            gpu.run(|rec| LayerMasks::generate(rec, &config.mask, module_id, r, in_f, out_f))?;
        Ok(Self {
            base,
            lora_a,
            lora_b,
            masks,
            config,
            module_id,
        })
    }

    /// The base output plus the adapters' update; gradients reach lora_A, lora_B and x.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        let y = self.base.forward(g, x)?;
        let a = g.param(&self.lora_a);
        let b = g.param(&self.lora_b);
        let adapter = Adapter::new(&a, &b, &self.masks, self.config.scale());
        let xd = if self.config.dropout > 0.0 && g.grad_enabled() {
            let seed = g.seed();
            g.dropout(x, self.config.dropout, seed, self.module_id)?
        } else {
            x.clone()
        };
        g.capaboost_update(&y, &xd, adapter)
    }

    /// Trainable tensors, PEFT names.
    pub fn params(&self) -> Vec<NamedTensor> {
        vec![
            ("lora_A.weight".into(), self.lora_a.clone()),
            ("lora_B.weight".into(), self.lora_b.clone()),
        ]
    }
}

impl Llama {
    /// Puts LoRA / CapaBoost of `config` on `targets` of every block.
    pub fn add_adapters(
        &mut self,
        gpu: &Gpu,
        targets: &[LlamaTarget],
        config: &CapaBoostConfig,
        rng: &mut impl Rng,
    ) -> Result<()> {
        if targets.is_empty() {
            return Err(Error::InvalidArgument("no adapter targets given".into()));
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for t in LlamaTarget::ALL.into_iter().filter(|t| targets.contains(t)) {
                let k = t.index();
                let base = layer.proj[k].base().clone();
                let module = (7 * i + k) as u32;
                let a = AdaptedProj::new(gpu, base, config.clone(), module, rng)?;
                layer.proj[k] = LlamaProj::Adapted(Box::new(a));
            }
        }
        Ok(())
    }

    /// Every adapted projection with its HF module path (`model.layers.3.self_attn.q_proj`),
    /// in layer order.
    pub fn adapted(&self) -> Vec<(String, &AdaptedProj)> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (t, p) in LlamaTarget::ALL.iter().zip(&layer.proj) {
                if let LlamaProj::Adapted(a) = p {
                    out.push((format!("model.layers.{i}.{}", t.module()), a.as_ref()));
                }
            }
        }
        out
    }

    /// The adapters' trainable tensors under HF names (`{module}.lora_A.weight`).
    pub fn adapter_params(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (module, a) in self.adapted() {
            for (n, t) in a.params() {
                out.push((format!("{module}.{n}"), t));
            }
        }
        out
    }

    /// Every static mask, read back, named `{module}.mask_{A,B}.{branch}`.
    pub fn adapter_masks(&self) -> Result<Vec<NamedMask>> {
        let mut out = Vec::new();
        for (module, a) in self.adapted() {
            push_masks(&mut out, &module, &a.masks)?;
        }
        Ok(out)
    }

    /// Adapter entries some branch's mask lets through (reads the masks back).
    pub fn adapter_used_params(&self) -> Result<usize> {
        self.adapted()
            .iter()
            .map(|(_, a)| a.masks.used_entries())
            .sum()
    }
}
