//! Pretrained model architectures and their checkpoint and tokenizer loading.

pub mod bert;
pub mod common;
pub mod llama;
pub mod vit;
