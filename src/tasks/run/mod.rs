//! The run folder of `capaboost finetune`: its config ([`RunDir`], here), metric logs
//! (`files`), checkpoint (`checkpoint`), curves (`plot`), and the progress display
//! (`progress`) and Ctrl-C handling (`interrupt`) of a training process.
//!
//! Layout of a run folder `RUN/`:
//!
//! | file               | written by                                   |
//! |--------------------|----------------------------------------------|
//! | `config.json`      | [`RunDir::create`], atomically               |
//! | `.lock`            | the writing process (its pid), while it runs  |
//! | `metrics.jsonl`    | [`RunDir::log_metrics`], one object per line |
//! | `train_loss.csv`   | [`RunDir::log_train_loss`]                   |
//! | `dev_metrics.csv`  | [`RunDir::write_curves`], atomically         |
//! | `curves.png`       | [`RunDir::write_curves`], atomically         |
//! | `checkpoint/`      | [`RunDir::save_checkpoint`], swapped in whole |
//! | task files         | `Task::write_eval_files` at each evaluation, e.g. `confusion.png` (images) |
//!
//! Logs are appended rather than rewritten so that a crash loses at most the line being
//! written; the derived files (`dev_metrics.csv`, `curves.png`) are regenerated from the
//! logs and can always be rebuilt.

mod checkpoint;
mod files;
mod finite;
mod interrupt;
mod lock;
mod overwrite;
mod paths;
pub(crate) mod plot;
mod progress;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::runtime::error::{Error, Result};
use crate::runtime::io::write_atomic;

pub use finite::{check_finite_file, first_non_finite};
pub use interrupt::{install_interrupt_flag, terminated};
pub use lock::RunLock;
pub use paths::{refuse_overwriting_inputs, resolve};
pub use progress::Progress;

pub(crate) const CONFIG: &str = "config.json";
pub(crate) const METRICS: &str = "metrics.jsonl";
pub(crate) const TRAIN_LOSS: &str = "train_loss.csv";
pub(crate) const DEV_METRICS: &str = "dev_metrics.csv";
pub(crate) const CURVES: &str = "curves.png";
pub(crate) const CHECKPOINT: &str = "checkpoint";
pub(crate) const CHECKPOINT_TMP: &str = ".checkpoint.tmp";
pub(crate) const CHECKPOINT_OLD: &str = ".checkpoint.old";
pub(crate) const TRAINER_STATE: &str = "trainer_state.json";
pub(crate) const TRAIN_LOSS_HEADER: &str = "step,epoch,loss,lr";

/// Size of `curves.png` in pixels.
pub const CURVES_SIZE: (u32, u32) = (1000, 450);

/// A run folder on disk. Holds its path and, for a writer, the folder's lock: every
/// method reads or writes the files directly, so several handles to one folder stay
/// consistent.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    /// Held by handles that write the run (shared by their clones).
    lock: Option<Arc<RunLock>>,
}

pub(crate) fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| file_err(path, format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(file_err(path, "expected a JSON object"));
    }
    Ok(v)
}

/// A short description of the run in `path` (task, method, checkpoint step) for messages.
fn describe_run(path: &Path) -> String {
    let cfg = read_config(&path.join(CONFIG)).unwrap_or_default();
    let field = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    let step = std::fs::read_to_string(path.join(CHECKPOINT).join(TRAINER_STATE))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| v.get("step").and_then(Value::as_u64));
    let at = step.map_or("no checkpoint yet".to_string(), |s| {
        format!("checkpoint at step {s}")
    });
    format!("{} {} run, {at}", field("task"), field("method"))
}

/// What a folder given as a new run's `--out` holds.
enum Existing {
    /// Missing, or an empty folder: a new run may go there.
    Free,
    /// A run of ours.
    Run,
}

/// Checks that `path` may receive a new run without touching it: a missing or empty
/// folder, or (only with `overwrite`) an existing run. Anything else is refused.
pub fn check_new_run_folder(path: &Path, overwrite: bool) -> Result<()> {
    inspect(path, overwrite).map(|_| ())
}

