//! The SQuAD JSON format (v1.1 and v2.0): articles of paragraphs of questions, read with
//! errors that name the article, paragraph and question id.
//!
//! Problems with the file as a whole (missing, not JSON, no `data` list) are errors. A
//! question that cannot be used (no id, no question text, an answer whose `answer_start`
//! lies outside the context or whose text is not found there, a duplicate id) is skipped and
//! counted in [`SquadFile::malformed`], with a few sample reasons; a paragraph without a
//! context is skipped with all its questions. v2.0 files mark unanswerable questions with
//! `is_impossible` (their `plausible_answers` are kept apart and never used as gold).

use std::collections::HashSet;
use std::path::Path;

use serde_json::Value;

use crate::runtime::error::{Error, Result};

/// How many malformed-question reasons a [`SquadFile`] keeps as samples.
pub const MALFORMED_SAMPLES: usize = 5;

/// One reference answer: its text and where it starts in the context, in characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The answer text, as written in the file.
    pub text: String,
    /// Offset of its first character in the context (Unicode scalar values, as Python
    /// indexes strings).
    pub start: usize,
}

/// One question on a paragraph.
#[derive(Clone, Debug, PartialEq)]
pub struct Question {
    /// The question's id (unique in the file).
    pub id: String,
    /// The question text.
    pub question: String,
    /// Reference answers (empty for an unanswerable v2.0 question).
    pub answers: Vec<Answer>,
    /// v2.0: the question has no answer in the paragraph.
    pub is_impossible: bool,
    /// v2.0: answers annotators found plausible for an impossible question (never gold).
    pub plausible_answers: Vec<Answer>,
}

/// A paragraph: a context and its questions.
#[derive(Clone, Debug, PartialEq)]
pub struct Paragraph {
    /// The context text.
    pub context: String,
    /// Its usable questions.
    pub questions: Vec<Question>,
}

/// An article: a title and its paragraphs.
#[derive(Clone, Debug, PartialEq)]
pub struct Article {
    /// The article's title.
    pub title: String,
    /// Its paragraphs with a context.
    pub paragraphs: Vec<Paragraph>,
}

/// A whole SQuAD file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SquadFile {
    /// The `version` field (`1.1`, `v2.0`, ...), if present.
    pub version: Option<String>,
    /// Articles in file order.
    pub articles: Vec<Article>,
    /// Questions (or paragraphs) skipped as unusable.
    pub malformed: usize,
    /// Up to [`MALFORMED_SAMPLES`] reasons, each naming article, paragraph and question.
    pub samples: Vec<String>,
}

impl SquadFile {
    /// Every question with its paragraph's context, in file order.
    pub fn questions(&self) -> impl Iterator<Item = (&Paragraph, &Question)> {
        self.articles
            .iter()
            .flat_map(|a| a.paragraphs.iter())
            .flat_map(|p| p.questions.iter().map(move |q| (p, q)))
    }

    /// Number of usable questions.
    pub fn question_count(&self) -> usize {
        self.questions().count()
    }

    /// Keeps only the first `n` questions in file order (quick runs: `--train-limit`,
    /// `--dev-limit`).
    pub fn keep_questions(&mut self, n: usize) {
        let mut left = n;
        for p in self
            .articles
            .iter_mut()
            .flat_map(|a| a.paragraphs.iter_mut())
        {
            let k = p.questions.len().min(left);
            p.questions.truncate(k);
            left -= k;
        }
    }

    /// The articles whose indices are in `picked` (file order kept), as a file of its own.
    pub fn select(&self, picked: &[usize]) -> Result<SquadFile> {
        let n = self.articles.len();
        if let Some(bad) = picked.iter().find(|&&i| i >= n) {
            return Err(Error::InvalidArgument(format!(
                "article {bad} does not exist: the file has {n} articles (0..{n})"
            )));
        }
        let articles = (0..n)
            .filter(|i| picked.contains(i))
            .map(|i| self.articles[i].clone())
            .collect();
        Ok(SquadFile {
            version: self.version.clone(),
            articles,
            malformed: 0,
            samples: Vec::new(),
        })
    }

