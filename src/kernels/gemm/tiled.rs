//! The workgroup-memory GEMM family, generated like the register-only one
//! ([`super::template`], whose header, operand views and vec4 load classes it shares):
//! [`wgsl`] writes the WGSL of a [`Tile`] for a [`Spec`].
//!
//! A workgroup computes a `bm x bn` tile of C, walking K `bk` at a time. Each step its
//! threads copy the `bm x bk` slab of op(A) and the `bk x bn` slab of op(B) into workgroup
//! memory, A staged k-major (`ta[k][m]`, so both slabs are read along their rows as vec4),
//! and every thread then accumulates its `tm x tn` outputs, laid out as `tm/4 x tn/4`
//! blocks of 4x4 spaced `4 wy` rows and `4 wx` columns apart (so neighbouring threads read
//! neighbouring vec4s). Workgroup memory is double-buffered: while the threads compute on
//! one buffer they hold the next slab in registers (fetched from global memory before the
//! arithmetic) and store it into the other buffer after it, so each K step needs one
//! barrier.
//!
//! Global loads: a dense operand whose stored layout is contiguous along a multiple-of-4
//! dimension is bound as `array<vec4<f32>>` and each thread fetches whole vec4s
//! ([`ALoad`], [`BLoad`]); any other view (the transposes that do not allow it and the
//! masked stacked CapaBoost views, masks applied while loading) goes through `load_a` /
//! `load_b` four elements at a time, along the stored layout's contiguous dimension.
//! Edge-guarded variants clamp the row and column they load (so every load is in range;
//! clamped rows and columns only feed outputs that are not stored), load zeros past K, and
//! guard the stores; aligned variants, used when the tiles cover M, N and K exactly, do
//! none of this.

use std::fmt::Write;
use std::sync::OnceLock;

/// The family is generated over [`B_LOADS`] (f32) only; `plan` refuses an f16 operand B
/// before a tile's spec is made.
const F32_ONLY: &str = "the workgroup-memory GEMM family reads f32 operands only";

use super::template::{
    A_LOADS, ALoad, B_LOADS, BLoad, a_load, b_load, each_spec, header_for, leak,
};
use crate::runtime::shaders::ShaderSource;

/// The shape of one workgroup-memory variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Rows of C per workgroup.
    pub bm: u32,
    /// Columns of C per workgroup.
    pub bn: u32,
    /// K per step (a multiple of 4).
    pub bk: u32,
    /// Rows of C per thread (a multiple of 4; `bm = tm wy`).
    pub tm: u32,
    /// Columns of C per thread (a multiple of 4; `bn = tn wx`).
    pub tn: u32,
    /// Threads along N.
    pub wx: u32,
    /// Threads along M.
    pub wy: u32,
}

impl Tile {
    /// Threads per workgroup.
    pub fn threads(&self) -> u32 {
        self.wx * self.wy
    }

    /// Workgroup memory in bytes: two buffers of both slabs.
    pub fn storage_bytes(&self) -> u32 {
        2 * (self.bm + self.bn) * self.bk * 4
    }

    /// A short name, `t128x128k8`.
    pub fn label(&self) -> String {
        format!("t{}x{}k{}", self.bm, self.bn, self.bk)
    }

    /// vec4s of the A slab each thread moves per step.
    fn a_vecs(&self) -> u32 {
        self.bm * self.bk / (4 * self.threads())
    }

    /// vec4s of the B slab each thread moves per step.
    fn b_vecs(&self) -> u32 {
        self.bn * self.bk / (4 * self.threads())
    }
}