fn inspect(path: &Path, overwrite: bool) -> Result<Existing> {
    overwrite::recover(path)?;
    if !path.exists() {
        return Ok(Existing::Free);
    }
    if !path.is_dir() {
        return Err(file_err(path, "exists and is not a folder"));
    }
    let mut entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
    if entries.next().is_none() {
        return Ok(Existing::Free);
    }
    let config_path = path.join(CONFIG);
    if !config_path.is_file() {
        return Err(file_err(
            path,
            "folder is not empty and has no config.json; refusing to use it as a run folder \
             (choose a new or empty folder)",
        ));
    }
    read_config(&config_path).map_err(|e| {
        file_err(
            path,
            format!("not a capaboost run folder (bad config.json: {e})"),
        )
    })?;
    if !overwrite {
        return Err(file_err(
            path,
            format!(
                "holds a run ({}); continue it with --resume {}, or replace it with \
                 --overwrite (its checkpoint and logs are deleted)",
                describe_run(path),
                path.display()
            ),
        ));
    }
    Ok(Existing::Run)
}

fn write_config(path: &Path, config: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(config)
        .map_err(|e| Error::InvalidArgument(format!("run config: {e}")))?;
    write_atomic(&path.join(CONFIG), format!("{text}\n").as_bytes())
}

impl RunDir {
    /// Creates a new run in `path` (a missing or empty folder; parents are created) with
    /// `config` as its `config.json`, and holds the folder's lock. An existing run is
    /// refused, naming it: see [`RunDir::create_with`] to replace it.
    pub fn create(path: &Path, config: &Value) -> Result<RunDir> {
        Self::create_with(path, config, false)
    }

    /// [`RunDir::create`]; with `overwrite`, an existing run in `path` is replaced: the
    /// new run is prepared in a sibling folder and swapped in by renames, so a failure
    /// before the swap leaves the old run as it was, and a crash at any point leaves the
    /// old run or the new one (see `overwrite.rs`). The old run's lock is taken first, so
    /// a run that a live process is writing is never replaced.
    pub fn create_with(path: &Path, config: &Value, overwrite: bool) -> Result<RunDir> {
        if !config.is_object() {
            return Err(Error::InvalidArgument(
                "run config must be a JSON object".into(),
            ));
        }
        let lock = match inspect(path, overwrite)? {
            Existing::Free => {
                std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
                let lock = RunLock::acquire(path)?;
                // Another process may have created a run here since `inspect`.
                let only_lock = std::fs::read_dir(path)
                    .map_err(|e| Error::io(path, e))?
                    .flatten()
                    .all(|e| e.file_name() == lock::LOCK);
                if !only_lock {
                    return Err(file_err(path, "another process started a run here"));
                }
                write_config(path, config)?;
                lock
            }
            Existing::Run => overwrite::replace(path, config)?,
        };
        Ok(RunDir {
            path: path.to_path_buf(),
            lock: Some(Arc::new(lock)),
        })
    }

    /// Opens an existing run to continue writing it: takes its lock, finishes an
    /// interrupted checkpoint swap, deletes stale temporary files and checkpoint copies
    /// and repairs torn log tails.
    pub fn open_writer(path: &Path) -> Result<RunDir> {
        let mut run = Self::open(path)?;
        let lock = RunLock::acquire(path)?;
        run.lock = Some(Arc::new(lock));
        lock::clean_temp_files(path);
        run.clean_checkpoint_leftovers()?;
        run.repair_logs()?;
        Ok(run)
    }

    /// Writes `config` as the run's `config.json` (a resume that extended the run).
    pub fn update_config(&self, config: &Value) -> Result<()> {
        write_config(&self.path, config)
    }

    /// Opens an existing run folder (to resume or evaluate). Errors if the folder or its
    /// `config.json` is missing. Finishes a checkpoint swap a crash interrupted.
    pub fn open(path: &Path) -> Result<RunDir> {
        overwrite::recover(path)?;
        if !path.is_dir() {
            return Err(file_err(path, "run folder does not exist"));
        }
        let config_path = path.join(CONFIG);
        if !config_path.is_file() {
            return Err(file_err(
                path,
                "has no config.json; not a capaboost run folder",
            ));
        }
        read_config(&config_path)?;
        let run = RunDir {
            path: path.to_path_buf(),
            lock: None,
        };
        run.recover_checkpoint()?;
        Ok(run)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The run's `config.json`, as written by [`RunDir::create`].
    pub fn config(&self) -> Result<Value> {
        read_config(&self.path.join(CONFIG))
    }
}
