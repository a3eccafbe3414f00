//! The image-classification settings of a run (`--image-size`, `--pooling`,
//! `--dev-ratio`, `--augment`); refused with the other tasks.

use serde::{Deserialize, Serialize};

use crate::runtime::error::{Error, Result};
use crate::tasks::image::augment::Augment;

/// What the head reads from the encoder's last hidden state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The CLS token (as `ViTForImageClassification`).
    #[default]
    Cls,
    /// The mean of the patch tokens (CLS left out).
    Mean,
}

impl Pooling {
    /// The flag spelling.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }
}

fn default_dev_ratio() -> f64 {
    0.2
}

/// Image-classification settings (a text task given any of them is an error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct ImageConfig {
    /// Image: the side the images are resized / cropped to (default: the model's
    /// preprocessor_config.json); position embeddings are resampled to its patch grid.
    #[arg(long)]
    #[serde(default)]
    pub image_size: Option<usize>,
    /// Image: the head reads the CLS token or the mean of the patch tokens.
    #[arg(long, value_enum, default_value_t = Pooling::Cls)]
    #[serde(default)]
    pub pooling: Pooling,
    /// Image: the share of each class held out for evaluation when --data is one folder
    /// of classes (without train/ and dev/).
    #[arg(long, default_value_t = default_dev_ratio())]
    #[serde(default = "default_dev_ratio")]
    pub dev_ratio: f64,
    /// Image: training-time augmentation: none, flip (horizontal, p = 0.5), crop (zero
    /// padding of n/8, then a random n x n crop, as torchvision's RandomCrop) or flip,crop;
    /// drawn per (seed, epoch, image). Evaluation is never augmented.
    #[arg(long, default_value = "none", value_parser = Augment::parse)]
    #[serde(default)]
    pub augment: Augment,
    /// The class names of a run (the head's outputs, in order), found in the data when the
    /// run starts and recorded in `config.json`; not a flag.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

/// The clap ids of the image flags (refused with the other tasks).
pub const IMAGE_FLAGS: [&str; 4] = ["image_size", "pooling", "dev_ratio", "augment"];

impl ImageConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if self.image_size == Some(0) {
            return Err(Error::InvalidArgument(
                "--image-size must be at least 1".into(),
            ));
        }
        if !(self.dev_ratio > 0.0 && self.dev_ratio < 1.0) {
            return Err(Error::InvalidArgument(format!(
                "--dev-ratio {} is outside (0, 1)",
                self.dev_ratio
            )));
        }
        Ok(())
    }
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            image_size: None,
            pooling: Pooling::Cls,
            dev_ratio: default_dev_ratio(),
            augment: Augment::default(),
            classes: Vec::new(),
        }
    }
}
