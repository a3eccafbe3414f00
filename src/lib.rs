//! # capaboost
//!
//! CapaBoost (arXiv 2407.01320) and LoRA adapter fine-tuning on any GPU that wgpu reaches
//! (Vulkan, Metal, DX12, GL), and on a software Vulkan device (lavapipe) where there is none.
//!
//! The foundation: [`Gpu`] (adapter choice, or adoption of a host program's device),
//! [`Tensor`] (f32 on a pooled GPU buffer), [`Recorder`] (many dispatches, one submit),
//! a pipeline cache and GPU timing. Kernel families live in modules named after their
//! WGSL file in `shaders/`, each with an f64 CPU reference in its `cpu` submodule.
//!
//! A complete path: a device (or [`Gpu::from_wgpu`] on yours), a CapaBoost layer on a
//! frozen linear layer, forward and backward on the tape, an AdamW step, all in one submit,
//! then merging the update into the base weight for inference:
//!
//! ```
//! use capaboost::nn::Graph;
//! use capaboost::nn::modules::{CapaBoostConfig, CapaBoostLinear, Linear};
//! use capaboost::nn::optim::{AdamW, AdamWConfig};
//! use capaboost::{Gpu, Tensor};
//! use rand::SeedableRng;
//! # fn main() -> capaboost::Result<()> {
//! let Some(gpu) = Gpu::new_or_skip()? else { return Ok(()) };
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! // A frozen 32 -> 16 layer with a CapaBoost adapter: r = 4, d = 2 branches, density 0.5.
//! let base = Linear::init(&gpu, 32, 16, false, &mut rng)?;
//! let mut layer = CapaBoostLinear::new(&gpu, base, CapaBoostConfig::capaboost(4, 8.0, 2, 0.5, 1), 0, &mut rng)?;
//! let params: Vec<Tensor> = layer.params().into_iter().map(|(_, t)| t).collect();
//! let mut opt = AdamW::new(&gpu, AdamWConfig::default(), &params)?;
//!
//! let x = Tensor::from_slice(&gpu, &vec![0.5; 8 * 32], &[8, 32])?;
//! let target = Tensor::from_slice(&gpu, &vec![1.0; 8 * 16], &[8, 16])?;
//! let mut g = Graph::new(&gpu);
//! let (xv, tv) = (g.input(&x), g.input(&target));
//! let y = layer.forward(&mut g, &xv)?;
//! let loss = g.mse(&y, &tv)?;
//! let grads = g.backward(&loss)?;
//! opt.step(g.recorder(), &grads)?; // each parameter's gradient, found by identity
//! g.submit()?; // forward, backward and the optimizer: one submit, no readback
//! println!("loss {}", loss.value().to_vec()?[0]);
//!
//! layer.merge(&gpu)?; // inference now costs what the base layer costs
//! # Ok(()) }
//! ```
//!
//! To record into a command encoder your program owns, wrap it with [`Recorder::wrap`]
//! (or [`nn::Graph::with_recorder`]) and take it back with `into_encoder`; tensors
//! can adopt your buffers with [`Tensor::from_buffer`].
//!
//! Without the tape, the CapaBoost math is one type,
//! [`kernels::capaboost::Adapter`] (a view of `lora_A`, `lora_B`, their masks and the
//! scale): `update` (`y += s (x A_s^T) B_s^T`), `backward`, `delta_weight`, `merge`;
//! [`kernels::capaboost::Layer`] puts it on a frozen base weight:
//!
//! ```
//! use capaboost::kernels::capaboost::{Adapter, Layer, LayerMasks};
//! use capaboost::kernels::masks::{MaskConfig, MaskKind};
//! use capaboost::{Gpu, Tensor};
//! # fn main() -> capaboost::Result<()> {
//! let Some(gpu) = Gpu::new_or_skip()? else { return Ok(()) };
//! let (t, n, r) = (4, 8, 2);
//! let x = Tensor::full(&gpu, &[t, n], 0.5)?;
//! let w0 = Tensor::full(&gpu, &[n, n], 0.1)?;
//! let (a, b) = (Tensor::full(&gpu, &[r, n], 0.2)?, Tensor::full(&gpu, &[n, r], 0.3)?);
//! let g = Tensor::full(&gpu, &[t, n], 1.0)?; // dL/dy
//! let config = MaskConfig::new(MaskKind::Exact, 2, 0.5, 1);
//! let masks = gpu.run(|rec| LayerMasks::generate(rec, &config, 0, r, n, n))?;
//! let layer = Layer::new(&w0, None, Adapter::new(&a, &b, &masks, 2.0));
//! let grads = gpu.run(|rec| {
//!     let f = layer.forward(rec, &x)?;
//!     layer.backward(rec, &x, &f.h, &g, true)
//! })?;
//! assert_eq!(grads.da.shape(), [r, n]);
//! gpu.run(|rec| layer.adapter.merge(rec, &w0))?; // W0 += s B_s A_s
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod kernels;
#[cfg(feature = "models")]
pub mod models;
pub mod nn;
pub mod runtime;
#[cfg(feature = "tasks")]
pub mod tasks;

pub use runtime::error::{Error, Result};
pub use runtime::gpu::{AdapterSelection, Gpu};
pub use runtime::half::{BaseDType, HalfTensor};
pub use runtime::recorder::{Binding, KeepAlive, Recorder, Timing, TimingSource};
pub use runtime::tensor::{Indices, Tensor};

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
