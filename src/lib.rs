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
//! ```no_run
//! use capaboost::{Gpu, Tensor, elementwise};
//! # fn main() -> capaboost::Result<()> {
//! let gpu = Gpu::new()?;
//! let a = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0], &[3])?;
//! let b = Tensor::from_slice(&gpu, &[4.0, 5.0, 6.0], &[3])?;
//! let c = gpu.run(|rec| elementwise::add(rec, &a, &b))?;
//! assert_eq!(c.to_vec()?, vec![5.0, 7.0, 9.0]);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod activations;
pub mod autograd;
pub mod bert;
pub mod capaboost;
pub mod demo;
pub mod elementwise;
pub mod error;
pub mod export;
pub mod gemm;
pub mod glue;
pub mod gpu;
mod graph_ops;
pub mod io;
pub mod layer_file;
pub mod layout;
pub mod lookup;
pub mod masks;
pub mod metrics;
pub mod modules;
pub mod norms;
pub mod optim;
pub mod pipeline;
pub mod pool;
pub mod recorder;
pub mod reduce;
pub mod run_dir;
pub mod shaders;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use gpu::{AdapterSelection, Gpu};
pub use recorder::{Binding, KeepAlive, Recorder, Timing, TimingSource};
pub use tensor::{Indices, Tensor};

/// The crate's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
