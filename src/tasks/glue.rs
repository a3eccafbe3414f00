//! GLUE benchmark data: the eight tasks, their column layouts, and a TSV reader that
//! survives the quirks of the files as distributed (CRLF, a BOM, headerless CoLA, MRPC's
//! `#1 String` columns, string labels) and counts broken rows instead of failing on them.
//!
//! GLUE TSV files use no quoting: a `"` is an ordinary character, so the reader splits on
//! tabs only. A row that cannot be used (wrong field count, empty text, bad label) is
//! counted in [`Split::malformed`] with a sample reason naming its line and column; only
//! problems with the file as a whole (missing, empty, a header without the needed columns)
//! are errors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::runtime::error::{Error, Result};

/// How many malformed-row reasons a [`Split`] keeps as samples.
pub const MALFORMED_SAMPLES: usize = 5;

/// One of the eight GLUE tasks (WNLI and the diagnostic set are not included).
///
/// On the command line and in `config.json` a task is its lower-case name (`sst2`, `stsb`,
/// ...); the command line also takes GLUE's spelling (`SST-2`, `STS-B`) in any case.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Stanford Sentiment Treebank, binary sentiment of one sentence.
    #[serde(alias = "sst-2")]
    #[value(alias = "sst-2")]
    Sst2,
    /// Corpus of Linguistic Acceptability, grammaticality of one sentence.
    Cola,
    /// Microsoft Research Paraphrase Corpus, whether two sentences are paraphrases.
    Mrpc,
    /// Recognizing Textual Entailment, two-way entailment.
    Rte,
    /// Semantic Textual Similarity Benchmark, a similarity score in [0, 5].
    #[serde(alias = "sts-b")]
    #[value(alias = "sts-b")]
    Stsb,
    /// Question-answering NLI: whether a sentence answers a question.
    Qnli,
    /// Quora Question Pairs, whether two questions are duplicates.
    Qqp,
    /// Multi-Genre NLI, three-way entailment.
    Mnli,
}

/// Column-name candidates for a task; the first one present in the header wins.
struct Preset {
    text_a: &'static [&'static str],
    text_b: Option<&'static [&'static str]>,
    label: &'static [&'static str],
}

/// The columns of CoLA's original headerless files, used as a virtual header so that
/// column overrides can still name them.
const COLA_HEADERLESS: [&str; 4] = ["source", "label", "original_label", "sentence"];

