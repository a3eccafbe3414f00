//! Fine-tuning an encoder on a task (GLUE or SQuAD) with the [`Trainer`], and loading a
//! saved run.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::tasks::classifier::Classifier;
use crate::tasks::config::TrainConfig;
use crate::tasks::glue_task::GlueTask;
use crate::tasks::kind::TaskKind;
use crate::tasks::run::{Progress, RunDir, install_interrupt_flag, terminated};
use crate::tasks::squad;
use crate::tasks::task::{Metrics, Model, Task};
use crate::tasks::trainer::{self, Trainer};

/// Options of one `finetune` invocation that are not part of the run's identity.
pub struct RunOptions {
    /// Stop this invocation after N steps with a checkpoint (as Ctrl-C does); `--resume`
    /// continues exactly.
    pub stop_after: Option<u64>,
    /// Folder of the run (created, or resumed).
    pub out: PathBuf,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Replace an existing run in `out` (a new run only).
    pub overwrite: bool,
    /// Write a step trace of the run into this folder (a new run only; see
    /// [`crate::tasks::trace`]).
    pub trace: Option<PathBuf>,
}

/// Summary of a finished (or interrupted) run.
#[derive(Debug)]
pub struct RunSummary {
    /// Steps done.
    pub steps: u64,
    /// Last dev metrics.
    pub dev: Metrics,
    /// Training examples per second (evaluation and checkpoint time excluded).
    pub examples_per_s: f64,
    /// Trainable parameters stored.
    pub trainable: usize,
    /// Whether Ctrl-C, SIGTERM (or `stop_after`) stopped it.
    pub interrupted: bool,
    /// Whether SIGTERM stopped it (the command exits with status 143).
    pub terminated: bool,
}

/// Trains (or resumes) a run of `cfg` (already validated): GLUE or SQuAD. Data, dev
/// split, tokenizer and (in Trainer::start) the model are all checked before the run
/// folder is touched.
pub fn finetune(gpu: &Gpu, cfg: &TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    match cfg.kind()? {
        TaskKind::Glue(_) => run_task(gpu, GlueTask::load(cfg)?, cfg, opts),
        TaskKind::Squad => run_task(gpu, squad::run::load(cfg)?, cfg, opts),
        TaskKind::Image => {
            let task = crate::tasks::image::run::load(cfg)?;
            // The classes found in the data are part of the run (its head's outputs).
            let mut cfg = cfg.clone();
            cfg.image.classes = task.classes().to_vec();
            run_task(gpu, task, &cfg, opts)
        }
        TaskKind::CausalLm => run_task(gpu, crate::tasks::causal_lm::run::load(cfg)?, cfg, opts),
    }
}

/// Trains (or resumes) `task` to the end of the run, or until interrupted.
fn run_task<T: Task>(
    gpu: &Gpu,
    task: T,
    cfg: &TrainConfig,
    opts: &RunOptions,
) -> Result<RunSummary> {
    let mut t = if opts.resume {
        let run = RunDir::open_writer(&opts.out)?;
        let t = Trainer::resume(gpu, task, cfg.clone(), run)?;
        // Records the flags a resume may change (--max-steps, --epochs, ...).
        t.run_dir().update_config(&cfg.to_json()?)?;
        t
    } else {
        Trainer::start(gpu, task, cfg.clone(), &opts.out, opts.overwrite)?
    };
    if let Some(dir) = &opts.trace {
        t.trace_to(dir)?;
    }
    eprintln!(
        "{} on {}: {} train / {} dev examples, {} trainable parameters ({} used by masks), {} steps",
        t.task().name(),
        gpu.adapter_info().name,
        t.task().train_lengths().len(),
        t.task().eval_len(),
        t.trainable(),
        t.model().used_params()?,
        t.total_steps()
    );
    let interrupt = install_interrupt_flag()?;
    let progress = Progress::new(t.total_steps(), opts.progress);
    let stop_at = opts.stop_after.map(|n| t.steps_done() + n);
    let mut dev = Vec::new();
    let mut interrupted = false;
    while !t.finished() {
        if interrupt.load(Ordering::SeqCst)
            || terminated()
            || stop_at.is_some_and(|s| t.steps_done() >= s)
        {
            interrupted = true;
            break;
        }
        let s = t.step()?;
        progress.update(s.step, s.loss, s.examples_per_s);
        if s.eval_due {
            dev = t.evaluate()?;
            let shown: Vec<String> = dev.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            progress.println(&format!(
                "step {} epoch {:.2}: dev {}",
                s.step,
                s.epoch,
                shown.join(", ")
            ));
            t.checkpoint()?;
        }
    }
    gpu.wait()?;
    let examples_per_s = t.examples_per_s();
    t.checkpoint()?;
    progress.finish();
    Ok(RunSummary {
        steps: t.steps_done(),
        dev,
        examples_per_s,
        trainable: t.trainable(),
        interrupted,
        terminated: terminated(),
    })
}

/// Opens a saved run and reads its configuration (validated).
pub fn read_run(run_path: &Path) -> Result<(RunDir, TrainConfig)> {
    let run = RunDir::open(run_path)?;
    let cfg = TrainConfig::from_json(run.config()?, &run_path.join("config.json"))?;
    Ok((run, cfg))
}

/// A fresh model of `task` with the weights of the run's latest checkpoint: the one way
/// `eval`, `export` and `merge` read a run's model.
pub fn load_model<T: Task>(
    gpu: &Gpu,
    run: &RunDir,
    cfg: &TrainConfig,
    task: &T,
) -> Result<T::Model> {
    let model = task.build_model(gpu, cfg)?;
    trainer::load_checkpoint_params(run, &model)?;
    Ok(model)
}

/// A saved GLUE run: its folder, configuration and classifier.
pub fn load_run(gpu: &Gpu, run_path: &Path) -> Result<(RunDir, TrainConfig, Classifier)> {
    let (run, cfg) = read_run(run_path)?;
    let model = load_model(gpu, &run, &cfg, &GlueTask::new(cfg.task()?))?;
    Ok((run, cfg, model))
}

/// Loss and metrics values as one JSON object (for printing).
pub fn metrics_json(m: &[(&'static str, f64)]) -> Value {
    let mut v = json!({});
    for (k, x) in m {
        v[*k] = json!(x);
    }
    v
}
