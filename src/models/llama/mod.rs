//! Llama-family decoder language models from GGUF files (`runtime::gguf`): the
//! configuration ([`LlamaConfig`]), the tokenizer the file describes ([`LlamaTokenizer`]),
//! an f64 CPU reference forward ([`cpu::logits`]) and the GPU model on the tape
//! ([`Llama`], with grouped-query causal attention and a [`KvCache`] for generation),
//! LoRA / CapaBoost adapters on its projections ([`LlamaTarget`], [`AdaptedProj`]).

mod adapted;
mod attention;
mod chat;
mod config;
pub mod cpu;
mod generate;
mod model;
mod tokenizer;

pub use adapted::{AdaptedProj, LlamaTarget, gguf_rows_to_hf};
pub use attention::{KvCache, LayerKv, causal_mask, packed_mask};
pub use chat::{ChatTemplate, Message};
pub use config::LlamaConfig;
pub use generate::{Generation, Sampling, argmax, sample};
pub use model::{FrozenWeight, Llama, LlamaLayer, LlamaProj, PROJ_NAMES};
pub use tokenizer::LlamaTokenizer;
