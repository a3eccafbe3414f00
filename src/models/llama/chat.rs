//! Chat templates (`tokenizer.chat_template`, Jinja) rendered with `minijinja` and its
//! Python-compatible methods (`.strip()`, ...), as transformers' `apply_chat_template`
//! renders them: `messages`, `add_generation_prompt`, `bos_token`, `eos_token` and a
//! `raise_exception` function. [`ChatTemplate::segments`] splits a conversation into the
//! text the model reads and the assistant turns it learns to write.

use serde::{Deserialize, Serialize};

use super::LlamaTokenizer;
use crate::runtime::error::{Error, Result};
use crate::runtime::gguf::Gguf;

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The turn's text.
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        msg,
    ))
}

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are the special tokens' text.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::InvalidArgument(format!("chat template: {e:#}")))?;
        Ok(Self {
            env,
            bos: bos.to_string(),
            eos: eos.to_string(),
        })
    }

    /// The template of a GGUF file (`tokenizer.chat_template`), if it has one; `bos` and
    /// `eos` as the tokenizer spells them.
    pub fn from_gguf(g: &Gguf, bos: &str, eos: &str) -> Result<Option<Self>> {
        let Some(v) = g.get("tokenizer.chat_template") else {
            return Ok(None);
        };
        let source = v.as_str().ok_or_else(|| Error::File {
            path: g.name().to_string(),
            message: format!("tokenizer.chat_template should be a string, got {v:?}"),
        })?;
        Self::new(source, bos, eos)
            .map(Some)
            .map_err(|e| Error::File {
                path: g.name().to_string(),
                message: e.to_string(),
            })
    }

    /// The template of a GGUF file with the BOS and EOS text of its tokenizer `tok`.
    pub fn for_tokenizer(g: &Gguf, tok: &LlamaTokenizer) -> Result<Option<Self>> {
        let text = |id: Option<u32>| id.map_or(Ok(String::new()), |id| tok.decode(&[id], false));
        Self::from_gguf(g, &text(tok.bos)?, &text(tok.eos)?)
    }

    /// The conversation as text; with `add_generation_prompt`, followed by what opens an
    /// assistant turn.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let t = self.env.get_template("chat").expect("added in new");
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| Error::InvalidArgument(format!("rendering the chat template: {e:#}")))
    }

    /// The rendered conversation as consecutive pieces `(text, is_assistant_turn)`: each
    /// assistant turn is what rendering the conversation up to it adds to rendering the
    /// turns before it with the generation prompt (its content and the end-of-turn text
    /// the template writes). A template whose shorter renderings are not prefixes of the
    /// longer ones cannot be split this way and is an error.
    pub fn segments(&self, messages: &[Message]) -> Result<Vec<(String, bool)>> {
        let mut out = Vec::new();
        let mut done = String::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let prompt = self.render(&messages[..i], true)?;
            let full = self.render(&messages[..=i], false)?;
            let (Some(before), Some(turn)) = (
                prompt.strip_prefix(done.as_str()),
                full.strip_prefix(prompt.as_str()),
            ) else {
                return Err(Error::InvalidArgument(format!(
                    "the chat template does not render message {} as an extension of the \
                     messages before it: the assistant turns cannot be told apart",
                    i + 1
                )));
            };
            out.push((before.to_string(), false));
            out.push((turn.to_string(), true));
            done = full;
        }
        let all = self.render(messages, false)?;
        let rest = all.strip_prefix(done.as_str()).ok_or_else(|| {
            Error::InvalidArgument(
                "the chat template renders the whole conversation differently from its turns"
                    .into(),
            )
        })?;
        out.push((rest.to_string(), false));
        out.retain(|(t, _)| !t.is_empty());
        Ok(out)
    }
}
