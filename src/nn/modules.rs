//! Modules: `Linear`, `CapaBoostLinear` (LoRA when d = 1 and p = 1) and
//! `CapaBoostAdapter` (a bottleneck adapter with d masked branches), with parameter listing,
//! counting, saving and loading.

use std::path::Path;

use rand::Rng;

use crate::kernels::capaboost::{Adapter, LayerMasks, RankScaling};
use crate::kernels::masks::{Factor, MaskConfig, MaskKind};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::{TensorFile, TensorWriter};
use crate::runtime::tensor::Tensor;

pub use crate::nn::weight::Weight;

/// A tensor of `shape` filled with uniform `U(-bound, bound)` values drawn on the host
/// (initialisation only). The size is checked against the device before the host buffer
/// is allocated, and the allocation itself is fallible, so a size no device could hold (a
/// huge rank, say) is an error rather than an abort.
pub(crate) fn uniform(
    gpu: &Gpu,
    rng: &mut impl Rng,
    shape: &[usize],
    bound: f32,
) -> Result<Tensor> {
    let mut v = crate::runtime::tensor::host_buffer(gpu, shape)?;
    let n: usize = shape.iter().product(); // checked by host_buffer
    v.extend((0..n).map(|_| rng.random_range(-bound..bound)));
    Tensor::from_slice(gpu, &v, shape)
}

/// A named parameter tensor.
pub type NamedTensor = (String, Tensor);

/// A named mask as 0/1 bytes: name, shape, values (row-major).
pub type NamedMask = (String, Vec<usize>, Vec<u8>);

/// `nn.Linear`: `y = x W^T + b`, frozen or trainable.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`: f32, or packed f16 for a frozen base layer ([`Weight::to_dtype`]; a
    /// trainable f16 weight contributes no parameters).
    pub weight: Weight,
    /// `[out]`.
    pub bias: Option<Tensor>,
    /// Whether gradients flow to weight and bias.
    pub trainable: bool,
}

impl Linear {
    /// From existing tensors; shapes are checked.
    pub fn new(weight: Tensor, bias: Option<Tensor>, trainable: bool) -> Result<Self> {
        let [out_f, _] = *weight.shape() else {
            return Err(Error::shape(format!(
                "linear weight must be 2-D, got {:?}",
                weight.shape()
            )));
        };
        if let Some(b) = &bias
            && b.shape() != [out_f]
        {
            return Err(Error::shape(format!(
                "linear bias is {:?}, expected [{out_f}]",
                b.shape()
            )));
        }
        Ok(Self {
            weight: Weight::F32(weight),
            bias,
            trainable,
        })
    }

    /// PyTorch's default init: weight and bias `U(-1/sqrt(in), 1/sqrt(in))`.
    pub fn init(
        gpu: &Gpu,
        in_f: usize,
        out_f: usize,
        trainable: bool,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        let bound = 1.0 / (in_f as f32).sqrt();
        let w = uniform(gpu, rng, &[out_f, in_f], bound)?;
        let b = uniform(gpu, rng, &[out_f], bound)?;
        Self::new(w, Some(b), trainable)
    }

    /// In features.
    pub fn in_features(&self) -> usize {
        self.weight.shape()[1]
    }

    /// Out features.
    pub fn out_features(&self) -> usize {
        self.weight.shape()[0]
    }

    /// `x W^T + b` on the graph.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        let (w, b) = match (&self.weight, self.trainable) {
            (Weight::F16(h), _) => {
                let b = self.bias.as_ref().map(|b| g.input(b));
                return g.linear_f16(x, h, b.as_ref());
            }
            (Weight::F32(w), true) => (g.param(w), self.bias.as_ref().map(|b| g.param(b))),
            (Weight::F32(w), false) => (g.input(w), self.bias.as_ref().map(|b| g.input(b))),
        };
        g.linear(x, &w, b.as_ref())
    }

    /// Trainable tensors (none when frozen).
    pub fn params(&self) -> Vec<NamedTensor> {
        if !self.trainable {
            return Vec::new();
        }
        let Some(w) = self.weight.f32() else {
            return Vec::new();
        };
        let mut v = vec![("weight".to_string(), w.clone())];
        if let Some(b) = &self.bias {
            v.push(("bias".to_string(), b.clone()));
        }
        v
    }
}

