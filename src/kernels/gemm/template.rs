//! The register-only GEMM family, generated from one template: [`wgsl`] writes the WGSL of
//! a [`Shape`] (outputs per invocation, workgroup size) for a [`Spec`] (how each operand is
//! loaded, edge-guarded or aligned). No workgroup memory and no barriers: each invocation
//! keeps its `TM x TN` block of C in vec4 registers and walks K four at a time, the code
//! fully unrolled with constant indices (so the compiler keeps every array in registers).
//!
//! Operands go through the same views as `shaders/gemm.wgsl` (`A_MODE` / `B_MODE` override
//! constants, masks applied while loading); a dense operand whose stored layout is
//! contiguous along a multiple-of-4 dimension is instead bound as `array<vec4<f32>>` and read
//! 16 bytes at a time ([`ALoad`], [`BLoad`]). Edge-guarded variants clamp the row and column
//! they load (so every load is in range without a branch) and guard only the stores;
//! aligned variants, used when the tile grid covers M and N exactly and K is a multiple of
//! 4, do neither.

use std::fmt::Write;
use std::sync::OnceLock;

use crate::runtime::shaders::ShaderSource;

/// Outputs per invocation and workgroup size of one register-only variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Rows of C per invocation (a multiple of 4).
    pub tm: u32,
    /// Columns of C per invocation (a multiple of 4).
    pub tn: u32,
    /// Workgroup size along N.
    pub wx: u32,
    /// Workgroup size along M.
    pub wy: u32,
}

impl Shape {
    /// Rows of C one workgroup covers.
    pub fn rows(&self) -> u32 {
        self.tm * self.wy
    }

    /// Columns of C one workgroup covers.
    pub fn cols(&self) -> u32 {
        self.tn * self.wx
    }

    /// A short name, `r8x8w8x8`.
    pub fn label(&self) -> String {
        format!("r{}x{}w{}x{}", self.tm, self.tn, self.wx, self.wy)
    }
}

/// The register-only shapes, in the order the autotuner tries them.
pub const SHAPES: [Shape; 5] = [
    Shape {
        tm: 8,
        tn: 8,
        wx: 8,
        wy: 8,
    },
    Shape {
        tm: 4,
        tn: 4,
        wx: 8,
        wy: 8,
    },
    Shape {
        tm: 4,
        tn: 8,
        wx: 8,
        wy: 8,
    },
    // Narrow N (the adapter's d r columns) and narrow M (its d r rows).
    Shape {
        tm: 4,
        tn: 4,
        wx: 4,
        wy: 16,
    },
    Shape {
        tm: 4,
        tn: 4,
        wx: 16,
        wy: 4,
    },
];

pub use super::loads::{ALoad, BLoad, HalfRead};

pub(super) const A_LOADS: [ALoad; 3] = [ALoad::Scalar, ALoad::VecK, ALoad::VecM];
/// The f32 loads of B (the workgroup-memory family reads only these).
pub(super) const B_LOADS: [BLoad; 3] = [BLoad::Scalar, BLoad::VecN, BLoad::VecK];
/// Every load of B the register family generates: f32, packed f16, native f16.
const B_LOADS_ALL: [BLoad; 9] = [
    BLoad::Scalar,
    BLoad::VecN,
    BLoad::VecK,
    BLoad::F16Scalar,
    BLoad::F16N,
    BLoad::F16K,
    BLoad::NativeScalar,
    BLoad::NativeN,
    BLoad::NativeK,
];

/// Everything one generated source depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Index into [`SHAPES`].
    pub shape: usize,
    /// Load of A.
    pub a: ALoad,
    /// Load of B.
    pub b: BLoad,
    /// No clamps and no store guards (the host proved the grid exact and `K % 4 == 0`).
    pub aligned: bool,
}

impl Spec {
    fn index(&self) -> usize {
        let a = A_LOADS.iter().position(|&x| x == self.a).unwrap_or(0);
        let b = B_LOADS_ALL.iter().position(|&x| x == self.b).unwrap_or(0);
        ((self.shape * A_LOADS.len() + a) * B_LOADS_ALL.len() + b) * 2 + self.aligned as usize
    }

