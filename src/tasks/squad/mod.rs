//! Extractive question answering on SQuAD-format data: the settings ([`config`]), the
//! JSON reader ([`data`]),
//! question-and-context windows with character offsets and answer positions ([`windows`]),
//! span decoding ([`postprocess`]), the official metrics ([`metrics`]), the span model
//! ([`model`]: the encoder with transformers' `qa_outputs` head) and QA as a trainer
//! [`Task`](crate::tasks::task::Task) ([`task`]).

pub mod config;
pub mod data;
pub mod metrics;
pub mod model;
pub mod postprocess;
pub mod run;
pub mod task;
pub mod windows;
