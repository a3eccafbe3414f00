//! The run folder of `capaboost finetune`: its config ([`RunDir`], here), metric logs
//! (`files`), checkpoint (`checkpoint`), curves (`plot`), and the progress display
//! (`progress`) and Ctrl-C handling (`interrupt`) of a training process.
//!
//! Layout of a run folder `RUN/`:
//!
//! | file               | written by                                   |
//! |--------------------|----------------------------------------------|
//! | `config.json`      | [`RunDir::create`], atomically               |
//! | `metrics.jsonl`    | [`RunDir::log_metrics`], one object per line |
//! | `train_loss.csv`   | [`RunDir::log_train_loss`]                   |
//! | `dev_metrics.csv`  | [`RunDir::write_curves`], atomically         |
//! | `curves.png`       | [`RunDir::write_curves`], atomically         |
//! | `checkpoint/`      | [`RunDir::save_checkpoint`], swapped in whole |
//!
//! Logs are appended rather than rewritten so that a crash loses at most the line being
//! written; the derived files (`dev_metrics.csv`, `curves.png`) are regenerated from the
//! logs and can always be rebuilt.

mod checkpoint;
mod files;
mod interrupt;
mod plot;
mod progress;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::runtime::error::{Error, Result};
use crate::runtime::io::write_atomic;

pub use interrupt::install_interrupt_flag;
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

/// A run folder on disk. Holds only its path: every method reads or writes the files
/// directly, so several handles to one folder stay consistent.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
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

impl RunDir {
    /// Creates the run folder (and its parents) and writes `config` to `config.json`.
    ///
    /// An existing folder is accepted only if it is empty or already holds a
    /// `config.json` that is a JSON object (a run of ours, which the new config replaces),
    /// so a typo in `--out` never scribbles over an unrelated folder.
    pub fn create(path: &Path, config: &Value) -> Result<RunDir> {
        if !config.is_object() {
            return Err(Error::InvalidArgument(
                "run config must be a JSON object".into(),
            ));
        }
        if path.exists() {
            if !path.is_dir() {
                return Err(file_err(path, "exists and is not a folder"));
            }
            let mut entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
            let config_path = path.join(CONFIG);
            if entries.next().is_some() {
                if !config_path.is_file() {
                    return Err(file_err(
                        path,
                        "folder is not empty and has no config.json; refusing to use it as \
                         a run folder (choose a new or empty folder)",
                    ));
                }
                read_config(&config_path).map_err(|e| {
                    file_err(
                        path,
                        format!("not a capaboost run folder (bad config.json: {e})"),
                    )
                })?;
            }
        } else {
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        }
        let text = serde_json::to_string_pretty(config)
            .map_err(|e| Error::InvalidArgument(format!("run config: {e}")))?;
        write_atomic(&path.join(CONFIG), format!("{text}\n").as_bytes())?;
        let run = RunDir {
            path: path.to_path_buf(),
        };
        run.recover_checkpoint()?;
        Ok(run)
    }

    /// Opens an existing run folder (to resume or evaluate). Errors if the folder or its
    /// `config.json` is missing. Finishes a checkpoint swap a crash interrupted.
    pub fn open(path: &Path) -> Result<RunDir> {
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