/// Hyper-parameters of a CapaBoost (or LoRA) adapter on one linear layer.
#[derive(Clone, Debug, PartialEq)]
pub struct CapaBoostConfig {
    /// Rank r of the shared factors.
    pub r: usize,
    /// LoRA alpha.
    pub alpha: f32,
    /// The masks: kind, branches d, density p, seed.
    pub mask: MaskConfig,
    /// Dropout on the adapter's input (training only).
    pub dropout: f32,
    /// `alpha / r` or `alpha / sqrt(r)`.
    pub rank_scaling: RankScaling,
}

impl CapaBoostConfig {
    /// Plain LoRA: d = 1, density 1.
    pub fn lora(r: usize, alpha: f32) -> Self {
        Self {
            r,
            alpha,
            mask: MaskConfig::dense(),
            dropout: 0.0,
            rank_scaling: RankScaling::Lora,
        }
    }

    /// CapaBoost with the paper's defaults for the rest (exact masks).
    pub fn capaboost(r: usize, alpha: f32, d: u32, density: f64, seed: u64) -> Self {
        Self {
            mask: MaskConfig::new(MaskKind::Exact, d, density, seed),
            ..Self::lora(r, alpha)
        }
    }

    /// The scale s.
    pub fn scale(&self) -> f32 {
        self.rank_scaling.scale(self.alpha, self.r)
    }

