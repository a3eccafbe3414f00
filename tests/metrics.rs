//! GLUE metrics against values computed by hand (the arithmetic is in the comments).

use capaboost::Error;
use capaboost::tasks::glue::{Label, Task};
use capaboost::tasks::metrics::{accuracy, f1, matthews, pearson, spearman, task_metrics};

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
}

// Positions:   0  1  2  3  4  5  6  7
// pred:        1  0  1  1  0  0  1  0
// gold:        1  0  0  1  0  1  1  0
// tp = {0,3,6} = 3, fp = {2} = 1, fn = {5} = 1, tn = {1,4,7} = 3.
const PRED: [usize; 8] = [1, 0, 1, 1, 0, 0, 1, 0];
const GOLD: [usize; 8] = [1, 0, 0, 1, 0, 1, 1, 0];

#[test]
fn accuracy_f1_matthews_symmetric_case() {
    // 6 of 8 agree.
    close(accuracy(&PRED, &GOLD), 0.75);
    // F1 = 2tp / (2tp + fp + fn) = 6 / 8.
    close(f1(&PRED, &GOLD), 0.75);
    // MCC = (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (9 − 1) / sqrt(4⁴) = 8/16.
    close(matthews(&PRED, &GOLD), 0.5);
}

#[test]
fn accuracy_f1_matthews_asymmetric_case() {
    // pred 1 1 1 0 0, gold 1 0 0 0 1: tp = 1, fp = 2, fn = 1, tn = 1.
    let pred = [1, 1, 1, 0, 0];
    let gold = [1, 0, 0, 0, 1];
    // Agreements at 0 and 3: 2/5.
    close(accuracy(&pred, &gold), 0.4);
    // 2·1 / (2 + 2 + 1) = 0.4.
    close(f1(&pred, &gold), 0.4);
    // (1·1 − 2·1) / sqrt(3·2·3·2) = −1/6.
    close(matthews(&pred, &gold), -1.0 / 6.0);
}

#[test]
fn degenerate_cases() {
    // Constant predictions: tn + fn = 0, so the MCC denominator is 0 and MCC is defined as 0.
    close(matthews(&[1, 1, 1, 1], &[1, 0, 1, 0]), 0.0);
    close(matthews(&[0, 0, 0], &[1, 0, 1]), 0.0);
    // A single gold class: tp + fn = 0, MCC 0 even though accuracy is 1.
    close(matthews(&[0, 0, 0], &[0, 0, 0]), 0.0);
    close(accuracy(&[0, 0, 0], &[0, 0, 0]), 1.0);
    // Perfect and perfectly wrong.
    close(matthews(&[0, 1, 1, 0], &[0, 1, 1, 0]), 1.0);
    close(matthews(&[1, 0, 0, 1], &[0, 1, 1, 0]), -1.0);
    // No positives predicted or gold: F1 is 0, not NaN.
    close(f1(&[0, 0], &[0, 0]), 0.0);
    // Empty input.
    close(accuracy(&[], &[]), 0.0);
    // Constant input: no correlation to speak of.
    close(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
    close(spearman(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]), 0.0);
    close(pearson(&[1.0], &[2.0]), 0.0);
    // Length mismatches give NaN from the plain functions.
    assert!(accuracy(&[0], &[0, 1]).is_nan());
    assert!(f1(&[0], &[0, 1]).is_nan());
    assert!(matthews(&[0], &[0, 1]).is_nan());
    assert!(pearson(&[0.0], &[0.0, 1.0]).is_nan());
    assert!(spearman(&[0.0], &[0.0, 1.0]).is_nan());
}

#[test]
fn pearson_by_hand() {
    // x = 1 2 3 4 (mean 2.5), y = 2 4 5 9 (mean 5).
    // dx = −1.5 −0.5 0.5 1.5, dy = −3 −1 0 4.
    // Σdx·dy = 4.5 + 0.5 + 0 + 6 = 11, Σdx² = 5, Σdy² = 26: r = 11 / sqrt(130).
    let x = [1.0, 2.0, 3.0, 4.0];
    let y = [2.0, 4.0, 5.0, 9.0];
    close(pearson(&x, &y), 11.0 / 130f64.sqrt());
    close(pearson(&y, &x), 11.0 / 130f64.sqrt());
    // Exact linear relations.
    close(pearson(&x, &[3.0, 5.0, 7.0, 9.0]), 1.0);
    close(pearson(&x, &[-1.0, -2.0, -3.0, -4.0]), -1.0);
}

