//! Causal language modelling (`--task causal-lm`): LoRA / CapaBoost fine-tuning of a
//! Llama-family decoder from a GGUF file on JSONL prompt/response or chat data, with the
//! loss on the learned tokens only.

pub mod data;
pub mod run;
pub mod task;
