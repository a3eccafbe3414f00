//! Training tasks: datasets and metrics per task family, a trainer that knows no task, run
//! folders and checkpoints, export and merge, and the built-in demo.
//!
//! - [`config`]: the typed training configuration (clap arguments and `config.json`);
//!   [`kind`]: which task a run trains (GLUE or SQuAD);
//! - [`task`]: the [`task::Task`] and [`task::Model`] traits the trainer works through;
//! - [`glue`], [`metrics`]: GLUE data and metrics; [`classifier`]: the encoder with a head;
//!   [`glue_task`]: GLUE classification and regression as a [`task::Task`];
//! - [`trainer`]: [`trainer::Trainer`] (new, resume, step, evaluate, checkpoint);
//!   [`trace`]: a step trace of a run (`finetune --trace`) for a replay elsewhere;
//!   [`train`]: the `finetune` loop and [`train::load_run`];
//! - [`run`]: the run folder (files, checkpoint, plots, progress, Ctrl-C);
//! - [`export`], [`export_run`], [`merge`]: the PEFT and head formats, a run's adapters
//!   exported as PEFT / native files, or merged into the encoder; [`adapters`] is their one door into the CapaBoost layer's API;
//! - [`squad`]: SQuAD-format question answering data, windows, decoding and metrics;
//! - [`image`]: image folders, preprocessing and the ViT / DINOv2 classifier;
//! - [`demo`]: the built-in LoRA-versus-CapaBoost demonstration.

pub mod adapters;
pub mod causal_lm;
pub mod classifier;
pub mod config;
pub mod demo;
pub mod export;
pub mod export_run;
pub mod glue;
pub mod glue_task;
pub mod image;
pub mod kind;
pub mod merge;
pub mod metrics;
pub mod run;
pub mod squad;
pub mod targets;
pub mod task;
pub mod trace;
pub mod train;
pub mod trainer;
