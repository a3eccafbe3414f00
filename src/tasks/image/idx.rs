//! MNIST-style idx files (as Fashion-MNIST ships them, plain or gzipped): a data folder
//! holding `train-images-idx3-ubyte` + `train-labels-idx1-ubyte` (training) and
//! `t10k-images-idx3-ubyte` + `t10k-labels-idx1-ubyte` (evaluation), each optionally with
//! `.gz`. Images are 8-bit grey, kept in memory and expanded to RGB by the preprocessing.
//! Class names: `classes.txt` in the folder (one per line) if present, else Fashion-MNIST's
//! ten names when the folder's path says `fashion`, else the label numbers. A bad file
//! (wrong magic, a truncated body, image and label counts that differ, a label beyond the
//! classes) is an error naming it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::tasks::image::data::{Item, Listing, interleave_items};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The most bytes one idx file may decompress to (a guard against gzip bombs).
const MAX_BYTES: u64 = 1 << 32;

/// The grey images of one idx3 file.
#[derive(Debug)]
pub struct IdxImages {
    /// The file they came from.
    pub file: PathBuf,
    /// Rows (height) of every image.
    pub rows: u32,
    /// Columns (width) of every image.
    pub cols: u32,
    /// `count * rows * cols` bytes.
    pub data: Vec<u8>,
}

impl IdxImages {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.data.len() / (self.rows as usize * self.cols as usize).max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Image `i` (panics when out of range: listings index only images that exist).
    pub fn image(&self, i: usize) -> image::DynamicImage {
        let n = self.rows as usize * self.cols as usize;
        let px = self.data[i * n..(i + 1) * n].to_vec();
        let grey = image::GrayImage::from_raw(self.cols, self.rows, px)
            .expect("an idx image holds rows * cols bytes");
        image::DynamicImage::ImageLuma8(grey)
    }
}

fn bad(path: &Path, message: String) -> Error {
    Error::File {
        path: path.display().to_string(),
        message,
    }
}

/// `dir/stem`, else `dir/stem.gz`, if either exists.
pub fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Whether `dir` holds idx training files.
pub fn is_idx_folder(dir: &Path) -> bool {
    dir.is_dir() && find(dir, "train-images-idx3-ubyte").is_some()
}

/// The file's bytes, gunzipped when it ends in `.gz`.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let res = if gz {
        flate2::read::MultiGzDecoder::new(file)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
    } else {
        std::io::BufReader::new(file)
            .take(MAX_BYTES + 1)
            .read_to_end(&mut out)
    };
    res.map_err(|e| bad(path, format!("could not be read (gzip: {gz}): {e}")))?;
    if out.len() as u64 > MAX_BYTES {
        return Err(bad(path, format!("holds more than {MAX_BYTES} bytes")));
    }
    Ok(out)
}

/// The idx header: checks the magic (`0 0 8 dims`: unsigned bytes with `dims`
/// dimensions) and returns the dimensions and the body.
fn header<'a>(path: &Path, bytes: &'a [u8], dims: u8) -> Result<(Vec<usize>, &'a [u8])> {
    let want = [0, 0, 8, dims];
    if bytes.len() < 4 || bytes[..4] != want {
        let got = &bytes[..bytes.len().min(4)];
        return Err(bad(
            path,
            format!("is not an idx{dims}-ubyte file: magic {got:02x?}, expected {want:02x?}"),
        ));
    }
    let end = 4 + 4 * dims as usize;
    if bytes.len() < end {
        return Err(bad(path, "is truncated inside its header".into()));
    }
    let shape: Vec<usize> = bytes[4..end]
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let body = &bytes[end..];
    let size = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    match size {
        Some(n) if n == body.len() => Ok((shape, body)),
        Some(n) if n > body.len() => Err(bad(
            path,
            format!(
                "is truncated: its header {shape:?} needs {n} bytes of data, it holds {}",
                body.len()
            ),
        )),
        _ => Err(bad(
            path,
            format!(
                "holds {} bytes of data, its header {shape:?} says otherwise",
                body.len()
            ),
        )),
    }
}

