//! The run's checkpoint folder, replaced as a whole so that a crash always leaves one
//! complete checkpoint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{CHECKPOINT, CHECKPOINT_OLD, CHECKPOINT_TMP, RunDir, TRAINER_STATE, file_err};
use crate::runtime::error::{Error, Result};
use crate::runtime::failpoint;

/// Makes renames and new files in `dir` durable. Directories cannot be opened as files on
/// every platform, so this is best effort.
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn remove_dir_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::io(
            from,
            std::io::Error::new(e.kind(), format!("rename to {}: {e}", to.display())),
        )
    })
}

impl RunDir {
    /// `RUN/checkpoint`: the last complete checkpoint. Call [`RunDir::open`] or
    /// [`RunDir::load_checkpoint_state`] first so an interrupted swap is finished.
    pub fn checkpoint_dir(&self) -> PathBuf {
        self.path.join(CHECKPOINT)
    }

    /// Finishes a swap that [`RunDir::save_checkpoint`] left half done: when
    /// `checkpoint/` is missing, the newest complete copy is renamed into its place and the
    /// other leftover deleted. When `checkpoint/` exists it is complete and is kept (a
    /// complete `.checkpoint.tmp` beside it is a save that never swapped in; the next
    /// save deletes it).
    pub(super) fn recover_checkpoint(&self) -> Result<()> {
        let cur = self.path.join(CHECKPOINT);
        let tmp = self.path.join(CHECKPOINT_TMP);
        let old = self.path.join(CHECKPOINT_OLD);
        if cur.exists() {
            return Ok(());
        }
        // The temp folder is complete exactly when its trainer_state.json exists, because
        // that file is written last; it is then newer than `.checkpoint.old`.
        if tmp.join(TRAINER_STATE).is_file() {
            rename(&tmp, &cur)?;
            sync_dir(&self.path);
            remove_dir_if_exists(&old)?;
            eprintln!("{}: finished an interrupted checkpoint save", cur.display());
        } else if old.join(TRAINER_STATE).is_file() {
            rename(&old, &cur)?;
            sync_dir(&self.path);
            remove_dir_if_exists(&tmp)?;
            eprintln!(
                "{}: restored after an interrupted checkpoint save",
                cur.display()
            );
        }
        Ok(())
    }

    /// Deletes what an interrupted save left beside a complete `checkpoint/` (a partial
    /// `.checkpoint.tmp`, a `.checkpoint.old` the swap did not delete), saying so. Only
    /// the lock holder calls this: a reader could race a live writer's save.
    pub(super) fn clean_checkpoint_leftovers(&self) -> Result<()> {
        self.recover_checkpoint()?;
        if !self.path.join(CHECKPOINT).exists() {
            return Ok(());
        }
        for name in [CHECKPOINT_TMP, CHECKPOINT_OLD] {
            let p = self.path.join(name);
            if p.exists() {
                remove_dir_if_exists(&p)?;
                eprintln!(
                    "removed {} left by an interrupted checkpoint save",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// Saves a checkpoint: every `(file name, bytes)` of `files` plus `state` as
    /// `trainer_state.json`, replacing `RUN/checkpoint` as a whole.
    ///
    /// The sequence, chosen so that a crash at any point leaves one complete checkpoint
    /// that [`RunDir::open`] / [`RunDir::load_checkpoint_state`] find:
    ///
    /// 1. finish an interrupted earlier swap (see below), then delete leftovers
    ///    `RUN/.checkpoint.tmp` and `RUN/.checkpoint.old`;
    /// 2. create `RUN/.checkpoint.tmp`, write and fsync every file, then write and fsync
    ///    `trainer_state.json` last (its presence marks the folder complete), fsync the
    ///    folder;
    /// 3. rename `RUN/checkpoint` to `RUN/.checkpoint.old` (if it exists);
    /// 4. rename `RUN/.checkpoint.tmp` to `RUN/checkpoint`, fsync `RUN`;
    /// 5. delete `RUN/.checkpoint.old`.
    ///
    /// An error in 2 (a full disk, say) deletes the temp folder and names the file.
    /// A crash in 1-2 leaves the old `checkpoint/` untouched; between 3 and 4 there is no
    /// `checkpoint/`, and recovery renames the complete `.checkpoint.tmp` (or failing that
    /// `.checkpoint.old`) into place; after 4 the new one is in place and `.old` is
    /// leftover.
    pub fn save_checkpoint(&self, files: &[(&str, Vec<u8>)], state: &Value) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (name, _) in files {
            let bad = name.is_empty()
                || *name == "."
                || *name == ".."
                || name.contains(['/', '\\'])
                || *name == TRAINER_STATE;
            if bad {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint file name {name:?} must be a plain file name other than \
                     {TRAINER_STATE}"
                )));
            }
            if !seen.insert(*name) {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint file name {name:?} given twice"
                )));
            }
        }
        let state_text = serde_json::to_string_pretty(state)
            .map_err(|e| Error::InvalidArgument(format!("trainer state: {e}")))?;

        let cur = self.path.join(CHECKPOINT);
        let tmp = self.path.join(CHECKPOINT_TMP);
        let old = self.path.join(CHECKPOINT_OLD);
        self.recover_checkpoint()?;
        remove_dir_if_exists(&tmp)?;
        remove_dir_if_exists(&old)?;

        std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let write = |name: &str, bytes: &[u8], point: &str| -> Result<()> {
            let p = tmp.join(name);
            let mut f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
            failpoint::write_all(point, &mut f, bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&p, e))
        };
        let written = files
            .iter()
            .enumerate()
            .try_for_each(|(i, (name, bytes))| {
                let last = i + 1 == files.len();
                let point = if last { "checkpoint-enospc" } else { "" };
                write(name, bytes, point)
            })
            .and_then(|()| {
                failpoint::exit_at("checkpoint-files-written");
                write(TRAINER_STATE, format!("{state_text}\n").as_bytes(), "")
            });
        if let Err(e) = written {
            // A full disk or a failing file: the old checkpoint is untouched; the partial
            // copy would only hold the space the next save needs.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        sync_dir(&tmp);

        if cur.exists() {
            rename(&cur, &old)?;
            failpoint::exit_at("checkpoint-old-renamed");
        }
        rename(&tmp, &cur)?;
        sync_dir(&self.path);
        failpoint::exit_at("checkpoint-swapped");
        remove_dir_if_exists(&old)
    }

    /// The `trainer_state.json` of the last complete checkpoint, or `None` when the run
    /// has none yet. Finishes an interrupted swap first.
    pub fn load_checkpoint_state(&self) -> Result<Option<Value>> {
        self.recover_checkpoint()?;
        let cur = self.path.join(CHECKPOINT);
        if !cur.exists() {
            return Ok(None);
        }
        let p = cur.join(TRAINER_STATE);
        if !p.is_file() {
            return Err(file_err(
                &cur,
                "checkpoint has no trainer_state.json (it was not written by capaboost)",
            ));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| file_err(&p, format!("not valid JSON: {e}")))
    }
}
