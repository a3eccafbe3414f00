//! The cooperative-matrix GEMM, generated per configuration: `C = alpha op(A) op(B) + beta C
//! (+ bias)` with the multiply-adds on the device's matrix units (wgpu's experimental
//! `EXPERIMENTAL_COOPERATIVE_MATRIX`: `coop_mat{S}x{S}`, `coopLoadT`, `coopMultiplyAdd`,
//! `coopStoreT`). Its sources are their own shader modules, built only for a device that
//! lists a usable configuration ([`crate::runtime::coopmat::usable`]): a device without the
//! feature rejects any module that enables it.
//!
//! One workgroup of [`WORKGROUP`] invocations computes a block of `B x B` outputs, `B =`
//! [`TILES`]` S`: a grid of `TILES x TILES` tiles of `S x S`. Each K step stages op(A)
//! `[B, BK]` and op(B) `[BK, B]` (`BK = 2 S`) from global memory into workgroup memory
//! through the operand views of the other GEMMs (so every view works, masked stacked ones
//! included), converted to the configuration's input type, with zero padding past M, N and
//! K: a padded row or column contributes exact zeros, so any shape works. Consecutive
//! invocations load consecutive stored elements (columns of a row-major view, rows of a
//! transposed one). Subgroup `s` of the `ns` in the workgroup owns tiles `s, s + ns, ...`;
//! it keeps [`Spec::per_subgroup`] accumulators, enough for the fewest subgroups the device
//! can form (`WORKGROUP / subgroup_max_size`), the extra ones idle behind subgroup-uniform
//! guards. At the end each tile goes through workgroup memory to an edge-guarded epilogue
//! that applies alpha, beta (C unread when 0) and the bias.
//!
//! The arithmetic is mirrored on the CPU by [`super::coop_twin`], which the tests check
//! against the f64 reference on odd shapes; and the generated source itself runs on devices
//! without the feature as its emulation ([`set_emulation`]: each cooperative operation a
//! loop over the tile elements a lane holds), which the tests run on lavapipe.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Mutex, OnceLock};

use crate::runtime::coopmat::{CoopInput, CoopShape};
use crate::runtime::shaders::ShaderSource;

/// Invocations per workgroup (a multiple of every subgroup size, 4 to 128).
pub const WORKGROUP: u32 = 128;
/// Tiles per side of a workgroup's block.
pub const TILES: u32 = 4;

/// The configurations a [`super::Kernel::Coop`] indexes, in the autotuner's order.
pub const CONFIGS: [CoopShape; 4] = [
    CoopShape {
        size: 16,
        input: CoopInput::F16,
    },
    CoopShape {
        size: 8,
        input: CoopInput::F32,
    },
    CoopShape {
        size: 8,
        input: CoopInput::F16,
    },
    CoopShape {
        size: 16,
        input: CoopInput::F32,
    },
];

/// Largest relative Frobenius difference from the reference the autotuner accepts of a
/// configuration with f16 inputs. Rounding each input to f16 (unit roundoff `u = 2^-11`)
/// perturbs each product by at most `2u + u^2` relative, about 9.8e-4; for the random
/// operands of the check the errors of the products partly cancel, giving about
/// `sqrt(2/3) u`, 4e-4, in the Frobenius norm. 4e-3 leaves a factor 4 over the worst case
/// and still rejects a kernel that drops or repeats a tile or a K step (a relative error of
/// order 1/K or more).
pub const F16_CHECK_TOL: f64 = 4e-3;

/// Sizes derived from a configuration.
impl CoopShape {
    /// Rows (and columns) of C per workgroup.
    pub fn block(self) -> u32 {
        TILES * self.size
    }

    /// K per staged step.
    pub fn bk(self) -> u32 {
        2 * self.size
    }

    /// Bytes of workgroup memory: the A and B stages and the f32 C block.
    pub fn workgroup_bytes(self) -> u64 {
        let elem = match self.input {
            CoopInput::F16 => 2,
            CoopInput::F32 => 4,
        };
        let (b, bk) = (self.block() as u64, self.bk() as u64);
        2 * b * bk * elem + b * b * 4
    }