impl Task {
    /// Every task, in GLUE's usual order.
    pub const ALL: [Task; 8] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Stsb,
        Task::Qqp,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
    ];

    /// The command-line and `config.json` spelling (`sst2`, `stsb`, ...).
    pub fn id(&self) -> &'static str {
        match self {
            Task::Sst2 => "sst2",
            Task::Cola => "cola",
            Task::Mrpc => "mrpc",
            Task::Rte => "rte",
            Task::Stsb => "stsb",
            Task::Qnli => "qnli",
            Task::Qqp => "qqp",
            Task::Mnli => "mnli",
        }
    }

    /// The task's name as GLUE spells it, which is also its folder name (`SST-2`, `CoLA`).
    pub fn name(&self) -> &'static str {
        match self {
            Task::Sst2 => "SST-2",
            Task::Cola => "CoLA",
            Task::Mrpc => "MRPC",
            Task::Rte => "RTE",
            Task::Stsb => "STS-B",
            Task::Qnli => "QNLI",
            Task::Qqp => "QQP",
            Task::Mnli => "MNLI",
        }
    }

    /// Whether the label is a real-valued score (STS-B) rather than a class.
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Stsb)
    }

    /// Number of model outputs: classes, or 1 for the regression task.
    pub fn num_labels(&self) -> usize {
        match self {
            Task::Mnli => 3,
            Task::Stsb => 1,
            _ => 2,
        }
    }

    /// Class names in label-index order; empty for STS-B, whose labels are scores.
    pub fn label_names(&self) -> Vec<String> {
        let names: &[&str] = match self {
            Task::Sst2 => &["negative", "positive"],
            Task::Cola => &["unacceptable", "acceptable"],
            Task::Mrpc => &["not_equivalent", "equivalent"],
            Task::Qqp => &["not_duplicate", "duplicate"],
            Task::Rte | Task::Qnli => &["entailment", "not_entailment"],
            Task::Mnli => &["entailment", "neutral", "contradiction"],
            Task::Stsb => &[],
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// The dev split's file name (`dev_matched.tsv` for MNLI; [`read_task`] falls back to
    /// `dev.tsv` when that is what the folder holds).
    pub fn dev_file(&self) -> &'static str {
        match self {
            Task::Mnli => "dev_matched.tsv",
            _ => "dev.tsv",
        }
    }

    /// The metrics GLUE reports for the task, in its order (see
    /// [`crate::tasks::metrics::task_metrics`]).
    pub fn metric_names(&self) -> Vec<&'static str> {
        match self {
            Task::Cola => vec!["mcc"],
            Task::Sst2 | Task::Qnli | Task::Rte | Task::Mnli => vec!["accuracy"],
            Task::Mrpc | Task::Qqp => vec!["accuracy", "f1"],
            Task::Stsb => vec!["pearson", "spearman"],
        }
    }

    /// Whether the task's examples are sentence pairs.
    pub fn is_pair(&self) -> bool {
        self.preset().text_b.is_some()
    }

    fn preset(&self) -> Preset {
        match self {
            Task::Sst2 => Preset {
                text_a: &["sentence", "content", "text"],
                text_b: None,
                label: &["label"],
            },
            Task::Cola => Preset {
                text_a: &["sentence"],
                text_b: None,
                label: &["label"],
            },
            Task::Mrpc => Preset {
                text_a: &["#1 String", "sentence1"],
                text_b: Some(&["#2 String", "sentence2"]),
                label: &["Quality", "label"],
            },
            Task::Rte => Preset {
                text_a: &["sentence1"],
                text_b: Some(&["sentence2"]),
                label: &["label"],
            },
            Task::Stsb => Preset {
                text_a: &["sentence1"],
                text_b: Some(&["sentence2"]),
                label: &["score", "label"],
            },
            Task::Qnli => Preset {
                text_a: &["question"],
                text_b: Some(&["sentence"]),
                label: &["label"],
            },
            Task::Qqp => Preset {
                text_a: &["question1"],
                text_b: Some(&["question2"]),
                label: &["is_duplicate", "label"],
            },
            Task::Mnli => Preset {
                text_a: &["sentence1"],
                text_b: Some(&["sentence2"]),
                label: &["gold_label", "label"],
            },
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;

    /// Parses a task name case-insensitively, ignoring `-` and `_` (`SST-2`, `sst2`,
    /// `sts-b`, `MNLI`, ...).
    fn from_str(s: &str) -> Result<Task> {
        let key: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Task::ALL
            .into_iter()
            .find(|t| t.id() == key)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown GLUE task {s:?}; expected one of sst2, cola, mrpc, rte, stsb, qnli, \
                 qqp, mnli"
                ))
            })
    }
}

/// The header names of the columns a split was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    /// First text column.
    pub text_a: String,
    /// Second text column, for sentence-pair tasks.
    pub text_b: Option<String>,
    /// Label column; `None` for a file read without labels
    /// ([`ReadOptions::allow_unlabelled`]).
    pub label: Option<String>,
}

/// Options for [`read_split`]: column names that override the task's preset, and a cap on
/// the number of examples.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// First text column, instead of the preset's.
    pub text_a: Option<String>,
    /// Second text column; also turns a single-sentence task into a pair task.
    pub text_b: Option<String>,
    /// Label column, instead of the preset's.
    pub label: Option<String>,
    /// Keep only the first N good examples.
    pub limit: Option<usize>,
    /// Read a file that has no label column (such as GLUE's official test files) as texts
    /// only, every [`Example::label`] `None`, instead of failing. A label column that is
    /// present is still read and checked.
    pub allow_unlabelled: bool,
}

/// A gold label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Label {
    /// A class index below [`Task::num_labels`].
    Class(usize),
    /// A regression target (STS-B, in [0, 5]).
    Score(f32),
}

