//! Causal-LM data: a JSONL file, one example per line, either `{"prompt": ..., "response":
//! ...}` (the texts joined as they are, EOS after the response) or `{"messages": [{"role",
//! "content"}, ...]}` (rendered with the model's chat template). Each example becomes one
//! token sequence whose learned tokens are the response, or every assistant turn; blank
//! lines are skipped, anything else that is not such an object is an error naming its
//! line.

use std::path::Path;

use serde_json::Value;

use crate::models::llama::{ChatTemplate, LlamaTokenizer, Message};
use crate::runtime::error::{Error, Result};

/// One example as the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LmExample {
    /// A prompt and the response to learn.
    Completion {
        /// Text the model reads.
        prompt: String,
        /// Text the model learns to write after it.
        response: String,
    },
    /// A conversation; the assistant turns are learned.
    Chat(Vec<Message>),
}

/// An example with the line it came from.
#[derive(Clone, Debug)]
pub struct LmLine {
    /// 1-based line of the file.
    pub line: u64,
    /// The example.
    pub example: LmExample,
}

fn line_err(path: &Path, line: usize, message: String) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: format!("line {line}: {message}"),
    }
}

fn string_field<'a>(o: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

fn parse_messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let list = v
        .as_array()
        .ok_or("\"messages\" must be a list of {\"role\", \"content\"} objects")?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let (Some(role), Some(content)) = (
            m.get("role").and_then(Value::as_str),
            m.get("content").and_then(Value::as_str),
        ) else {
            return Err(format!(
                "message {} needs \"role\" and \"content\" strings",
                i + 1
            ));
        };
        out.push(Message {
            role: role.to_string(),
            content: content.to_string(),
        });
    }
    if !out.iter().any(|m| m.role == "assistant") {
        return Err("the conversation has no assistant message: nothing to learn".into());
    }
    Ok(out)
}

fn parse_line(text: &str) -> std::result::Result<LmExample, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(o) = v else {
        return Err("not a JSON object".into());
    };
    if let Some(m) = o.get("messages") {
        return parse_messages(m).map(LmExample::Chat);
    }
    match (string_field(&o, "prompt"), string_field(&o, "response")) {
        (Some(p), Some(r)) => Ok(LmExample::Completion {
            prompt: p.to_string(),
            response: r.to_string(),
        }),
        _ => Err("needs \"prompt\" and \"response\" strings, or a \"messages\" list".into()),
    }
}

/// Every example of the JSONL file `path`; a file without one is an error.
pub fn read_jsonl(path: &Path) -> Result<Vec<LmLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let example = parse_line(line).map_err(|m| line_err(path, i + 1, m))?;
        out.push(LmLine {
            line: i as u64 + 1,
            example,
        });
    }
    if out.is_empty() {
        return Err(Error::File {
            path: path.display().to_string(),
            message: "holds no example (one JSON object per line)".into(),
        });
    }
    Ok(out)
}

/// An example as tokens: `learn[i]` says whether `ids[i]` is a token the model learns to
/// predict (from the ones before it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmSequence {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Whether each token is learned.
    pub learn: Vec<bool>,
    /// 1-based line of the file.
    pub line: u64,
}

impl LmSequence {
    /// Positions whose token is learned (never 0: nothing precedes it).
    pub fn targets(&self) -> impl Iterator<Item = usize> + '_ {
        (1..self.ids.len()).filter(|&i| self.learn[i])
    }

    /// Keeps at most `max_len` tokens: the prompt loses its start first (the learned part
    /// stays), then the learned part its end. Whether anything was cut.
    fn truncate(&mut self, max_len: usize) -> bool {
        let n = self.ids.len();
        if n <= max_len {
            return false;
        }
        let first = self.learn.iter().position(|&l| l).unwrap_or(n);
        // Keep one token before the first learned one, so it can be predicted.
        let cut = (n - max_len).min(first.saturating_sub(1));
        self.ids.drain(..cut);
        self.learn.drain(..cut);
        self.ids.truncate(max_len);
        self.learn.truncate(max_len);
        true
    }
}

/// Turns examples into token sequences.
pub struct Encoder<'a> {
    /// The model's tokenizer.
    pub tok: &'a LlamaTokenizer,
    /// Its chat template (needed for `messages` examples).
    pub chat: Option<&'a ChatTemplate>,
    /// Longest sequence kept.
    pub max_len: usize,
}

impl Encoder<'_> {
    fn pieces(&self, e: &LmExample) -> Result<Vec<(String, bool)>> {
        match e {
            LmExample::Completion { prompt, response } => {
                Ok(vec![(prompt.clone(), false), (response.clone(), true)])
            }
            LmExample::Chat(m) => self
                .chat
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "a \"messages\" example needs a chat template and the model has none \
                         (tokenizer.chat_template)"
                            .into(),
                    )
                })?
                .segments(m),
        }
    }

    /// The sequence of `l` (BOS first when the tokenizer adds one; a completion ends in
    /// a learned EOS), truncated to `max_len`; whether it was truncated.
    pub fn encode(&self, l: &LmLine) -> Result<(LmSequence, bool)> {
        let mut s = LmSequence {
            ids: Vec::new(),
            learn: Vec::new(),
            line: l.line,
        };
        if let (true, Some(bos)) = (self.tok.add_bos, self.tok.bos) {
            s.ids.push(bos);
            s.learn.push(false);
        }
        for (text, learn) in self.pieces(&l.example)? {
            let ids = self.tok.encode_piece(&text)?;
            s.learn.extend(std::iter::repeat_n(learn, ids.len()));
            s.ids.extend(ids);
        }
        if let (LmExample::Completion { .. }, Some(eos)) = (&l.example, self.tok.eos) {
            s.ids.push(eos);
            s.learn.push(true);
        }
        let cut = s.truncate(self.max_len);
        if s.targets().next().is_none() {
            return Err(Error::InvalidArgument(format!(
                "line {}: no token to learn (an empty response at the very start, or cut \
                 by --max-len {})",
                l.line, self.max_len
            )));
        }
        Ok((s, cut))
    }

    /// Every example of `lines`, with a warning counting the truncated ones (`what`:
    /// `training`, `evaluation`).
    pub fn encode_all(&self, lines: &[LmLine], what: &str) -> Result<Vec<LmSequence>> {
        let mut out = Vec::with_capacity(lines.len());
        let mut cut = Vec::new();
        for l in lines {
            let (s, c) = self.encode(l)?;
            if c {
                cut.push(l.line);
            }
            out.push(s);
        }
        if let Some(first) = cut.first() {
            eprintln!(
                "warning: {} {what} example(s) longer than --max-len {} were truncated \
                 (prompt start first; first: line {first})",
                cut.len(),
                self.max_len
            );
        }
        Ok(out)
    }
}