    /// A short name, `coop16f16`.
    pub fn label(self) -> String {
        let t = match self.input {
            CoopInput::F16 => "f16",
            CoopInput::F32 => "f32",
        };
        format!("coop{}{t}", self.size)
    }
}

/// The correctness tolerance of a configuration (see [`F16_CHECK_TOL`]); f32 inputs get
/// the f32 kernels' `tune::CHECK_TOL`.
pub fn check_tol(shape: CoopShape) -> f64 {
    match shape.input {
        CoopInput::F16 => F16_CHECK_TOL,
        CoopInput::F32 => super::tune::CHECK_TOL,
    }
}

/// Accumulators per subgroup where subgroups hold at most `subgroup_max` invocations: the
/// workgroup has at least `WORKGROUP / subgroup_max` subgroups to share the `TILES^2` tiles.
pub fn per_subgroup(subgroup_max: u32) -> u32 {
    let fewest = (WORKGROUP / subgroup_max.clamp(4, WORKGROUP)).max(1);
    (TILES * TILES).div_ceil(fewest)
}

/// Everything one generated source depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// Index into [`CONFIGS`].
    pub config: usize,
    /// Accumulators per subgroup ([`per_subgroup`]).
    pub per_subgroup: u32,
    /// 0: the real kernel. Else the emulation ([`set_emulation`]): the same source with
    /// "subgroups" of this many consecutive invocations (at most `S * S`) sharing each tile
    /// element by element, each cooperative operation a loop over a lane's elements, f16
    /// inputs rounded through `pack2x16float`; no feature needed.
    pub emulated: u32,
}

static EMULATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Test support: with `Some((subgroup_max, width))`, [`super::Kernel::Coop`] runs the
/// emulation of its configuration (see [`Spec::emulated`]) with the accumulators of a
/// device whose subgroups hold up to `subgroup_max` invocations, in subgroups of `width`
/// (at most `subgroup_max`). It lets a device without cooperative matrices run the
/// generated kernel's staging, padding, tile ownership, guards and epilogue.
#[doc(hidden)]
pub fn set_emulation(emulation: Option<(u32, u32)>) {
    let v = emulation.map_or(0, |(max, width)| ((max as u64) << 32) | width.max(1) as u64);
    EMULATION.store(v, std::sync::atomic::Ordering::Relaxed);
}

impl Spec {
    /// The spec of configuration `config` on `gpu`.
    pub fn on(gpu: &crate::Gpu, config: usize) -> Self {
        let emulation = EMULATION.load(std::sync::atomic::Ordering::Relaxed);
        if emulation != 0 {
            let (max, width) = ((emulation >> 32) as u32, emulation as u32);
            return Self {
                config,
                per_subgroup: per_subgroup(max.max(width)),
                emulated: width,
            };
        }
        Self {
            config,
            per_subgroup: per_subgroup(gpu.adapter_info().subgroup_max_size),
            emulated: 0,
        }
    }

    fn name(&self) -> String {
        let emu = match self.emulated {
            0 => String::new(),
            w => format!("_emu{w}"),
        };
        format!(
            "gemm_{}_p{}{emu}",
            CONFIGS[self.config].label(),
            self.per_subgroup
        )
    }

    /// A cooperative load of `role` (`A`, `B` or `C`) from `array[index]` with `stride`.
    fn load(&self, role: &str, array: &str, index: &str, stride: &str) -> String {
        if self.emulated != 0 {
            return format!("emu_load_{array}({index}, {stride})");
        }
        let shape = CONFIGS[self.config];
        let ty = match (role, shape.input) {
            ("C", _) | (_, CoopInput::F32) => "f32",
            _ => "f16",
        };
        let s = shape.size;
        format!("coopLoadT<coop_mat{s}x{s}<{ty}, {role}>>(&{array}[{index}], {stride})")
    }

    /// `acc{j} = a b + acc{j}`.
    fn multiply_add(&self, j: u32, a: &str, b: &str) -> String {
        let f = if self.emulated != 0 {
            "emu_mma"
        } else {
            "coopMultiplyAdd"
        };
        format!("acc{j} = {f}({a}, {b}, acc{j});")
    }