/// The workgroup-memory tiles, in the order the autotuner tries them.
pub const TILES: [Tile; 3] = [
    // 128x128, K step 8, 8x8 per thread as 2x2 blocks of 4x4, 256 threads: 16 KiB.
    Tile {
        bm: 128,
        bn: 128,
        bk: 8,
        tm: 8,
        tn: 8,
        wx: 16,
        wy: 16,
    },
    // 64x64, K step 16, 4x4 per thread, 256 threads (small shapes): 16 KiB.
    Tile {
        bm: 64,
        bn: 64,
        bk: 16,
        tm: 4,
        tn: 4,
        wx: 16,
        wy: 16,
    },
    // 128x64 (narrow N), K step 8, 8x8 per thread, 128 threads: 12 KiB.
    Tile {
        bm: 128,
        bn: 64,
        bk: 8,
        tm: 8,
        tn: 8,
        wx: 8,
        wy: 16,
    },
];

/// Whether `tile` fits `gpu`'s limits (workgroup storage, invocations and size); an error
/// naming the limit otherwise.
pub fn fits(tile: &Tile, gpu: &crate::Gpu) -> crate::Result<()> {
    let l = gpu.limits();
    let checks = [
        (
            tile.storage_bytes(),
            l.max_compute_workgroup_storage_size,
            "max_compute_workgroup_storage_size",
        ),
        (
            tile.threads(),
            l.max_compute_invocations_per_workgroup,
            "max_compute_invocations_per_workgroup",
        ),
        (
            tile.wx,
            l.max_compute_workgroup_size_x,
            "max_compute_workgroup_size_x",
        ),
        (
            tile.wy,
            l.max_compute_workgroup_size_y,
            "max_compute_workgroup_size_y",
        ),
    ];
    for (need, limit, limit_name) in checks {
        if need > limit {
            return Err(crate::Error::InvalidArgument(format!(
                "GEMM tile {} needs {limit_name} >= {need}, adapter '{}' has {limit}",
                tile.label(),
                gpu.adapter_info().name
            )));
        }
    }
    Ok(())
}

/// Everything one generated source depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Index into [`TILES`].
    pub tile: usize,
    /// Load of A.
    pub a: ALoad,
    /// Load of B.
    pub b: BLoad,
    /// No clamps, no zero fill and no store guards (the tiles cover M, N and K exactly).
    pub aligned: bool,
}

impl Spec {
    fn index(&self) -> usize {
        let a = A_LOADS.iter().position(|&x| x == self.a).unwrap_or(0);
        let b = B_LOADS.iter().position(|&x| x == self.b).unwrap_or(0);
        ((self.tile * 3 + a) * 3 + b) * 2 + self.aligned as usize
    }

    fn name(&self) -> String {
        let a = ["s", "k", "m"][A_LOADS.iter().position(|&x| x == self.a).unwrap_or(0)];
        let b = ["s", "n", "k"][B_LOADS.iter().position(|&x| x == self.b).unwrap_or(0)];
        let g = if self.aligned { "al" } else { "g" };
        format!("gemm_{}_a{a}_b{b}_{g}", TILES[self.tile].label())
    }

    /// The registered source of this spec.
    pub fn source(&self) -> &'static ShaderSource {
        generated()[self.index()]
    }
}

