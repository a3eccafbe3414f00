//! The WGSL sources in `shaders/`, embedded at build time.
//!
//! Each family's file (`shaders/<stem>.wgsl`) is composed with the shared parts it uses
//! from `shaders/common/`: `grid.wgsl` (the 2-D grid index prologues), `block_reduce.wgsl`
//! (workgroup tree reductions over the arrays `red_a` / `red_b`) and `hash.wgsl` (`mix32`).
//! The composition is `concat!` of `include_str!`s, so the registered
//! [`ShaderSource::source`] is one `&'static str` built by the compiler: no run-time cost,
//! no new dependency, and wgpu, naga and the portability test see plain WGSL. The family
//! file comes first (WGSL declarations may appear in any order), so its line numbers in
//! compiler messages are its own; each shared part follows a marker line
//! `// @part shaders/common/<file>.wgsl` from which [`ShaderSource::locate`] maps a line of
//! the composed source back to its file: the pipeline cache leads a parse error with that
//! file and line, and follows a device error with the line ranges of the parts. naga_oil was the alternative: its `#import` modules and name mangling solve
//! problems a handful of unconditional, collision-free helpers do not have (conditional
//! defines, namespacing), at the price of a second WGSL dialect in `shaders/`, a run-time
//! composition step and a dependency that must track naga's version.

/// One shader: its stem and its WGSL text (the family file plus the shared parts it uses).
#[derive(Debug)]
pub struct ShaderSource {
    /// File stem in `shaders/` (also the Rust module that wraps it).
    pub name: &'static str,
    /// WGSL source text.
    pub source: &'static str,
}

/// What precedes a shared part's path in a composed source (the newline ends the part
/// before it; `shader!` writes the same text).
const PART_MARKER: &str = "\n// @part ";

/// One file of a composed shader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Path of the file relative to the crate root (`shaders/norms.wgsl`).
    pub path: String,
    /// Line of the composed source just before the file's first line (0 for the first part).
    pub line_offset: usize,
    /// The file's text.
    pub text: &'static str,
}

impl ShaderSource {
    /// The files this shader is composed of, the family file first.
    pub fn parts(&self) -> Vec<Part> {
        let mut chunks = self.source.split(PART_MARKER);
        let mut parts = vec![Part {
            path: format!("shaders/{}.wgsl", self.name),
            line_offset: 0,
            text: chunks.next().unwrap_or_default(),
        }];
        for chunk in chunks {
            let (path, text) = chunk.split_once('\n').unwrap_or((chunk, ""));
            let prev = parts.last().expect("the family part is first");
            // The previous text, the newline before the marker and the marker line.
            let line_offset = prev.line_offset + prev.text.matches('\n').count() + 2;
            parts.push(Part {
                path: path.to_string(),
                line_offset,
                text,
            });
        }
        parts
    }

    /// The file and its 1-based line for 1-based `line` of [`ShaderSource::source`].
    pub fn locate(&self, line: usize) -> (String, usize) {
        let parts = self.parts();
        let part = parts
            .iter()
            .rev()
            .find(|p| p.line_offset < line)
            .unwrap_or(&parts[0]);
        (part.path.clone(), line - part.line_offset)
    }

    /// A naga parse error as text, led by the file and line it points at.
    pub(crate) fn parse_error(&self, e: &naga::front::wgsl::ParseError) -> String {
        let rendered = e.emit_to_string(self.source);
        match e.location(self.source) {
            Some(loc) => {
                let (path, line) = self.locate(loc.line_number as usize);
                let col = loc.line_position;
                self.with_part_lines(format!("at {path}:{line}:{col}\n{rendered}"))
            }
            None => self.with_part_lines(rendered),
        }
    }

    /// `message` followed, for a composed shader, by the line ranges of its files, so that
    /// line numbers of the composed source (as wgpu reports them) lead to the right file.
    pub(crate) fn with_part_lines(&self, message: String) -> String {
        let parts = self.parts();
        if parts.len() < 2 {
            return message;
        }
        let ranges: Vec<String> = parts
            .iter()
            .map(|p| {
                let lines = p.text.lines().count();
                let first = p.line_offset + 1;
                format!("{} at lines {first}-{}", p.path, p.line_offset + lines)
            })
            .collect();
        format!(
            "{message}\n(composed source: {}; the lines between are part markers)",
            ranges.join(", ")
        )
    }
}

/// A family's shader: `shaders/<name>.wgsl`, then each `shaders/common/<part>.wgsl` after a
/// marker line (see the module docs).
macro_rules! shader {
    ($name:literal $(, $part:literal)* $(,)?) => {
        ShaderSource {
            name: $name,
            source: concat!(
                include_str!(concat!("../../shaders/", $name, ".wgsl")),
                $(
                    "\n// @part shaders/common/", $part, ".wgsl\n",
                    include_str!(concat!("../../shaders/common/", $part, ".wgsl")),
                )*
            ),
        }
    };
}