/// Reads an idx3-ubyte images file (plain or `.gz`).
pub fn read_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_bytes(path)?;
    let (shape, body) = header(path, &bytes, 3)?;
    if shape[1] == 0 || shape[2] == 0 {
        return Err(bad(
            path,
            format!("has images of {}x{}", shape[2], shape[1]),
        ));
    }
    Ok(IdxImages {
        file: path.to_path_buf(),
        rows: shape[1] as u32,
        cols: shape[2] as u32,
        data: body.to_vec(),
    })
}

/// Reads an idx1-ubyte labels file (plain or `.gz`).
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    let (_, body) = header(path, &bytes, 1)?;
    Ok(body.to_vec())
}

/// The class names of an idx folder whose largest training label is `max_label`.
fn class_names(dir: &Path, max_label: u8) -> Result<Vec<String>> {
    let names = dir.join("classes.txt");
    if names.is_file() {
        let text = std::fs::read_to_string(&names).map_err(|e| Error::io(&names, e))?;
        let v: Vec<String> = text
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        if v.is_empty() {
            return Err(bad(&names, "lists no class name".into()));
        }
        return Ok(v);
    }
    let fashion = crate::tasks::run::resolve(dir)
        .to_string_lossy()
        .to_lowercase()
        .contains("fashion");
    if fashion {
        return Ok(FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect());
    }
    Ok((0..=max_label).map(|k| k.to_string()).collect())
}

/// One split (`prefix` `train` or `t10k`): images and labels, items grouped by class and
/// interleaved (the first N keep the classes balanced, as the image folders do).
/// `classes`: the label set (`None`: from the folder, see [`class_names`]).
fn read_split(dir: &Path, prefix: &str, classes: Option<&[String]>) -> Result<Listing> {
    let need = |stem: String| {
        find(dir, &stem).ok_or_else(|| {
            bad(
                &dir.join(&stem),
                "is missing (nor is there a .gz of it): an idx folder holds \
                 train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte \
                 and t10k-labels-idx1-ubyte"
                    .into(),
            )
        })
    };
    let images_file = need(format!("{prefix}-images-idx3-ubyte"))?;
    let labels_file = need(format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_images(&images_file)?;
    let labels = read_labels(&labels_file)?;
    if labels.len() != images.len() {
        return Err(bad(
            &labels_file,
            format!(
                "holds {} labels, {} holds {} images",
                labels.len(),
                images_file.display(),
                images.len()
            ),
        ));
    }
    if labels.is_empty() {
        return Err(bad(&images_file, "holds no image".into()));
    }
    let classes = match classes {
        Some(c) => c.to_vec(),
        None => class_names(dir, labels.iter().copied().max().unwrap_or(0))?,
    };
    let mut groups: Vec<Vec<Item>> = vec![Vec::new(); classes.len()];
    let source = Arc::new(images);
    for (i, &l) in labels.iter().enumerate() {
        let group = groups.get_mut(l as usize).ok_or_else(|| {
            bad(
                &labels_file,
                format!(
                    "label {l} of image {i} is beyond the {} classes",
                    classes.len()
                ),
            )
        })?;
        group.push(Item {
            path: PathBuf::from(format!("{}#{i}", images_file.display())),
            label: l as usize,
            frame: Some(i),
        });
    }
    Ok(Listing {
        classes,
        items: interleave_items(groups),
        idx: Some(source),
    })
}

/// The training (`train-*`) and evaluation (`t10k-*`) splits of an idx folder.
pub fn read_idx_data(dir: &Path) -> Result<(Listing, Listing)> {
    let train = read_split(dir, "train", None)?;
    let dev = read_split(dir, "t10k", Some(&train.classes))?;
    Ok((train, dev))
}

/// The evaluation split (`t10k-*`) of an idx folder, labels indexing `classes`.
pub fn read_idx_eval(dir: &Path, classes: &[String]) -> Result<Listing> {
    read_split(dir, "t10k", Some(classes))
}
