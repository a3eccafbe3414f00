//! The kernel layer: one module per WGSL family in `shaders/` (same stem), each wrapping
//! its shader's entry points for the [`Recorder`](crate::Recorder) and holding its f64 CPU
//! twin in a `cpu` submodule. [`capaboost`] composes GEMM and mask kernels into the
//! CapaBoost layer (it has no shader of its own).

pub mod activations;
pub mod capaboost;
pub mod elementwise;
pub mod gemm;
pub mod layout;
pub mod lookup;
pub mod masked_sums;
pub mod masks;
pub mod norms;
pub mod optim;
pub mod qgemm;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod splitk;
pub mod swiglu;
