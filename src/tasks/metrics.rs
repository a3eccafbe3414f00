//! GLUE metrics: accuracy, binary F1, Matthews correlation, Pearson and Spearman, and the
//! per-task selection GLUE reports ([`task_metrics`]).
//!
//! Values are fractions (accuracy 0.875, not 87.5). Correlations lie in [-1, 1] and are 0
//! where undefined (a constant input), so a degenerate model scores 0 instead of NaN.
//! The plain functions return NaN when their inputs differ in length; [`task_metrics`]
//! turns that into an error.

use crate::runtime::error::{Error, Result};
use crate::tasks::glue::{Label, Task};

/// Fraction of positions where `pred` equals `gold`; 0 for empty input.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    if pred.len() != gold.len() {
        return f64::NAN;
    }
    if gold.is_empty() {
        return 0.0;
    }
    let hits = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    hits as f64 / gold.len() as f64
}

/// Binary confusion counts with class 1 as positive: (tp, fp, fn, tn).
fn confusion(pred: &[usize], gold: &[usize]) -> (f64, f64, f64, f64) {
    let (mut tp, mut fp, mut fneg, mut tn) = (0.0, 0.0, 0.0, 0.0);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == 1, g == 1) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
            (false, false) => tn += 1.0,
        }
    }
    (tp, fp, fneg, tn)
}

/// Binary F1 with class 1 as positive (MRPC's "equivalent", QQP's "duplicate"); 0 when
/// there are neither predicted nor gold positives.
pub fn f1(pred: &[usize], gold: &[usize]) -> f64 {
    if pred.len() != gold.len() {
        return f64::NAN;
    }
    let (tp, fp, fneg, _) = confusion(pred, gold);
    let den = 2.0 * tp + fp + fneg;
    if den == 0.0 { 0.0 } else { 2.0 * tp / den }
}

/// Binary Matthews correlation coefficient (class 1 positive, anything else negative); 0
/// when a row or column of the confusion matrix is empty, as scikit-learn reports.
pub fn matthews(pred: &[usize], gold: &[usize]) -> f64 {
    if pred.len() != gold.len() {
        return f64::NAN;
    }
    let (tp, fp, fneg, tn) = confusion(pred, gold);
    let den = ((tp + fp) * (tp + fneg) * (tn + fp) * (tn + fneg)).sqrt();
    if den == 0.0 {
        0.0
    } else {
        (tp * tn - fp * fneg) / den
    }
}

/// Pearson correlation; 0 when either input is constant or shorter than 2.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() {
        return f64::NAN;
    }
    let n = x.len();
    if n < 2 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let den = (sxx * syy).sqrt();
    if den == 0.0 {
        0.0
    } else {
        // Rounding can push a perfect correlation a hair past 1.
        (sxy / den).clamp(-1.0, 1.0)
    }
}

/// 1-based ranks, ties sharing the average of the ranks they span.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        // Positions i..=j hold equal values: ranks i+1..=j+1, average (i+j)/2 + 1.
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation: Pearson on average ranks, so ties are handled as SciPy does.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    if x.len() != y.len() {
        return f64::NAN;
    }
    pearson(&ranks(x), &ranks(y))
}

/// The metrics GLUE reports for `task`, named and ordered as [`Task::metric_names`].
///
/// Classification tasks need `pred_classes` and [`Label::Class`] gold labels; STS-B needs
/// `pred_scores` and [`Label::Score`] gold labels. Missing predictions, empty input,
/// length mismatches and gold labels of the wrong kind are errors.
pub fn task_metrics(
    task: Task,
    pred_classes: Option<&[usize]>,
    pred_scores: Option<&[f64]>,
    gold: &[Label],
) -> Result<Vec<(&'static str, f64)>> {
    if gold.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{task} metrics: no gold labels"
        )));
    }
    let check_len = |what: &str, n: usize| -> Result<()> {
        if n == gold.len() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{task} metrics: {n} {what} for {} gold labels",
                gold.len()
            )))
        }
    };
    let names = task.metric_names();
    if task.is_regression() {
        let pred = pred_scores.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{task} metrics: regression needs score predictions"
            ))
        })?;
        check_len("score predictions", pred.len())?;
        let gold: Vec<f64> = gold
            .iter()
            .enumerate()
            .map(|(i, l)| match l {
                Label::Score(s) => Ok(*s as f64),
                Label::Class(c) => Err(Error::InvalidArgument(format!(
                    "{task} metrics: gold label {i} is class {c}, expected a score"
                ))),
            })
            .collect::<Result<_>>()?;
        return Ok(names
            .into_iter()
            .map(|n| {
                let v = match n {
                    "pearson" => pearson(pred, &gold),
                    _ => spearman(pred, &gold),
                };
                (n, v)
            })
            .collect());
    }
    let pred = pred_classes.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{task} metrics: classification needs class predictions"
        ))
    })?;
    check_len("class predictions", pred.len())?;
    let gold: Vec<usize> = gold
        .iter()
        .enumerate()
        .map(|(i, l)| match l {
            Label::Class(c) => Ok(*c),
            Label::Score(s) => Err(Error::InvalidArgument(format!(
                "{task} metrics: gold label {i} is score {s}, expected a class"
            ))),
        })
        .collect::<Result<_>>()?;
    Ok(names
        .into_iter()
        .map(|n| {
            let v = match n {
                "mcc" => matthews(pred, &gold),
                "f1" => f1(pred, &gold),
                _ => accuracy(pred, &gold),
            };
            (n, v)
        })
        .collect())
}
