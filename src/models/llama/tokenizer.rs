//! The byte-level BPE tokenizer a GGUF file describes (`tokenizer.ggml.model = "gpt2"`),
//! built with the `tokenizers` crate the way transformers builds it from the same file: the
//! vocabulary (tokens outside the byte alphabet re-spelled byte by byte), the merges, the
//! GPT-2 byte-level split, control tokens (`token_type` 3) as special added tokens and
//! user-defined ones (4) as plain added tokens, BOS prepended only when
//! `tokenizer.ggml.add_bos_token` says so.
//!
//! Pre-tokenizer types (`tokenizer.ggml.pre`) whose split is the GPT-2 one are accepted
//! (`default`, `gpt2`, `gpt-2`, `smollm`); any other (Llama 3's, Qwen's, ...) is an error
//! naming it rather than a silently different tokenization.

use serde_json::{Map, Value as Json, json};

use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::{Gguf, Value};

/// `tokenizer.ggml.pre` values whose split is GPT-2's byte-level regex.
const GPT2_SPLIT_PRES: [&str; 4] = ["default", "gpt2", "gpt-2", "smollm"];

/// GGUF token types.
const CONTROL: i128 = 3;
const USER_DEFINED: i128 = 4;

/// GPT-2's byte-to-character table: printable bytes map to themselves, the rest to
/// characters from U+0100 on.
fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = (b'!'..=b'~').contains(&(b as u8))
            || (0xA1..=0xAC).contains(&b)
            || (0xAE..=0xFF).contains(&b);
        *slot = if printable {
            char::from(b as u8)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("valid char")
        };
    }
    table
}

/// A decoder language model's tokenizer, from its GGUF file.
#[derive(Clone)]
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// Whether [`LlamaTokenizer::encode`] prepends BOS.
    pub add_bos: bool,
    vocab: usize,
}

impl std::fmt::Debug for LlamaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaTokenizer")
            .field("vocab", &self.vocab)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn optional_id(g: &Gguf, key: &str, vocab: usize) -> Result<Option<u32>> {
    if g.get(key).is_none() {
        return Ok(None);
    }
    let id = g.usize(key)?;
    if id >= vocab {
        return Err(g_err(
            g,
            format!("{key} = {id} is outside the vocabulary of {vocab}"),
        ));
    }
    Ok(Some(id as u32))
}

fn g_err(g: &Gguf, message: String) -> Error {
    Error::File {
        path: g.name().to_string(),
        message,
    }
}

/// The tokenizer type and pre-tokenizer, checked.
fn check_kind(g: &Gguf) -> Result<()> {
    let model = g.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g_err(
            g,
            format!(
                "tokenizer.ggml.model '{model}' is not supported (only byte-level BPE, 'gpt2')"
            ),
        ));
    }
    let pre = match g.get("tokenizer.ggml.pre") {
        Some(_) => g.str("tokenizer.ggml.pre")?,
        None => "default",
    };
    if !GPT2_SPLIT_PRES.contains(&pre) {
        return Err(g_err(
            g,
            format!(
                "tokenizer.ggml.pre '{pre}' is not supported (supported: {})",
                GPT2_SPLIT_PRES.join(", ")
            ),
        ));
    }
    Ok(())
}

/// The added tokens (control, then user-defined) as tokenizer.json entries.
fn added_tokens(g: &Gguf, tokens: &[&str], alphabet: &[char; 256]) -> Result<Vec<Json>> {
    let Some(types) = g.get("tokenizer.ggml.token_type") else {
        return Ok(Vec::new());
    };
    let types = types
        .as_array()
        .filter(|t| t.len() == tokens.len())
        .ok_or_else(|| {
            g_err(
                g,
                format!(
                    "tokenizer.ggml.token_type is not an array of {} types",
                    tokens.len()
                ),
            )
        })?;
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut out = Vec::new();
    for (want, special) in [(CONTROL, true), (USER_DEFINED, false)] {
        for (id, (tok, ty)) in tokens.iter().zip(types).enumerate() {
            if Value::as_int(ty) == Some(want) && in_alphabet(tok) {
                out.push(json!({
                    "id": id, "content": tok, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": special,
                }));
            }
        }
    }
    Ok(out)
}

/// tokenizer.json for the file's vocabulary and merges.
fn tokenizer_json(g: &Gguf) -> Result<(Json, usize)> {
    check_kind(g)?;
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let alphabet = byte_chars();
    let mut vocab = Map::new();
    for (id, tok) in tokens.iter().enumerate() {
        let spelled = if tok.chars().all(|c| alphabet.contains(&c)) {
            tok.to_string()
        } else {
            tok.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(spelled, json!(id));
    }
    let merges = match g.get("tokenizer.ggml.merges") {
        Some(_) => g.strings("tokenizer.ggml.merges")?,
        None => Vec::new(),
    };
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            g_err(
                g,
                format!("tokenizer.ggml.merges[{i}] = {m:?} is not two tokens"),
            )
        })?;
        pairs.push(json!([a, b]));
    }
    let byte_level = |prefix: bool| json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true});
    let doc = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added_tokens(g, &tokens, &alphabet)?,
        "normalizer": null, "pre_tokenizer": byte_level(false), "post_processor": null,
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": pairs,
        },
    });
    Ok((doc, tokens.len()))
}

impl LlamaTokenizer {
    /// The tokenizer of a GGUF file; an unsupported tokenizer kind or a malformed entry is
    /// an error naming the key.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let (doc, vocab) = tokenizer_json(g)?;
        let inner: tokenizers::Tokenizer = serde_json::from_value(doc).map_err(|e| {
            g_err(
                g,
                format!("building the tokenizer from tokenizer.ggml.*: {e}"),
            )
        })?;
        let add_bos = match g.get("tokenizer.ggml.add_bos_token") {
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(g_err(
                    g,
                    format!("tokenizer.ggml.add_bos_token should be a bool, got {v:?}"),
                ));
            }
            None => false,
        };
        Ok(Self {
            inner,
            bos: optional_id(g, "tokenizer.ggml.bos_token_id", vocab)?,
            eos: optional_id(g, "tokenizer.ggml.eos_token_id", vocab)?,
            add_bos,
            vocab,
        })
    }

    /// Entries in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The ids of `text` (special tokens written in the text are matched whole), with BOS
    /// first when the file asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let piece = self.encode_piece(text)?;
        let mut ids = Vec::with_capacity(piece.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(&piece);
        Ok(ids)
    }

    /// The ids of `text` alone (no BOS): a piece that continues a sequence.
    pub fn encode_piece(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::InvalidArgument(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids` (special tokens kept unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::InvalidArgument(format!("decoding {} ids: {e}", ids.len())))
    }

    /// The id of a token spelled as in the vocabulary (e.g. `<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
