//! A trainer that knows no task: it draws length-bucketed batches of a [`Task`]'s training
//! examples, steps AdamW on the gradients of the task's loss, evaluates, logs to the run
//! folder and checkpoints so that a resumed run continues exactly.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::nn::Graph;
use crate::nn::modules;
use crate::nn::optim::{AdamW, AdamWConfig};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::Tensor;
use crate::tasks::config::TrainConfig;
use crate::tasks::run::{RunDir, check_finite_file, first_non_finite};
use crate::tasks::task::{Metrics, Model, Task};
use crate::tasks::trace::{self, StepRecord, Tracer};

const ADAPTER_FILE: &str = "adapter.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Where a run stands: saved in `trainer_state.json` of each checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    epoch: u64,
    batch_in_epoch: usize,
    examples_seen: u64,
}

/// What one [`Trainer::step`] did.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Steps done, this one included.
    pub step: u64,
    /// Epochs done, fractional.
    pub epoch: f64,
    /// The latest training loss read back (every `log_every` steps and before evaluations).
    pub loss: Option<f64>,
    /// The latest training throughput, measured at a loss readback.
    pub examples_per_s: Option<f64>,
    /// Whether an evaluation is due now (end of an epoch, `eval_every`, or the last step).
    pub eval_due: bool,
}

/// Training time, with evaluation and checkpoint time set aside.
struct Clock {
    start: Instant,
    paused: Duration,
    start_examples: u64,
}

impl Clock {
    fn examples_per_s(&self, examples_seen: u64) -> f64 {
        let secs = (self.start.elapsed() - self.paused).as_secs_f64().max(1e-9);
        (examples_seen - self.start_examples) as f64 / secs
    }
}

/// The training of one run: a task, its model, the optimizer and the run folder.
pub struct Trainer<T: Task> {
    gpu: Gpu,
    task: T,
    cfg: TrainConfig,
    run: RunDir,
    model: T::Model,
    params: Vec<(String, Tensor)>,
    opt: AdamW,
    state: TrainerState,
    total: u64,
    lengths: Vec<usize>,
    batches: Option<(u64, Vec<Vec<usize>>)>,
    clock: Clock,
    loss: Option<f64>,
    examples_per_s: Option<f64>,
    epoch: f64,
    trace: Option<Tracer>,
}

/// Length-bucketed batches for one epoch: a seeded shuffle, then sorting by length inside
/// windows of 50 batches, so each batch pads to a similar length; batch order shuffled.
fn epoch_batches(lengths: &[usize], batch: usize, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = StdRng::seed_from_u64(seed ^ (0x5eed_0000 + epoch));
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.shuffle(&mut rng);
    for window in idx.chunks_mut(batch.saturating_mul(50)) {
        window.sort_by_key(|&i| lengths[i]);
    }
    let mut batches: Vec<Vec<usize>> = idx.chunks(batch).map(<[usize]>::to_vec).collect();
    batches.shuffle(&mut rng);
    batches
}

impl<T: Task> Trainer<T> {
    /// Starts a run: creates the run folder `out` (new or empty) with `cfg` as its
    /// `config.json`, and a freshly initialized model and optimizer.
    pub fn new(gpu: &Gpu, task: T, cfg: TrainConfig, out: &Path) -> Result<Self> {
        Self::start(gpu, task, cfg, out, false)
    }

    /// [`Trainer::new`]; with `overwrite`, an existing run in `out` is replaced (see
    /// [`RunDir::create_with`]). The model is built before the folder is touched.
    pub fn start(
        gpu: &Gpu,
        task: T,
        cfg: TrainConfig,
        out: &Path,
        overwrite: bool,
    ) -> Result<Self> {
        let model = task.build_model(gpu, &cfg)?;
        let run = RunDir::create_with(out, &cfg.to_json()?, overwrite)?;
        let tensors: Vec<Tensor> = model.params().into_iter().map(|(_, t)| t).collect();
        let total = Self::total_steps_of(&task, &cfg);
        let opt = AdamW::new(gpu, Self::optimizer_config(&cfg, total), &tensors)?;
        Ok(Self::assemble(
            gpu,
            task,
            cfg,
            run,
            model,
            opt,
            TrainerState::default(),
        ))
    }

