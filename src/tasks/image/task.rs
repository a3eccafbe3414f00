//! Image classification as a [`Task`]: preprocessed images, batches of unfolded patches,
//! cross-entropy on the head's logits, accuracy and per-class accuracy.

use std::path::Path;

use crate::models::vit::{PixelBatch, VitConfig, VitLayout};
use crate::nn::{Graph, Var};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Indices;
use crate::tasks::config::TrainConfig;
use crate::tasks::image::augment::Augment;
use crate::tasks::image::config::Pooling;
use crate::tasks::image::confusion::{confusion, confusion_png};
use crate::tasks::image::images::Images;
use crate::tasks::image::model::ImageModel;
use crate::tasks::image::preprocess::Preprocessor;
use crate::tasks::task::{HfHead, Metrics, Task};

/// The confusion matrix of a run's latest evaluation, in the run folder.
pub const CONFUSION_FILE: &str = "confusion.png";

/// How a model folder's images are prepared: the preprocessor, the side n and the patch
/// side.
#[derive(Clone, Debug)]
pub struct Prep {
    /// Resize, crop, rescale, normalize.
    pub pre: Preprocessor,
    /// Side of the model's input.
    pub size: u32,
    /// Patch side.
    pub patch: usize,
}

impl Prep {
    /// From the model folder of `cfg` (`config.json`, `preprocessor_config.json`) and
    /// `--image-size`: the preprocessor's own output side, else the model's image_size.
    pub fn of(cfg: &TrainConfig) -> Result<Prep> {
        let dir = &cfg.model.model;
        let model = VitConfig::read(dir)?;
        let pre = Preprocessor::read(dir, model.image_size)?;
        let (pre, size) = match (cfg.image.image_size, pre.output_size()) {
            (Some(n), _) => (pre.with_size(n as u32), n as u32),
            (None, Some(n)) => (pre, n),
            (None, None) => {
                let n = model.image_size as u32;
                (pre.with_size(n), n)
            }
        };
        if (size as usize) < model.patch_size {
            return Err(Error::InvalidArgument(format!(
                "--image-size {size} is smaller than the model's {}-pixel patches",
                model.patch_size
            )));
        }
        Ok(Prep {
            pre,
            size,
            patch: model.patch_size,
        })
    }

    /// The normalized pixels of `images` at `idx`, `[B, 3, n, n]`.
    pub fn pixels(&self, images: &Images, idx: &[usize]) -> Vec<f32> {
        let n = self.size as usize;
        let mut pixels = Vec::with_capacity(idx.len() * 3 * n * n);
        for &i in idx {
            self.pre.normalize(&images.bytes[i], &mut pixels);
        }
        pixels
    }

    /// `[B, 3, n, n]` normalized pixels as one model input.
    pub fn upload(&self, gpu: &Gpu, pixels: &[f32]) -> Result<PixelBatch> {
        PixelBatch::new(gpu, pixels, (3, self.size as usize), self.patch)
    }
}

/// Labelled images for training and evaluation, with the class names.
pub struct ImageTask {
    classes: Vec<String>,
    /// `accuracy_<class>` per class (metric names outlive the task: leaked once).
    class_keys: Vec<&'static str>,
    train: Images,
    eval: Images,
    prep: Prep,
    eval_batch: usize,
    /// Training augmentation and the run's seed it is drawn from.
    augment: (Augment, u64),
}

/// A training batch: images and their class indices.
pub struct ImageBatch {
    input: PixelBatch,
    labels: Indices,
}

impl ImageTask {
    /// The task over preprocessed splits (either may be empty: a task used only to build
    /// and export a model, or only to evaluate).
    pub fn new(classes: Vec<String>, (train, eval): (Images, Images), prep: Prep) -> Self {
        let class_keys = classes
            .iter()
            .map(|c| &*Box::leak(format!("accuracy_{c}").into_boxed_str()))
            .collect();
        Self {
            classes,
            class_keys,
            train,
            eval,
            prep,
            eval_batch: 32,
            augment: (Augment::default(), 0),
        }
    }

    /// The task with training batches augmented as `augment` says, drawn from `seed`.
    pub fn with_augment(mut self, augment: Augment, seed: u64) -> Self {
        self.augment = (augment, seed);
        self
    }

