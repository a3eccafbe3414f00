//! The run folder's lock: `RUN/.lock` holds the process id of the one process writing the
//! run, for that process's lifetime. A second writer is refused with the holder's pid; a
//! lock whose process is gone (a crash, `kill -9`) is taken over with a warning.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::file_err;
use crate::runtime::error::{Error, Result};

/// Name of the lock file inside a run folder.
pub(crate) const LOCK: &str = ".lock";

/// An exclusive hold on a run folder, released (the file deleted) when dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    armed: bool,
}

/// Whether process `pid` is running (a pid we cannot signal counts as running).
#[cfg(unix)]
pub(super) fn alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(not(unix))]
pub(super) fn alive(pid: u32) -> bool {
    pid != 0
}

impl RunLock {
    /// Takes the lock of run folder `dir` (which must exist).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK);
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(format!("{}\n", std::process::id()).as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { path, armed: true });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Self::take_over_if_stale(dir, &path)?;
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(file_err(dir, "could not take the run folder's lock"))
    }

    /// Errors if the lock's holder is running; else deletes the stale lock.
    fn take_over_if_stale(dir: &Path, path: &Path) -> Result<()> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(path, e)),
        };
        let pid = text.trim().parse::<u32>().ok();
        if let Some(pid) = pid.filter(|&p| alive(p)) {
            let who = if pid == std::process::id() {
                " (this process)"
            } else {
                ""
            };
            return Err(file_err(
                dir,
                format!(
                    "run folder is locked by process {pid}{who}, which is writing this run; \
                     wait for it to finish or stop it (Ctrl-C saves a checkpoint)"
                ),
            ));
        }
        eprintln!(
            "warning: {}: taking over the stale lock of process {} (no longer running)",
            dir.display(),
            text.trim()
        );
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// A lock whose file was written by hand at `path` (a folder about to be renamed into
    /// place, see [`super::RunDir::create_with`]).
    pub(crate) fn adopt(path: PathBuf) -> RunLock {
        RunLock { path, armed: true }
    }

    /// Forgets the lock without deleting its file (its folder moved away).
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Deletes leftover temporary files (`.NAME.tmp-PID`, `.params.tmp...`) of earlier
/// processes. Only the lock holder calls this, so every such file is stale.
pub(crate) fn clean_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && name.starts_with('.') && name.contains(".tmp") {
            match std::fs::remove_file(e.path()) {
                Ok(()) => eprintln!("removed stale temporary file {}", e.path().display()),
                Err(err) => eprintln!("warning: {}: {err}", e.path().display()),
            }
        }
    }
}
