//! The autotuner's persistent choices: one JSON file in the user's cache folder
//! (`$CAPABOOST_CACHE_DIR`, else `$XDG_CACHE_HOME/capaboost`, else `~/.cache/capaboost`),
//! `gemm_tune.json`:
//!
//! ```json
//! { "format": 1, "entries": { "<key>": { "kernel": "r8x8w8x8", "times_ms": { "tiled64": 190.0 } } } }
//! ```
//!
//! Written atomically (a temporary file in the same folder, then a rename) after merging
//! what another process may have written since; a file that does not parse is ignored with
//! a warning and replaced on the next write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's format number; another number is ignored like a corrupt file.
pub const FORMAT: u32 = 1;

/// One tuned choice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The chosen kernel's label (`tiled64`, `r8x8w8x8`, ...).
    pub kernel: String,
    /// Median ms of each candidate measured (dropped ones: their first sample).
    #[serde(default)]
    pub times_ms: BTreeMap<String, f64>,
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheFile {
    /// [`FORMAT`].
    pub format: u32,
    /// Choices by key.
    pub entries: BTreeMap<String, Entry>,
}

/// The cache folder from the environment: `$CAPABOOST_CACHE_DIR`, `$XDG_CACHE_HOME/capaboost`,
/// `$HOME/.cache/capaboost`; `None` without any of them.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("CAPABOOST_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("capaboost")))
        .or_else(|| var("HOME").map(|p| p.join(".cache").join("capaboost")))
}

/// The tuning file in `dir`.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join("gemm_tune.json")
}

/// Reads the file; a missing file is empty, an unreadable or corrupt one is empty with a
/// warning on stderr.
pub fn load(path: &Path) -> CacheFile {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return CacheFile::default(),
        Err(e) => {
            eprintln!(
                "warning: ignoring GEMM tuning cache {}: {e}",
                path.display()
            );
            return CacheFile::default();
        }
    };
    match serde_json::from_str::<CacheFile>(&text) {
        Ok(f) if f.format == FORMAT => f,
        Ok(f) => {
            eprintln!(
                "warning: ignoring GEMM tuning cache {} (format {}, expected {FORMAT})",
                path.display(),
                f.format
            );
            CacheFile::default()
        }
        Err(e) => {
            eprintln!(
                "warning: ignoring corrupt GEMM tuning cache {}: {e}",
                path.display()
            );
            CacheFile::default()
        }
    }
}

/// Adds `entries` to the file at `path` (merged with what it holds now) atomically.
pub fn store(path: &Path, entries: &BTreeMap<String, Entry>) -> std::io::Result<()> {
    let mut file = load(path);
    file.format = FORMAT;
    file.entries
        .extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("capaboost-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn entry(kernel: &str) -> Entry {
        Entry {
            kernel: kernel.into(),
            times_ms: BTreeMap::from([("tiled64".to_string(), 12.5)]),
        }
    }

    #[test]
    fn round_trip_merges_and_leaves_no_temporary() {
        let dir = temp("round");
        let path = file_in(&dir);
        assert_eq!(load(&path), CacheFile::default());
        store(
            &path,
            &BTreeMap::from([("k1".to_string(), entry("r8x8w8x8"))]),
        )
        .unwrap();
        store(
            &path,
            &BTreeMap::from([("k2".to_string(), entry("tiled64"))]),
        )
        .unwrap();
        let f = load(&path);
        assert_eq!(f.format, FORMAT);
        assert_eq!(f.entries.len(), 2);
        assert_eq!(f.entries["k1"], entry("r8x8w8x8"));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("gemm_tune.json")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_or_foreign_files_are_ignored_then_replaced() {
        let dir = temp("corrupt");
        let path = file_in(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for junk in [
            "{not json",
            "[1, 2]",
            "{\"format\": 99, \"entries\": {}}",
            "",
        ] {
            std::fs::write(&path, junk).unwrap();
            assert_eq!(load(&path), CacheFile::default(), "{junk}");
        }
        std::fs::write(&path, "\u{0}\u{1}garbage").unwrap();
        store(
            &path,
            &BTreeMap::from([("k".to_string(), entry("tiled64"))]),
        )
        .unwrap();
        assert_eq!(load(&path).entries.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