    fn skip(&mut self, reason: String) {
        self.malformed += 1;
        if self.samples.len() < MALFORMED_SAMPLES {
            self.samples.push(reason);
        }
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a SQuAD v1.1 or v2.0 JSON file.
pub fn read_squad(path: &Path) -> Result<SquadFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let root: Value = serde_json::from_slice(&bytes)
        .map_err(|e| file_err(path, format!("not a SQuAD JSON file: {e}")))?;
    parse_squad(&root).map_err(|m| file_err(path, m))
}

/// Parses a SQuAD document already read as JSON; the error is a message for the caller to
/// attach to the file.
pub fn parse_squad(root: &Value) -> std::result::Result<SquadFile, String> {
    let data = root
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no \"data\" list of articles")?;
    let mut file = SquadFile {
        version: root
            .get("version")
            .and_then(Value::as_str)
            .map(String::from),
        ..SquadFile::default()
    };
    let mut seen = HashSet::new();
    for (ai, a) in data.iter().enumerate() {
        let title = a
            .get("title")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{ai}"), String::from);
        let paragraphs = a
            .get("paragraphs")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("article {ai} ({title:?}) has no \"paragraphs\" list"))?;
        let mut out = Vec::new();
        for (pi, p) in paragraphs.iter().enumerate() {
            let at = format!("article {ai} ({title:?}), paragraph {pi}");
            if let Some(par) = paragraph(&mut file, &mut seen, p, &at) {
                out.push(par);
            }
        }
        file.articles.push(Article {
            title,
            paragraphs: out,
        });
    }
    Ok(file)
}

fn paragraph(
    file: &mut SquadFile,
    seen: &mut HashSet<String>,
    p: &Value,
    at: &str,
) -> Option<Paragraph> {
    let Some(context) = p.get("context").and_then(Value::as_str) else {
        file.skip(format!("{at}: no \"context\" (paragraph skipped)"));
        return None;
    };
    let chars: Vec<char> = context.chars().collect();
    let qas = p.get("qas").and_then(Value::as_array);
    let mut questions = Vec::new();
    for (qi, q) in qas.into_iter().flatten().enumerate() {
        match question(q, &chars) {
            Ok(q) if !seen.insert(q.id.clone()) => {
                file.skip(format!("{at}, question {:?}: duplicate id", q.id))
            }
            Ok(q) => questions.push(q),
            Err(reason) => {
                let id = q.get("id").and_then(Value::as_str).unwrap_or("");
                file.skip(format!("{at}, question {qi} (id {id:?}): {reason}"));
            }
        }
    }
    Some(Paragraph {
        context: context.to_string(),
        questions,
    })
}

fn question(q: &Value, context: &[char]) -> std::result::Result<Question, String> {
    let text = |key: &str| {
        q.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(String::from)
            .ok_or_else(|| format!("no \"{key}\""))
    };
    let id = text("id")?;
    let question = text("question")?;
    let is_impossible = q
        .get("is_impossible")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let answers = answers(q.get("answers"), context)?;
    if !is_impossible && answers.is_empty() {
        return Err("no answers (and not marked is_impossible)".into());
    }
    let plausible_answers = answers_lenient(q.get("plausible_answers"), context);
    Ok(Question {
        id,
        question,
        answers: if is_impossible { Vec::new() } else { answers },
        is_impossible,
        plausible_answers,
    })
}

fn answers(v: Option<&Value>, context: &[char]) -> std::result::Result<Vec<Answer>, String> {
    let Some(list) = v.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, a)| answer(a, context).map_err(|e| format!("answer {i}: {e}")))
        .collect()
}

fn answers_lenient(v: Option<&Value>, context: &[char]) -> Vec<Answer> {
    let list = v
        .and_then(Value::as_array)
        .map_or(&[][..], |l| l.as_slice());
    list.iter()
        .filter_map(|a| answer(a, context).ok())
        .collect()
}

fn answer(a: &Value, context: &[char]) -> std::result::Result<Answer, String> {
    let text = a
        .get("text")
        .and_then(Value::as_str)
        .ok_or("no \"text\"")?
        .to_string();
    let start = a
        .get("answer_start")
        .and_then(Value::as_u64)
        .ok_or("no integer \"answer_start\"")? as usize;
    let len = text.chars().count();
    if text.trim().is_empty() {
        return Err("empty answer text".into());
    }
    if start.checked_add(len).is_none_or(|end| end > context.len()) {
        return Err(format!(
            "answer_start {start} + {len} characters lies outside the context ({} characters)",
            context.len()
        ));
    }
    let found: String = context[start..start + len].iter().collect();
    if found != text {
        return Err(format!(
            "the context at answer_start {start} reads {found:?}, not the answer {text:?}"
        ));
    }
    Ok(Answer { text, start })
}
