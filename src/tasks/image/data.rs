//! Labelled image lists: an image folder (`<class>/<file>`, classes sorted by name as
//! torchvision's `ImageFolder`), or a TSV of `path<TAB>label` (paths relative to the file);
//! a data folder holds `train/` + `dev/` (folders or `train.tsv` + `dev.tsv`), or is one
//! folder of classes split per class by a ratio. Problems with the data as a whole (an
//! empty class folder, a label the training classes lack) are errors naming the file;
//! images that fail to decode are skipped and counted when they are loaded. A folder of
//! idx files (MNIST / Fashion-MNIST) is read by [`crate::tasks::image::idx`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::tasks::image::idx::{IdxImages, is_idx_folder, read_idx_data, read_idx_eval};

/// The file extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One labelled image.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Image file.
    pub path: PathBuf,
    /// Class index into [`Listing::classes`].
    pub label: usize,
    /// The image's index in the listing's idx file ([`Listing::idx`]); `None` for an
    /// image file.
    pub frame: Option<usize>,
}

/// The images of one split with the class names their labels index.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Class names, sorted.
    pub classes: Vec<String>,
    /// Images, classes interleaved (the first N keep the classes balanced).
    pub items: Vec<Item>,
    /// The images in memory, when they come from an idx file (items index it by
    /// [`Item::frame`]).
    pub idx: Option<Arc<IdxImages>>,
}

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| Error::io(dir, e))?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Per class, its images in name order (the class folders of `dir`, sorted).
fn class_files(dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut out = Vec::new();
    for p in sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()) {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let files: Vec<PathBuf> = sorted_entries(&p)?
            .into_iter()
            .filter(|f| is_image(f))
            .collect();
        if files.is_empty() {
            return Err(Error::File {
                path: p.display().to_string(),
                message: format!(
                    "class folder holds no image ({})",
                    IMAGE_EXTENSIONS.join(", ")
                ),
            });
        }
        out.push((name, files));
    }
    if out.is_empty() {
        return Err(Error::File {
            path: dir.display().to_string(),
            message: "holds no class folder (<class>/<image>)".into(),
        });
    }
    Ok(out)
}

/// Items of `groups` (label, files) interleaved class by class.
fn interleave(groups: Vec<(usize, Vec<PathBuf>)>) -> Vec<Item> {
    let groups = groups
        .into_iter()
        .map(|(label, files)| {
            let item = |path| Item {
                path,
                label,
                frame: None,
            };
            files.into_iter().map(item).collect()
        })
        .collect();
    interleave_items(groups)
}

/// The groups' items interleaved: the first of each group in turn, then the second, ...
pub(crate) fn interleave_items(groups: Vec<Vec<Item>>) -> Vec<Item> {
    let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = groups.into_iter().map(Vec::into_iter).collect();
    let mut items = Vec::new();
    for _ in 0..longest {
        items.extend(iters.iter_mut().filter_map(Iterator::next));
    }
    items
}

/// An image folder whose labels index `classes` (`None`: its own sorted class names).
pub fn read_folder(dir: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let found = class_files(dir)?;
    let classes: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => found.iter().map(|(n, _)| n.clone()).collect(),
    };
    let mut groups = Vec::new();
    for (name, files) in found {
        let label = classes
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| Error::File {
                path: dir.join(&name).display().to_string(),
                message: format!(
                    "class {name:?} is not one of the training classes ({})",
                    classes.join(", ")
                ),
            })?;
        groups.push((label, files));
    }
    Ok(Listing {
        classes,
        items: interleave(groups),
        idx: None,
    })
}

