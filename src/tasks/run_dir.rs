//! The run folder of `capaboost finetune`: its config, metric logs, curves, checkpoint,
//! progress display and Ctrl-C handling.
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

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::runtime::error::{Error, Result};
use crate::runtime::io::write_atomic;

const CONFIG: &str = "config.json";
const METRICS: &str = "metrics.jsonl";
const TRAIN_LOSS: &str = "train_loss.csv";
const DEV_METRICS: &str = "dev_metrics.csv";
const CURVES: &str = "curves.png";
const CHECKPOINT: &str = "checkpoint";
const CHECKPOINT_TMP: &str = ".checkpoint.tmp";
const CHECKPOINT_OLD: &str = ".checkpoint.old";
const TRAINER_STATE: &str = "trainer_state.json";
const TRAIN_LOSS_HEADER: &str = "step,epoch,loss,lr";

/// Size of `curves.png` in pixels.
pub const CURVES_SIZE: (u32, u32) = (1000, 450);

/// A run folder on disk. Holds only its path: every method reads or writes the files
/// directly, so several handles to one folder stay consistent.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
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

    fn append(&self, name: &str, header: Option<&str>, line: &str) -> Result<()> {
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let empty = f.metadata().map_err(|e| Error::io(&path, e))?.len() == 0;
        // One write per call: a crash cuts at most this line, never interleaves two.
        let mut buf = String::new();
        if let (true, Some(h)) = (empty, header) {
            buf.push_str(h);
            buf.push('\n');
        }
        buf.push_str(line);
        buf.push('\n');
        f.write_all(buf.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| Error::io(&path, e))
    }

    /// Appends one evaluation record (a JSON object with at least a non-negative integer
    /// `step`; usually also `epoch`, `split`, the task's metrics and `train_loss`) as one
    /// line of `metrics.jsonl`.
    pub fn log_metrics(&self, record: &Value) -> Result<()> {
        let obj = record.as_object().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "metrics record must be a JSON object, got {record}"
            ))
        })?;
        if obj.get("step").and_then(Value::as_u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "metrics record needs a non-negative integer 'step': {record}"
            )));
        }
        self.append(METRICS, None, &record.to_string())
    }

    /// Appends `step,epoch,loss,lr` to `train_loss.csv` (writing the header first when
    /// the file is new).
    pub fn log_train_loss(&self, step: u64, epoch: f64, loss: f64, lr: f64) -> Result<()> {
        self.append(
            TRAIN_LOSS,
            Some(TRAIN_LOSS_HEADER),
            &format!("{step},{epoch},{loss},{lr}"),
        )
    }

    /// The records of `metrics.jsonl`, in file order. A torn last line (a crash while
    /// appending) is skipped; a bad line elsewhere is an error.
    pub fn read_metrics(&self) -> Result<Vec<Value>> {
        let path = self.path.join(METRICS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => out.push(v),
                _ if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Ok(_) => {
                    return Err(file_err(
                        &path,
                        format!("line {}: not a JSON object", i + 1),
                    ));
                }
                Err(e) => return Err(file_err(&path, format!("line {}: {e}", i + 1))),
            }
        }
        Ok(out)
    }

    /// The rows of `train_loss.csv` as `(step, epoch, loss, lr)`; unparsable rows (a torn
    /// last line) are skipped.
    pub fn read_train_loss(&self) -> Result<Vec<(u64, f64, f64, f64)>> {
        let path = self.path.join(TRAIN_LOSS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(text
            .lines()
            .filter(|l| *l != TRAIN_LOSS_HEADER)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                if f.len() != 4 {
                    return None;
                }
                Some((
                    f[0].parse().ok()?,
                    f[1].parse().ok()?,
                    f[2].parse().ok()?,
                    f[3].parse().ok()?,
                ))
            })
            .collect())
    }

    /// Regenerates `dev_metrics.csv` and `curves.png` from the logs. Works with any
    /// number of points, zero included.
    ///
    /// `dev_metrics.csv` has columns `step,epoch,split` then every numeric field of any
    /// record (sorted by name; empty where a record lacks it). `curves.png` shows the
    /// training loss against the step on the left and every metric of the evaluation
    /// records (all but `train_loss`, one line per metric and split) on the right.
    pub fn write_curves(&self) -> Result<()> {
        let records = self.read_metrics()?;
        let losses = self.read_train_loss()?;

        let fixed = ["step", "epoch", "split"];
        let columns: BTreeSet<&str> = records
            .iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.iter())
            .filter(|(k, v)| v.is_number() && !fixed.contains(&k.as_str()))
            .map(|(k, _)| k.as_str())
            .collect();
        let mut csv = String::from("step,epoch,split");
        for c in &columns {
            csv.push(',');
            csv.push_str(&csv_field(c));
        }
        csv.push('\n');
        for r in &records {
            let cell = |k: &str| match r.get(k) {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => csv_field(s),
                Some(Value::Null) | None => String::new(),
                Some(v) => csv_field(&v.to_string()),
            };
            let row: Vec<String> = fixed
                .iter()
                .copied()
                .chain(columns.iter().copied())
                .map(cell)
                .collect();
            csv.push_str(&row.join(","));
            csv.push('\n');
        }
        write_atomic(&self.path.join(DEV_METRICS), csv.as_bytes())?;

        let loss_points: Vec<(f64, f64)> =
            losses.iter().map(|&(s, _, l, _)| (s as f64, l)).collect();
        let splits: BTreeSet<String> = records.iter().map(split_of).collect();
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &records {
            let Some(step) = r.get("step").and_then(Value::as_f64) else {
                continue;
            };
            let split = split_of(r);
            for &c in &columns {
                if c == "train_loss" {
                    continue;
                }
                if let Some(v) = r.get(c).and_then(Value::as_f64) {
                    let name = if splits.len() > 1 {
                        format!("{split}/{c}")
                    } else {
                        c.to_string()
                    };
                    series.entry(name).or_default().push((step, v));
                }
            }
        }
        let png = render_curves(&loss_points, &series)?;
        write_atomic(&self.path.join(CURVES), &png)
    }

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
    fn recover_checkpoint(&self) -> Result<()> {
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
        } else if old.join(TRAINER_STATE).is_file() {
            rename(&old, &cur)?;
            sync_dir(&self.path);
            remove_dir_if_exists(&tmp)?;
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
        let write = |name: &str, bytes: &[u8]| -> Result<()> {
            let p = tmp.join(name);
            let mut f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&p, e))
        };
        for (name, bytes) in files {
            write(name, bytes)?;
        }
        write(TRAINER_STATE, format!("{state_text}\n").as_bytes())?;
        sync_dir(&tmp);

        if cur.exists() {
            rename(&cur, &old)?;
        }
        rename(&tmp, &cur)?;
        sync_dir(&self.path);
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

