//! The HF tokenizer of a model folder and the padded batches it feeds the encoder.

use std::path::Path;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};

/// A tokenized, padded batch on the GPU.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, S]` token ids.
    pub ids: Indices,
    /// `[B, S]` token type ids.
    pub type_ids: Indices,
    /// `[B, S]` position ids.
    pub positions: Indices,
    /// `[B, S]`: 1 for tokens, 0 for padding.
    pub mask: Tensor,
    /// `[B, S]`: 0 for tokens, `f32::MIN` for padding (added to attention scores).
    pub additive_mask: Tensor,
    /// Batch size.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
}

/// One tokenized input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids (with `[CLS]` and `[SEP]`).
    pub ids: Vec<u32>,
    /// Token type ids.
    pub type_ids: Vec<u32>,
}

impl Batch {
    /// Pads `items` to the longest one and uploads ids, types, positions and masks.
    pub fn new(gpu: &Gpu, items: &[Encoded], vocab: usize) -> Result<Self> {
        let b = items.len();
        let s = items.iter().map(|e| e.ids.len()).max().unwrap_or(0);
        if b == 0 || s == 0 {
            return Err(Error::InvalidArgument("an empty batch".into()));
        }
        let (mut ids, mut types, mut pos, mut mask, mut add) = (
            vec![0u32; b * s],
            vec![0u32; b * s],
            vec![0u32; b * s],
            vec![0f32; b * s],
            vec![f32::MIN; b * s],
        );
        for (i, e) in items.iter().enumerate() {
            crate::kernels::lookup::check_ids(&e.ids, vocab)?;
            for (j, (&id, &t)) in e.ids.iter().zip(&e.type_ids).enumerate() {
                ids[i * s + j] = id;
                types[i * s + j] = t;
                mask[i * s + j] = 1.0;
                add[i * s + j] = 0.0;
            }
            for j in 0..s {
                pos[i * s + j] = j as u32;
            }
        }
        Ok(Self {
            ids: Indices::from_slice(gpu, &ids, &[b, s])?,
            type_ids: Indices::from_slice(gpu, &types, &[b, s])?,
            positions: Indices::from_slice(gpu, &pos, &[b, s])?,
            mask: Tensor::from_slice(gpu, &mask, &[b, s])?,
            additive_mask: Tensor::from_slice(gpu, &add, &[b, s])?,
            batch: b,
            seq: s,
        })
    }
}

/// The HF tokenizer of a model folder, with padding off (batches pad to their longest
/// input) and truncation at `max_len`.
pub struct BertTokenizer {
    inner: tokenizers::Tokenizer,
}

impl BertTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path, max_len: usize) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::io(
                &path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::InvalidArgument(format!("truncation: {e}")))?;
        Ok(Self { inner })
    }

    /// Tokenizes one sentence or a sentence pair.
    pub fn encode(&self, a: &str, b: Option<&str>) -> Result<Encoded> {
        self.encode_checked(a, b).map(|(e, _)| e)
    }

    /// [`BertTokenizer::encode`], and whether the input was cut at `max_len`.
    pub fn encode_checked(&self, a: &str, b: Option<&str>) -> Result<(Encoded, bool)> {
        let input: tokenizers::EncodeInput = match b {
            Some(b) => (a, b).into(),
            None => a.into(),
        };
        let e = self
            .inner
            .encode(input, true)
            .map_err(|e| Error::InvalidArgument(format!("tokenizing {a:?}: {e}")))?;
        let truncated = !e.get_overflowing().is_empty();
        let encoded = Encoded {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
        };
        Ok((encoded, truncated))
    }
}
