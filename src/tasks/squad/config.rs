//! The QA settings of a run (`--doc-stride`, `--n-best`, `--max-answer-len`, and the split
//! of one SQuAD file by article: `--train-articles`, `--eval-articles`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::runtime::error::{Error, Result};
use crate::tasks::squad::postprocess::Decode;

/// A set of article indices (0-based, file order), written as ranges and single indices
/// separated by commas: `0-19`, `3,5,10-12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArticleSet(pub Vec<(usize, usize)>);

impl ArticleSet {
    /// Whether article `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&i))
    }

    /// The largest index named.
    fn max(&self) -> usize {
        self.0.iter().map(|&(_, b)| b).max().unwrap_or(0)
    }
}

impl FromStr for ArticleSet {
    type Err = Error;

    fn from_str(s: &str) -> Result<ArticleSet> {
        let bad = |part: &str| {
            Error::InvalidArgument(format!(
                "article set {s:?}: {part:?} is not an index or a range like 0-19"
            ))
        };
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: usize = a.parse().map_err(|_| bad(part))?;
            let b: usize = b.parse().map_err(|_| bad(part))?;
            if a > b {
                return Err(bad(part));
            }
            out.push((a, b));
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "article set {s:?} names no article"
            )));
        }
        Ok(ArticleSet(out))
    }
}

impl fmt::Display for ArticleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for ArticleSet {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ArticleSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

fn default_stride() -> usize {
    128
}
fn default_n_best() -> usize {
    20
}
fn default_answer_len() -> usize {
    30
}

/// Question-answering settings (ignored by GLUE tasks; giving them with one is an error).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct QaConfig {
    /// QA: overlap of consecutive windows over a long context, in tokens.
    #[arg(long, default_value_t = default_stride())]
    #[serde(default = "default_stride")]
    pub doc_stride: usize,
    /// QA: start and end candidates kept per window when decoding.
    #[arg(long, default_value_t = default_n_best())]
    #[serde(default = "default_n_best")]
    pub n_best: usize,
    /// QA: longest answer, in tokens.
    #[arg(long, default_value_t = default_answer_len())]
    #[serde(default = "default_answer_len")]
    pub max_answer_len: usize,
    /// QA: articles (0-based, e.g. 0-19) to train on (default: all but the eval articles).
    #[arg(long)]
    #[serde(default)]
    pub train_articles: Option<ArticleSet>,
    /// QA: articles to evaluate on (default: the last fifth of the file, at least one; or
    /// all but the train articles when only those are given).
    #[arg(long)]
    #[serde(default)]
    pub eval_articles: Option<ArticleSet>,
}

/// The clap ids of the QA flags (refused with a GLUE task).
pub const QA_FLAGS: [&str; 5] = [
    "doc_stride",
    "n_best",
    "max_answer_len",
    "train_articles",
    "eval_articles",
];

impl QaConfig {
    /// Checks the numbers (the stride against `--max-len` is checked with the tokenizer).
    pub fn validate(&self) -> Result<()> {
        if self.n_best == 0 {
            return Err(Error::InvalidArgument("--n-best must be at least 1".into()));
        }
        if self.max_answer_len == 0 {
            return Err(Error::InvalidArgument(
                "--max-answer-len must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The decoding settings (v1.1 rules; the task switches to v2.0 for files with
    /// unanswerable questions).
    pub fn decode(&self) -> Decode {
        Decode {
            n_best: self.n_best,
            max_answer_len: self.max_answer_len,
            allow_empty: false,
        }
    }

    /// The training and evaluation article indices of a file of `n` articles.
    pub fn split(&self, n: usize) -> Result<(Vec<usize>, Vec<usize>)> {
        for (flag, set) in [
            ("--train-articles", &self.train_articles),
            ("--eval-articles", &self.eval_articles),
        ] {
            if let Some(s) = set.as_ref().filter(|s| s.max() >= n) {
                return Err(Error::InvalidArgument(format!(
                    "{flag} {s}: the file has {n} articles (0-{})",
                    n.saturating_sub(1)
                )));
            }
        }
        let all = 0..n;
        let (train, eval): (Vec<usize>, Vec<usize>) =
            match (&self.train_articles, &self.eval_articles) {
                (Some(t), Some(e)) => (
                    all.clone().filter(|&i| t.contains(i)).collect(),
                    all.filter(|&i| e.contains(i)).collect(),
                ),
                (Some(t), None) => all.partition(|&i| t.contains(i)),
                (None, Some(e)) => {
                    let (e, t) = all.partition(|&i| e.contains(i));
                    (t, e)
                }
                (None, None) => {
                    let held = (n / 5).max(1);
                    all.partition(|&i| i + held < n)
                }
            };
        if train.is_empty() || eval.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the file has {n} article(s): {} training and {} evaluation articles; give \
                 --train-articles and --eval-articles (they may overlap)",
                train.len(),
                eval.len()
            )));
        }
        Ok((train, eval))
    }
}

impl Default for QaConfig {
    fn default() -> Self {
        Self {
            doc_stride: default_stride(),
            n_best: default_n_best(),
            max_answer_len: default_answer_len(),
            train_articles: None,
            eval_articles: None,
        }
    }
}
