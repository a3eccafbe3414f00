//! Loading a BERT-architecture checkpoint folder: `config.json` and `model.safetensors`,
//! with the checks and messages a user needs.

use std::path::Path;

use super::{Bert, BertConfig, BertLayer, Proj, Target};
use crate::models::common::Weights;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::io::TensorFile;

/// Reads and checks `dir/config.json`: a BERT encoder with GELU and whole heads.
fn read_config(dir: &Path) -> Result<BertConfig> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let bad = |message: String| Error::File {
        path: cfg_path.display().to_string(),
        message,
    };
    let config: BertConfig =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a BERT config: {e}")))?;
    if config.model_type != "bert" {
        return Err(bad(format!(
            "model_type {:?} is not supported: capaboost runs BERT-architecture \
             encoders (model_type \"bert\")",
            config.model_type
        )));
    }
    if config.hidden_act != "gelu" {
        return Err(bad(format!(
            "hidden_act {:?} is not supported (gelu only)",
            config.hidden_act
        )));
    }
    let (h, heads) = (config.hidden_size, config.num_attention_heads);
    if heads == 0 || !h.is_multiple_of(heads) {
        return Err(bad(format!(
            "hidden_size {h} is not a multiple of {heads} heads"
        )));
    }
    Ok(config)
}

impl BertConfig {
    /// Reads and checks `dir/config.json`: a BERT encoder with GELU and whole heads.
    /// Errors name the file.
    pub fn read(dir: &Path) -> Result<BertConfig> {
        read_config(dir)
    }
}

impl Weights<'_> {
    /// Encoder layer `i`: its six projections (frozen) and two layer norms.
    fn layer(&self, config: &BertConfig, i: usize) -> Result<BertLayer> {
        let (h, ffn) = (config.hidden_size, config.intermediate_size);
        let p = format!("encoder.layer.{i}.");
        let l = |t: Target| -> Result<Proj> {
            let (o, n) = match t {
                Target::Intermediate => (ffn, h),
                Target::Output => (h, ffn),
                _ => (h, h),
            };
            Ok(Proj::Base(self.linear(
                &format!("{p}{}", t.module()),
                o,
                n,
            )?))
        };
        Ok(BertLayer {
            proj: [
                l(Target::Query)?,
                l(Target::Key)?,
                l(Target::Value)?,
                l(Target::AttentionOutput)?,
                l(Target::Intermediate)?,
                l(Target::Output)?,
            ],
            attn_norm: self.norm(&format!("{p}attention.output.LayerNorm"), h)?,
            out_norm: self.norm(&format!("{p}output.LayerNorm"), h)?,
            attn_adapter: None,
            ffn_adapter: None,
        })
    }
}

impl Bert {
    /// Loads a BERT-architecture checkpoint folder (HF layout).
    pub fn load(gpu: &Gpu, dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let h = config.hidden_size;
        let file = TensorFile::read(&dir.join("model.safetensors"))?;
        let prefix = if file.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let w = Weights {
            file: &file,
            prefix,
            gpu,
        };
        let word = w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = w.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = w.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let emb_norm = w.norm("embeddings.LayerNorm", h)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| w.layer(&config, i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            config,
            dir: dir.to_path_buf(),
        })
    }
}
