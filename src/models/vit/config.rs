//! `config.json` of a transformers `ViTModel` (`model_type` `vit`) or `Dinov2Model`
//! (`dinov2`): the two layouts as one configuration.

use std::path::Path;

use serde::Deserialize;

use crate::models::bert::Target;
use crate::runtime::error::{Error, Result};

/// Which checkpoint layout (module names, layer scale, MLP naming).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VitLayout {
    /// `ViTModel` (`google/vit-*`): `layernorm_before/after`, `intermediate.dense`,
    /// `output.dense`, no layer scale.
    Vit,
    /// `Dinov2Model`: `norm1/norm2`, `mlp.fc1/fc2`, `layer_scale1/2.lambda1`.
    Dinov2,
}

impl VitLayout {
    /// The HF module path of `t` inside `encoder.layer.{i}`.
    pub fn module(self, t: Target) -> &'static str {
        match (self, t) {
            (_, Target::Query) => "attention.attention.query",
            (_, Target::Key) => "attention.attention.key",
            (_, Target::Value) => "attention.attention.value",
            (_, Target::AttentionOutput) => "attention.output.dense",
            (VitLayout::Vit, Target::Intermediate) => "intermediate.dense",
            (VitLayout::Vit, Target::Output) => "output.dense",
            (VitLayout::Dinov2, Target::Intermediate) => "mlp.fc1",
            (VitLayout::Dinov2, Target::Output) => "mlp.fc2",
        }
    }

    /// The module of `t` in transformers 5's runtime model (and so in PEFT's adapter
    /// files): `attention.q_proj`, ..., `mlp.fc1`, `mlp.fc2`.
    pub fn peft_module(self, t: Target) -> &'static str {
        match t {
            Target::Query => "attention.q_proj",
            Target::Key => "attention.k_proj",
            Target::Value => "attention.v_proj",
            Target::AttentionOutput => "attention.o_proj",
            Target::Intermediate => "mlp.fc1",
            Target::Output => "mlp.fc2",
        }
    }

    /// The path of layer `i` in transformers 5's runtime model: `layers.{i}` (ViT),
    /// `encoder.layer.{i}` (Dinov2).
    pub fn peft_layer(self, i: usize) -> String {
        match self {
            VitLayout::Vit => format!("layers.{i}"),
            VitLayout::Dinov2 => format!("encoder.layer.{i}"),
        }
    }

    /// The two norms of a layer: before attention, before the MLP.
    pub fn norms(self) -> [&'static str; 2] {
        match self {
            VitLayout::Vit => ["layernorm_before", "layernorm_after"],
            VitLayout::Dinov2 => ["norm1", "norm2"],
        }
    }

    /// The `model_type` of config.json.
    pub fn model_type(self) -> &'static str {
        match self {
            VitLayout::Vit => "vit",
            VitLayout::Dinov2 => "dinov2",
        }
    }
}

/// The encoder's configuration.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VitConfig {
    /// Checkpoint layout.
    pub layout: VitLayout,
    /// Hidden width H.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// MLP width (Dinov2: `hidden_size * mlp_ratio`).
    pub intermediate_size: usize,
    /// The image size the position table was trained at.
    pub image_size: usize,
    /// Square patch side.
    pub patch_size: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Layer norm epsilon.
    pub layer_norm_eps: f32,
    /// Whether query, key and value have biases.
    pub qkv_bias: bool,
}

/// An int or a `[h, w]` pair with h = w.
#[derive(Deserialize)]
#[serde(untagged)]
enum Side {
    One(usize),
    Pair(Vec<usize>),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: Option<usize>,
    mlp_ratio: Option<f64>,
    image_size: Side,
    patch_size: Side,
    #[serde(default = "three")]
    num_channels: usize,
    layer_norm_eps: Option<f32>,
    #[serde(default = "gelu")]
    hidden_act: String,
    #[serde(default = "yes")]
    qkv_bias: bool,
    #[serde(default)]
    use_swiglu_ffn: bool,
}

fn three() -> usize {
    3
}
fn gelu() -> String {
    "gelu".into()
}
fn yes() -> bool {
    true
}

fn side(s: &Side, field: &str) -> std::result::Result<usize, String> {
    match s {
        Side::One(n) => Ok(*n),
        Side::Pair(v) if v.len() == 2 && v[0] == v[1] => Ok(v[0]),
        Side::Pair(v) => Err(format!(
            "{field} {v:?} is not square (only square is supported)"
        )),
    }
}

impl VitConfig {
    /// Reads and checks `dir/config.json`; errors name the file and the field.
    pub fn read(dir: &Path) -> Result<VitConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&text).map_err(|message| Error::File {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses a config.json text.
    pub fn parse(text: &str) -> std::result::Result<VitConfig, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        if !matches!(model_type, "vit" | "dinov2") {
            return Err(format!(
                "model_type {model_type:?} is not a supported vision encoder (vit, dinov2)"
            ));
        }
        let raw: Raw =
            serde_json::from_value(value).map_err(|e| format!("not a ViT config: {e}"))?;
        let layout = match raw.model_type.as_str() {
            "vit" => VitLayout::Vit,
            "dinov2" => VitLayout::Dinov2,
            other => {
                return Err(format!(
                    "model_type {other:?} is not a supported vision encoder (vit, dinov2)"
                ));
            }
        };
        if raw.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act {:?} is not supported (gelu only)",
                raw.hidden_act
            ));
        }
        if raw.use_swiglu_ffn {
            return Err("use_swiglu_ffn is not supported".into());
        }
        let h = raw.hidden_size;
        let heads = raw.num_attention_heads;
        if heads == 0 || !h.is_multiple_of(heads) {
            return Err(format!(
                "hidden_size {h} is not a multiple of {heads} heads"
            ));
        }
        let intermediate_size = match (layout, raw.intermediate_size, raw.mlp_ratio) {
            (VitLayout::Vit, Some(n), _) => n,
            (VitLayout::Dinov2, _, Some(r)) => (h as f64 * r) as usize,
            (VitLayout::Dinov2, _, None) => 4 * h,
            (VitLayout::Vit, None, _) => return Err("intermediate_size is missing".into()),
        };
        let (image_size, patch_size) = (
            side(&raw.image_size, "image_size")?,
            side(&raw.patch_size, "patch_size")?,
        );
        if patch_size == 0 || image_size < patch_size {
            return Err(format!(
                "patch_size {patch_size} does not fit image_size {image_size}"
            ));
        }
        let eps = match layout {
            VitLayout::Vit => 1e-12,
            VitLayout::Dinov2 => 1e-6,
        };
        Ok(VitConfig {
            layout,
            hidden_size: h,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: heads,
            intermediate_size,
            image_size,
            patch_size,
            num_channels: raw.num_channels,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(eps),
            qkv_bias: raw.qkv_bias,
        })
    }

    /// Side of the trained position grid (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}
