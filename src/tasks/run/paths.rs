//! Outputs never written over inputs: an output path is compared with every input path
//! of a run (its folder, the base model folder, the data) after resolving both.

use std::path::{Component, Path, PathBuf};

use crate::runtime::error::{Error, Result};

/// `path` made absolute and resolved: the longest existing prefix is canonicalized
/// (symbolic links followed), the rest appended with `.` and `..` folded.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    for name in rest.iter().rev() {
        out.push(name);
    }
    let mut folded = PathBuf::new();
    for c in out.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                folded.pop();
            }
            other => folded.push(other),
        }
    }
    folded
}

/// Refuses an output (`flag` names it in the message) that is one of the `inputs`
/// (`(what, path)`) or lies inside one of them.
pub fn refuse_overwriting_inputs(flag: &str, out: &Path, inputs: &[(&str, &Path)]) -> Result<()> {
    let o = resolve(out);
    for (what, input) in inputs {
        let i = resolve(input);
        if o == i || o.starts_with(&i) {
            return Err(Error::InvalidArgument(format!(
                "{flag} {} {} the {what} {}, an input of this run; choose another path",
                out.display(),
                if o == i { "is" } else { "lies inside" },
                input.display()
            )));
        }
    }
    Ok(())
}