    fn name(&self) -> String {
        let a = ["s", "k", "m"][A_LOADS.iter().position(|&x| x == self.a).unwrap_or(0)];
        let b = ["s", "n", "k", "hs", "hn", "hk", "fs", "fn", "fk"]
            [B_LOADS_ALL.iter().position(|&x| x == self.b).unwrap_or(0)];
        let g = if self.aligned { "al" } else { "g" };
        format!("gemm_{}_a{a}_b{b}_{g}", SHAPES[self.shape].label())
    }

    /// The registered source of this spec.
    pub fn source(&self) -> &'static ShaderSource {
        generated()[self.index()]
    }
}

/// Every generated GEMM source (each shape x A load x B load x guard), built once; the
/// portability test translates each of them. Names and texts are leaked once per process
/// so that the pipeline cache can key them like the static shaders.
pub fn generated() -> &'static [&'static ShaderSource] {
    static ALL: OnceLock<Vec<&'static ShaderSource>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut out = Vec::new();
        each_spec(SHAPES.len(), &B_LOADS_ALL, |shape, a, b, aligned| {
            let spec = Spec {
                shape,
                a,
                b,
                aligned,
            };
            debug_assert_eq!(spec.index(), out.len());
            out.push(leak(spec.name(), wgsl(&spec)));
        });
        out
    })
}

/// Calls `f` for each (variant, A load, B load in `b_loads`, aligned) in index order: the
/// enumeration both generated families register their sources in.
pub(super) fn each_spec(
    variants: usize,
    b_loads: &[BLoad],
    mut f: impl FnMut(usize, ALoad, BLoad, bool),
) {
    for v in 0..variants {
        for a in A_LOADS {
            for &b in b_loads {
                f(v, a, b, false);
                f(v, a, b, true);
            }
        }
    }
}

/// A generated source, leaked once per process so the pipeline cache can key it like the
/// static shaders.
pub(super) fn leak(name: String, source: String) -> &'static ShaderSource {
    Box::leak(Box::new(ShaderSource {
        name: Box::leak(name.into_boxed_str()),
        source: Box::leak(source.into_boxed_str()),
    }))
}

/// The header of a register-only variant (see [`header_for`]).
fn header(spec: &Spec) -> String {
    let s = SHAPES[spec.shape];
    let comment = format!(
        "{}: register-only GEMM, no\n// workgroup memory, {}x{} outputs per invocation, workgroup {}x{}.",
        spec.name(),
        s.tm,
        s.tn,
        s.wx,
        s.wy
    );
    header_for(&comment, spec.a != ALoad::Scalar, spec.b)
}

/// The header every generated GEMM shares: parameters (the layout of `shaders/gemm.wgsl`),
/// bindings (A as `array<vec4<f32>>` where `a_vec`; B as `vec4<f32>`, `f32` or packed f16
/// `u32` by its load `b`), mask bits, the
/// element accessors `ae` / `be` over a scalar or vec4 binding and the operand views
/// `load_a` / `load_b` over them.
pub(super) fn header_for(comment: &str, a_vec: bool, b: BLoad) -> String {
    let ty = |vec: bool| if vec { "vec4<f32>" } else { "f32" };
    let b_ty = match b {
        BLoad::Scalar => "f32",
        BLoad::VecN | BLoad::VecK => "vec4<f32>",
        BLoad::NativeScalar => "f16",
        BLoad::NativeN | BLoad::NativeK => "vec4<f16>",
        _ => "u32",
    };
    let elem = |v: &str, vec: bool| {
        if vec {
            format!("let q = {v}[e >> 2u]; return q[e & 3u];")
        } else {
            format!("return {v}[e];")
        }
    };
    format!(
        "{enable}// Generated by src/kernels/gemm/ ({comment})
override A_MODE: u32 = 0u;
override B_MODE: u32 = 0u;
override HAS_BIAS: bool = false;

struct Params {{
    m: u32, n: u32, k: u32, r: u32,
    stride_a: u32, stride_b: u32, stride_c: u32, kz: u32,
    alpha: f32, beta: f32, kl: u32, _pad2: u32,
}}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{a_ty}>;
@group(0) @binding(2) var<storage, read> a_bits: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<{b_ty}>;
@group(0) @binding(4) var<storage, read> b_bits: array<u32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

fn ae(e: u32) -> f32 {{ {ae} }}
fn be(e: u32) -> f32 {{ {be} }}
fn a_bit(e: u32) -> bool {{ return ((a_bits[e >> 5u] >> (e & 31u)) & 1u) == 1u; }}
fn b_bit(e: u32) -> bool {{ return ((b_bits[e >> 5u] >> (e & 31u)) & 1u) == 1u; }}
{views}",
        enable = if b.is_native() { "enable f16;\n" } else { "" },
        a_ty = ty(a_vec),
        ae = elem("a", a_vec),
        be = match b {
            BLoad::F16Scalar | BLoad::F16N | BLoad::F16K => {
                "return unpack2x16float(b[e >> 1u])[e & 1u];".to_string()
            }
            BLoad::NativeScalar => "return f32(b[e]);".to_string(),
            BLoad::NativeN | BLoad::NativeK => {
                "let q = b[e >> 2u]; return f32(q[e & 3u]);".to_string()
            }
            _ => elem("b", b != BLoad::Scalar),
        },
        views = VIEWS,
    )
}

