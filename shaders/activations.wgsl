// Activations and their gradients (GELU, tanh, ReLU, dropout), the bias add, and the
// column sum that gives the bias gradient.
//
// Elementwise grids are 2-D so that more than 65535 workgroups of 256 can be launched; the
// flat index is rebuilt from the x extent passed in `p.grid_x`.
//
// Shared parts (appended by src/shaders.rs): group_index and thread_index from
// shaders/common/grid.wgsl; mix32 (dropout's hash, the same as the masks') from
// shaders/common/hash.wgsl.

struct Params {
    n: u32,        // elements
    grid_x: u32,   // workgroups along x in the dispatch
    width: u32,    // add_bias: bias length (the last dimension)
    keep: u32,     // dropout: keep iff hash >> 8 < keep (a 24-bit threshold)
    k0: u32,       // dropout key, derived from (seed, stream) on the host
    k1: u32,
    scale: f32,    // dropout: 1 / (1 - p)
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const SQRT1_2: f32 = 0.70710678118654752;
const INV_SQRT_2PI: f32 = 0.39894228040143268;

const LOG2E: f32 = 1.4426950408889634;
// ln 2 = LN2_HI + LN2_LO, LN2_HI with 15 significant bits so n * LN2_HI is exact for the
// n <= 132 that gauss needs.
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.1219444005469057e-4;

// exp(-v^2 / 2) to a few ulp for every v, independent of how the driver's exp loses
// accuracy on large arguments (WGSL allows 3 + 2|x| ulp, 70 ulp at the tail of GELU).
// v^2 is split so no rounding touches its leading part: vh keeps the top 12 significand
// bits of |v|, so vh^2 is exact and (|v| - vh)(|v| + vh) is small; rounding v^2 (or
// v / sqrt 2) would cost a relative error of about v^2 * 6e-8 (4e-6 at |v| = 8). The
// leading part then goes through a Cody-Waite reduction, exp(-w) = 2^-n exp(-r) with
// |r| < 0.4. Past |v| = 13.5 the result is below f32's normal range and is 0.
fn gauss(v: f32) -> f32 {
    let a = abs(v);
    if (!(a <= 13.5)) {
        return 0.0;
    }
    let vh = bitcast<f32>(bitcast<u32>(a) & 0xfffff000u);
    let w_hi = 0.5 * vh * vh;
    let w_lo = 0.5 * (a - vh) * (a + vh);
    let n = round(w_hi * LOG2E);
    let r = ((w_hi - n * LN2_HI) - n * LN2_LO) + w_lo;
    return ldexp(exp(-r), -i32(n));
}

// Standard normal CDF as 0.5 erfc(-v / sqrt 2), with erfc from the Chebyshev fit of
// Numerical Recipes' erfcc (fractional error below 1.2e-7 for every argument). Building
// GELU on erfc rather than 1 + erf keeps its left tail accurate relative to its own tiny
// size, where 1 + erf would cancel.
fn ncdf(v: f32) -> f32 {
    let a = abs(v) * SQRT1_2;
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * gauss(v) * exp(poly);   // erfc(|v| / sqrt 2)
    return 0.5 * select(r, 2.0 - r, v > 0.0);
}

// Standard normal density.
fn npdf(v: f32) -> f32 {
    return INV_SQRT_2PI * gauss(v);
}

// tanh without the builtin: some drivers return NaN for large |v|, and sinh / cosh based
// builtins lose relative accuracy near 0. Near 0 an odd Taylor series (truncation error
// below 2e-9 relative for |v| < 0.3); elsewhere (1 - e) / (1 + e) with e = exp(-2|v|),
// which has no cancellation once e <= exp(-0.6).
fn tanh_acc(v: f32) -> f32 {
    let a = abs(v);
    if (a < 0.3) {
        let s = v * v;
        let series = -0.33333333333 + s * (0.13333333333 + s * (-0.05396825397
            + s * (0.02186948854 + s * -0.00886323552)));
        return v + v * s * series;
    }
    let e = exp(-2.0 * min(a, 15.0));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, v < 0.0);
}

@compute @workgroup_size(256)
fn gelu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        let v = x[i];
        out[i] = v * ncdf(v);
    }
}

@compute @workgroup_size(256)
fn gelu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        let v = x[i];
        out[i] = dy[i] * (ncdf(v) + v * npdf(v));
    }
}

@compute @workgroup_size(256)
fn tanh_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = tanh_acc(x[i]);
    }
}

// Here `x` holds the forward output y; (1 - y)(1 + y) instead of 1 - y^2 because 1 - y is
// exact for y near 1, where 1 - y * y would lose most of its digits.
@compute @workgroup_size(256)
fn tanh_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        let y = x[i];
        out[i] = dy[i] * ((1.0 - y) * (1.0 + y));
    }
}

@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        let v = x[i];
        out[i] = select(0.0, v, v > 0.0);
    }
}

@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = select(0.0, dy[i], x[i] > 0.0);
    }
}

// Stateless: the mask is a pure function of (key, element), so the backward pass (and a
// replayed step) regenerates exactly the forward mask without storing it.
@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        let h = mix32(mix32(i ^ p.k0) + p.k1);
        out[i] = select(0.0, x[i] * p.scale, (h >> 8u) < p.keep);
    }
}

@compute @workgroup_size(256)
fn add_bias(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = x[i] + bias[i % p.width];
    }
}

// Column sums of a [rows, cols] matrix, one pass of a multi-pass tree: each workgroup sums
// a chunk of 256 rows for 64 columns into one row of `dst` ([ceil(rows / 256), cols]); the
// host repeats the pass until one row is left. Short serial runs (64 values per thread) and
// a tree over chunks keep the f32 rounding error small for any number of rows.
struct SumParams {
    rows: u32,
    cols: u32,
    tiles: u32,    // ceil(cols / 64)
    chunks: u32,   // ceil(rows / 256)
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(5) var<uniform> sp: SumParams;
@group(0) @binding(6) var<storage, read> src: array<f32>;
@group(0) @binding(7) var<storage, read_write> dst: array<f32>;

// Four lanes per column folded in a fixed (l0 + l1) + (l2 + l3) order, not the 256-thread
// tree of shaders/common/block_reduce.wgsl, hence its own scratch array.
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(64, 4)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Tiles and chunks share one flattened (2-D) grid, so neither is limited to 65535.
    let g = group_index(wid, sp.grid_x);
    let tile = g % sp.tiles;
    let chunk = g / sp.tiles;
    let c = tile * 64u + lid.x;
    let live = chunk < sp.chunks && c < sp.cols;
    var acc = 0.0;
    if (live) {
        let r0 = chunk * 256u;
        let r1 = r0 + min(256u, sp.rows - r0);  // no u32 overflow near 2^32 rows
        for (var r = r0 + lid.y; r < r1; r += 4u) {
            acc += src[r * sp.cols + c];
        }
    }
    partial[lid.y * 64u + lid.x] = acc;
    workgroupBarrier();
    if (live && lid.y == 0u) {
        dst[chunk * sp.cols + c] = (partial[lid.x] + partial[64u + lid.x])
            + (partial[128u + lid.x] + partial[192u + lid.x]);
    }
}
