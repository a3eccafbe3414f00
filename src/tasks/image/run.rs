//! An image run from its configuration (the data read, decoded and preprocessed before the
//! run folder is touched), and scoring a saved run (`eval --predictions` writes one TSV row
//! per image: `path`, `label`, `prediction`, the logits).

use std::path::Path;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::tasks::config::TrainConfig;
use crate::tasks::image::confusion::confusion_png;
use crate::tasks::image::data::{Listing, read_data, read_eval};
use crate::tasks::image::images::Images;
use crate::tasks::image::task::{ImageTask, Prep};
use crate::tasks::task::{Metrics, Task};

/// Decodes `listing` (its first `limit` images), reporting skipped files.
fn decode(listing: &Listing, prep: &Prep, limit: Option<usize>, what: &str) -> Result<Images> {
    let images = Images::load(listing, &prep.pre, prep.size, limit)?;
    images.report(what)?;
    Ok(images)
}

/// The task of a new or resumed run: `--data` read as train/dev (or split by
/// `--dev-ratio`), every image decoded and preprocessed. A resumed run's data must have
/// the classes the run was trained on.
pub fn load(cfg: &TrainConfig) -> Result<ImageTask> {
    let prep = Prep::of(cfg)?;
    let dir = cfg.data_dir()?;
    let (train, dev) = read_data(dir, cfg.image.dev_ratio)?;
    let saved = &cfg.image.classes;
    if !saved.is_empty() && *saved != train.classes {
        return Err(Error::InvalidArgument(format!(
            "{} has the classes {}, the run was trained on {}",
            dir.display(),
            train.classes.join(", "),
            saved.join(", ")
        )));
    }
    let t = decode(&train, &prep, cfg.data.train_limit, "training images")?;
    let d = decode(&dev, &prep, cfg.data.dev_limit, "evaluation images")?;
    let task = ImageTask::new(train.classes, (t, d), prep);
    Ok(task.with_augment(cfg.image.augment, cfg.seed()))
}

/// The task of a saved run without data (export, merge): its classes from `config.json`.
pub fn without_data(cfg: &TrainConfig) -> Result<ImageTask> {
    if cfg.image.classes.is_empty() {
        return Err(Error::InvalidArgument(
            "the run's config.json lists no classes (\"classes\")".into(),
        ));
    }
    let prep = Prep::of(cfg)?;
    let empty = (Images::default(), Images::default());
    Ok(ImageTask::new(cfg.image.classes.clone(), empty, prep))
}

/// What `eval` writes besides the metrics.
#[derive(Clone, Copy, Default)]
pub struct EvalOutputs<'a> {
    /// One row per image: path, label, prediction, logits (TSV).
    pub predictions: Option<&'a Path>,
    /// The confusion matrix (PNG).
    pub confusion: Option<&'a Path>,
}

/// The images `eval` scores: the run's own data folder → its evaluation split; another
/// folder → its `dev/` (or `dev.tsv`), else every image of its class folders; a TSV file
/// → its rows.
fn eval_listing(cfg: &TrainConfig, data: &Path) -> Result<Listing> {
    let classes = &cfg.image.classes;
    let own = cfg.data.data.as_deref().map(crate::tasks::run::resolve);
    if own.as_deref() != Some(crate::tasks::run::resolve(data).as_path()) {
        return read_eval(data, classes);
    }
    let (train, dev) = read_data(data, cfg.image.dev_ratio)?;
    if train.classes != *classes {
        return Err(Error::InvalidArgument(format!(
            "{} now has the classes {}, the run was trained on {}",
            data.display(),
            train.classes.join(", "),
            classes.join(", ")
        )));
    }
    Ok(dev)
}

/// Scores a saved run on `data` (the run's evaluation split, another folder's `dev/` or
/// class folders, or a TSV file), writing the predictions TSV and
/// the confusion matrix PNG when asked.
pub fn eval_run(gpu: &Gpu, run_path: &Path, data: &Path, out: EvalOutputs<'_>) -> Result<Metrics> {
    let (run, cfg) = crate::tasks::train::read_run(run_path)?;
    let mut inputs = cfg.input_paths(run_path);
    inputs.push(("--data folder", data));
    for (flag, path) in [
        ("--predictions", out.predictions),
        ("--confusion", out.confusion),
    ] {
        if let Some(p) = path {
            crate::tasks::run::refuse_overwriting_inputs(flag, p, &inputs)?;
        }
    }
    let prep = Prep::of(&cfg)?;
    let listing = eval_listing(&cfg, data)?;
    let images = decode(&listing, &prep, None, "evaluation images")?;
    let task = ImageTask::new(cfg.image.classes.clone(), (Images::default(), images), prep);
    let model = crate::tasks::train::load_model(gpu, &run, &cfg, &task)?;
    let logits = task.predictions(gpu, &model)?;
    if let Some(path) = out.predictions {
        crate::runtime::io::write_atomic(path, predictions_tsv(&task, &logits).as_bytes())?;
    }
    if let Some(path) = out.confusion {
        let png = confusion_png(&task.confusion(&logits), task.classes())?;
        crate::runtime::io::write_atomic(path, &png)?;
    }
    task.metrics(&logits)
}

/// `path<TAB>label<TAB>prediction<TAB>logit_<class>...`, one row per image.
fn predictions_tsv(task: &ImageTask, logits: &[f32]) -> String {
    let classes = task.classes();
    let mut text = String::from("path\tlabel\tprediction");
    for c in classes {
        text.push_str(&format!("\tlogit_{c}"));
    }
    text.push('\n');
    let images = task.eval_images();
    let pred = task.argmax(logits);
    let rows = logits.chunks(classes.len().max(1));
    for (((path, &label), p), row) in images.paths.iter().zip(&images.labels).zip(pred).zip(rows) {
        text.push_str(&format!(
            "{}\t{}\t{}",
            path.display(),
            classes[label],
            classes[p]
        ));
        for v in row {
            text.push_str(&format!("\t{v}"));
        }
        text.push('\n');
    }
    text
}