    /// Continues the run in `run` (whose `config.json` gave `cfg`) from its checkpoint.
    /// When `cfg` changed the run's length, the learning-rate schedule is refitted to the
    /// new total (see `Trainer::fit_schedule`).
    pub fn resume(gpu: &Gpu, task: T, cfg: TrainConfig, run: RunDir) -> Result<Self> {
        let state: TrainerState = match run.load_checkpoint_state()? {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| Error::InvalidArgument(format!("trainer_state.json: {e}")))?,
            None => {
                return Err(Error::InvalidArgument(format!(
                    "{} has no checkpoint to resume",
                    run.path().display()
                )));
            }
        };
        run.trim_logs_after(state.step)?;
        let model = task.build_model(gpu, &cfg)?;
        let params = model.params();
        modules::load_params(&run.checkpoint_dir().join(ADAPTER_FILE), &params)?;
        let tensors: Vec<Tensor> = params.into_iter().map(|(_, t)| t).collect();
        let mut opt = AdamW::load(gpu, &run.checkpoint_dir().join(OPTIMIZER_FILE), &tensors)?;
        Self::fit_schedule(&mut opt, &task, &cfg)?;
        let mut t = Self::assemble(gpu, task, cfg, run, model, opt, state);
        // A checkpoint taken at the end of an epoch's last batch continues with the next.
        if t.state.batch_in_epoch >= t.batches_per_epoch() {
            t.state.epoch += 1;
            t.state.batch_in_epoch = 0;
        }
        Ok(t)
    }

    fn assemble(
        gpu: &Gpu,
        task: T,
        cfg: TrainConfig,
        run: RunDir,
        model: T::Model,
        opt: AdamW,
        state: TrainerState,
    ) -> Self {
        let total = Self::total_steps_of(&task, &cfg);
        Self {
            gpu: gpu.clone(),
            lengths: task.train_lengths(),
            params: model.params(),
            clock: Clock {
                start: Instant::now(),
                paused: Duration::ZERO,
                start_examples: state.examples_seen,
            },
            task,
            cfg,
            run,
            model,
            opt,
            state,
            total,
            batches: None,
            loss: None,
            examples_per_s: None,
            epoch: 0.0,
            trace: None,
        }
    }

    fn total_steps_of(task: &T, cfg: &TrainConfig) -> u64 {
        let per_epoch = task
            .train_lengths()
            .len()
            .div_ceil(cfg.run.batch_size.max(1)) as u64;
        (per_epoch * cfg.run.epochs).min(cfg.run.max_steps.unwrap_or(u64::MAX))
    }

    /// A resume that changed the run's length (`--max-steps`, `--epochs`) gives the
    /// learning-rate schedule the new length: warmup and decay are what a run started
    /// with the new length has, so steps past the old end do not train at rate 0.
    fn fit_schedule(opt: &mut AdamW, task: &T, cfg: &TrainConfig) -> Result<()> {
        let want = Self::optimizer_config(cfg, Self::total_steps_of(task, cfg));
        let c = opt.config();
        if (c.warmup_steps, c.total_steps) == (want.warmup_steps, want.total_steps) {
            return Ok(());
        }
        if cfg.optim.schedule != crate::nn::optim::Schedule::Constant {
            eprintln!(
                "the {} learning-rate schedule now spans {} steps (was {}), warmup {} steps",
                cfg.optim.schedule.name(),
                want.total_steps,
                c.total_steps,
                want.warmup_steps
            );
        }
        opt.set_schedule_length(want.warmup_steps, want.total_steps)
    }

    fn optimizer_config(cfg: &TrainConfig, total: u64) -> AdamWConfig {
        AdamWConfig {
            lr: cfg.lr(),
            weight_decay: cfg.optim.weight_decay,
            max_grad_norm: cfg.optim.max_grad_norm,
            warmup_steps: (total as f64 * cfg.optim.warmup_ratio).ceil() as u64,
            total_steps: total,
            schedule: cfg.optim.schedule,
            ..AdamWConfig::default()
        }
    }

    fn batches_per_epoch(&self) -> usize {
        self.lengths.len().div_ceil(self.cfg.run.batch_size.max(1))
    }

    /// The batches of the current epoch (drawn once per epoch).
    fn current_batches(&mut self) -> &[Vec<usize>] {
        let epoch = self.state.epoch;
        if self.batches.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let b = epoch_batches(
                &self.lengths,
                self.cfg.run.batch_size,
                self.cfg.seed(),
                epoch,
            );
            self.batches = Some((epoch, b));
        }
        &self.batches.as_ref().expect("drawn above").1
    }

    /// Traces this run into `dir` (see [`crate::tasks::trace`]): writes the step-0 tensors,
    /// masks and recipe now, one `steps.jsonl` line per step (reading the loss and the
    /// gradient norm back together every step), and `final.safetensors` at each
    /// checkpoint. Only before the first step of a new run.
    pub fn trace_to(&mut self, dir: &Path) -> Result<()> {
        if self.state.step > 0 {
            return Err(Error::InvalidArgument(
                "--trace records a run from its first step: it cannot trace a resumed run".into(),
            ));
        }
        let recipe = trace::recipe(&self.cfg, self.opt.config(), self.task.recipe())?;
        let masks = self.model.masks()?;
        self.trace = Some(Tracer::start(dir, &self.params, &masks, &recipe)?);
        Ok(())
    }

    /// Whether the run has done all its steps (or epochs).
    pub fn finished(&self) -> bool {
        self.state.step >= self.total || self.state.epoch >= self.cfg.run.epochs
    }

    /// Steps done so far (including those of earlier invocations).
    pub fn steps_done(&self) -> u64 {
        self.state.step
    }

    /// Steps of the whole run.
    pub fn total_steps(&self) -> u64 {
        self.total
    }

    /// Trainable parameters stored.
    pub fn trainable(&self) -> usize {
        self.params.iter().map(|(_, t)| t.numel()).sum()
    }

    /// The task.
    pub fn task(&self) -> &T {
        &self.task
    }

    /// The model.
    pub fn model(&self) -> &T::Model {
        &self.model
    }

    /// The run folder.
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }

    /// Training examples per second since this invocation started (evaluation and
    /// checkpoint time excluded).
    pub fn examples_per_s(&self) -> f64 {
        self.clock.examples_per_s(self.state.examples_seen)
    }

    /// One optimizer step on the next batch. Reads the loss back every `log_every` steps
    /// and before an evaluation (logging it to `train_loss.csv`); a non-finite loss is an
    /// error (the last good checkpoint is kept).
    pub fn step(&mut self) -> Result<StepReport> {
        let per_epoch = self.current_batches().len();
        let at = self.state.batch_in_epoch;
        let idx = self.current_batches()[at].clone();
        let batch = (self.task).make_train_batch(&self.gpu, &self.model, &idx, self.state.epoch)?;
        let mut g = Graph::new(&self.gpu);
        g.set_seed(
            self.cfg
                .seed()
                .wrapping_mul(1_000_003)
                .wrapping_add(self.state.step),
        );
        let loss = self.task.loss(&mut g, &self.model, &batch)?;
        let grads = g.backward(&loss)?;
        let own_norm = match self.trace {
            Some(_) => trace::own_grad_norm(g.recorder(), &self.opt, &grads, &self.params)?,
            None => None,
        };
        let lr = self.opt.next_lr();
        if self.opt.step(g.recorder(), &grads)? != self.params.len() {
            let missing = self.params.iter().find(|(_, t)| grads.of(t).is_none());
            let name = missing.map_or("?", |(n, _)| n.as_str());
            return Err(Error::InvalidArgument(format!(
                "trainable tensor {name} got no gradient"
            )));
        }
        g.submit()?;
        let traced = self.trace_step(&idx, lr, loss.value(), own_norm)?;
        let st = &mut self.state;
        st.step += 1;
        st.batch_in_epoch += 1;
        st.examples_seen += idx.len() as u64;
        let epoch = st.epoch as f64 + st.batch_in_epoch as f64 / per_epoch as f64;
        let epoch_end = st.batch_in_epoch == per_epoch;
        let periodic = self
            .cfg
            .run
            .eval_every
            .is_some_and(|n| n > 0 && st.step.is_multiple_of(n));
        let eval_due = epoch_end || periodic || st.step == self.total;
        if st.step.is_multiple_of(self.cfg.run.log_every.max(1)) || eval_due {
            let l = match traced {
                Some(l) => l,
                None => loss.value().to_vec()?[0] as f64,
            };
            self.log_loss(l, epoch, lr)?;
        }
        self.epoch = epoch;
        let report = StepReport {
            step: self.state.step,
            epoch,
            loss: self.loss,
            examples_per_s: self.examples_per_s,
            eval_due,
        };
        if epoch_end {
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
        }
        Ok(report)
    }

    /// With a trace: reads this step's loss and gradient norm back (one readback) and
    /// records the step; returns the loss.
    fn trace_step(
        &mut self,
        idx: &[usize],
        lr: f32,
        loss: &Tensor,
        own_norm: Option<Tensor>,
    ) -> Result<Option<f64>> {
        let Some(tracer) = &mut self.trace else {
            return Ok(None);
        };
        let norm = own_norm
            .or_else(|| self.opt.last_grad_norm())
            .ok_or_else(|| Error::InvalidArgument("no gradient norm to trace".into()))?;
        let v = crate::runtime::tensor::read_together(&self.gpu, &[loss, &norm])?;
        let rec = StepRecord {
            step: self.state.step + 1,
            lr,
            examples: self.task.example_ids(idx),
            padded_len: idx.iter().map(|&i| self.lengths[i]).max().unwrap_or(0),
            loss: v[0][0],
            grad_norm: v[1][0],
        };
        tracer.record(&rec)?;
        Ok(Some(rec.loss as f64))
    }

    /// The one readback a training step allows: the loss, when logging (and at
    /// evaluations, so every metrics.jsonl record carries this step's loss); a trace reads
    /// it (with the gradient norm) every step.
    fn log_loss(&mut self, l: f64, epoch: f64, lr: f32) -> Result<()> {
        if !l.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "the training loss is {l} at step {}; nothing was saved over the last good \
                 checkpoint in {}. Causes: a learning rate too high (--lr), a large --alpha, \
                 no gradient clipping (--max-grad-norm)",
                self.state.step,
                self.run.checkpoint_dir().display()
            )));
        }
        self.loss = Some(l);
        self.run
            .log_train_loss(self.state.step, epoch, l, lr as f64)?;
        // Submits return before the GPU is done, so only a step that waited for its loss
        // tells how fast the GPU really goes.
        self.examples_per_s = Some(self.examples_per_s());
        Ok(())
    }

    /// Scores the task's evaluation split and appends the record (with the step, the
    /// fractional epoch and the latest training loss) to `metrics.jsonl`, then redraws the
    /// curves.
    pub fn evaluate(&mut self) -> Result<Metrics> {
        let began = Instant::now();
        let predictions = self.task.predictions(&self.gpu, &self.model)?;
        let metrics = self.task.metrics(&predictions)?;
        let mut rec = json!({
            "step": self.state.step,
            "epoch": self.epoch,
            "split": "dev",
            "train_loss": self.loss,
        });
        for (k, v) in &metrics {
            rec[*k] = json!(v);
        }
        self.run.log_metrics(&rec)?;
        // The curves are derived from the logs and can be redrawn: never fatal.
        if let Err(e) = self.run.write_curves() {
            eprintln!("warning: could not redraw the curves (training goes on): {e}");
        }
        if let Err(e) = self.task.write_eval_files(&predictions, self.run.path()) {
            eprintln!("warning: could not write the evaluation's files (training goes on): {e}");
        }
        self.clock.paused += began.elapsed();
        Ok(metrics)
    }

    /// Saves the model's trainable tensors, the optimizer and where the run stands as the
    /// run's checkpoint (replaced as a whole). The bytes read back for saving are checked
    /// first: a non-finite parameter or optimizer moment is an error naming the tensor, and
    /// the last good checkpoint stays in place.
    pub fn checkpoint(&mut self) -> Result<()> {
        let began = Instant::now();
        let dir = self.run.path().to_path_buf();
        let pid = std::process::id();
        let tmp = dir.join(format!(".params.tmp-{pid}"));
        let tmp_opt = dir.join(format!(".optim.tmp-{pid}"));
        let read = || -> Result<(Vec<u8>, Vec<u8>)> {
            modules::save_params(&tmp, &self.params)?;
            let params = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
            self.opt.save(&tmp_opt)?;
            let optim = std::fs::read(&tmp_opt).map_err(|e| Error::io(&tmp_opt, e))?;
            Ok((params, optim))
        };
        let files = read();
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(&tmp_opt);
        let (params, optim) = files?;
        if let Some(norm) = self.opt.last_grad_norm() {
            let g = norm.to_vec()?.first().copied().unwrap_or(0.0);
            if !g.is_finite() {
                return Err(self.non_finite(&format!("the gradient norm ({g})")));
            }
        }
        self.check_finite(&params, &tmp, "parameter tensor")?;
        self.check_finite(&optim, &tmp_opt, "optimizer state")?;
        let state =
            serde_json::to_value(&self.state).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        self.run
            .save_checkpoint(&[(ADAPTER_FILE, params), (OPTIMIZER_FILE, optim)], &state)?;
        if let Some(t) = &self.trace {
            t.write_final(&self.params)?;
        }
        self.clock.paused += began.elapsed();
        Ok(())
    }

    fn check_finite(&self, bytes: &[u8], file: &Path, what: &str) -> Result<()> {
        let Some((name, n)) = first_non_finite(bytes, file)? else {
            return Ok(());
        };
        // Optimizer moments are stored as m.I / v.I: name the parameter too.
        let param = name
            .split_once('.')
            .and_then(|(_, i)| i.parse::<usize>().ok())
            .and_then(|i| self.params.get(i))
            .filter(|_| what != "parameter tensor")
            .map_or(String::new(), |(p, _)| format!(" (of {p})"));
        Err(self.non_finite(&format!(
            "{what} {name}{param} ({n} NaN or infinite values)"
        )))
    }

    fn non_finite(&self, what: &str) -> Error {
        Error::InvalidArgument(format!(
            "{what} went non-finite by step {}; not saved: the last good checkpoint in {} is \
             kept. Causes: a learning rate too high (--lr), a large --alpha, no gradient \
             clipping (--max-grad-norm)",
            self.state.step,
            self.run.checkpoint_dir().display()
        ))
    }
}

/// Loads the trainable tensors of a run's latest checkpoint into `model`.
/// A checkpoint holding a non-finite value is refused, naming the tensor.
pub fn load_checkpoint_params(run: &RunDir, model: &impl Model) -> Result<()> {
    check_finite_file(&run.checkpoint_dir().join(ADAPTER_FILE))?;
    modules::load_params(&run.checkpoint_dir().join(ADAPTER_FILE), &model.params())
}

/// The checkpoint's trainable tensors as stored (`adapter.safetensors`).
pub fn checkpoint_params_file(run: &RunDir) -> std::path::PathBuf {
    run.checkpoint_dir().join(ADAPTER_FILE)
}

#[cfg(test)]
mod tests {
    /// A batch size near `usize::MAX` (from `--batch-size`) is one batch, not an overflow.
    #[test]
    fn a_huge_batch_size_is_one_batch() {
        let b = super::epoch_batches(&[3, 1, 2], usize::MAX, 0, 0);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].len(), 3);
    }
}