/// The operand views of `shaders/gemm.wgsl` over the accessors `ae` / `be` (also used by
/// the cooperative-matrix GEMM, [`super::coop`]).
pub(crate) const VIEWS: &str = "
fn load_a(row: u32, col: u32, off: u32) -> f32 {
    let R = p.m;
    let C = p.k;
    let r = p.r;
    switch A_MODE {
        case 0u: { return ae(off + row * C + col); }
        case 1u: { return ae(off + col * R + row); }
        case 2u: { return select(0.0, ae((row % r) * C + col), a_bit(row * C + col)); }
        case 3u: { return select(0.0, ae((col % r) * R + row), a_bit(col * R + row)); }
        case 4u: { return select(0.0, ae(row * r + col % r), a_bit((col / r) * R * r + row * r + col % r)); }
        default: { return select(0.0, ae(col * r + row % r), a_bit((row / r) * C * r + col * r + row % r)); }
    }
}

fn load_b(row: u32, col: u32, off: u32) -> f32 {
    let R = p.k;
    let C = p.n;
    let r = p.r;
    switch B_MODE {
        case 0u: { return be(off + row * C + col); }
        case 1u: { return be(off + col * R + row); }
        case 2u: { return select(0.0, be((row % r) * C + col), b_bit(row * C + col)); }
        case 3u: { return select(0.0, be((col % r) * R + row), b_bit(col * R + row)); }
        case 4u: { return select(0.0, be(row * r + col % r), b_bit((col / r) * R * r + row * r + col % r)); }
        default: { return select(0.0, be(col * r + row % r), b_bit((row / r) * C * r + col * r + row % r)); }
    }
}
";

/// The WGSL of one variant.
pub fn wgsl(spec: &Spec) -> String {
    let s = SHAPES[spec.shape];
    let (tm, tn4) = (s.tm, s.tn / 4);
    let mut w = header(spec);
    let _ = writeln!(w, "\n@compute @workgroup_size({}, {})", s.wx, s.wy);
    w.push_str("fn gemm(@builtin(global_invocation_id) gid: vec3<u32>) {\n");
    let _ = writeln!(
        w,
        "    let row0 = gid.y * {tm}u;\n    let col0 = gid.x * {}u;",
        s.tn
    );
    w.push_str("    let off_a = gid.z * p.stride_a;\n    let off_b = gid.z * p.stride_b;\n");
    w.push_str("    let off_c = gid.z * p.stride_c;\n");
    if !spec.aligned {
        w.push_str("    if (row0 >= p.m || col0 >= p.n) { return; }\n");
    }
    // Rows and columns to load from: clamped into range when guarded.
    for i in 0..tm {
        let _ = writeln!(
            w,
            "    let ri{i} = {};",
            clamp(spec, &format!("row0 + {i}u"), "p.m - 1u")
        );
    }
    for j in 0..s.tn {
        let _ = writeln!(
            w,
            "    let cj{j} = {};",
            clamp(spec, &format!("col0 + {j}u"), "p.n - 1u")
        );
    }
    for i in 0..tm {
        for j in 0..tn4 {
            let _ = writeln!(w, "    var acc{i}_{j} = vec4<f32>(0.0);");
        }
    }
    // The K range: [z kz, z kz + kl) within [0, K): all of K (kz = 0, kl = K) but for a
    // split-K partial (z the slice, kz = kl a multiple of 4, so vec4 loads along K stay
    // aligned and an aligned variant's range stays a multiple of 4).
    w.push_str("    let kb = gid.z * p.kz;\n    let ke = min(kb + p.kl, p.k);\n");
    w.push_str("    let k4 = kb + ((ke - kb) & ~3u);\n");
    w.push_str("    for (var k = kb; k < k4; k += 4u) {\n");
    load_a_fragment(&mut w, spec, tm);
    load_b_fragment(&mut w, spec, s.tn);
    let lanes = ["x", "y", "z", "w"];
    for i in 0..tm {
        for j in 0..tn4 {
            for (kk, lane) in lanes.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "        acc{i}_{j} = fma(vec4<f32>(af{i}.{lane}), bf{kk}_{j}, acc{i}_{j});"
                );
            }
        }
    }
    w.push_str("    }\n    for (var k = k4; k < ke; k++) {\n");
    for j in 0..tn4 {
        let l: Vec<String> = (0..4)
            .map(|t| format!("load_b(k, cj{}, off_b)", 4 * j + t))
            .collect();
        let _ = writeln!(w, "        let tb{j} = vec4<f32>({});", l.join(", "));
    }
    for i in 0..tm {
        let _ = writeln!(w, "        let ta{i} = load_a(ri{i}, k, off_a);");
        for j in 0..tn4 {
            let _ = writeln!(
                w,
                "        acc{i}_{j} = fma(vec4<f32>(ta{i}), tb{j}, acc{i}_{j});"
            );
        }
    }
    w.push_str("    }\n");
    store(&mut w, spec, tm, s.tn);
    w.push_str("}\n");
    w
}

