//! Question + context pairs as model inputs: `[CLS] question [SEP] context [SEP]`,
//! truncated on the context only, with sliding windows over long contexts (HF's
//! `truncation="only_second"`, `return_overflowing_tokens`, `stride`), character offsets
//! of every context token, and the answer's start/end token in each window (`[CLS]`, i.e.
//! position 0, where the window does not hold the whole answer).
//!
//! A question so long that no context token fits next to it is an error naming the
//! question's id (as HF's tokenizer refuses it), never a silent drop.

use std::path::Path;

use crate::models::bert::Encoded;
use crate::runtime::error::{Error, Result};
use crate::tasks::squad::data::Question;

/// One window of one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Token ids and type ids (type 1 on the context and the final `[SEP]`).
    pub encoded: Encoded,
    /// For each token, `Some((start, end))` character offsets into the context when the
    /// token is a context token, `None` for the question and special tokens.
    pub context_offsets: Vec<Option<(usize, usize)>>,
    /// The answer's first and last token (inclusive) in this window; `(0, 0)` (`[CLS]`) when
    /// the window does not contain the whole answer or the question has none.
    pub target: (usize, usize),
}

impl Window {
    /// The first and last context tokens of the window.
    pub fn context_span(&self) -> Option<(usize, usize)> {
        let first = self.context_offsets.iter().position(Option::is_some)?;
        let last = self.context_offsets.iter().rposition(Option::is_some)?;
        Some((first, last))
    }
}

/// A WordPiece tokenizer set up for question/context windows.
///
/// The question and the context are tokenized apart (as the pair encoder does for BERT)
/// and the windows built here: each holds as many context tokens as fit next to the
/// question, and the next one starts `stride` tokens before the previous one ended, until
/// the end of the context is reached (HF's `doc_stride` semantics).
pub struct QaTokenizer {
    inner: tokenizers::Tokenizer,
    cls: u32,
    sep: u32,
    max_len: usize,
    stride: usize,
}

/// One tokenized sequence without special tokens: ids and character offsets.
struct Pieces {
    ids: Vec<u32>,
    offsets: Vec<(usize, usize)>,
}

impl QaTokenizer {
    /// Loads `dir/tokenizer.json` for windows of at most `max_len` tokens that overlap by
    /// `stride` context tokens (`stride < max_len`).
    pub fn load(dir: &Path, max_len: usize, stride: usize) -> Result<Self> {
        if max_len < 4 || stride >= max_len {
            return Err(Error::InvalidArgument(format!(
                "--max-len {max_len} and --doc-stride {stride}: need max-len >= 4 and \
                 doc-stride < max-len"
            )));
        }
        let path = dir.join("tokenizer.json");
        let file_err = |message: String| Error::File {
            path: path.display().to_string(),
            message,
        };
        let mut inner =
            tokenizers::Tokenizer::from_file(&path).map_err(|e| file_err(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::InvalidArgument(format!("truncation: {e}")))?;
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| file_err(format!("the vocabulary has no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        Ok(Self {
            inner,
            cls,
            sep,
            max_len,
            stride,
        })
    }

    /// The window length limit.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The overlap between consecutive windows, in context tokens.
    pub fn stride(&self) -> usize {
        self.stride
    }

    fn pieces(&self, text: &str) -> Result<Pieces> {
        let e = self
            .inner
            .encode_char_offsets(text, false)
            .map_err(|e| Error::InvalidArgument(format!("tokenizing {text:?}: {e}")))?;
        Ok(Pieces {
            ids: e.get_ids().to_vec(),
            offsets: e.get_offsets().to_vec(),
        })
    }

    /// Every window of `question` over `context`, in context order.
    pub fn windows(&self, q: &Question, context: &str) -> Result<Vec<Window>> {
        let question = self.pieces(&q.question)?;
        let ctx = self.pieces(context)?;
        let room = self.max_len.saturating_sub(question.ids.len() + 3);
        if room == 0 || (room <= self.stride && ctx.ids.len() > room) {
            return Err(Error::InvalidArgument(format!(
                "question {:?} ({} tokens) leaves no room for the context in --max-len {} \
                 with --doc-stride {}",
                q.id,
                question.ids.len(),
                self.max_len,
                self.stride
            )));
        }
        let answer = q
            .answers
            .first()
            .map(|a| (a.start, a.start + a.text.chars().count()));
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let stop = (start + room).min(ctx.ids.len());
            out.push(self.window(&question.ids, &ctx, start..stop, answer));
            if stop == ctx.ids.len() {
                return Ok(out);
            }
            start = stop - self.stride;
        }
    }

    fn window(
        &self,
        question: &[u32],
        ctx: &Pieces,
        range: std::ops::Range<usize>,
        answer: Option<(usize, usize)>,
    ) -> Window {
        let mut ids = vec![self.cls];
        ids.extend_from_slice(question);
        ids.push(self.sep);
        let lead = ids.len();
        ids.extend_from_slice(&ctx.ids[range.clone()]);
        ids.push(self.sep);
        let mut type_ids = vec![0u32; lead];
        type_ids.resize(ids.len(), 1);
        let mut context_offsets = vec![None; lead];
        context_offsets.extend(ctx.offsets[range].iter().map(|&o| Some(o)));
        context_offsets.push(None);
        let target = answer
            .and_then(|(s, e)| target(&context_offsets, s, e))
            .unwrap_or((0, 0));
        Window {
            encoded: Encoded { ids, type_ids },
            context_offsets,
            target,
        }
    }
}
/// The tokens holding the first and last characters of `[start, end)`, when the window's
/// context covers the whole span.
fn target(offsets: &[Option<(usize, usize)>], start: usize, end: usize) -> Option<(usize, usize)> {
    let ctx: Vec<(usize, (usize, usize))> = offsets
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.map(|o| (i, o)))
        .collect();
    let (first, last) = (ctx.first()?, ctx.last()?);
    if start < first.1.0 || end > last.1.1 {
        return None;
    }
    let s = ctx.iter().rev().find(|(_, o)| o.0 <= start)?.0;
    let e = ctx.iter().find(|(_, o)| o.1 >= end)?.0;
    (s <= e).then_some((s, e))
}