    /// The normalized pixels of the training images at `idx` in `epoch`, augmented.
    pub fn train_pixels(&self, idx: &[usize], epoch: u64) -> Vec<f32> {
        let (aug, seed) = self.augment;
        let n = self.prep.size as usize;
        let mut pixels = Vec::with_capacity(idx.len() * 3 * n * n);
        for &i in idx {
            let bytes = aug.apply(&self.train.bytes[i], n, (seed, epoch, i as u64));
            self.prep.pre.normalize(&bytes, &mut pixels);
        }
        pixels
    }

    /// The normalized pixels of the evaluation images at `idx` (never augmented).
    pub fn eval_pixels(&self, idx: &[usize]) -> Vec<f32> {
        self.prep.pixels(&self.eval, idx)
    }

    /// The class names (the head's outputs in order).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The evaluation images.
    pub fn eval_images(&self) -> &Images {
        &self.eval
    }

    /// The confusion matrix (`m[true][predicted]`) of the evaluation images' logits.
    pub fn confusion(&self, predictions: &[f32]) -> Vec<Vec<usize>> {
        confusion(
            &self.eval.labels,
            &self.argmax(predictions),
            self.classes.len(),
        )
    }

    /// The predicted class of each row of [`Task::predictions`].
    pub fn argmax(&self, predictions: &[f32]) -> Vec<usize> {
        let c = self.classes.len().max(1);
        predictions
            .chunks(c)
            .map(|row| {
                let mut best = 0;
                for (k, v) in row.iter().enumerate() {
                    if *v > row[best] {
                        best = k;
                    }
                }
                best
            })
            .collect()
    }
}

impl Task for ImageTask {
    type Model = ImageModel;
    type Batch = ImageBatch;

    fn name(&self) -> &str {
        "image"
    }

    fn build_model(&self, gpu: &Gpu, cfg: &TrainConfig) -> Result<ImageModel> {
        ImageModel::build(gpu, cfg, self.classes.len())
    }

    fn train_lengths(&self) -> Vec<usize> {
        let n = (self.prep.size as usize / self.prep.patch).pow(2) + 1;
        vec![n; self.train.len()]
    }

    fn eval_len(&self) -> usize {
        self.eval.len()
    }

    fn make_batch(&self, gpu: &Gpu, model: &ImageModel, idx: &[usize]) -> Result<ImageBatch> {
        self.make_train_batch(gpu, model, idx, 0)
    }

    fn make_train_batch(
        &self,
        gpu: &Gpu,
        _model: &ImageModel,
        idx: &[usize],
        epoch: u64,
    ) -> Result<ImageBatch> {
        let labels: Vec<u32> = idx.iter().map(|&i| self.train.labels[i] as u32).collect();
        let pixels = self.train_pixels(idx, epoch);
        Ok(ImageBatch {
            input: self.prep.upload(gpu, &pixels)?,
            labels: Indices::from_slice(gpu, &labels, &[idx.len()])?,
        })
    }

    fn loss(&self, g: &mut Graph, model: &ImageModel, batch: &ImageBatch) -> Result<Var> {
        let logits = model.forward(g, &batch.input)?;
        g.cross_entropy(&logits, &batch.labels)
    }