    /// Checks r >= 1, the mask settings and the dropout in [0, 1).
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::InvalidArgument("r must be at least 1".into()));
        }
        self.mask.validate()?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument(format!(
                "dropout {} is outside [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// A frozen base `Linear` plus shared `lora_A [r, in]` / `lora_B [out, r]` seen through d
/// static masks. With d = 1 and p = 1 it is exactly LoRA.
#[derive(Clone, Debug)]
pub struct CapaBoostLinear {
    /// The frozen base layer.
    pub base: Linear,
    /// `[r, in]`, LoRA's init (Kaiming-uniform, `U(-1/sqrt(in), 1/sqrt(in))`).
    pub lora_a: Tensor,
    /// `[out, r]`, zero at init so the layer starts as the base layer, bit for bit.
    pub lora_b: Tensor,
    /// The static masks.
    pub masks: LayerMasks,
    /// Hyper-parameters.
    pub config: CapaBoostConfig,
    /// Module id (keys the masks and the dropout stream).
    pub module_id: u32,
    merged: bool,
}

impl CapaBoostLinear {
    /// Wraps a base layer (which becomes frozen); masks are generated on the GPU.
    pub fn new(
        gpu: &Gpu,
        base: Linear,
        config: CapaBoostConfig,
        module_id: u32,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        config.validate()?;
        let (in_f, out_f, r) = (base.in_features(), base.out_features(), config.r);
        let lora_a = uniform(gpu, rng, &[r, in_f], 1.0 / (in_f as f32).sqrt())?;
        let lora_b = Tensor::zeros(gpu, &[out_f, r])?;
        let masks =
            gpu.run(|rec| LayerMasks::generate(rec, &config.mask, module_id, r, in_f, out_f))?;
        Ok(Self {
            base: Linear {
                trainable: false,
                ..base
            },
            lora_a,
            lora_b,
            masks,
            config,
            module_id,
            merged: false,
        })
    }

    /// The adapter over the layer's own factors and masks (a view: it borrows them).
    pub fn adapter(&self) -> Adapter<'_> {
        Adapter::new(&self.lora_a, &self.lora_b, &self.masks, self.config.scale())
    }

    /// The layer's output on the graph. Gradients reach lora_A, lora_B and x.
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        if self.merged {
            return self.base.forward(g, x);
        }
        let a = g.param(&self.lora_a);
        let b = g.param(&self.lora_b);
        let adapter = Adapter::new(&a, &b, &self.masks, self.config.scale());
        let dropout = self.config.dropout > 0.0 && g.grad_enabled();
        if let (Weight::F32(w), false) = (&self.base.weight, dropout) {
            return g.capaboost_linear(x, w, self.base.bias.as_ref(), adapter);
        }
        // Dropout on the adapter's input, or an f16 base (its own GEMM): the base output
        // plus the update.
        let y = self.base.forward(g, x)?;
        let xd = if dropout {
            let seed = g.seed();
            g.dropout(x, self.config.dropout, seed, self.module_id)?
        } else {
            x.clone()
        };
        g.capaboost_update(&y, &xd, adapter)
    }

    /// Folds the update into the base weight for inference at the base layer's cost. An
    /// f16 base becomes f32 first (its rounded values plus the update, in f32).
    pub fn merge(&mut self, gpu: &Gpu) -> Result<()> {
        if !self.merged {
            if let Weight::F16(h) = &self.base.weight {
                self.base.weight = Weight::F32(h.to_tensor()?);
            }
            let w = self.base.weight.require_f32()?;
            gpu.run(|rec| self.adapter().merge(rec, w))?;
            self.merged = true;
        }
        Ok(())
    }

    /// Undoes [`CapaBoostLinear::merge`].
    pub fn unmerge(&mut self, gpu: &Gpu) -> Result<()> {
        if self.merged {
            let w = self.base.weight.require_f32()?;
            gpu.run(|rec| self.adapter().unmerge(rec, w))?;
            self.merged = false;
        }
        Ok(())
    }

    /// Whether the update is folded into the base weight.
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Trainable tensors, PEFT names.
    pub fn params(&self) -> Vec<NamedTensor> {
        vec![
            ("lora_A.weight".into(), self.lora_a.clone()),
            ("lora_B.weight".into(), self.lora_b.clone()),
        ]
    }

    /// Stored trainable entries: `r (in + out)`, the same for every d.
    pub fn stored_params(&self) -> usize {
        self.lora_a.numel() + self.lora_b.numel()
    }

    /// Entries some branch's mask lets through (reads the masks back once).
    pub fn used_params(&self) -> Result<usize> {
        self.masks.used_entries()
    }
}

/// Nonlinearity inside a bottleneck adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// ReLU (Pfeiffer's choice).
    Relu,
    /// GELU, erf form.
    Gelu,
}

/// Where bottleneck adapters sit in a transformer layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// One adapter after the feed-forward output.
    Pfeiffer,
    /// Two adapters: after the attention output and after the feed-forward output.
    Houlsby,
}

/// A bottleneck adapter with d masked branches over shared weights:
/// `y = x + sum_i act(x (Wd*D_i)^T + bd) (Wu*U_i)^T + bu`, biases shared and unmasked.
/// Stacked, it is one adapter of bottleneck width d m. No merge is possible.
#[derive(Clone, Debug)]
pub struct CapaBoostAdapter {
    /// `[m, in]`.
    pub down: Tensor,
    /// `[m]`.
    pub down_bias: Tensor,
    /// `[in, m]`, zero at init so the adapter starts as the identity.
    pub up: Tensor,
    /// `[in]`.
    pub up_bias: Tensor,
    /// `a`: masks of `down` (`[m, in]`); `b`: masks of `up` (`[in, m]`).
    pub masks: LayerMasks,
    /// Nonlinearity.
    pub activation: Activation,
}