fn clamp(spec: &Spec, v: &str, max: &str) -> String {
    if spec.aligned {
        v.to_string()
    } else {
        format!("min({v}, {max})")
    }
}

/// `af{i}`: A[row i, k..k+4] as a vec4.
fn load_a_fragment(w: &mut String, spec: &Spec, tm: u32) {
    match spec.a {
        ALoad::Scalar => {
            for i in 0..tm {
                let l: Vec<String> = (0..4)
                    .map(|t| format!("load_a(ri{i}, k + {t}u, off_a)"))
                    .collect();
                let _ = writeln!(w, "        let af{i} = vec4<f32>({});", l.join(", "));
            }
        }
        ALoad::VecK => {
            for i in 0..tm {
                let _ = writeln!(w, "        let af{i} = a[(off_a + ri{i} * p.k + k) >> 2u];");
            }
        }
        ALoad::VecM => {
            // Stored [K, M], M % 4 == 0: row0 + 4q and M - 4 are multiples of 4, so the
            // clamped start is in range and vec4-aligned.
            for q in 0..tm / 4 {
                let rq = clamp(spec, &format!("row0 + {}u", 4 * q), "p.m - 4u");
                let _ = writeln!(w, "        let rq{q} = {rq};");
                for kk in 0..4 {
                    let _ = writeln!(
                        w,
                        "        let t{q}_{kk} = a[(off_a + (k + {kk}u) * p.m + rq{q}) >> 2u];"
                    );
                }
                for (s, lane) in ["x", "y", "z", "w"].iter().enumerate() {
                    let _ = writeln!(
                        w,
                        "        let af{i} = vec4<f32>(t{q}_0.{lane}, t{q}_1.{lane}, t{q}_2.{lane}, t{q}_3.{lane});",
                        i = 4 * q + s as u32
                    );
                }
            }
        }
    }
}

