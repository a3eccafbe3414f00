//! Text generation with the GPU model: the prompt in one pass, then one token at a time
//! through a [`KvCache`]; only the last position goes through the output head. Greedy
//! (argmax, the first on ties) without a temperature, else temperature and top-p sampling
//! from a seeded generator, on the host from the read-back logits.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use super::{KvCache, Llama};
use crate::nn::Graph;
use crate::runtime::error::{Error, Result};

/// How the next token is picked.
#[derive(Clone, Debug)]
pub struct Sampling {
    /// Softmax temperature; `None` is greedy.
    pub temperature: Option<f32>,
    /// Nucleus mass kept (1 keeps everything).
    pub top_p: f32,
    /// Seed of the sampler.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: None,
            top_p: 1.0,
            seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let t_ok = self.temperature.is_none_or(|t| t.is_finite() && t > 0.0);
        if !(t_ok && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "sampling: temperature {:?} must be positive and top-p {} in (0, 1]",
                self.temperature, self.top_p
            )));
        }
        Ok(())
    }
}

/// What [`Llama::generate`] produced.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The new ids (the EOS that stopped it included).
    pub ids: Vec<u32>,
    /// Seconds for the prompt pass (its first token included).
    pub prompt_secs: f64,
    /// Seconds for the following tokens.
    pub decode_secs: f64,
}

/// The index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// A token drawn from `softmax(logits / t)` restricted to the smallest set of most likely
/// tokens whose mass reaches `top_p`.
pub fn sample(logits: &[f32], t: f32, top_p: f32, rng: &mut impl Rng) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut p: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, (((l - max) / t) as f64).exp()))
        .collect();
    p.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = p.iter().map(|x| x.1).sum();
    let (mut kept, mut mass) = (0, 0.0);
    while kept < p.len() && (kept == 0 || mass < top_p as f64 * total) {
        mass += p[kept].1;
        kept += 1;
    }
    let mut r = rng.random::<f64>() * mass;
    for &(i, w) in &p[..kept] {
        if r < w {
            return i;
        }
        r -= w;
    }
    p[kept - 1].0
}

impl Llama {
    /// The logits `[vocab]` of the last of `ids` placed after the cached positions.
    fn next_logits(&self, cache: &mut KvCache, ids: &[u32]) -> Result<Vec<f32>> {
        let gpu = self.embedding.gpu().clone();
        let mut g = Graph::no_grad(&gpu);
        let x = self.embed(&mut g, ids)?;
        let start = cache.len();
        let h = self.blocks(&mut g, &x, start, Some(cache))?;
        let last = g.select_rows(&h, &[ids.len() as u32 - 1])?;
        let y = self.logits(&mut g, &last)?;
        g.submit()?;
        y.value().to_vec()
    }

    /// Up to `max_new` tokens after `prompt`, stopping after `eos` (when given) or at the
    /// end of the context; `on_token` sees each new id as it comes. A prompt that does not
    /// leave room for one token in the context is refused.
    pub fn generate(
        &self,
        prompt: &[u32],
        (max_new, eos): (usize, Option<u32>),
        sampling: &Sampling,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        sampling.validate()?;
        let context = self.config.context;
        if prompt.is_empty() || prompt.len() >= context {
            return Err(Error::InvalidArgument(format!(
                "generate: a prompt of {} tokens must be non-empty and shorter than the \
                 model's context of {context}",
                prompt.len()
            )));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(sampling.seed);
        let mut pick = |logits: &[f32]| -> u32 {
            (match sampling.temperature {
                None => argmax(logits),
                Some(t) => sample(logits, t, sampling.top_p, &mut rng),
            }) as u32
        };
        let mut cache = KvCache::new(self.config.layers);
        let (start, mut ids) = (Instant::now(), Vec::new());
        let mut input = prompt.to_vec();
        let mut prompt_secs = 0.0;
        while ids.len() < max_new && cache.len() + input.len() <= context {
            let next = pick(&self.next_logits(&mut cache, &input)?);
            if ids.is_empty() {
                prompt_secs = start.elapsed().as_secs_f64();
            }
            ids.push(next);
            on_token(next)?;
            if Some(next) == eos {
                break;
            }
            input = vec![next];
        }
        let decode_secs = start.elapsed().as_secs_f64() - prompt_secs;
        Ok(Generation {
            ids,
            prompt_secs,
            decode_secs,
        })
    }
}
