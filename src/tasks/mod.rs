//! Training tasks: datasets and metrics per task family, the trainer, run folders,
//! checkpoints, export and merge, and the built-in demo.

pub mod demo;
pub mod export;
pub mod glue;
pub mod metrics;
pub mod run_dir;
pub mod train;
