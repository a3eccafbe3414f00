//! Llama-family decoder language models from GGUF files (`runtime::gguf`). So far: the
//! configuration ([`LlamaConfig`]), the tokenizer the file describes ([`LlamaTokenizer`])
//! and an f64 CPU reference forward ([`cpu::logits`]); the GPU model is to come.

mod config;
pub mod cpu;
mod tokenizer;

pub use config::LlamaConfig;
pub use tokenizer::LlamaTokenizer;
