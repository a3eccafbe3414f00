//! Llama-family decoder language models from GGUF files (`runtime::gguf`). So far: the
//! tokenizer the file describes ([`LlamaTokenizer`]).

mod tokenizer;

pub use tokenizer::LlamaTokenizer;