    /// A store of `acc{j}` to `Cs[index]`, row stride `BLK`.
    fn store(&self, j: u32, index: &str) -> String {
        if self.emulated != 0 {
            format!("emu_store_Cs(acc{j}, {index}, BLK);")
        } else {
            format!("coopStoreT(acc{j}, &Cs[{index}], BLK);")
        }
    }

    /// The source of this spec, generated and registered once per process.
    pub fn source(&self) -> &'static ShaderSource {
        static ALL: OnceLock<Mutex<HashMap<Spec, &'static ShaderSource>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.entry(*self)
            .or_insert_with(|| super::template::leak(self.name(), wgsl(self)))
    }
}

/// Every spec the portability test translates: each configuration for subgroups of 4 to
/// 128 invocations.
pub fn all_specs() -> Vec<Spec> {
    let mut out = Vec::new();
    for config in 0..CONFIGS.len() {
        for sg in [4, 8, 16, 32, 64, 128] {
            let spec = Spec {
                config,
                per_subgroup: per_subgroup(sg),
                emulated: 0,
            };
            if !out.contains(&spec) {
                out.push(spec);
            }
        }
    }
    out
}

/// The configurations the autotuner may try on `gpu`: usable ones it lists, whose
/// workgroup memory fits.
pub fn candidates(gpu: &crate::Gpu) -> Vec<super::Kernel> {
    let listed = crate::runtime::coopmat::usable(
        gpu.cooperative_matrix_properties(),
        gpu.features(),
        crate::runtime::coopmat::policy(),
    );
    let room = gpu.limits().max_compute_workgroup_storage_size as u64;
    let threads = gpu.limits().max_compute_invocations_per_workgroup;
    (0..CONFIGS.len())
        .filter(|&i| listed.contains(&CONFIGS[i]))
        .filter(|&i| CONFIGS[i].workgroup_bytes() <= room && WORKGROUP <= threads)
        .map(super::Kernel::Coop)
        .collect()
}

/// FNV-1a of the sources for 32-wide subgroups: part of the tuning key (computed once).
pub fn set_hash() -> u64 {
    static HASH: OnceLock<u64> = OnceLock::new();
    *HASH.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for config in 0..CONFIGS.len() {
            let spec = Spec {
                config,
                per_subgroup: per_subgroup(32),
                emulated: 0,
            };
            for byte in wgsl(&spec).bytes() {
                h ^= byte as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    })
}

/// Directives, parameters, bindings and the operand views.
fn header(spec: &Spec) -> String {
    let shape = CONFIGS[spec.config];
    let enables = match (spec.emulated, shape.input) {
        (0, CoopInput::F16) => "enable f16;\nenable wgpu_cooperative_matrix;\n",
        (0, CoopInput::F32) => "enable wgpu_cooperative_matrix;\n",
        _ => "// Emulated: no cooperative matrices (see Spec::emulated).\n",
    };
    format!(
        "{enables}
// The tile guards below depend on subgroup_id and num_subgroups, uniform within a subgroup
// (all a cooperative operation needs), which naga's uniformity analysis takes for
// per-invocation values.
diagnostic(off, derivative_uniformity);
// Generated by src/kernels/gemm/coop.rs ({name}): cooperative-matrix GEMM.
override A_MODE: u32 = 0u;
override B_MODE: u32 = 0u;
override HAS_BIAS: bool = false;

struct Params {{
    m: u32, n: u32, k: u32, r: u32,
    stride_a: u32, stride_b: u32, stride_c: u32, _pad0: u32,
    alpha: f32, beta: f32, _pad1: u32, _pad2: u32,
}}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a_bits: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> b_bits: array<u32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

fn ae(e: u32) -> f32 {{ return a[e]; }}
fn be(e: u32) -> f32 {{ return b[e]; }}
fn a_bit(e: u32) -> bool {{ return ((a_bits[e >> 5u] >> (e & 31u)) & 1u) == 1u; }}
fn b_bit(e: u32) -> bool {{ return ((b_bits[e >> 5u] >> (e & 31u)) & 1u) == 1u; }}
{views}",
        name = spec.name(),
        views = super::template::VIEWS,
    )
}