/// One labelled example.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// First text, verbatim.
    pub text_a: String,
    /// Second text for pair tasks, verbatim.
    pub text_b: Option<String>,
    /// Gold label; `None` only in a file read with [`ReadOptions::allow_unlabelled`] that has
    /// no label column.
    pub label: Option<Label>,
    /// 1-based line of the file the example came from.
    pub line: usize,
}

/// The good examples of one file, and an account of the rows that were skipped.
#[derive(Clone, Debug)]
pub struct Split {
    /// Examples in file order.
    pub examples: Vec<Example>,
    /// Rows skipped as unusable.
    pub malformed: usize,
    /// Up to [`MALFORMED_SAMPLES`] reasons, each `"line N: reason"`.
    pub malformed_samples: Vec<String>,
    /// The file read.
    pub path: PathBuf,
    /// The columns used.
    pub columns: Columns,
}

/// Header names compare equal after trimming whitespace and ignoring case.
fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

fn file_err(path: &Path, message: impl fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Finds a column by an override name or the first preset candidate present.
fn find_column(
    path: &Path,
    header: &[String],
    role: &str,
    over: Option<&str>,
    candidates: &[&str],
    no_labels_hint: bool,
) -> Result<usize> {
    let wanted: Vec<&str> = match over {
        Some(o) => vec![o],
        None => candidates.to_vec(),
    };
    let normed: Vec<String> = header.iter().map(|h| norm(h)).collect();
    for w in &wanted {
        if let Some(i) = normed.iter().position(|h| *h == norm(w)) {
            return Ok(i);
        }
    }
    let looked = wanted
        .iter()
        .map(|w| format!("{w:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let found = header
        .iter()
        .map(|h| format!("{:?}", h.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = if no_labels_hint {
        " (the split has no labels, or name its label column explicitly)"
    } else {
        ""
    };
    Err(file_err(
        path,
        format!("line 1: no {role} column{hint}: looked for {looked}; columns found: {found}"),
    ))
}

/// Parses a label of `task` from a cell, or says why it is not one.
fn parse_label(task: Task, cell: &str) -> std::result::Result<Label, String> {
    let s = cell.trim();
    if task.is_regression() {
        return match s.parse::<f32>() {
            Ok(v) if v.is_finite() && (0.0..=5.0).contains(&v) => Ok(Label::Score(v)),
            _ => Err(format!("bad score {s:?} (expected a number in [0, 5])")),
        };
    }
    let names = task.label_names();
    if let Ok(i) = s.parse::<usize>() {
        if i < names.len() {
            return Ok(Label::Class(i));
        }
    } else if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(Label::Class(i));
    }
    Err(format!(
        "bad label {s:?} (expected 0..{} or one of {})",
        names.len() - 1,
        names.join(", ")
    ))
}

/// The file's lines without line ends, a BOM or trailing blank lines.
fn file_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    while lines
        .last()
        .is_some_and(|l| l.iter().all(u8::is_ascii_whitespace))
    {
        lines.pop();
    }
    lines
}

/// The column indices a split is read from.
struct Layout {
    header: Vec<String>,
    data_start: usize,
    text_a: usize,
    text_b: Option<usize>,
    label: Option<usize>,
}

impl Layout {
    /// Finds the header (CoLA's virtual one when headerless) and the columns in it.
    fn find(path: &Path, first: &[u8], task: Task, opts: &ReadOptions) -> Result<Layout> {
        let first = std::str::from_utf8(first)
            .map_err(|e| file_err(path, format!("line 1: not valid UTF-8 ({e})")))?;
        let fields: Vec<&str> = first.split('\t').collect();
        let headerless =
            task == Task::Cola && fields.len() == 4 && matches!(fields[1].trim(), "0" | "1");
        let (header, data_start): (Vec<String>, usize) = if headerless {
            (COLA_HEADERLESS.iter().map(|s| s.to_string()).collect(), 0)
        } else {
            (fields.iter().map(|s| s.to_string()).collect(), 1)
        };
        let preset = task.preset();
        let col = |role, over: Option<&str>, cands: &[&str], hint| {
            find_column(path, &header, role, over, cands, hint)
        };
        let text_a = col("text_a", opts.text_a.as_deref(), preset.text_a, false)?;
        let text_b = match (opts.text_b.as_deref(), preset.text_b) {
            (Some(o), cands) => Some(col("text_b", Some(o), cands.unwrap_or(&[]), false)?),
            (None, Some(cands)) => Some(col("text_b", None, cands, false)?),
            (None, None) => None,
        };
        let label = match col("label", opts.label.as_deref(), preset.label, true) {
            Ok(i) => Some(i),
            // An explicitly named label column must exist.
            Err(_) if opts.allow_unlabelled && opts.label.is_none() => None,
            Err(e) => return Err(e),
        };
        Ok(Layout {
            header,
            data_start,
            text_a,
            text_b,
            label,
        })
    }

    fn columns(&self) -> Columns {
        let name = |i: usize| self.header[i].trim().to_string();
        Columns {
            text_a: name(self.text_a),
            text_b: self.text_b.map(name),
            label: self.label.map(name),
        }
    }

    /// The example on 1-based `line`, or why the row is unusable.
    fn example(&self, task: Task, raw: &[u8], line: usize) -> std::result::Result<Example, String> {
        let text = std::str::from_utf8(raw).map_err(|e| format!("not valid UTF-8 ({e})"))?;
        if text.trim().is_empty() {
            return Err("empty line".into());
        }
        let fields: Vec<&str> = text.split('\t').collect();
        let header = &self.header;
        if fields.len() != header.len() {
            return Err(format!(
                "expected {} tab-separated fields, found {}",
                header.len(),
                fields.len()
            ));
        }
        let get = |i: usize| -> std::result::Result<String, String> {
            if fields[i].trim().is_empty() {
                Err(format!("empty text in column {:?}", header[i].trim()))
            } else {
                Ok(fields[i].to_string())
            }
        };
        let text_a = get(self.text_a)?;
        let text_b = self.text_b.map(get).transpose()?;
        let label = self
            .label
            .map(|il| {
                parse_label(task, fields[il])
                    .map_err(|e| format!("{e} in column {:?}", header[il].trim()))
            })
            .transpose()?;
        Ok(Example {
            text_a,
            text_b,
            label,
            line,
        })
    }
}

/// Reads one GLUE TSV file of `task`.
///
/// Handles LF and CRLF line ends, trailing blank lines, a UTF-8 BOM, CoLA's headerless
/// layout and string labels. Rows with the wrong number of fields, an empty text or a bad
/// label are counted in [`Split::malformed`]. A missing or empty file, or a header without
/// the needed columns (including an unlabelled test split), is an error naming the file
/// and the columns found.
pub fn read_split(path: &Path, task: Task, opts: &ReadOptions) -> Result<Split> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let lines = file_lines(&bytes);
    let Some(first) = lines.first() else {
        return Err(file_err(path, "empty file: no header row"));
    };
    let layout = Layout::find(path, first, task, opts)?;
    let limit = opts.limit.unwrap_or(usize::MAX);
    let mut examples = Vec::new();
    let mut malformed = 0usize;
    let mut malformed_samples = Vec::new();
    for (k, raw) in lines.iter().enumerate().skip(layout.data_start) {
        if examples.len() >= limit {
            break;
        }
        match layout.example(task, raw, k + 1) {
            Ok(ex) => examples.push(ex),
            Err(reason) => {
                malformed += 1;
                if malformed_samples.len() < MALFORMED_SAMPLES {
                    malformed_samples.push(format!("line {}: {reason}", k + 1));
                }
            }
        }
    }
    Ok(Split {
        examples,
        malformed,
        malformed_samples,
        path: path.to_path_buf(),
        columns: layout.columns(),
    })
}

/// Reads a task folder's `train.tsv` and its dev file ([`Task::dev_file`], or `dev.tsv`
/// where an MNLI folder has no `dev_matched.tsv`).
pub fn read_task(dir: &Path, task: Task, opts: &ReadOptions) -> Result<(Split, Split)> {
    let train = read_split(&dir.join("train.tsv"), task, opts)?;
    let mut dev_path = dir.join(task.dev_file());
    if !dev_path.exists() && dir.join("dev.tsv").exists() {
        dev_path = dir.join("dev.tsv");
    }
    let dev = read_split(&dev_path, task, opts)?;
    Ok((train, dev))
}