/// Every generated workgroup-memory source (each tile x A load x B load x guard), built
/// once and leaked like [`super::template::generated`]'s.
pub fn generated() -> &'static [&'static ShaderSource] {
    static ALL: OnceLock<Vec<&'static ShaderSource>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut out = Vec::new();
        each_spec(TILES.len(), &B_LOADS, |tile, a, b, aligned| {
            let spec = Spec {
                tile,
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

/// The spec for tile `tile` on an `[M, K] x [K, N]` problem with these views: vec4 loads
/// where the layout allows, aligned where the tiles cover M, N and K exactly.
pub fn spec_for(tile: usize, a_view: u32, b_view: u32, [m, k, n]: [usize; 3]) -> Spec {
    let t = TILES[tile];
    Spec {
        tile,
        a: a_load(a_view, m, k),
        b: b_load(b_view, k, n),
        aligned: m.is_multiple_of(t.bm as usize)
            && n.is_multiple_of(t.bn as usize)
            && k.is_multiple_of(t.bk as usize),
    }
}

/// The WGSL of one variant.
pub fn wgsl(spec: &Spec) -> String {
    let t = TILES[spec.tile];
    let comment = format!(
        "{}: workgroup-memory GEMM,\n// {}x{} tile, K step {}, {}x{} outputs per thread as \
         {}x{} blocks of 4x4, {} threads, double-buffered.",
        spec.name(),
        t.bm,
        t.bn,
        t.bk,
        t.tm,
        t.tn,
        t.tm / 4,
        t.tn / 4,
        t.threads()
    );
    let mut w = header_for(&comment, spec.a != ALoad::Scalar, spec.b);
    let (sa, sb) = (t.bk * t.bm / 4, t.bk * t.bn / 4);
    let _ = writeln!(
        w,
        "\nvar<workgroup> ta: array<vec4<f32>, {}>; // [2][bk][bm / 4]\n\
         var<workgroup> tb: array<vec4<f32>, {}>; // [2][bk][bn / 4]",
        2 * sa,
        2 * sb
    );
    let _ = writeln!(w, "\n@compute @workgroup_size({}, {})", t.wx, t.wy);
    w.push_str(ENTRY);
    let _ = writeln!(
        w,
        "    let m0 = wid.y * {}u;\n    let n0 = wid.x * {}u;",
        t.bm, t.bn
    );
    w.push_str("    let off_a = wid.z * p.stride_a;\n    let off_b = wid.z * p.stride_b;\n");
    w.push_str("    let off_c = wid.z * p.stride_c;\n");
    // The vec4 forms never read the mask bits; this branch (never taken: the modes are 0 to
    // 5) keeps them in the layout wgpu derives, which must match the seven bindings bound.
    w.push_str("    if (A_MODE > 5u) { c[0] = f32(a_bits[0] + b_bits[0]); }\n");
    w.push_str("    let a_rows = A_MODE == 0u || A_MODE == 2u || A_MODE == 4u;\n");
    w.push_str("    let b_cols = B_MODE == 0u || B_MODE == 2u || B_MODE == 4u;\n");
    for name in accumulators(&t) {
        let _ = writeln!(w, "    var {name} = vec4<f32>(0.0);");
    }
    for v in 0..t.a_vecs() {
        let _ = writeln!(w, "    var sa{v} = vec4<f32>(0.0);");
    }
    for v in 0..t.b_vecs() {
        let _ = writeln!(w, "    var sb{v} = vec4<f32>(0.0);");
    }
    let _ = writeln!(
        w,
        "    let ntiles = (p.k + {}u) / {}u;\n    if (ntiles > 0u) {{",
        t.bk - 1,
        t.bk
    );
    fetch(&mut w, spec, "0u");
    stash(&mut w, spec, "0u");
    w.push_str("    }\n    workgroupBarrier();\n");
    w.push_str("    for (var t = 0u; t < ntiles; t++) {\n        let cur = t & 1u;\n");
    w.push_str("        let more = t + 1u < ntiles;\n        if (more) {\n");
    fetch(&mut w, spec, &format!("(t + 1u) * {}u", t.bk));
    w.push_str("        }\n");
    compute(&mut w, &t);
    w.push_str("        if (more) {\n");
    stash(&mut w, spec, "(cur ^ 1u)");
    w.push_str("        }\n        workgroupBarrier();\n    }\n");
    store(&mut w, spec);
    w.push_str("}\n");
    w
}

/// `acc{i}_{j}_{r}`: row `r` of the 4x4 block `(i, j)`, as a vec4 over its 4 columns.
fn accumulators(t: &Tile) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..t.tm / 4 {
        for j in 0..t.tn / 4 {
            for r in 0..4 {
                out.push(format!("acc{i}_{j}_{r}"));
            }
        }
    }
    out
}

/// `min(v, max)` in guarded variants, `v` in aligned ones.
fn clamp(spec: &Spec, v: &str, max: &str) -> String {
    if spec.aligned {
        v.to_string()
    } else {
        format!("min({v}, {max})")
    }
}

/// `value` in aligned variants; in guarded ones `value` where `k < p.k`, else `zero`.
fn past_k(spec: &Spec, value: &str, k: &str, zero: &str) -> String {
    if spec.aligned {
        value.to_string()
    } else {
        format!("select({zero}, {value}, {k} < p.k)")
    }
}

const LANES: [&str; 4] = ["x", "y", "z", "w"];

/// The entry point's signature and opening brace.
const ENTRY: &str = "fn gemm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
";

/// The registers `sa{v}` / `sb{v}` get the slabs at `k0` from global memory.
fn fetch(w: &mut String, spec: &Spec, k0: &str) {
    let t = TILES[spec.tile];
    let (kq, bm4, bn4) = (t.bk / 4, t.bm / 4, t.bn / 4);
    let z4 = "vec4<f32>(0.0)";
    for v in 0..t.a_vecs() {
        let e = format!("tid + {}u", v * t.threads());
        // Row-contiguous slab: thread e holds 4 consecutive k of one row.
        let rows = |load: &dyn Fn(&str, &str) -> String| {
            format!(
                "{{ let row = ({e}) / {kq}u; let gk = {k0} + (({e}) % {kq}u) * 4u; \
                 let gr = {}; sa{v} = {}; }}",
                clamp(spec, "m0 + row", "p.m - 1u"),
                load("gr", "gk")
            )
        };
        // k-major slab: thread e holds 4 consecutive rows at one k.
        let cols = |load: &dyn Fn(&str, &str) -> String| {
            format!(
                "{{ let gk = {k0} + ({e}) / {bm4}u; let gm = m0 + (({e}) % {bm4}u) * 4u; \
                 sa{v} = {}; }}",
                load("gm", "gk")
            )
        };
        let line = match spec.a {
            ALoad::VecK => rows(&|r, k| {
                let idx = format!(
                    "a[(off_a + {r} * p.k + {}) >> 2u]",
                    clamp(spec, k, "p.k - 4u")
                );
                past_k(spec, &idx, k, z4)
            }),
            ALoad::VecM => cols(&|m, k| {
                let (mc, kc) = (clamp(spec, m, "p.m - 4u"), clamp(spec, k, "p.k - 1u"));
                past_k(
                    spec,
                    &format!("a[(off_a + {kc} * p.m + {mc}) >> 2u]"),
                    k,
                    z4,
                )
            }),
            ALoad::Scalar => {
                let one = |r: &str, k: &str| {
                    let kc = clamp(spec, k, "p.k - 1u");
                    past_k(spec, &format!("load_a({r}, {kc}, off_a)"), k, "0.0")
                };
                let by_rows = rows(&|r, k| {
                    let l: Vec<String> = (0..4).map(|i| one(r, &format!("({k} + {i}u)"))).collect();
                    format!("vec4<f32>({})", l.join(", "))
                });
                let by_cols = cols(&|m, k| {
                    let l: Vec<String> = (0..4)
                        .map(|i| one(&clamp(spec, &format!("{m} + {i}u"), "p.m - 1u"), k))
                        .collect();
                    format!("vec4<f32>({})", l.join(", "))
                });
                format!("if (a_rows) {by_rows} else {by_cols}")
            }
        };
        let _ = writeln!(w, "        {line}");
    }
    fetch_b(w, spec, k0, kq, bn4);
}

/// [`fetch`] for B.
fn fetch_b(w: &mut String, spec: &Spec, k0: &str, kq: u32, bn4: u32) {
    let t = TILES[spec.tile];
    let z4 = "vec4<f32>(0.0)";
    for v in 0..t.b_vecs() {
        let e = format!("tid + {}u", v * t.threads());
        // Column-contiguous slab: 4 consecutive columns at one k.
        let cols = |load: &dyn Fn(&str, &str) -> String| {
            format!(
                "{{ let gk = {k0} + ({e}) / {bn4}u; let gn = n0 + (({e}) % {bn4}u) * 4u; \
                 sb{v} = {}; }}",
                load("gn", "gk")
            )
        };
        // k-contiguous slab: 4 consecutive k of one column.
        let rows = |load: &dyn Fn(&str, &str) -> String| {
            format!(
                "{{ let col = ({e}) / {kq}u; let gk = {k0} + (({e}) % {kq}u) * 4u; \
                 let gn = {}; sb{v} = {}; }}",
                clamp(spec, "n0 + col", "p.n - 1u"),
                load("gn", "gk")
            )
        };
        let line = match spec.b {
            BLoad::F16Scalar
            | BLoad::F16N
            | BLoad::F16K
            | BLoad::NativeScalar
            | BLoad::NativeN
            | BLoad::NativeK => unreachable!("{F32_ONLY}"),
            BLoad::VecN => cols(&|n, k| {
                let (nc, kc) = (clamp(spec, n, "p.n - 4u"), clamp(spec, k, "p.k - 1u"));
                past_k(
                    spec,
                    &format!("b[(off_b + {kc} * p.n + {nc}) >> 2u]"),
                    k,
                    z4,
                )
            }),
            BLoad::VecK => rows(&|n, k| {
                let idx = format!(
                    "b[(off_b + {n} * p.k + {}) >> 2u]",
                    clamp(spec, k, "p.k - 4u")
                );
                past_k(spec, &idx, k, z4)
            }),
            BLoad::Scalar => {
                let one = |k: &str, n: &str| {
                    let kc = clamp(spec, k, "p.k - 1u");
                    past_k(spec, &format!("load_b({kc}, {n}, off_b)"), k, "0.0")
                };
                let by_cols = cols(&|n, k| {
                    let l: Vec<String> = (0..4)
                        .map(|i| one(k, &clamp(spec, &format!("{n} + {i}u"), "p.n - 1u")))
                        .collect();
                    format!("vec4<f32>({})", l.join(", "))
                });
                let by_rows = rows(&|n, k| {
                    let l: Vec<String> = (0..4).map(|i| one(&format!("({k} + {i}u)"), n)).collect();
                    format!("vec4<f32>({})", l.join(", "))
                });
                format!("if (b_cols) {by_cols} else {by_rows}")
            }
        };
        let _ = writeln!(w, "        {line}");
    }
}

/// The two ways register `s{x}{v}` goes into workgroup buffer `t{x}` (`x` = `a` or `b`):
/// 4 consecutive k one lane at a time into the k-major layout (`idx`: the row of A / the
/// column of B the vec4 holds), or a vec4 that is already k-major stored as it is.
fn stash_forms(
    (x, idx): (&str, &str),
    (v, e): (u32, &str),
    (buf, size, width4, kq): (&str, u32, u32, u32),
) -> (String, String) {
    let lanes: Vec<String> = LANES
        .iter()
        .enumerate()
        .map(|(l, lane)| {
            format!(
                "t{x}[base + (kq + {l}u) * {width4}u + ({idx} >> 2u)][{idx} & 3u] = s{x}{v}.{lane};"
            )
        })
        .collect();
    let rows = format!(
        "{{ let base = {buf} * {size}u; let {idx} = ({e}) / {kq}u; let kq = (({e}) % {kq}u) * 4u; {} }}",
        lanes.join(" ")
    );
    let cols = format!("{{ t{x}[{buf} * {size}u + {e}] = s{x}{v}; }}");
    (rows, cols)
}

/// The registers `sa{v}` / `sb{v}` go into workgroup buffer `buf`, in the layout
/// [`fetch`] loaded them in: a k-major vec4 as it is, 4 consecutive k one lane at a time.
fn stash(w: &mut String, spec: &Spec, buf: &str) {
    let t = TILES[spec.tile];
    let (kq, bm4, bn4) = (t.bk / 4, t.bm / 4, t.bn / 4);
    let (sa, sb) = (t.bk * bm4, t.bk * bn4);
    for v in 0..t.a_vecs() {
        let e = format!("tid + {}u", v * t.threads());
        let (rows, cols) = stash_forms(("a", "row"), (v, &e), (buf, sa, bm4, kq));
        let line = match spec.a {
            ALoad::VecK => rows,
            ALoad::VecM => cols,
            ALoad::Scalar => format!("if (a_rows) {rows} else {cols}"),
        };
        let _ = writeln!(w, "        {line}");
    }
    for v in 0..t.b_vecs() {
        let e = format!("tid + {}u", v * t.threads());
        let (rows, cols) = stash_forms(("b", "col"), (v, &e), (buf, sb, bn4, kq));
        let line = match spec.b {
            BLoad::VecN => cols,
            BLoad::VecK => rows,
            BLoad::Scalar => format!("if (b_cols) {cols} else {rows}"),
            BLoad::F16Scalar
            | BLoad::F16N
            | BLoad::F16K
            | BLoad::NativeScalar
            | BLoad::NativeN
            | BLoad::NativeK => unreachable!("{F32_ONLY}"),
        };
        let _ = writeln!(w, "        {line}");
    }
}

/// One K step on workgroup buffer `cur`, unrolled.
fn compute(w: &mut String, t: &Tile) {
    let (bm4, bn4) = (t.bm / 4, t.bn / 4);
    let _ = writeln!(
        w,
        "        let ba = cur * {}u + lid.y;\n        let bb = cur * {}u + lid.x;",
        t.bk * bm4,
        t.bk * bn4
    );
    for kk in 0..t.bk {
        for i in 0..t.tm / 4 {
            let _ = writeln!(
                w,
                "        let a{kk}_{i} = ta[ba + {}u];",
                kk * bm4 + i * t.wy
            );
        }
        for j in 0..t.tn / 4 {
            let _ = writeln!(
                w,
                "        let b{kk}_{j} = tb[bb + {}u];",
                kk * bn4 + j * t.wx
            );
        }
        for i in 0..t.tm / 4 {
            for j in 0..t.tn / 4 {
                for (r, lane) in LANES.iter().enumerate() {
                    let _ = writeln!(
                        w,
                        "        acc{i}_{j}_{r} = fma(vec4<f32>(a{kk}_{i}.{lane}), b{kk}_{j}, acc{i}_{j}_{r});"
                    );
                }
            }
        }
    }
}

/// The epilogue of `shaders/gemm.wgsl`: alpha, beta (C not read when 0) and bias.
fn store(w: &mut String, spec: &Spec) {
    let t = TILES[spec.tile];
    for i in 0..t.tm / 4 {
        for r in 0..4 {
            let _ = writeln!(
                w,
                "    {{ let row = m0 + ({}u + lid.y) * 4u + {r}u;",
                i * t.wy
            );
            for j in 0..t.tn / 4 {
                let _ = writeln!(w, "      let col{j} = n0 + ({}u + lid.x) * 4u;", j * t.wx);
                for (c, lane) in LANES.iter().enumerate() {
                    let guard = if spec.aligned {
                        String::new()
                    } else {
                        format!("if (row < p.m && col{j} + {c}u < p.n) ")
                    };
                    let _ = writeln!(
                        w,
                        "      {guard}{{ let idx = off_c + row * p.n + col{j} + {c}u; \
                         var v = p.alpha * acc{i}_{j}_{r}.{lane}; \
                         if (p.beta != 0.0) {{ v = fma(p.beta, c[idx], v); }} \
                         if (HAS_BIAS) {{ v += bias[col{j} + {c}u]; }} c[idx] = v; }}"
                    );
                }
            }
            w.push_str("    }\n");
        }
    }
}