/// Workgroup arrays and the staging of one K step (views with an odd code are stored
/// transposed: consecutive invocations walk rows there, columns elsewhere).
fn staging(spec: &Spec) -> String {
    let shape = CONFIGS[spec.config];
    let (b, bk) = (shape.block(), shape.bk());
    let (ty, conv) = match (spec.emulated, shape.input) {
        (0, CoopInput::F16) => ("f16", "f16(v)"),
        (_, CoopInput::F16) => ("f32", "unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x"),
        _ => ("f32", "v"),
    };
    let mut out = format!(
        "
const S: u32 = {s}u;
const BLK: u32 = {b}u;
const BK: u32 = {bk}u;
const WG: u32 = {wg}u;
var<workgroup> As: array<{ty}, {ab}>;
var<workgroup> Bs: array<{ty}, {ab}>;
var<workgroup> Cs: array<f32, {cc}>;

fn stage(m0: u32, n0: u32, k0: u32, lid: u32, off_a: u32, off_b: u32) {{
    for (var i = lid; i < BLK * BK; i += WG) {{
        var r = i / BK;
        var kk = i % BK;
        if ((A_MODE & 1u) == 1u) {{ r = i % BLK; kk = i / BLK; }}
        var v = 0.0;
        if (m0 + r < p.m && k0 + kk < p.k) {{ v = load_a(m0 + r, k0 + kk, off_a); }}
        As[r * BK + kk] = {conv};
    }}
    for (var i = lid; i < BK * BLK; i += WG) {{
        var kk = i / BLK;
        var cl = i % BLK;
        if ((B_MODE & 1u) == 1u) {{ kk = i % BK; cl = i / BK; }}
        var v = 0.0;
        if (k0 + kk < p.k && n0 + cl < p.n) {{ v = load_b(k0 + kk, n0 + cl, off_b); }}
        Bs[kk * BLK + cl] = {conv};
    }}
}}
",
        s = shape.size,
        wg = WORKGROUP,
        ab = b * bk,
        cc = b * b,
    );
    if spec.emulated != 0 {
        out.push_str(&EMULATION_FNS.replace("WIDTH", &spec.emulated.to_string()));
    }
    out
}

/// The emulation's cooperative types and operations ([`Spec::emulated`]): lane `l` of a
/// subgroup of `EW` holds elements `l, l + EW, ...` of each `S x S` tile (`E = S S / EW` of
/// them, row-major within the tile); a loaded A or B operand stays in workgroup memory, as
/// its index (the strides are the kernel's `BK` and `BLK`).
const EMULATION_FNS: &str = "
const EW: u32 = WIDTHu;
const E: u32 = S * S / EW;
alias Acc = array<f32, E>;
var<private> emu_lane: u32;
fn emu_load_As(base: u32, stride: u32) -> u32 { return base; }
fn emu_load_Bs(base: u32, stride: u32) -> u32 { return base; }
fn emu_load_Cs(base: u32, stride: u32) -> Acc {
    var m: Acc;
    for (var e = 0u; e < E; e++) {
        let t = emu_lane + e * EW;
        m[e] = Cs[base + (t / S) * stride + t % S];
    }
    return m;
}
fn emu_store_Cs(m: Acc, base: u32, stride: u32) {
    var mm = m;
    for (var e = 0u; e < E; e++) {
        let t = emu_lane + e * EW;
        Cs[base + (t / S) * stride + t % S] = mm[e];
    }
}
fn emu_mma(a: u32, b: u32, c: Acc) -> Acc {
    var d = c;
    for (var e = 0u; e < E; e++) {
        let t = emu_lane + e * EW;
        var v = d[e];
        for (var x = 0u; x < S; x++) { v += As[a + (t / S) * BK + x] * Bs[b + x * BLK + t % S]; }
        d[e] = v;
    }
    return d;
}
";

