//! Image data: folders and TSV files read as torchvision's ImageFolder does (classes
//! sorted, labels indexing the training classes), the ratio split, bad input named or
//! skipped and counted, and preprocessing against transformers' image processors on two
//! CIFAR-10 JPEGs (tests/data/preprocess-golden.json, scripts/make_preprocess_golden.py).

use std::path::{Path, PathBuf};

use capaboost::tasks::image::data::{read_data, read_eval, read_tsv};
use capaboost::tasks::image::images::Images;
use capaboost::tasks::image::preprocess::Preprocessor;
use image::{GrayImage, Luma, Rgb, RgbImage};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("capaboost-imgdata-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rgb(path: &Path, (w, h): (u32, u32), c: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb(c)).save(path).unwrap();
}

fn manifest(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn vit_pre() -> Preprocessor {
    Preprocessor::read(&manifest("tests/data/tiny-vit"), 32).unwrap()
}

#[test]
fn folders_sorted_interleaved_and_bad_files_counted() {
    let d = tmpdir("folders");
    rgb(&d.join("train/dog/b.png"), (10, 12), [200, 0, 0]);
    rgb(&d.join("train/dog/a.jpg"), (40, 30), [0, 200, 0]);
    rgb(&d.join("train/cat/z.png"), (8, 8), [0, 0, 200]);
    GrayImage::from_pixel(9, 9, Luma([128]))
        .save(d.join("train/cat/grey.png"))
        .unwrap();
    std::fs::write(d.join("train/cat/broken.png"), b"not a png at all").unwrap();
    std::fs::write(d.join("train/cat/notes.txt"), b"ignored").unwrap();
    rgb(&d.join("dev/dog/c.png"), (16, 16), [1, 2, 3]);
    let (train, dev) = read_data(&d, 0.2).unwrap();
    assert_eq!(train.classes, ["cat", "dog"]);
    let names: Vec<String> = train
        .items
        .iter()
        .map(|i| i.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // Class by class in turn, files in name order within a class; .txt ignored.
    assert_eq!(names, ["broken.png", "a.jpg", "grey.png", "b.png", "z.png"]);
    assert_eq!(dev.items.len(), 1);
    assert_eq!(
        dev.items[0].label, 1,
        "dev labels index the training classes"
    );
    let images = Images::load(&train, &vit_pre(), 32, None).unwrap();
    assert_eq!(
        images.len(),
        4,
        "mixed sizes and a grey image are all resized to 32x32 RGB"
    );
    assert_eq!(images.skipped, 1);
    assert!(
        images.samples[0].contains("broken.png"),
        "{:?}",
        images.samples
    );
    // The grey image expands to three equal channels.
    let grey = &images.bytes[images
        .paths
        .iter()
        .position(|p| p.ends_with("grey.png"))
        .unwrap()];
    assert_eq!(grey.len(), 3 * 32 * 32);
    assert!(grey.iter().all(|&v| v == 128));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn ratio_split_and_bad_layouts_are_named() {
    let d = tmpdir("ratio");
    for c in ["b", "a"] {
        for i in 0..5 {
            rgb(&d.join(format!("{c}/{i}.png")), (4, 4), [i * 40, 0, 0]);
        }
    }
    let (train, dev) = read_data(&d, 0.2).unwrap();
    assert_eq!((train.items.len(), dev.items.len()), (8, 2));
    assert!(
        dev.items.iter().all(|i| i.path.ends_with("4.png")),
        "each class's last file is held out"
    );
    // An empty class folder is an error naming it.
    std::fs::create_dir_all(d.join("c")).unwrap();
    let e = read_data(&d, 0.2).unwrap_err().to_string();
    assert!(e.contains("/c") && e.contains("no image"), "{e}");
    std::fs::remove_dir_all(d.join("c")).unwrap();
    // A dev class the training classes lack is an error naming its folder.
    let e = read_eval(&d, &["a".to_string()]).unwrap_err().to_string();
    assert!(
        e.contains("/b") && e.contains("not one of the training classes"),
        "{e}"
    );
    // TSV: paths relative to the file, an unknown label names file and line.
    std::fs::write(d.join("list.tsv"), "path\tlabel\na/0.png\tx\nb/1.png\ty\n").unwrap();
    let l = read_tsv(&d.join("list.tsv"), None).unwrap();
    assert_eq!(l.classes, ["x", "y"]);
    assert!(l.items[1].path.ends_with("b/1.png"));
    let e = read_tsv(&d.join("list.tsv"), Some(&["x".to_string()]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("list.tsv:3") && e.contains("\"y\""), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn preprocessing_matches_transformers_on_cifar() {
    let gold: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(manifest("tests/data/preprocess-golden.json")).unwrap(),
    )
    .unwrap();
    for case in gold.as_array().unwrap() {
        let model = case["model"].as_str().unwrap();
        let file =
            manifest("../shared/data/cifar10-test-half").join(case["file"].as_str().unwrap());
        let pre = Preprocessor::read(&manifest(&format!("tests/data/{model}")), 32).unwrap();
        let n = pre.output_size().unwrap();
        assert_eq!(case["shape"][1].as_u64().unwrap() as u32, n);
        let img = image::open(&file).unwrap();
        let mut got = Vec::new();
        pre.normalize(&pre.pixels(&img, n).unwrap(), &mut got);
        let want: Vec<f32> = case["pixel_values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), want.len());
        let diffs: Vec<f32> = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).collect();
        let max = diffs.iter().copied().fold(0f32, f32::max);
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        eprintln!(
            "{model} {}: max |diff| {max:.4}, mean {mean:.5}",
            case["file"]
        );
        // One step of 8-bit rounding is 1/255/std: 0.0078 (std 0.5) to 0.0174 (std 0.225).
        // PIL rounds to 8 bits between its two resize passes, the image crate does not.
        assert!(
            mean < 0.01 && max < 0.2,
            "{model} {}: max {max}, mean {mean}",
            case["file"]
        );
    }
}

/// An idx file: magic `0 0 8 dims`, the big-endian shape, the bytes; gzipped if `gz`.
fn idx_file(path: &Path, shape: &[u32], body: &[u8], gz: bool) {
    let mut bytes = vec![0, 0, 8, shape.len() as u8];
    for d in shape {
        bytes.extend(d.to_be_bytes());
    }
    bytes.extend(body);
    if gz {
        use std::io::Write;
        let f = std::fs::File::create(path).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        enc.write_all(&bytes).unwrap();
        enc.finish().unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

/// `prefix`-images (each image uniform: 20 + 30 * its index, 5 rows x 4 columns) and
/// `prefix`-labels; the training images gzipped.
fn idx_split(dir: &Path, prefix: &str, labels: &[u8]) {
    let n = labels.len() as u32;
    let body: Vec<u8> = (0..n).flat_map(|i| [20 + 30 * i as u8; 20]).collect();
    let gz = prefix == "train";
    let name = format!("{prefix}-images-idx3-ubyte{}", if gz { ".gz" } else { "" });
    idx_file(&dir.join(name), &[n, 5, 4], &body, gz);
    idx_file(
        &dir.join(format!("{prefix}-labels-idx1-ubyte")),
        &[n],
        labels,
        false,
    );
}

#[test]
fn idx_folders_read_balanced_and_expanded_to_rgb() {
    let d = tmpdir("idx");
    idx_split(&d, "train", &[2, 0, 0, 1, 2, 0, 1]);
    idx_split(&d, "t10k", &[1, 0, 1]);
    let (train, dev) = read_data(&d, 0.2).unwrap();
    assert_eq!(
        train.classes,
        ["0", "1", "2"],
        "label numbers without names"
    );
    let frames: Vec<usize> = train.items.iter().map(|i| i.frame.unwrap()).collect();
    let labels: Vec<usize> = train.items.iter().map(|i| i.label).collect();
    // Class by class in turn (file order within a class): a first-N cut stays balanced.
    assert_eq!(frames, [1, 3, 0, 2, 6, 4, 5]);
    assert_eq!(labels, [0, 1, 2, 0, 1, 2, 0]);
    assert!(
        train.items[0]
            .path
            .to_string_lossy()
            .ends_with("idx3-ubyte.gz#1")
    );
    assert_eq!(dev.items.len(), 3);
    let images = Images::load(&train, &vit_pre(), 32, Some(4)).unwrap();
    assert_eq!(
        (images.len(), images.labels.as_slice()),
        (4, &[0, 1, 2, 0][..])
    );
    for (bytes, frame) in images.bytes.iter().zip(&frames) {
        // Grey 5x4 resized to 32x32 RGB: three equal channels of the image's value.
        assert_eq!(bytes.len(), 3 * 32 * 32);
        let want = 20 + 30 * *frame as u8;
        assert!(bytes.iter().all(|&v| v == want), "frame {frame}");
    }
    // The evaluation split of a run on the folder: t10k, labels indexing the classes.
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    assert_eq!(read_eval(&d, &names).unwrap().classes, names);
    // classes.txt names the classes.
    std::fs::write(d.join("classes.txt"), "zero\none\ntwo\n").unwrap();
    assert_eq!(
        read_data(&d, 0.2).unwrap().0.classes,
        ["zero", "one", "two"]
    );
    // A t10k label beyond the training classes names the labels file.
    std::fs::write(d.join("classes.txt"), "zero\none\n").unwrap();
    let e = read_data(&d, 0.2).unwrap_err().to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("label 2 of image 0"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_idx_files_are_named() {
    let d = tmpdir("idx-bad");
    let check = |what: &str, file: &str, needle: &str| {
        let e = read_data(&d, 0.2).unwrap_err().to_string();
        assert!(e.contains(file) && e.contains(needle), "{what}: {e}");
    };
    idx_split(&d, "train", &[0, 1, 0]);
    check("no t10k", "t10k-images-idx3-ubyte", "missing");
    idx_split(&d, "t10k", &[1, 0]);
    assert!(read_data(&d, 0.2).is_ok());
    // Image and label counts differ.
    idx_file(&d.join("t10k-labels-idx1-ubyte"), &[3], &[1, 0, 1], false);
    check("count", "t10k-labels-idx1-ubyte", "3 labels");
    // Wrong magic: an images file given as labels.
    std::fs::copy(
        d.join("t10k-images-idx3-ubyte"),
        d.join("t10k-labels-idx1-ubyte"),
    )
    .unwrap();
    check("magic", "t10k-labels-idx1-ubyte", "magic");
    idx_split(&d, "t10k", &[1, 0]);
    // A truncated body, and a truncated gzip stream.
    let f = d.join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 3]).unwrap();
    check("truncated", "t10k-images-idx3-ubyte", "truncated");
    idx_split(&d, "t10k", &[1, 0]);
    let f = d.join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    check("gzip", "train-images-idx3-ubyte.gz", "could not be read");
    // A label beyond Fashion-MNIST's ten classes (named so by the folder's path).
    let fd = d.join("fashion");
    std::fs::create_dir_all(&fd).unwrap();
    idx_split(&fd, "train", &[0, 9, 10]);
    idx_split(&fd, "t10k", &[0]);
    let e = read_data(&fd, 0.2).unwrap_err().to_string();
    assert!(
        e.contains("train-labels-idx1-ubyte") && e.contains("label 10 of image 2"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fashion_mnist_package_files() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.join("train-labels-idx1-ubyte.gz").exists() {
        eprintln!("skipped: apt-get install dataset-fashion-mnist");
        return;
    }
    let (train, dev) = read_data(dir, 0.2).unwrap();
    assert_eq!(train.classes[0], "T-shirt/top");
    assert_eq!(train.classes[9], "Ankle boot");
    assert_eq!((train.items.len(), dev.items.len()), (60_000, 10_000));
    let first: Vec<usize> = train.items[..20].iter().map(|i| i.label).collect();
    assert_eq!(first, (0..20).map(|k| k % 10).collect::<Vec<_>>());
    let images = Images::load(&dev, &vit_pre(), 32, Some(10)).unwrap();
    assert_eq!(images.len(), 10);
    for b in &images.bytes {
        let (r, g) = b.split_at(32 * 32);
        assert_eq!(r, &g[..32 * 32], "grey: equal channels");
        assert!(b.iter().any(|&v| v > 100), "a garment, not a blank image");
    }
}

#[test]
fn augment_parses_typed_and_draws_per_seed_epoch_example() {
    use capaboost::tasks::image::augment::Augment;
    for (s, flip, crop) in [
        ("none", false, false),
        ("flip", true, false),
        ("crop", false, true),
        ("crop,flip", true, true),
    ] {
        assert_eq!(Augment::parse(s).unwrap(), Augment { flip, crop }, "{s}");
    }
    for s in ["flip,flip", "rotate", "", "none,flip"] {
        assert!(Augment::parse(s).is_err(), "{s:?} accepted");
    }
    assert_eq!(
        Augment::parse("crop,flip").unwrap().to_string(),
        "flip,crop"
    );
    let n = 16;
    // Every pixel distinct in its row, never 0 (so padding shows as 0).
    let img: Vec<u8> = (0..3 * n * n).map(|i| 1 + (i % 250) as u8).collect();
    let mirror: Vec<u8> = img
        .chunks(n)
        .flat_map(|r| r.iter().rev().copied())
        .collect();
    let flip = Augment::parse("flip").unwrap();
    let draws: Vec<Vec<u8>> = (0..32).map(|e| flip.apply(&img, n, (7, 0, e))).collect();
    let flipped = draws.iter().filter(|d| **d == mirror).count();
    assert_eq!(flipped + draws.iter().filter(|d| **d == img).count(), 32);
    assert!((6..=26).contains(&flipped), "{flipped} of 32 flipped");
    // The same (seed, epoch, example) draws the same; another epoch or seed draws anew.
    let crop = Augment::parse("flip,crop").unwrap();
    let a: Vec<Vec<u8>> = (0..16).map(|e| crop.apply(&img, n, (7, 3, e))).collect();
    let b: Vec<Vec<u8>> = (0..16).map(|e| crop.apply(&img, n, (7, 3, e))).collect();
    assert_eq!(a, b);
    let c: Vec<Vec<u8>> = (0..16).map(|e| crop.apply(&img, n, (7, 4, e))).collect();
    let d: Vec<Vec<u8>> = (0..16).map(|e| crop.apply(&img, n, (8, 3, e))).collect();
    assert!(a != c && a != d);
    // A padded crop shifts by at most n/8 = 2 pixels, filling with zeros.
    let only_crop = Augment::parse("crop").unwrap();
    let mut shifted = 0;
    for e in 0..16 {
        let out = only_crop.apply(&img, n, (1, 0, e));
        let zeros = out.iter().filter(|&&v| v == 0).count();
        assert!(zeros <= 3 * (4 * n + 4 * n), "{zeros} zeros");
        shifted += usize::from(zeros > 0);
        let kept = out.iter().filter(|&&v| v != 0).count();
        assert!(kept >= 3 * (n - 2) * (n - 2));
    }
    assert!(shifted >= 8, "{shifted} of 16 crops moved the image");
}

#[test]
fn augmentation_reaches_training_batches_only() {
    use capaboost::tasks::image::augment::Augment;
    use capaboost::tasks::image::task::{ImageTask, Prep};
    let n = 32usize;
    let images = |k: u8| Images {
        size: n as u32,
        bytes: (0..4)
            .map(|i| {
                (0..3 * n * n)
                    .map(|p| (p % 200) as u8 + i * 10 + k)
                    .collect()
            })
            .collect(),
        labels: vec![0, 1, 0, 1],
        paths: vec![PathBuf::from("x.png"); 4],
        ..Images::default()
    };
    let prep = Prep {
        pre: vit_pre(),
        size: n as u32,
        patch: 8,
    };
    let classes = vec!["a".to_string(), "b".to_string()];
    let task = |aug: &str| {
        ImageTask::new(classes.clone(), (images(1), images(5)), prep.clone())
            .with_augment(Augment::parse(aug).unwrap(), 3)
    };
    let (plain, aug) = (task("none"), task("flip,crop"));
    let idx = [0, 1, 2, 3];
    let mut unchanged = Vec::new();
    prep.pre.normalize(&images(5).bytes[2], &mut unchanged);
    for epoch in 0..3 {
        assert_eq!(plain.train_pixels(&idx, epoch), plain.train_pixels(&idx, 0));
        assert_ne!(
            aug.train_pixels(&idx, epoch),
            plain.train_pixels(&idx, epoch)
        );
        assert_eq!(aug.train_pixels(&idx, epoch), aug.train_pixels(&idx, epoch));
    }
    assert_ne!(aug.train_pixels(&idx, 0), aug.train_pixels(&idx, 1));
    // Evaluation inputs are the preprocessed images as they are.
    assert_eq!(aug.eval_pixels(&idx), plain.eval_pixels(&idx));
    assert_eq!(aug.eval_pixels(&[2]), unchanged);
}
