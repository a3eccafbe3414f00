//! `finetune --overwrite`: replacing a run folder as a whole, and finishing a replacement
//! that a crash interrupted, so that the folder always holds the old run or the new one.
//!
//! A replacement of `DIR/NAME` by process `PID` goes through two siblings:
//!
//! 1. take the old run's lock; prepare the new run in `DIR/.NAME.new-PID` (its lock and
//!    `config.json`);
//! 2. rename `DIR/NAME` to `DIR/.NAME.old-PID`;
//! 3. rename `DIR/.NAME.new-PID` to `DIR/NAME`;
//! 4. delete `DIR/.NAME.old-PID`.
//!
//! [`recover`] runs before anything opens or replaces a run folder. For each sibling of a
//! process that is gone: before 2 (`NAME` and `.new` exist) the unused new run is
//! deleted; between 2 and 3 (no `NAME`) the old run is renamed back, as the replacement
//! never completed (the new run held no training yet); after 3 (`NAME` and `.old`) the
//! old run that was meant to go is deleted. Siblings of a live process are left alone
//! (it is still replacing the run); a missing `NAME` is then an error naming it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::lock::{self, RunLock};
use super::{file_err, write_config};
use crate::runtime::error::{Error, Result};
use crate::runtime::failpoint;

/// The sibling folders of `path` that replacements left: `(pid, is_old, folder)`.
fn siblings(path: &Path) -> Result<Vec<(u32, bool, PathBuf)>> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let parent = parent_of(path);
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Ok(Vec::new());
    };
    let (old, new) = (format!(".{name}.old-"), format!(".{name}.new-"));
    let mut found = Vec::new();
    for e in entries.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let (is_old, pid) = match (n.strip_prefix(&old), n.strip_prefix(&new)) {
            (Some(pid), _) => (true, pid),
            (_, Some(pid)) => (false, pid),
            _ => continue,
        };
        if let Ok(pid) = pid.parse::<u32>() {
            found.push((pid, is_old, e.path()));
        }
    }
    found.sort();
    Ok(found)
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn remove(folder: &Path, why: &str) -> Result<()> {
    std::fs::remove_dir_all(folder).map_err(|e| Error::io(folder, e))?;
    eprintln!("{}: deleted ({why})", folder.display());
    Ok(())
}

/// Finishes or undoes a replacement of `path` that a crash interrupted (see the module
/// docs). Errors name the folder when a live process is still replacing it.
pub(crate) fn recover(path: &Path) -> Result<()> {
    for (pid, is_old, folder) in siblings(path)? {
        if pid == std::process::id() || lock::alive(pid) {
            if !path.exists() {
                return Err(file_err(
                    path,
                    format!("process {pid} is replacing this run (--overwrite); wait for it"),
                ));
            }
            continue;
        }
        match (is_old, path.exists()) {
            (true, false) => {
                std::fs::rename(&folder, path).map_err(|e| Error::io(&folder, e))?;
                eprintln!(
                    "{}: restored the run that an interrupted --overwrite (process {pid}) \
                     had moved to {}",
                    path.display(),
                    folder.display()
                );
            }
            (true, true) => remove(&folder, "the run an --overwrite replaced")?,
            (false, _) => remove(&folder, "the new run of an interrupted --overwrite")?,
        }
    }
    Ok(())
}

/// Replaces the run in `path` by a new run with `config`, holding the new run's lock.
pub(crate) fn replace(path: &Path, config: &Value) -> Result<RunLock> {
    let old_lock = RunLock::acquire(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| file_err(path, "not a folder name"))?;
    let parent = parent_of(path);
    let pid = std::process::id();
    let fresh = parent.join(format!(".{name}.new-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    let _ = std::fs::remove_dir_all(&fresh);
    std::fs::create_dir(&fresh).map_err(|e| Error::io(&fresh, e))?;
    let prepared = std::fs::write(fresh.join(lock::LOCK), format!("{pid}\n"))
        .map_err(|e| Error::io(&fresh, e))
        .and_then(|()| write_config(&fresh, config));
    if let Err(e) = prepared {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    failpoint::exit_at("overwrite-prepared");
    std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    failpoint::exit_at("overwrite-old-renamed");
    if let Err(e) = std::fs::rename(&fresh, path) {
        let _ = std::fs::rename(&old, path);
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(Error::io(&fresh, e));
    }
    failpoint::exit_at("overwrite-swapped");
    old_lock.disarm();
    eprintln!("--overwrite: replaced the run in {}", path.display());
    if let Err(e) = std::fs::remove_dir_all(&old) {
        eprintln!(
            "warning: could not delete the old run {}: {e}",
            old.display()
        );
    }
    Ok(RunLock::adopt(path.join(lock::LOCK)))
}