/// Elementwise add, mul, scale, fill and the vec4 copy.
pub static ELEMENTWISE: ShaderSource = shader!("elementwise", "grid");

/// CapaBoost mask generation and masked sums over branches.
pub static MASKS: ShaderSource = shader!("masks", "grid", "hash");

/// Both masked sums of one adapter's backward in one dispatch.
pub static MASKED_SUMS: ShaderSource = shader!("masked_sums", "grid");

/// Tiled, register-blocked GEMM with transposed and masked-stacked operand views.
pub static GEMM: ShaderSource = shader!("gemm");

/// GELU, tanh, ReLU and dropout with their gradients, the bias add and its column sum.
pub static ACTIVATIONS: ShaderSource = shader!("activations", "grid", "hash");

/// GEMMs through a frozen weight in a ggml block format (Q4_0, Q4_1, Q8_0).
pub static QGEMM: ShaderSource = shader!("qgemm");

/// Rotary position embeddings (llama.cpp's adjacent pairs), forward and backward.
pub static ROPE: ShaderSource = shader!("rope", "grid");

/// RMSNorm forward and its gradient with respect to x (frozen weight).
pub static RMSNORM: ShaderSource = shader!("rmsnorm", "grid", "block_reduce");

/// SwiGLU `silu(g) u` and its gradients.
pub static SWIGLU: ShaderSource = shader!("swiglu", "grid");

/// Embedding lookup and masked mean pooling with its backward.
pub static LOOKUP: ShaderSource = shader!("lookup", "grid");

/// AdamW update, global gradient norm and clip coefficient.
pub static OPTIM: ShaderSource = shader!("optim", "grid", "block_reduce");

/// LayerNorm and (masked) softmax, forward and backward, one workgroup per row.
pub static NORMS: ShaderSource = shader!("norms", "grid", "block_reduce");

/// Staged sums to a scalar, MSE and cross-entropy losses and their backward kernels.
pub static REDUCE: ShaderSource = shader!("reduce", "grid", "block_reduce");

/// Middle-dims swap for the attention head split and merge.
pub static LAYOUT: ShaderSource = shader!("layout", "grid");

/// The split-K GEMM's second pass: the fixed-order sum of the partials and the epilogue.
pub static SPLITK: ShaderSource = shader!("splitk", "grid");

/// Every shader the crate ships; the portability test translates each of them.
pub static ALL: &[&ShaderSource] = &[
    &ELEMENTWISE,
    &MASKS,
    &MASKED_SUMS,
    &GEMM,
    &ACTIVATIONS,
    &LOOKUP,
    &OPTIM,
    &NORMS,
    &REDUCE,
    &LAYOUT,
    &SPLITK,
    &QGEMM,
    &ROPE,
    &RMSNORM,
    &SWIGLU,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_the_composed_source_and_locate_maps_lines_back() {
        let parts = NORMS.parts();
        let paths: Vec<_> = parts.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "shaders/norms.wgsl",
                "shaders/common/grid.wgsl",
                "shaders/common/block_reduce.wgsl"
            ]
        );
        let lines: Vec<&str> = NORMS.source.lines().collect();
        for p in &parts {
            for (k, text) in p.text.lines().enumerate() {
                assert_eq!(lines[p.line_offset + k], text, "{}:{}", p.path, k + 1);
                assert_eq!(NORMS.locate(p.line_offset + k + 1), (p.path.clone(), k + 1));
            }
        }
    }

    #[test]
    fn parse_errors_name_the_part_and_its_line() {
        let s = ShaderSource {
            name: "family",
            source: "fn main() { f(); }\n// @part shaders/common/x.wgsl\nfn g() {}\nfn f() { let a = ; }\n",
        };
        let e = naga::front::wgsl::parse_str(s.source).unwrap_err();
        let message = s.parse_error(&e);
        assert!(
            message.starts_with("at shaders/common/x.wgsl:2:"),
            "{message}"
        );
        assert!(
            message.contains("shaders/common/x.wgsl at lines 3-4"),
            "{message}"
        );
    }

    #[test]
    fn a_plain_source_is_one_part() {
        let s = ShaderSource {
            name: "plain",
            source: "fn f() {}\n",
        };
        assert_eq!(s.parts().len(), 1);
        assert_eq!(s.locate(1), ("shaders/plain.wgsl".to_string(), 1));
        assert_eq!(s.with_part_lines("m".into()), "m");
    }
}
