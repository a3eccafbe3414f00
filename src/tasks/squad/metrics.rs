//! SQuAD's official metrics: exact match and token F1 after the official answer
//! normalisation, the maximum over the reference answers, in points (0-100) as the official
//! evaluation scripts print them.
//!
//! Normalisation, in the scripts' order: lower case; drop every ASCII punctuation character
//! (Python's `string.punctuation`); replace the whole words `a`, `an`, `the` by a space;
//! collapse whitespace. v1.1 scores every question against its answers as given; v2.0 drops
//! reference answers that normalise to nothing, scores an unanswerable question against the
//! empty answer, and gives F1 = 1 when both token lists are empty.

use std::collections::HashMap;

/// Which official script's rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rules {
    /// `evaluate-v1.1.py`.
    V1,
    /// `evaluate-v2.0.py` (unanswerable questions, empty answers).
    V2,
}

/// The official answer normalisation.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    let no_articles = remove_articles(&no_punct);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Python's `\w` in Unicode mode: letters, digits (and other alphanumerics) and `_`.
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `re.sub(r'\b(a|an|the)\b', ' ', text)`: a match is a whole word run equal to one of the
/// three, so each run of word characters is kept or replaced as a unit.
fn remove_articles(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match word.as_str() {
            "a" | "an" | "the" => out.push(' '),
            w => out.push_str(w),
        }
        word.clear();
    };
    for c in text.chars() {
        if is_word(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Exact match of one prediction against one reference (0 or 1).
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    f64::from(u8::from(
        normalize_answer(prediction) == normalize_answer(reference),
    ))
}

/// Token F1 of one prediction against one reference, in [0, 1].
pub fn f1(prediction: &str, reference: &str, rules: Rules) -> f64 {
    let p = normalize_answer(prediction);
    let g = normalize_answer(reference);
    let (pt, gt): (Vec<&str>, Vec<&str>) = (p.split(' ').collect(), g.split(' ').collect());
    let pt: Vec<&str> = pt.into_iter().filter(|t| !t.is_empty()).collect();
    let gt: Vec<&str> = gt.into_iter().filter(|t| !t.is_empty()).collect();
    if rules == Rules::V2 && (pt.is_empty() || gt.is_empty()) {
        return f64::from(u8::from(pt == gt));
    }
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for t in &pt {
        counts.entry(t).or_default().0 += 1;
    }
    for t in &gt {
        counts.entry(t).or_default().1 += 1;
    }
    let same: usize = counts.values().map(|&(a, b)| a.min(b)).sum();
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pt.len() as f64;
    let recall = same as f64 / gt.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// `(exact match, F1)` of a prediction: the maximum over the references. Under v2.0 rules
/// references that normalise to nothing are dropped, and a question with none left (an
/// unanswerable one) is scored against the empty answer.
pub fn score(prediction: &str, references: &[&str], rules: Rules) -> (f64, f64) {
    let mut refs: Vec<&str> = references.to_vec();
    if rules == Rules::V2 {
        refs.retain(|r| !normalize_answer(r).is_empty());
        if refs.is_empty() {
            refs.push("");
        }
    }
    let em = refs
        .iter()
        .map(|r| exact_match(prediction, r))
        .fold(0.0, f64::max);
    let f = refs
        .iter()
        .map(|r| f1(prediction, r, rules))
        .fold(0.0, f64::max);
    (em, f)
}

/// Dataset-level `(exact_match, f1)` in points over `(prediction, references)` pairs; a
/// question without a prediction is passed as `None` and scores 0, as in the scripts.
pub fn evaluate<'a>(
    items: impl IntoIterator<Item = (Option<&'a str>, Vec<&'a str>)>,
    rules: Rules,
) -> (f64, f64) {
    let (mut em, mut f, mut n) = (0.0, 0.0, 0usize);
    for (pred, refs) in items {
        n += 1;
        if let Some(p) = pred {
            let (e, s) = score(p, &refs, rules);
            em += e;
            f += s;
        }
    }
    if n == 0 {
        return (0.0, 0.0);
    }
    (100.0 * em / n as f64, 100.0 * f / n as f64)
}
