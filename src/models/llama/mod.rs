//! Llama-family decoder language models from GGUF files (`runtime::gguf`): the
//! configuration ([`LlamaConfig`]), the tokenizer the file describes ([`LlamaTokenizer`]),
//! an f64 CPU reference forward ([`cpu::logits`]) and the GPU model on the tape
//! ([`Llama`], with grouped-query causal attention and a [`KvCache`] for generation).

mod attention;
mod config;
pub mod cpu;
mod generate;
mod model;
mod tokenizer;

pub use attention::{KvCache, LayerKv, causal_mask};
pub use config::LlamaConfig;
pub use generate::{Generation, Sampling, argmax, sample};
pub use model::{FrozenWeight, Llama, LlamaLayer, LlamaProj, PROJ_NAMES};
pub use tokenizer::LlamaTokenizer;
