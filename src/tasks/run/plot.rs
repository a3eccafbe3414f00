//! `dev_metrics.csv` and `curves.png`, derived from the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::Value;

use super::{CURVES, CURVES_SIZE, DEV_METRICS, RunDir};
use crate::runtime::error::{Error, Result};
use crate::runtime::io::write_atomic;

impl RunDir {
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
        let columns = metric_columns(&records);
        write_atomic(
            &self.path.join(DEV_METRICS),
            dev_metrics_csv(&records, &columns).as_bytes(),
        )?;
        let loss_points: Vec<(f64, f64)> =
            losses.iter().map(|&(s, _, l, _)| (s as f64, l)).collect();
        let png = render_curves(&loss_points, &metric_series(&records, &columns))?;
        write_atomic(&self.path.join(CURVES), &png)
    }
}

const FIXED: [&str; 3] = ["step", "epoch", "split"];

/// Every numeric field of any record but the fixed ones, sorted by name.
fn metric_columns(records: &[Value]) -> BTreeSet<&str> {
    records
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.iter())
        .filter(|(k, v)| v.is_number() && !FIXED.contains(&k.as_str()))
        .map(|(k, _)| k.as_str())
        .collect()
}

fn dev_metrics_csv(records: &[Value], columns: &BTreeSet<&str>) -> String {
    let mut csv = String::from("step,epoch,split");
    for c in columns {
        csv.push(',');
        csv.push_str(&csv_field(c));
    }
    csv.push('\n');
    for r in records {
        let cell = |k: &str| match r.get(k) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => csv_field(s),
            Some(Value::Null) | None => String::new(),
            Some(v) => csv_field(&v.to_string()),
        };
        let row: Vec<String> = FIXED
            .iter()
            .copied()
            .chain(columns.iter().copied())
            .map(cell)
            .collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    csv
}

/// One `(step, value)` series per metric (and split, when there are several), without
/// the training loss.
fn metric_series(records: &[Value], columns: &BTreeSet<&str>) -> BTreeMap<String, Vec<(f64, f64)>> {
    let splits: BTreeSet<String> = records.iter().map(split_of).collect();
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in records {
        let Some(step) = r.get("step").and_then(Value::as_f64) else {
            continue;
        };
        let split = split_of(r);
        for &c in columns.iter().filter(|c| **c != "train_loss") {
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
    series
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

static FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");

/// Registers the embedded DejaVu Sans as plotters' `sans-serif`, once: the bitmap backend
/// has no system fonts without fontconfig, so text would fail to render otherwise.
pub(crate) fn register_font() -> Result<()> {
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

pub(crate) fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("drawing curves.png: {e}"))
}

type Area<'a> =
    plotters::drawing::DrawingArea<plotters::backend::BitMapBackend<'a>, plotters::coord::Shift>;

fn finite(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// Axes with a caption, labels and a mesh over `points`' range.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    y_desc: &str,
    points: &[(f64, f64)],
) -> Result<
    plotters::chart::ChartContext<
        'a,
        plotters::backend::BitMapBackend<'b>,
        plotters::coord::cartesian::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
> {
    use plotters::prelude::*;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            padded_range(points.iter().map(|p| p.0), 0.0),
            padded_range(points.iter().map(|p| p.1), 0.05),
        )
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .x_label_formatter(&step_label)
        .y_desc(y_desc)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

/// A centred note on an empty panel.
fn note(area: &Area<'_>, text: &str, dx: i32) -> Result<()> {
    use plotters::prelude::*;
    let (w, h) = CURVES_SIZE;
    area.draw(&Text::new(
        text,
        (w as i32 / 4 - dx, h as i32 / 2),
        ("sans-serif", 15),
    ))
    .map_err(plot_err)
}

fn draw_loss(area: &Area<'_>, loss: &[(f64, f64)]) -> Result<()> {
    use plotters::prelude::*;
    let loss = finite(loss);
    let mut chart = chart(area, "Training loss", "loss", &loss)?;
    if loss.is_empty() {
        return note(area, "no training loss yet", 60);
    }
    chart
        .draw_series(LineSeries::new(loss.iter().copied(), BLUE.stroke_width(2)))
        .map_err(plot_err)?;
    if loss.len() == 1 {
        chart
            .draw_series(loss.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
            .map_err(plot_err)?;
    }
    Ok(())
}

fn draw_metrics(area: &Area<'_>, metrics: &BTreeMap<String, Vec<(f64, f64)>>) -> Result<()> {
    use plotters::prelude::*;
    let all: Vec<(f64, f64)> = finite(&metrics.values().flatten().copied().collect::<Vec<_>>());
    let mut chart = chart(area, "Dev metrics", "metric", &all)?;
    if all.is_empty() {
        return note(area, "no evaluation yet", 50);
    }
    for (i, (name, pts)) in metrics.iter().enumerate() {
        let pts = finite(pts);
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
        .map_err(plot_err)
}

pub(crate) fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut png_bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut png_bytes, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(plot_err)?;
    writer.write_image_data(rgb).map_err(plot_err)?;
    writer.finish().map_err(plot_err)?;
    Ok(png_bytes)
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
        draw_loss(&left, loss)?;
        draw_metrics(&right, metrics)?;
        root.present().map_err(plot_err)?;
    }
    encode_png(&rgb, (w, h))
}