fn split_of(r: &Value) -> String {
    r.get("split")
        .and_then(Value::as_str)
        .unwrap_or("dev")
        .to_string()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded DejaVu Sans as plotters' `sans-serif`, once: the bitmap backend
/// has no system fonts without fontconfig, so text would fail to render otherwise.
fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(
            "the embedded DejaVuSans.ttf font could not be parsed".into(),
        ))
    }
}

/// Axis range covering `values` with a margin; a single value or none still gives a
/// non-empty range, since plotters cannot map an empty one.
fn padded_range(values: impl Iterator<Item = f64>, margin: f64) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = (lo.abs() * 0.1).max(0.5);
        return (lo - pad)..(hi + pad);
    }
    (lo - span * margin)..(hi + span * margin)
}

/// Steps are integers: print them so unless the axis spans under a few steps, where the
/// ticks fall between integers.
fn step_label(x: &f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("drawing curves.png: {e}"))
}

/// Draws the two panels into an RGB buffer and encodes it as PNG.
fn render_curves(
    loss: &[(f64, f64)],
    metrics: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<Vec<u8>> {
    use plotters::prelude::*;

    register_font()?;
    let (w, h) = CURVES_SIZE;
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(w / 2);
        let loss: Vec<(f64, f64)> = loss
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();

        let mut chart = ChartBuilder::on(&left)
            .caption("Training loss", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                padded_range(loss.iter().map(|p| p.0), 0.0),
                padded_range(loss.iter().map(|p| p.1), 0.05),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("loss")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        if loss.is_empty() {
            left.draw(&Text::new(
                "no training loss yet",
                (w as i32 / 4 - 60, h as i32 / 2),
                ("sans-serif", 15),
            ))
            .map_err(plot_err)?;
        } else {
            chart
                .draw_series(LineSeries::new(loss.iter().copied(), BLUE.stroke_width(2)))
                .map_err(plot_err)?;
            if loss.len() == 1 {
                chart
                    .draw_series(loss.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                    .map_err(plot_err)?;
            }
        }

        let all: Vec<(f64, f64)> = metrics
            .values()
            .flatten()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let mut chart = ChartBuilder::on(&right)
            .caption("Dev metrics", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                padded_range(all.iter().map(|p| p.0), 0.0),
                padded_range(all.iter().map(|p| p.1), 0.05),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .x_label_formatter(&step_label)
            .y_desc("metric")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(plot_err)?;
        if all.is_empty() {
            right
                .draw(&Text::new(
                    "no evaluation yet",
                    (w as i32 / 4 - 50, h as i32 / 2),
                    ("sans-serif", 15),
                ))
                .map_err(plot_err)?;
        } else {
            for (i, (name, pts)) in metrics.iter().enumerate() {
                let pts: Vec<(f64, f64)> = pts
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                let color = Palette99::pick(i).to_rgba();
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(plot_err)?;
        writer.write_image_data(&rgb).map_err(plot_err)?;
        writer.finish().map_err(plot_err)?;
    }
    Ok(png_bytes)
}

/// Mutable state behind [`Progress`]: when the bar started and the last plain line.
#[derive(Debug)]
struct ProgressState {
    start: Instant,
    first_step: Option<u64>,
    next_plain: u64,
    last_step: u64,
    last_message: String,
}

/// Training progress on stderr: an `indicatif` bar on a terminal, else (or when disabled)
/// a plain line about every 10% so logs stay readable.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    bar: Option<indicatif::ProgressBar>,
    state: Mutex<ProgressState>,
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// A display for `total_steps` optimizer steps. The bar is used only when `enabled`
    /// and stderr is a terminal.
    pub fn new(total_steps: u64, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total_steps);
            let style =
                indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            total: total_steps,
            bar,
            state: Mutex::new(ProgressState {
                start: Instant::now(),
                first_step: None,
                next_plain: 0,
                last_step: 0,
                last_message: String::new(),
            }),
        }
    }

    /// Reports that `step` steps are done; `loss` is the latest training loss and
    /// `examples_per_s` the latest throughput, each if known ("-" otherwise). The ETA
    /// extrapolates from the steps done since the first update, so a resumed run does not
    /// count the steps it skipped.
    pub fn update(&self, step: u64, loss: Option<f64>, examples_per_s: Option<f64>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let first = match st.first_step {
            Some(f) => f,
            None => {
                st.start = Instant::now();
                st.first_step = Some(step);
                step
            }
        };
        let done = step.saturating_sub(first);
        let left = self.total.saturating_sub(step);
        let eta = if done > 0 {
            let per = st.start.elapsed().as_secs_f64() / done as f64;
            fmt_duration(Duration::from_secs_f64((per * left as f64).min(1e9)))
        } else {
            "?".into()
        };
        let loss = loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
        let eps = examples_per_s.map_or_else(|| "-".into(), |e| format!("{e:.1}"));
        let msg = format!("loss {loss} | {eps} ex/s | ETA {eta}");
        st.last_step = step;
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(msg);
            }
            None => {
                if step >= st.next_plain || step >= self.total {
                    eprintln!("step {step}/{} | {msg}", self.total);
                    let tenth = (self.total / 10).max(1);
                    st.next_plain = (step / tenth + 1) * tenth;
                    if step >= self.total {
                        st.next_plain = u64::MAX;
                    }
                }
                st.last_message = msg;
            }
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Ends the display, leaving the final state visible.
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.next_plain != u64::MAX && !st.last_message.is_empty() {
                    eprintln!("step {}/{} | {}", st.last_step, self.total, st.last_message);
                }
                st.next_plain = u64::MAX;
            }
        }
    }
}

/// Installs the Ctrl-C handler and returns its flag: the first Ctrl-C sets the flag (the
/// trainer saves a checkpoint and stops), a second one exits at once with status 130.
/// Later calls return the same flag.
pub fn install_interrupt_flag() -> Result<Arc<AtomicBool>> {
    static FLAG: Mutex<Option<Arc<AtomicBool>>> = Mutex::new(None);
    let mut guard = FLAG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(flag) = guard.as_ref() {
        return Ok(flag.clone());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: saving a checkpoint and stopping (Ctrl-C again to quit now)");
    })
    .map_err(|e| Error::InvalidArgument(format!("could not install the Ctrl-C handler: {e}")))?;
    *guard = Some(flag.clone());
    Ok(flag)
}
