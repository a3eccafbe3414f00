//! What the trainer needs from a task and its model, and nothing else: a new task (question
//! answering, image classification, ...) is a new implementation of [`Task`], and the
//! trainer, run folder and checkpoints serve it unchanged.

use std::path::Path;

use crate::models::common::AdaptedEncoder;
use crate::nn::{Graph, Var};
use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::config::TrainConfig;

/// A task's metrics by name, in the order the task reports them.
pub type Metrics = Vec<(&'static str, f64)>;

pub use crate::nn::modules::NamedMask;

/// A model the trainer can optimize and checkpoint.
pub trait Model {
    /// Every trainable tensor with a stable name (the checkpoint's keys), in a fixed order.
    fn params(&self) -> Vec<(String, Tensor)>;
    /// Parameters the forward pass uses (masked adapters use fewer than they store).
    fn used_params(&self) -> Result<usize>;
    /// The encoder with its adapters (export and merge read it): BERT or ViT; `None` for
    /// a decoder, which exports through its own path.
    fn encoder(&self) -> Option<&dyn AdaptedEncoder>;
    /// The encoder, to merge its adapters.
    fn encoder_mut(&mut self) -> Option<&mut dyn AdaptedEncoder>;
    /// Every static mask of the encoder's adapters, named after the tensor it masks (see
    /// [`crate::models::bert::Bert::masks`]); reads them back. None by default.
    fn masks(&self) -> Result<Vec<NamedMask>> {
        Ok(Vec::new())
    }
}

/// How a task's model is held by a transformers class that carries its head (e.g.
/// `BertForQuestionAnswering`): the encoder's tensors under `encoder_prefix`, the head's
/// tensors under their transformers names.
pub struct HfHead {
    /// The transformers class (`architectures` in config.json).
    pub architecture: &'static str,
    /// PEFT's `task_type` for it (`QUESTION_ANS`; `None` where PEFT has none, as for
    /// image classification).
    pub peft_task_type: Option<&'static str>,
    /// The head module, saved whole by PEFT (`modules_to_save`), e.g. `qa_outputs`.
    pub module: &'static str,
    /// Prefix of the encoder's tensors in that class (`bert.`).
    pub encoder_prefix: &'static str,
    /// The head's tensors: name (e.g. `qa_outputs.weight`), shape, values.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// The class names of its outputs, written into a merged `config.json` as `id2label`
    /// and `label2id` (empty: the base's config keeps its own).
    pub labels: Vec<String>,
}

/// A supervised task: its data as batches, the head its model carries, the loss, the
/// predictions and metrics of the evaluation split, and the export of the head.
pub trait Task {
    /// The model: a frozen encoder with adapters plus this task's head.
    type Model: Model;
    /// One training batch, on the GPU.
    type Batch;

    /// Short name for messages (`sst2`).
    fn name(&self) -> &str;
    /// Builds the model of `cfg` with this task's head, freshly initialized from the seed.
    fn build_model(&self, gpu: &Gpu, cfg: &TrainConfig) -> Result<Self::Model>;
    /// The size of each training example (tokens), for length-bucketed batches.
    fn train_lengths(&self) -> Vec<usize>;
    /// The number of evaluation examples.
    fn eval_len(&self) -> usize;
    /// The training examples at `idx` as one batch.
    fn make_batch(&self, gpu: &Gpu, model: &Self::Model, idx: &[usize]) -> Result<Self::Batch>;
    /// The training examples at `idx` as one batch in (0-based) `epoch`: where a task
    /// augments its training data, per epoch. By default [`Task::make_batch`].
    fn make_train_batch(
        &self,
        gpu: &Gpu,
        model: &Self::Model,
        idx: &[usize],
        _epoch: u64,
    ) -> Result<Self::Batch> {
        self.make_batch(gpu, model, idx)
    }
    /// Records the forward pass of `batch` and its loss (a scalar) on `g`.
    fn loss(&self, g: &mut Graph, model: &Self::Model, batch: &Self::Batch) -> Result<Var>;
    /// The model's outputs for every evaluation example, rows in example order.
    fn predictions(&self, gpu: &Gpu, model: &Self::Model) -> Result<Vec<f32>>;
    /// The task's metrics of `predictions` against the evaluation labels.
    fn metrics(&self, predictions: &[f32]) -> Result<Metrics>;
    /// Writes the head (weights and a description) into an export folder.
    fn export_head(&self, model: &Self::Model, dir: &Path) -> Result<()>;
    /// The transformers class with this task's head, if there is one that the export and
    /// merged folders should target (default: none, the encoder alone plus the crate's
    /// head file).
    fn hf_head(&self, _model: &Self::Model) -> Result<Option<HfHead>> {
        Ok(None)
    }

    /// A stable id of each training example at `idx` (for a step trace): by default its
    /// 1-based position among the training examples. GLUE: the 1-based line of the file.
    fn example_ids(&self, idx: &[usize]) -> Vec<u64> {
        idx.iter().map(|&i| i as u64 + 1).collect()
    }

    /// What a replay of a trace needs to know about this task beyond the configuration
    /// (files, columns, labels, loss, pooling, head), in plain words and numbers.
    fn recipe(&self) -> serde_json::Value {
        serde_json::json!({ "task": self.name() })
    }

    /// Predictions and metrics of the evaluation split.
    fn evaluate(&self, gpu: &Gpu, model: &Self::Model) -> Result<Metrics> {
        let p = self.predictions(gpu, model)?;
        self.metrics(&p)
    }

    /// Files a task draws from an evaluation's `predictions` into the run folder `dir`
    /// (written over the previous evaluation's), e.g. the image task's `confusion.png`.
    /// None by default.
    fn write_eval_files(&self, _predictions: &[f32], _dir: &Path) -> Result<()> {
        Ok(())
    }
}
