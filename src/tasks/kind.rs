//! Which task a run trains: a GLUE task, extractive question answering on SQuAD-format
//! data, or image classification. On the command line and in `config.json` it is one
//! lower-case name (`sst2`, ..., `squad`, `image`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::runtime::error::{Error, Result};
use crate::tasks::glue;

/// A run's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A GLUE classification or regression task (data: a folder with train.tsv, dev.tsv).
    Glue(glue::Task),
    /// Extractive QA (data: one SQuAD v1.1 or v2.0 JSON file, split by article).
    Squad,
    /// Image classification (data: a folder of train/ and dev/ class folders, or one
    /// folder of classes split by ratio, or `train.tsv` + `dev.tsv` of `path<TAB>label`).
    Image,
    /// Causal language modelling of a decoder from a GGUF file (data: a JSONL file of
    /// `{"prompt", "response"}` or `{"messages": [...]}` objects).
    CausalLm,
}

impl TaskKind {
    /// The command-line and `config.json` spelling.
    pub fn id(&self) -> &'static str {
        match self {
            TaskKind::Glue(t) => t.id(),
            TaskKind::Squad => "squad",
            TaskKind::Image => "image",
            TaskKind::CausalLm => "causal-lm",
        }
    }

    /// What `--data` is, for messages (`data folder`, `data file`).
    pub fn data_label(&self) -> &'static str {
        match self {
            TaskKind::Glue(_) | TaskKind::Image => "data folder",
            TaskKind::Squad | TaskKind::CausalLm => "data file",
        }
    }

    /// The default `--max-len`: 64 for GLUE's short sentences, 384 for QA windows (as
    /// the reference SQuAD recipe), 512 tokens per causal-LM example.
    pub fn default_max_len(&self) -> usize {
        match self {
            TaskKind::Glue(_) | TaskKind::Image => 64,
            TaskKind::Squad => 384,
            TaskKind::CausalLm => 512,
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl From<glue::Task> for TaskKind {
    fn from(t: glue::Task) -> Self {
        TaskKind::Glue(t)
    }
}

impl FromStr for TaskKind {
    type Err = Error;

    /// `squad` (any case), or a GLUE task name as [`glue::Task`] parses it.
    fn from_str(s: &str) -> Result<TaskKind> {
        if s.trim().eq_ignore_ascii_case("squad") {
            return Ok(TaskKind::Squad);
        }
        if s.trim().eq_ignore_ascii_case("image") {
            return Ok(TaskKind::Image);
        }
        if s.trim().eq_ignore_ascii_case("causal-lm") {
            return Ok(TaskKind::CausalLm);
        }
        s.parse::<glue::Task>().map(TaskKind::Glue).map_err(|_| {
            Error::InvalidArgument(format!(
                "unknown task {s:?}; expected squad, image, causal-lm or a GLUE task (sst2, cola, mrpc, rte, \
                 stsb, qnli, qqp, mnli)"
            ))
        })
    }
}

impl Serialize for TaskKind {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> Deserialize<'de> for TaskKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
