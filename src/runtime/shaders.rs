//! The WGSL sources in `shaders/`, embedded at build time.

/// One WGSL file: its stem and its text.
#[derive(Debug)]
pub struct ShaderSource {
    /// File stem in `shaders/` (also the Rust module that wraps it).
    pub name: &'static str,
    /// WGSL source text.
    pub source: &'static str,
}

macro_rules! shader {
    ($name:literal) => {
        ShaderSource {
            name: $name,
            source: include_str!(concat!("../../shaders/", $name, ".wgsl")),
        }
    };
}

/// Elementwise add, mul, scale, fill and the vec4 copy.
pub static ELEMENTWISE: ShaderSource = shader!("elementwise");

/// CapaBoost mask generation and masked sums over branches.
pub static MASKS: ShaderSource = shader!("masks");

/// Tiled, register-blocked GEMM with transposed and masked-stacked operand views.
pub static GEMM: ShaderSource = shader!("gemm");

/// GELU, tanh, ReLU and dropout with their gradients, the bias add and its column sum.
pub static ACTIVATIONS: ShaderSource = shader!("activations");

/// Embedding lookup and masked mean pooling with its backward.
pub static LOOKUP: ShaderSource = shader!("lookup");

/// AdamW update, global gradient norm and clip coefficient.
pub static OPTIM: ShaderSource = shader!("optim");

/// LayerNorm and (masked) softmax, forward and backward, one workgroup per row.
pub static NORMS: ShaderSource = shader!("norms");

/// Staged sums to a scalar, MSE and cross-entropy losses and their backward kernels.
pub static REDUCE: ShaderSource = shader!("reduce");

/// Middle-dims swap for the attention head split and merge.
pub static LAYOUT: ShaderSource = shader!("layout");

/// Every shader the crate ships; the portability test translates each of them.
pub static ALL: &[&ShaderSource] = &[
    &ELEMENTWISE,
    &MASKS,
    &GEMM,
    &ACTIVATIONS,
    &LOOKUP,
    &OPTIM,
    &NORMS,
    &REDUCE,
    &LAYOUT,
];