    /// The logits of every evaluation image, `classes` values per image.
    fn predictions(&self, gpu: &Gpu, model: &ImageModel) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.eval.len() * self.classes.len());
        let all: Vec<usize> = (0..self.eval.len()).collect();
        for chunk in all.chunks(self.eval_batch) {
            let pixels = self.eval_pixels(chunk);
            let batch = self.prep.upload(gpu, &pixels)?;
            let mut g = Graph::no_grad(gpu);
            let logits = model.forward(&mut g, &batch)?;
            g.submit()?;
            out.extend(logits.value().to_vec()?);
        }
        Ok(out)
    }

    /// `accuracy`, then `accuracy_<class>` for every class the evaluation split holds.
    fn metrics(&self, predictions: &[f32]) -> Result<Metrics> {
        let pred = self.argmax(predictions);
        if pred.len() != self.eval.len() {
            return Err(Error::shape(format!(
                "{} predictions for {} images",
                pred.len(),
                self.eval.len()
            )));
        }
        let c = self.classes.len();
        let (mut hits, mut counts) = (vec![0usize; c], vec![0usize; c]);
        for (&p, &l) in pred.iter().zip(&self.eval.labels) {
            counts[l] += 1;
            hits[l] += usize::from(p == l);
        }
        let total = pred.len().max(1) as f64;
        let mut m = vec![("accuracy", hits.iter().sum::<usize>() as f64 / total)];
        for k in (0..c).filter(|&k| counts[k] > 0) {
            m.push((self.class_keys[k], hits[k] as f64 / counts[k] as f64));
        }
        Ok(m)
    }

    /// `confusion.png`: the confusion matrix of the latest evaluation (temp + rename).
    fn write_eval_files(&self, predictions: &[f32], dir: &Path) -> Result<()> {
        let m = self.confusion(predictions);
        let png = confusion_png(&m, &self.classes)?;
        crate::runtime::io::write_atomic(&dir.join(CONFUSION_FILE), &png)
    }

    /// `ViTForImageClassification` (CLS pooling; the classifier reads the CLS token) or
    /// `Dinov2ForImageClassification` (its classifier reads concat(CLS, mean of the patch
    /// tokens): our head goes into the half its pooling reads, zeros in the other, which
    /// is exact). A ViT head on mean pooling has no transformers class: none.
    fn hf_head(&self, model: &ImageModel) -> Result<Option<HfHead>> {
        let (w, b) = model.head_values()?;
        let (h, c) = (model.vit.config.hidden_size, self.classes.len());
        let (architecture, encoder_prefix, weight, width) =
            match (model.vit.config.layout, model.pooling) {
                (VitLayout::Vit, Pooling::Cls) => ("ViTForImageClassification", "vit.", w, h),
                (VitLayout::Vit, Pooling::Mean) => return Ok(None),
                (VitLayout::Dinov2, pooling) => {
                    let half = usize::from(pooling == Pooling::Mean);
                    let mut wide = vec![0f32; c * 2 * h];
                    for (row, src) in wide.chunks_mut(2 * h).zip(w.chunks(h)) {
                        row[half * h..(half + 1) * h].copy_from_slice(src);
                    }
                    ("Dinov2ForImageClassification", "dinov2.", wide, 2 * h)
                }
            };
        Ok(Some(HfHead {
            architecture,
            peft_task_type: None,
            module: "classifier",
            encoder_prefix,
            tensors: vec![
                ("classifier.weight".into(), vec![c, width], weight),
                ("classifier.bias".into(), vec![c], b),
            ],
            labels: self.classes.clone(),
        }))
    }

    /// What a replay needs beyond the configuration: classes, input side, preprocessing,
    /// head, loss, augmentation and what the example ids mean.
    fn recipe(&self) -> serde_json::Value {
        let pre = &self.prep.pre;
        serde_json::json!({
            "task": "image",
            "classes": self.classes,
            "image_size": self.prep.size,
            "patch_size": self.prep.patch,
            "preprocessing": {
                "resize": format!("{:?}", pre.resize),
                "filter": format!("{:?}", pre.filter),
                "center_crop": pre.crop,
                "rescale": pre.rescale,
                "mean": pre.mean,
                "std": pre.std,
                "done": "once, before training, on 8-bit RGB (grey expanded); \
                    normalization (v * rescale - mean) / std per batch",
            },
            "head": "Linear(hidden, classes) on the final-norm output: the CLS token \
                (pooling cls) or the mean of the patch tokens (pooling mean)",
            "loss": "mean cross-entropy over the batch",
            "augment": self.augment.0.to_string(),
            "augment_draws": "crop (zero padding n/8, uniform offset) then flip (p 0.5) \
                on the preprocessed bytes, from StdRng keyed by (seed, epoch, image): not \
                replayable by another implementation unless none",
            "examples": "1-based position of the image among the training images that \
                decoded (the classes in turn, files in name order or idx order; after \
                --train-limit)",
        })
    }

    fn export_head(&self, model: &ImageModel, dir: &Path) -> Result<()> {
        let (w, b) = model.head_values()?;
        let hidden = model.vit.config.hidden_size;
        let c = self.classes.len();
        let pooling = model.pooling.name();
        crate::tasks::export::write_head(dir, &w, &b, c, hidden, &self.classes, pooling)
    }
}
