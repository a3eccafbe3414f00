//! Image classification with a ViT / DINOv2 encoder: labelled image folders and TSV files
//! ([`data`]), decoding and preprocessing as the model's `preprocessor_config.json` says
//! ([`preprocess`], [`images`]), the classifier ([`model`]), the [`task::ImageTask`] and
//! the run / eval entry points ([`run`]); the flags are [`config::ImageConfig`], training
//! augmentation is [`augment`].

pub mod augment;
pub mod config;
pub mod confusion;
pub mod data;
pub mod idx;
pub mod images;
pub mod model;
pub mod preprocess;
pub mod run;
pub mod task;
