//! From span logits to answer text, as the reference implementations (HF's
//! `postprocess_qa_predictions`) do: in each window the `n_best` highest start and end
//! logits are paired, pairs that leave the context, end before they start or run longer
//! than `max_answer_len` tokens are dropped, the best `start + end` score over all windows
//! wins, and its text is cut from the original context by character offsets. Under SQuAD
//! v2.0 rules the empty answer wins when the `[CLS]` score (`start[0] + end[0]`, lowest over
//! the windows) beats the best span.

use crate::tasks::squad::windows::Window;

/// Post-processing settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decode {
    /// Start and end candidates kept per window.
    pub n_best: usize,
    /// Longest answer, in tokens.
    pub max_answer_len: usize,
    /// Whether the empty answer may win (SQuAD v2.0).
    pub allow_empty: bool,
}

impl Default for Decode {
    fn default() -> Self {
        Self {
            n_best: 20,
            max_answer_len: 30,
            allow_empty: false,
        }
    }
}

/// The best answer span.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// The answer text (empty for "no answer").
    pub text: String,
    /// Its score `start_logit + end_logit` (the `[CLS]` score for the empty answer).
    pub score: f32,
    /// Character range in the context (empty for "no answer").
    pub chars: (usize, usize),
}

/// Indices of the `n` largest values, largest first (ties: lower index first).
fn top_n(v: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx
}

/// The best span of one question from its windows and their `(start, end)` logits.
pub fn best_span(
    context: &str,
    windows: &[Window],
    logits: &[(Vec<f32>, Vec<f32>)],
    d: Decode,
) -> Span {
    let mut best: Option<(f32, (usize, usize))> = None;
    let mut null = f32::INFINITY;
    for (w, (start, end)) in windows.iter().zip(logits) {
        if let (Some(s0), Some(e0)) = (start.first(), end.first()) {
            null = null.min(s0 + e0);
        }
        for si in top_n(start, d.n_best) {
            for ei in top_n(end, d.n_best) {
                let (Some(Some(so)), Some(Some(eo))) =
                    (w.context_offsets.get(si), w.context_offsets.get(ei))
                else {
                    continue;
                };
                if ei < si || ei - si + 1 > d.max_answer_len {
                    continue;
                }
                let score = start[si] + end[ei];
                if best.is_none_or(|(b, _)| score > b) {
                    best = Some((score, (so.0, eo.1)));
                }
            }
        }
    }
    match best {
        Some((score, _)) if d.allow_empty && null > score => empty(null),
        Some((score, (a, b))) => Span {
            text: context.chars().skip(a).take(b.saturating_sub(a)).collect(),
            score,
            chars: (a, b),
        },
        None => empty(if null.is_finite() { null } else { 0.0 }),
    }
}

fn empty(score: f32) -> Span {
    Span {
        text: String::new(),
        score,
        chars: (0, 0),
    }
}