/// The WGSL of one spec.
pub fn wgsl(spec: &Spec) -> String {
    let (tiles, pk) = (TILES * TILES, spec.per_subgroup);
    let mut w = header(spec);
    w.push_str(&staging(spec));
    let _ = writeln!(w, "\n@compute @workgroup_size({WORKGROUP})");
    if spec.emulated == 0 {
        w.push_str(ENTRY);
    } else {
        w.push_str(&ENTRY_EMULATED.replace("WIDTH", &spec.emulated.to_string()));
    }
    // Accumulators start as zeros loaded from workgroup memory, not as the WGSL zero value
    // `coop_mat..()`: naga writes that for Metal as `simdgroup_float8x8 {}`, which the
    // Metal spec does not document as a zero matrix.
    w.push_str(
        "    for (var i = lid; i < S * BLK; i += WG) { Cs[i] = 0.0; }\n    workgroupBarrier();\n",
    );
    for j in 0..pk {
        let _ = writeln!(w, "    let t{j} = sg + {j}u * ns;");
        let _ = writeln!(w, "    var acc{j} = {};", spec.load("C", "Cs", "0u", "BLK"));
    }
    w.push_str(K_STEP);
    multiply_adds(&mut w, spec);
    // Every subgroup has read the zeros before any tile lands in `Cs`.
    w.push_str("    }\n    workgroupBarrier();\n");
    for j in 0..pk {
        let index = format!("(t{j} / {TILES}u) * S * BLK + (t{j} % {TILES}u) * S");
        let _ = writeln!(
            w,
            "    if (t{j} < {tiles}u) {{ {} }}",
            spec.store(j, &index)
        );
    }
    w.push_str(EPILOGUE);
    w
}

/// The entry point's first lines (its body ends in [`EPILOGUE`]).
const ENTRY: &str =
    "fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) ns: u32) {
    let m0 = wg.y * BLK;
    let n0 = wg.x * BLK;
    let off_a = wg.z * p.stride_a;
    let off_b = wg.z * p.stride_b;
    let off_c = wg.z * p.stride_c;
";

/// [`ENTRY`] for the emulation: subgroups of `WIDTH` consecutive invocations.
const ENTRY_EMULATED: &str =
    "fn gemm(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let sg = lid / WIDTHu;
    let ns = WG / WIDTHu;
    emu_lane = lid % WIDTHu;
    let m0 = wg.y * BLK;
    let n0 = wg.x * BLK;
    let off_a = wg.z * p.stride_a;
    let off_b = wg.z * p.stride_b;
    let off_c = wg.z * p.stride_c;
";

/// The head of the K loop: stage one step (its multiply-adds follow).
const K_STEP: &str = "    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        workgroupBarrier();
        stage(m0, n0, k0, lid, off_a, off_b);
        workgroupBarrier();
";

/// The multiply-adds of one staged K step: each accumulator's tile, `BK / S` products.
fn multiply_adds(w: &mut String, spec: &Spec) {
    let shape = CONFIGS[spec.config];
    let s = shape.size;
    for j in 0..spec.per_subgroup {
        let _ = writeln!(w, "        if (t{j} < {}u) {{", TILES * TILES);
        let _ = writeln!(
            w,
            "            let ar = (t{j} / {TILES}u) * S * BK;\n            let bc = (t{j} % {TILES}u) * S;"
        );
        for q in 0..shape.bk() / s {
            let a = spec.load("A", "As", &format!("ar + {}u", q * s), "BK");
            let b = spec.load("B", "Bs", &format!("{}u * BLK + bc", q * s), "BLK");
            let _ = writeln!(w, "            {}", spec.multiply_add(j, &a, &b));
        }
        w.push_str("        }\n");
    }
}

/// Waits for every tile in `Cs`, then writes the block's in-range outputs.
const EPILOGUE: &str = "    workgroupBarrier();
    for (var i = lid; i < BLK * BLK; i += WG) {
        let row = m0 + i / BLK;
        let col = n0 + i % BLK;
        if (row < p.m && col < p.n) {
            let idx = off_c + row * p.n + col;
            var v = p.alpha * Cs[i];
            // beta == 0 must not read C: a fresh output buffer may hold anything.
            if (p.beta != 0.0) {
                v = fma(p.beta, c[idx], v);
            }
            if (HAS_BIAS) {
                v += bias[col];
            }
            c[idx] = v;
        }
    }
}
";