/// `bf{kk}_{j}`: B[k + kk, col 4j..4j+4] as a vec4.
fn load_b_fragment(w: &mut String, spec: &Spec, tn: u32) {
    let lanes = ["x", "y", "z", "w"];
    match spec.b {
        BLoad::Scalar | BLoad::F16Scalar | BLoad::NativeScalar => {
            for kk in 0..4 {
                for j in 0..tn / 4 {
                    let l: Vec<String> = (0..4)
                        .map(|t| format!("load_b(k + {kk}u, cj{}, off_b)", 4 * j + t))
                        .collect();
                    let _ = writeln!(w, "        let bf{kk}_{j} = vec4<f32>({});", l.join(", "));
                }
            }
        }
        BLoad::VecN | BLoad::F16N | BLoad::NativeN => {
            for j in 0..tn / 4 {
                let cq = clamp(spec, &format!("col0 + {}u", 4 * j), "p.n - 4u");
                let _ = writeln!(w, "        let cq{j} = {cq};");
                for kk in 0..4 {
                    let e = format!("off_b + (k + {kk}u) * p.n + cq{j}");
                    let _ = writeln!(w, "        let bf{kk}_{j} = {};", four(spec.b, &e));
                }
            }
        }
        BLoad::VecK | BLoad::F16K | BLoad::NativeK => {
            for j in 0..tn {
                let e = format!("off_b + cj{j} * p.k + k");
                let _ = writeln!(w, "        let u{j} = {};", four(spec.b, &e));
            }
            for (kk, lane) in lanes.iter().enumerate() {
                for j in 0..tn / 4 {
                    let l: Vec<String> = (0..4).map(|t| format!("u{}.{lane}", 4 * j + t)).collect();
                    let _ = writeln!(w, "        let bf{kk}_{j} = vec4<f32>({});", l.join(", "));
                }
            }
        }
    }
}

/// Four consecutive elements of B from element `e` (a multiple of 4): one vec4, or two
/// packed words decoded.
fn four(load: BLoad, e: &str) -> String {
    if load.is_native() {
        format!("vec4<f32>(b[({e}) >> 2u])")
    } else if load.is_f16() {
        format!(
            "vec4<f32>(unpack2x16float(b[({e}) >> 1u]), unpack2x16float(b[(({e}) >> 1u) + 1u]))"
        )
    } else {
        format!("b[({e}) >> 2u]")
    }
}

/// The epilogue of `shaders/gemm.wgsl`: alpha, beta (C not read when 0) and bias.
fn store(w: &mut String, spec: &Spec, tm: u32, tn: u32) {
    let lanes = ["x", "y", "z", "w"];
    for i in 0..tm {
        for j in 0..tn {
            let guard = if spec.aligned {
                String::new()
            } else {
                format!("if (row0 + {i}u < p.m && col0 + {j}u < p.n) ")
            };
            let _ = writeln!(
                w,
                "    {guard}{{ let idx = off_c + (row0 + {i}u) * p.n + col0 + {j}u; \
                 var v = p.alpha * acc{i}_{}.{}; \
                 if (p.beta != 0.0) {{ v = fma(p.beta, c[idx], v); }} \
                 if (HAS_BIAS) {{ v += bias[col0 + {j}u]; }} c[idx] = v; }}",
                j / 4,
                lanes[(j % 4) as usize]
            );
        }
    }
}

/// The A load a dense or stacked view of `[M, K]` allows.
pub fn a_load(view_code: u32, m: usize, k: usize) -> ALoad {
    match view_code {
        0 if k.is_multiple_of(4) => ALoad::VecK,
        1 if m.is_multiple_of(4) => ALoad::VecM,
        _ => ALoad::Scalar,
    }
}

/// The B load a dense or stacked view of `[K, N]` allows.
pub fn b_load(view_code: u32, k: usize, n: usize) -> BLoad {
    match view_code {
        0 if n.is_multiple_of(4) => BLoad::VecN,
        1 if k.is_multiple_of(4) => BLoad::VecK,
        _ => BLoad::Scalar,
    }
}

/// The spec for shape `shape` on an `[M, K] x [K, N]` problem with these views: vec4 loads
/// where the layout allows, aligned where the grid covers M and N exactly and `K % 4 == 0`.
pub fn spec_for(shape: usize, a_view: u32, b_view: u32, [m, k, n]: [usize; 3]) -> Spec {
    let s = SHAPES[shape];
    Spec {
        shape,
        a: a_load(a_view, m, k),
        b: b_load(b_view, k, n),
        aligned: m % s.rows() as usize == 0 && n % s.cols() as usize == 0 && k % 4 == 0,
    }
}

/// FNV-1a of the reference GEMM, the split-K reduction and every generated source (both
/// families): part of the tuning key, so a changed kernel set is tuned again. Computed
/// once per process (it reads every source: far too slow for each GEMM call).
pub fn set_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let fixed = [
            crate::runtime::shaders::GEMM.source,
            crate::runtime::shaders::SPLITK.source,
        ];
        let generated = generated().iter().chain(super::tiled::generated());
        for src in fixed.into_iter().chain(generated.map(|s| s.source)) {
            for byte in src.bytes() {
                h ^= byte as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    })
}