/// A TSV of `path<TAB>label` (an optional header `path<TAB>label`; paths relative to the
/// file's folder); `classes`: the label set (`None`: the file's own labels, sorted).
pub fn read_tsv(file: &Path, classes: Option<&[String]>) -> Result<Listing> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let bad = |line: usize, message: String| Error::File {
        path: format!("{}:{line}", file.display()),
        message,
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || (i == 0 && line.eq_ignore_ascii_case("path\tlabel")) {
            continue;
        }
        let Some((path, label)) = line.split_once('\t') else {
            return Err(bad(i + 1, "is not path<TAB>label".into()));
        };
        rows.push((i + 1, base.join(path.trim()), label.trim().to_string()));
    }
    let classes: Vec<String> = match classes {
        Some(c) => c.to_vec(),
        None => {
            let mut c: Vec<String> = rows.iter().map(|(_, _, l)| l.clone()).collect();
            c.sort();
            c.dedup();
            c
        }
    };
    let mut groups: Vec<(usize, Vec<PathBuf>)> =
        (0..classes.len()).map(|i| (i, Vec::new())).collect();
    for (line, path, label) in rows {
        let k = classes.iter().position(|c| *c == label).ok_or_else(|| {
            bad(
                line,
                format!(
                    "label {label:?} is not one of the training classes ({})",
                    classes.join(", ")
                ),
            )
        })?;
        groups[k].1.push(path);
    }
    if groups.iter().all(|(_, f)| f.is_empty()) {
        return Err(Error::File {
            path: file.display().to_string(),
            message: "lists no image".into(),
        });
    }
    Ok(Listing {
        classes,
        items: interleave(groups),
        idx: None,
    })
}

/// A split given as a folder of classes or a TSV file.
pub fn read_split(path: &Path, classes: Option<&[String]>) -> Result<Listing> {
    if path.is_dir() {
        read_folder(path, classes)
    } else {
        read_tsv(path, classes)
    }
}

/// The training and dev splits of a data folder: idx files (`train-*` and `t10k-*`, see
/// [`crate::tasks::image::idx`]), `train/` + `dev/` (class folders), or `train.tsv` +
/// `dev.tsv`, or one folder of classes of which each class's last `dev_ratio` share (at
/// least one image, none of a single-image class) is held out.
pub fn read_data(dir: &Path, dev_ratio: f64) -> Result<(Listing, Listing)> {
    if is_idx_folder(dir) {
        return read_idx_data(dir);
    }
    for (train, dev) in [("train", "dev"), ("train.tsv", "dev.tsv")] {
        let (t, d) = (dir.join(train), dir.join(dev));
        if t.exists() || d.exists() {
            let train = read_split(&t, None)?;
            let dev = read_split(&d, Some(&train.classes))?;
            return Ok((train, dev));
        }
    }
    let found = class_files(dir)?;
    let classes: Vec<String> = found.iter().map(|(n, _)| n.clone()).collect();
    let (mut train, mut dev) = (Vec::new(), Vec::new());
    for (k, (_, files)) in found.into_iter().enumerate() {
        let n = files.len();
        let held = if n < 2 {
            0
        } else {
            ((n as f64 * dev_ratio).round() as usize).clamp(1, n - 1)
        };
        let (a, b) = files.split_at(n - held);
        train.push((k, a.to_vec()));
        dev.push((k, b.to_vec()));
    }
    let dev = interleave(dev);
    if dev.is_empty() {
        return Err(Error::File {
            path: dir.display().to_string(),
            message: "no class has two images: nothing to hold out for evaluation".into(),
        });
    }
    let train = Listing {
        classes: classes.clone(),
        items: interleave(train),
        idx: None,
    };
    Ok((
        train,
        Listing {
            classes,
            items: dev,
            idx: None,
        },
    ))
}

/// The evaluation split of `dir` for scoring a run: its idx `t10k-*` files, its `dev/` or
/// `dev.tsv`, or a TSV file, or a folder of classes whole. Labels index `classes`.
pub fn read_eval(path: &Path, classes: &[String]) -> Result<Listing> {
    if is_idx_folder(path) {
        return read_idx_eval(path, classes);
    }
    for dev in ["dev", "dev.tsv"] {
        if path.is_dir() && path.join(dev).exists() {
            return read_split(&path.join(dev), Some(classes));
        }
    }
    read_split(path, Some(classes))
}
