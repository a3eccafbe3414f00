//! `--targets`: which projections of every block get adapters, for encoders and decoders.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::models::bert::Target;
use crate::models::llama::LlamaTarget;
use crate::runtime::error::{Error, Result};

/// The adapted projections of every block: a comma-separated list of names on the command
/// line (or `all-linear`), a list in `config.json`. Encoder names (`query`, `key`,
/// `value`, `attention_output`, `intermediate`, `output`) and decoder names (`q`, `k`,
/// `v`, `o`, `gate`, `up`, `down`, or `q_proj` ...) are both accepted here; the task
/// takes the ones its model has ([`Targets::encoder`], [`Targets::decoder`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TargetsRepr", into = "Vec<String>")]
pub struct Targets(Vec<TargetName>);

/// One parsed target name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TargetName {
    Encoder(Target),
    Decoder(LlamaTarget),
    AllLinear,
}

impl TargetName {
    fn text(self) -> &'static str {
        match self {
            TargetName::Encoder(t) => t.name(),
            TargetName::Decoder(t) => t.name(),
            TargetName::AllLinear => "all-linear",
        }
    }
}

/// `config.json` accepts the list form and the command-line string form.
#[derive(Deserialize)]
#[serde(untagged)]
enum TargetsRepr {
    List(Vec<String>),
    Text(String),
}

impl TryFrom<TargetsRepr> for Targets {
    type Error = Error;

    fn try_from(r: TargetsRepr) -> Result<Targets> {
        match r {
            TargetsRepr::List(v) => v.join(",").parse(),
            TargetsRepr::Text(s) => s.parse(),
        }
    }
}

impl From<Targets> for Vec<String> {
    fn from(t: Targets) -> Vec<String> {
        t.0.iter().map(|n| n.text().to_string()).collect()
    }
}

impl Targets {
    /// Targets of the given encoder projections.
    pub fn of(targets: &[Target]) -> Targets {
        Targets(targets.iter().map(|&t| TargetName::Encoder(t)).collect())
    }

    /// The encoder projections named (a decoder name is an error naming it).
    pub fn encoder(&self) -> Result<Vec<Target>> {
        let mut out = Vec::new();
        for n in &self.0 {
            match *n {
                TargetName::Encoder(t) => out.push(t),
                TargetName::AllLinear => out.extend(Target::ALL),
                // (duplicates are dropped below)
                TargetName::Decoder(t) => {
                    return Err(Error::InvalidArgument(format!(
                        "--targets {}: a decoder projection; an encoder's targets are query, \
                         key, value, attention_output, intermediate, output or all-linear",
                        t.name()
                    )));
                }
            }
        }
        let mut seen = Vec::new();
        out.retain(|t| {
            let new = !seen.contains(t);
            seen.push(*t);
            new
        });
        Ok(out)
    }

    /// The decoder projections named; the encoder names `query`, `key`, `value`,
    /// `attention_output` and `output` stand for `q`, `k`, `v`, `o` and `down` (so the
    /// default `query,value` is LoRA's usual `q,v`); `intermediate` is ambiguous (gate or
    /// up) and an error.
    pub fn decoder(&self) -> Result<Vec<LlamaTarget>> {
        let mut out = Vec::new();
        for n in &self.0 {
            let t = match *n {
                TargetName::Decoder(t) => t,
                TargetName::AllLinear => {
                    out.extend(LlamaTarget::ALL);
                    continue;
                }
                TargetName::Encoder(Target::Query) => LlamaTarget::Q,
                TargetName::Encoder(Target::Key) => LlamaTarget::K,
                TargetName::Encoder(Target::Value) => LlamaTarget::V,
                TargetName::Encoder(Target::AttentionOutput) => LlamaTarget::O,
                TargetName::Encoder(Target::Output) => LlamaTarget::Down,
                TargetName::Encoder(Target::Intermediate) => {
                    return Err(Error::InvalidArgument(
                        "--targets intermediate: a decoder block has gate and up instead; \
                         its targets are q, k, v, o, gate, up, down or all-linear"
                            .into(),
                    ));
                }
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }
}

impl FromStr for Targets {
    type Err = Error;

    /// Parses a comma-separated list of target names, or `all-linear`.
    fn from_str(s: &str) -> Result<Targets> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let name = if part == "all-linear" {
                TargetName::AllLinear
            } else if let Some(t) = Target::ALL.into_iter().find(|t| t.name() == part) {
                TargetName::Encoder(t)
            } else if let Some(t) = LlamaTarget::parse(part) {
                TargetName::Decoder(t)
            } else {
                return Err(Error::InvalidArgument(format!(
                    "unknown target {part:?}: expected query, key, value, attention_output, \
                     intermediate, output (encoders), q, k, v, o, gate, up, down (decoders) \
                     or all-linear"
                )));
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        if out.is_empty() {
            return Err(Error::InvalidArgument("no adapter targets given".into()));
        }
        Ok(Targets(out))
    }
}

impl std::fmt::Display for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|t| t.text()).collect();
        f.write_str(&names.join(","))
    }
}
