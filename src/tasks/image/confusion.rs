//! The confusion matrix of an evaluation: counts per (true class, predicted class), and
//! as a PNG (rows: true class, columns: prediction, shaded by the row's share).

use crate::runtime::error::Result;
use crate::tasks::run::plot::{encode_png, plot_err, register_font};

/// `m[true][predicted]` counts.
pub fn confusion(labels: &[usize], predictions: &[usize], classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0usize; classes]; classes];
    for (&l, &p) in labels.iter().zip(predictions) {
        if l < classes && p < classes {
            m[l][p] += 1;
        }
    }
    m
}

/// The matrix drawn with its counts and class names, as PNG bytes.
pub fn confusion_png(m: &[Vec<usize>], classes: &[String]) -> Result<Vec<u8>> {
    use plotters::prelude::*;

    register_font()?;
    let c = classes.len().max(1) as u32;
    let (cell, margin) = (48u32, 110u32);
    let (w, h) = (margin + c * cell + 10, margin + c * cell + 10);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let font = ("sans-serif", 13).into_font();
        let label = |s: &str| s.chars().take(12).collect::<String>();
        root.draw(&Text::new("true \\ predicted", (4, 4), font.clone()))
            .map_err(plot_err)?;
        for (i, name) in classes.iter().enumerate() {
            let at = (margin + i as u32 * cell) as i32;
            let rotated = font.clone().transform(FontTransform::Rotate270);
            root.draw(&Text::new(
                label(name),
                (at + cell as i32 / 3, margin as i32 - 6),
                rotated,
            ))
            .map_err(plot_err)?;
            root.draw(&Text::new(
                label(name),
                (4, at + cell as i32 / 3),
                font.clone(),
            ))
            .map_err(plot_err)?;
        }
        for (i, row) in m.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (j, &n) in row.iter().enumerate() {
                let share = n as f64 / total;
                let shade = (255.0 * (1.0 - share)) as u8;
                let (x, y) = (
                    (margin + j as u32 * cell) as i32,
                    (margin + i as u32 * cell) as i32,
                );
                let rect = [(x, y), (x + cell as i32 - 1, y + cell as i32 - 1)];
                root.draw(&Rectangle::new(rect, RGBColor(shade, shade, 255).filled()))
                    .map_err(plot_err)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let text = Text::new(
                    n.to_string(),
                    (x + 6, y + cell as i32 / 3),
                    font.clone().color(&ink),
                );
                root.draw(&text).map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    encode_png(&rgb, (w, h))
}