#[test]
fn spearman_with_ties_by_hand() {
    // x = 1 2 2 3: the tied 2s span ranks 2 and 3, so both get 2.5: ranks 1 2.5 2.5 4.
    // y = 1 3 2 4: ranks 1 3 2 4. Both rank means are 2.5.
    // dx = −1.5 0 0 1.5, dy = −1.5 0.5 −0.5 1.5.
    // Σdx·dy = 2.25 + 2.25 = 4.5, Σdx² = 4.5, Σdy² = 5: ρ = 4.5 / sqrt(22.5) = sqrt(0.9).
    close(
        spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]),
        0.9f64.sqrt(),
    );
    // x = 5 5 5 1: three tied 5s span ranks 2..4, average 3: ranks 3 3 3 1 (mean 2.5).
    // y = 1 2 3 4: ranks 1 2 3 4.
    // dx = 0.5 0.5 0.5 −1.5, dy = −1.5 −0.5 0.5 1.5.
    // Σdx·dy = −0.75 − 0.25 + 0.25 − 2.25 = −3, Σdx² = 3, Σdy² = 5: ρ = −3 / sqrt(15).
    close(
        spearman(&[5.0, 5.0, 5.0, 1.0], &[1.0, 2.0, 3.0, 4.0]),
        -3.0 / 15f64.sqrt(),
    );
    // Ranks ignore the scale: any strictly monotone map gives ±1.
    let x = [1.0, 2.0, 3.0, 4.0, 5.0];
    let cubes = [1.0, 8.0, 27.0, 64.0, 125.0];
    close(spearman(&x, &cubes), 1.0);
    close(spearman(&x, &[0.5, 0.4, 0.3, 0.2, -9.0]), -1.0);
    // Unordered input: x = 3 1 2 has ranks 3 1 2, the same as y = 30 10 20.
    close(spearman(&[3.0, 1.0, 2.0], &[30.0, 10.0, 20.0]), 1.0);
}

fn classes(v: &[usize]) -> Vec<Label> {
    v.iter().map(|&c| Label::Class(c)).collect()
}

#[test]
fn task_metrics_per_task() {
    let gold = classes(&GOLD);
    // MRPC and QQP: accuracy and F1 (both 0.75 from the symmetric case above).
    for t in [Task::Mrpc, Task::Qqp] {
        let m = task_metrics(t, Some(&PRED), None, &gold).unwrap();
        assert_eq!(m, vec![("accuracy", 0.75), ("f1", 0.75)]);
    }
    // CoLA: MCC only.
    let m = task_metrics(Task::Cola, Some(&PRED), None, &gold).unwrap();
    assert_eq!(m, vec![("mcc", 0.5)]);
    for t in [Task::Sst2, Task::Qnli, Task::Rte] {
        let m = task_metrics(t, Some(&PRED), None, &gold).unwrap();
        assert_eq!(m, vec![("accuracy", 0.75)]);
    }
    // MNLI, three classes: pred 0 1 2 2 vs gold 0 1 1 2 agree at 3 of 4.
    let m = task_metrics(
        Task::Mnli,
        Some(&[0, 1, 2, 2]),
        None,
        &classes(&[0, 1, 1, 2]),
    )
    .unwrap();
    assert_eq!(m, vec![("accuracy", 0.75)]);
    // STS-B: Pearson 11/sqrt(130) from pearson_by_hand; the ranks of both are 1 2 3 4, so
    // Spearman is 1.
    let gold: Vec<Label> = [2.0, 4.0, 5.0, 9.0].map(Label::Score).to_vec();
    let m = task_metrics(Task::Stsb, None, Some(&[1.0, 2.0, 3.0, 4.0]), &gold).unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].0, m[1].0), ("pearson", "spearman"));
    close(m[0].1, 11.0 / 130f64.sqrt());
    close(m[1].1, 1.0);
}

#[test]
fn task_metrics_errors() {
    let gold = classes(&GOLD);
    let bad = |r: capaboost::Result<Vec<(&'static str, f64)>>, needle: &str| match r {
        Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected InvalidArgument containing {needle:?}, got {other:?}"),
    };
    bad(
        task_metrics(Task::Sst2, Some(&PRED[..7]), None, &gold),
        "7 class predictions for 8 gold labels",
    );
    bad(
        task_metrics(Task::Sst2, None, Some(&[0.0; 8]), &gold),
        "needs class predictions",
    );
    bad(
        task_metrics(Task::Sst2, Some(&[]), None, &[]),
        "no gold labels",
    );
    bad(
        task_metrics(Task::Stsb, None, Some(&[1.0; 7]), &[Label::Score(1.0); 8]),
        "7 score predictions for 8 gold labels",
    );
    bad(
        task_metrics(Task::Stsb, Some(&PRED), None, &[Label::Score(1.0); 8]),
        "needs score predictions",
    );
    bad(
        task_metrics(Task::Stsb, None, Some(&[1.0; 8]), &gold),
        "expected a score",
    );
    bad(
        task_metrics(Task::Cola, Some(&[0]), None, &[Label::Score(1.0)]),
        "expected a class",
    );
}
