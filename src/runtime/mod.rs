//! The runtime layer: the device, buffers, pipelines, recording and tensors. It knows the
//! WGSL sources only as data ([`shaders`]) and imports nothing from the layers above.

pub mod coopmat;
pub mod error;
pub mod failpoint;
pub mod gate;
pub mod gguf;
pub mod gpu;
pub mod half;
pub mod io;
pub mod kquant;
pub mod pipeline;
pub mod pool;
pub mod quant;
pub mod recorder;
pub mod shaders;
pub mod tensor;
pub mod timing;