impl CapaBoostAdapter {
    /// A new adapter of bottleneck width `m` on `in_f` features with `masks.d` branches.
    pub fn new(
        gpu: &Gpu,
        in_f: usize,
        m: usize,
        masks: &MaskConfig,
        module_id: u32,
        activation: Activation,
        rng: &mut impl Rng,
    ) -> Result<Self> {
        if m == 0 {
            return Err(Error::InvalidArgument(
                "adapter width must be at least 1".into(),
            ));
        }
        masks.validate()?;
        let down = uniform(gpu, rng, &[m, in_f], 1.0 / (in_f as f32).sqrt())?;
        let masks = gpu.run(|rec| LayerMasks::generate(rec, masks, module_id, m, in_f, in_f))?;
        Ok(Self {
            down,
            down_bias: Tensor::zeros(gpu, &[m])?,
            up: Tensor::zeros(gpu, &[in_f, m])?,
            up_bias: Tensor::zeros(gpu, &[in_f])?,
            masks,
            activation,
        })
    }

    /// The adapter's output on the graph (includes the residual).
    pub fn forward(&self, g: &mut Graph, x: &Var) -> Result<Var> {
        let xs = x.shape().to_vec();
        let in_f = self.down.shape()[1];
        let m = self.down.shape()[0];
        let d = self.masks.d();
        if xs.last() != Some(&in_f) {
            return Err(Error::shape(format!(
                "adapter input is {xs:?}, expected [.., {in_f}]"
            )));
        }
        let rows = x.value().numel() / in_f;
        let (down, bd, up, bu) = (
            g.param(&self.down),
            g.param(&self.down_bias),
            g.param(&self.up),
            g.param(&self.up_bias),
        );
        let x2 = g.reshape(x, &[rows, in_f])?;
        let h = g.masked_matmul(&x2, &down, &self.masks.a, Factor::A)?;
        // [T, d m] is [T d, m]: the shared bias and the activation apply per branch.
        let h = g.reshape(&h, &[rows * d, m])?;
        let h = g.add_bias(&h, &bd)?;
        let h = match self.activation {
            Activation::Relu => g.relu(&h)?,
            Activation::Gelu => g.gelu(&h)?,
        };
        let h = g.reshape(&h, &[rows, d * m])?;
        let u = g.masked_matmul(&h, &up, &self.masks.b, Factor::B)?;
        let u = g.add_bias(&u, &bu)?;
        let y = g.add(&u, &x2)?;
        g.reshape(&y, &xs)
    }

    /// Trainable tensors.
    pub fn params(&self) -> Vec<NamedTensor> {
        vec![
            ("down.weight".into(), self.down.clone()),
            ("down.bias".into(), self.down_bias.clone()),
            ("up.weight".into(), self.up.clone()),
            ("up.bias".into(), self.up_bias.clone()),
        ]
    }

    /// Stored trainable entries.
    pub fn stored_params(&self) -> usize {
        self.params().iter().map(|(_, t)| t.numel()).sum()
    }

    /// Entries some mask lets through (biases are unmasked).
    pub fn used_params(&self) -> Result<usize> {
        Ok(self.masks.used_entries()? + self.down_bias.numel() + self.up_bias.numel())
    }
}

/// Saves named tensors to a safetensors file (atomically).
pub fn save_params(path: &Path, params: &[NamedTensor]) -> Result<()> {
    let mut w = TensorWriter::default();
    for (name, t) in params {
        w.f32(name.clone(), t.shape(), &t.to_vec()?);
    }
    w.write(path)
}

/// Loads named tensors from a safetensors file into existing tensors of the same shapes.
pub fn load_params(path: &Path, params: &[NamedTensor]) -> Result<()> {
    let f = TensorFile::read(path)?;
    for (name, t) in params {
        let (shape, data) = f.f32(name)?;
        if shape != t.shape() {
            return Err(Error::File {
                path: path.display().to_string(),
                message: format!(
                    "tensor '{name}' has shape {shape:?}, the model expects {:?}",
                    t.shape()
                ),
            });
        }
        t.write(&data)?;
    }
    Ok(())
}
