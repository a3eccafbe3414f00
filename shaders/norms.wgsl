// Row-wise normalisations: LayerNorm forward/backward and (masked) softmax forward/backward.
//
// Row kernels run one workgroup of 256 threads per row; the row index is rebuilt from a
// 2-D grid (`wid.y * grid_x + wid.x`) so that more than 65535 rows can be launched. The row
// index depends only on the workgroup id and the uniform params, so every early return is
// uniform and the barriers inside the block reductions stay in uniform control flow.
//
// Shared parts (appended by src/shaders.rs): group_index from shaders/common/grid.wgsl;
// WG, the workgroup arrays red_a / red_b and block_sum, block_sum2, block_max from
// shaders/common/block_reduce.wgsl.

struct Params {
    rows: u32,        // rows of n
    n: u32,           // row length (last dim)
    grid_x: u32,      // workgroups along x in the dispatch
    eps: f32,         // LayerNorm epsilon
    rpm: u32,         // softmax: rows of x per mask row
    has_mask: u32,    // softmax: 1 when a mask is bound
    chunks: u32,      // LayerNorm dgamma/dbeta: row chunks of CHUNK rows
    col_blocks: u32,  // LayerNorm dgamma/dbeta: blocks of 16 columns
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> rstd_out: array<f32>;
@group(0) @binding(7) var<storage, read> mean_in: array<f32>;
@group(0) @binding(8) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(9) var<storage, read> dy: array<f32>;
@group(0) @binding(10) var<storage, read_write> dx_out: array<f32>;
@group(0) @binding(11) var<storage, read_write> part_g: array<f32>;  // [chunks, n]
@group(0) @binding(12) var<storage, read_write> part_b: array<f32>;  // [chunks, n]
@group(0) @binding(13) var<storage, read_write> dgamma_out: array<f32>;
@group(0) @binding(14) var<storage, read_write> dbeta_out: array<f32>;
@group(0) @binding(15) var<storage, read> mask: array<f32>;          // [m, n], additive
@group(0) @binding(16) var<storage, read> probs: array<f32>;         // softmax output y
@group(0) @binding(17) var<storage, read> residual: array<f32>;      // LayerNorm(x + residual)
@group(0) @binding(18) var<storage, read_write> sum_out: array<f32>; // x + residual

// Rows summed by one workgroup in the first dgamma/dbeta stage (16 per lane, 16 lanes).
const CHUNK: u32 = 256u;
// The largest finite f32: values are clamped to it so that no infinity ever appears.
const F32_MAX: f32 = 3.40282347e38;

// ---------------------------------------------------------------------------------------
// LayerNorm

@compute @workgroup_size(256)
fn layer_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let n = p.n;
    let base = row * n;
    let inv_n = 1.0 / f32(n);

    var s = 0.0;
    for (var j = lid; j < n; j += WG) {
        s += x[base + j];
    }
    let mean = block_sum(lid, s) * inv_n;

    // Second pass over x - mean: no catastrophic cancellation of E[x^2] - E[x]^2.
    var q = 0.0;
    for (var j = lid; j < n; j += WG) {
        let d = x[base + j] - mean;
        q += d * d;
    }
    let variance = block_sum(lid, q) * inv_n;  // biased, as PyTorch and BERT
    let rstd = 1.0 / sqrt(variance + p.eps);

    for (var j = lid; j < n; j += WG) {
        y_out[base + j] = (x[base + j] - mean) * rstd * gamma[j] + beta[j];
    }
    if (lid == 0u) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// layer_norm_fwd of v = x + residual (a residual connection and the norm after it), also
// writing v: the same f32 sum as the elementwise add and the same arithmetic as
// layer_norm_fwd, so both outputs equal the two separate dispatches bit for bit. Each pass
// recomputes v (a deterministic f32 add) instead of reading sum_out back.
@compute @workgroup_size(256)
fn layer_norm_add_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let n = p.n;
    let base = row * n;
    let inv_n = 1.0 / f32(n);

    var s = 0.0;
    for (var j = lid; j < n; j += WG) {
        let v = x[base + j] + residual[base + j];
        sum_out[base + j] = v;
        s += v;
    }
    let mean = block_sum(lid, s) * inv_n;

    var q = 0.0;
    for (var j = lid; j < n; j += WG) {
        let d = (x[base + j] + residual[base + j]) - mean;
        q += d * d;
    }
    let variance = block_sum(lid, q) * inv_n;
    let rstd = 1.0 / sqrt(variance + p.eps);

    for (var j = lid; j < n; j += WG) {
        y_out[base + j] = ((x[base + j] + residual[base + j]) - mean) * rstd * gamma[j] + beta[j];
    }
    if (lid == 0u) {
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
@compute @workgroup_size(256)
fn layer_norm_bwd_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let n = p.n;
    let base = row * n;
    let mean = mean_in[row];
    let rstd = rstd_in[row];

    var acc = vec2<f32>(0.0, 0.0);
    for (var j = lid; j < n; j += WG) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - mean) * rstd;
        acc += vec2<f32>(g, g * xhat);
    }
    let sums = block_sum2(lid, acc) * (1.0 / f32(n));

    for (var j = lid; j < n; j += WG) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - mean) * rstd;
        dx_out[base + j] = rstd * (g - sums.x - xhat * sums.y);
    }
}

// Sums the 16 lanes of each of the 16 columns a 256-thread workgroup holds in (red_a,
// red_b): afterwards threads 0..15 hold their column's totals.
fn fold_lanes(lid: u32, acc: vec2<f32>) {
    red_a[lid] = acc.x;
    red_b[lid] = acc.y;
    workgroupBarrier();
    for (var s = 128u; s >= 16u; s = s >> 1u) {
        if (lid < s) {
            red_a[lid] = red_a[lid] + red_a[lid + s];
            red_b[lid] = red_b[lid] + red_b[lid + s];
        }
        workgroupBarrier();
    }
}

// dgamma/dbeta, stage 1: workgroup (column block, row chunk) sums CHUNK rows of 16 columns.
// Lane l = lid / 16 takes rows l, l + 16, ... of the chunk (16 sequential adds), then a tree
// over the 16 lanes: short sequential runs keep the sums over many rows accurate.
@compute @workgroup_size(256)
fn layer_norm_bwd_params_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let g = group_index(wid, p.grid_x);
    if (g >= p.chunks * p.col_blocks) {
        return;
    }
    let lid = lid3.x;
    let cb = g % p.col_blocks;
    let chunk = g / p.col_blocks;
    let col = cb * 16u + (lid & 15u);
    let lane = lid >> 4u;
    let n = p.n;

    var acc = vec2<f32>(0.0, 0.0);
    if (col < n) {
        let r_end = min(p.rows, (chunk + 1u) * CHUNK);
        for (var r = chunk * CHUNK + lane; r < r_end; r += 16u) {
            let d = dy[r * n + col];
            let xhat = (x[r * n + col] - mean_in[r]) * rstd_in[r];
            acc += vec2<f32>(d * xhat, d);
        }
    }
    fold_lanes(lid, acc);
    if (lid < 16u && col < n) {
        part_g[chunk * n + col] = red_a[lid];
        part_b[chunk * n + col] = red_b[lid];
    }
}

// dgamma/dbeta, stage 2: the same 16-lane scheme over the chunk partials of each column.
@compute @workgroup_size(256)
fn layer_norm_bwd_params_final(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let cb = group_index(wid, p.grid_x);
    if (cb >= p.col_blocks) {
        return;
    }
    let lid = lid3.x;
    let col = cb * 16u + (lid & 15u);
    let lane = lid >> 4u;
    let n = p.n;

    var acc = vec2<f32>(0.0, 0.0);
    if (col < n) {
        for (var c = lane; c < p.chunks; c += 16u) {
            acc += vec2<f32>(part_g[c * n + col], part_b[c * n + col]);
        }
    }
    fold_lanes(lid, acc);
    if (lid < 16u && col < n) {
        dgamma_out[col] = red_a[lid];
        dbeta_out[col] = red_b[lid];
    }
}

// ---------------------------------------------------------------------------------------
// Softmax
//
// Values are carried halved, h = x/2 + mask/2: x + mask can overflow to -inf (x + f32::MIN),
// and h - max(h) then stays finite too. Halving is exact, so the result is the softmax of
// x + mask rounded to f32, as an unhalved kernel computes it, without any inf or NaN.
// exp(2 * max(h - hmax, -52)) underflows to 0 below -104 exactly like exp(-inf) would.
// The row maximum contributes exp(0) = 1, so the denominator is >= 1: a fully masked row
// gives the softmax of its (equal, or nearly equal) masked values, a uniform distribution
// for masks at or below -1e9 / f32::MIN, never NaN.

fn softmax_half(base: u32, row: u32, j: u32) -> f32 {
    var h = 0.5 * x[base + j];
    if (p.has_mask != 0u) {
        h += 0.5 * mask[(row / p.rpm) * p.n + j];
    }
    return clamp(h, -0.5 * F32_MAX, 0.5 * F32_MAX);
}

fn softmax_exp(h: f32, hmax: f32) -> f32 {
    return exp(2.0 * max(h - hmax, -52.0));
}

@compute @workgroup_size(256)
fn softmax_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let n = p.n;
    let base = row * n;

    var m = -0.5 * F32_MAX;
    for (var j = lid; j < n; j += WG) {
        m = max(m, softmax_half(base, row, j));
    }
    let hmax = block_max(lid, m);

    var s = 0.0;
    for (var j = lid; j < n; j += WG) {
        s += softmax_exp(softmax_half(base, row, j), hmax);
    }
    let inv = 1.0 / block_sum(lid, s);

    for (var j = lid; j < n; j += WG) {
        y_out[base + j] = softmax_exp(softmax_half(base, row, j), hmax) * inv;
    }
}

// dx = y * (dy - sum(dy * y)) from the forward output y.
@compute @workgroup_size(256)
fn softmax_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let n = p.n;
    let base = row * n;

    var s = 0.0;
    for (var j = lid; j < n; j += WG) {
        s += dy[base + j] * probs[base + j];
    }
    let dot = block_sum(lid, s);

    for (var j = lid; j < n; j += WG) {
        dx_out[base + j] = probs[base + j] * (dy[base + j] - dot);
    }
}

// ---------------------------------------------------------------------------------------
// Softmax, one row per invocation: serial loops, no workgroup memory and no barriers. For
// CPU devices (llvmpipe, WARP), where a 256-wide workgroup per row spends its time in
// barriers (and idles on short rows). Same math as softmax_fwd / softmax_bwd; the sums run
// in index order instead of as a tree.

const ROWS_WG: u32 = 64u;

@compute @workgroup_size(64)
fn softmax_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = thread_index(wid, lid3, p.grid_x, ROWS_WG);
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    var hmax = -0.5 * F32_MAX;
    for (var j = 0u; j < n; j++) {
        hmax = max(hmax, softmax_half(base, row, j));
    }
    var s = 0.0;
    for (var j = 0u; j < n; j++) {
        s += softmax_exp(softmax_half(base, row, j), hmax);
    }
    let inv = 1.0 / s;
    for (var j = 0u; j < n; j++) {
        y_out[base + j] = softmax_exp(softmax_half(base, row, j), hmax) * inv;
    }
}

@compute @workgroup_size(64)
fn softmax_bwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = thread_index(wid, lid3, p.grid_x, ROWS_WG);
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    var dot = 0.0;
    for (var j = 0u; j < n; j++) {
        dot += dy[base + j] * probs[base + j];
    }
    for (var j = 0u; j < n; j++) {
        dx_out[base + j] = probs[base + j] * (dy[base + j] - dot);
    }
}

// LayerNorm, one row per invocation (see the softmax above): the same two-pass statistics
// and formulas as layer_norm_fwd / layer_norm_add_fwd / layer_norm_bwd_dx, summed in index
// order. The fused form equals layer_norm_fwd_rows on the f32 sum bit for bit.

@compute @workgroup_size(64)
fn layer_norm_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = thread_index(wid, lid3, p.grid_x, ROWS_WG);
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    let inv_n = 1.0 / f32(n);
    var s = 0.0;
    for (var j = 0u; j < n; j++) {
        s += x[base + j];
    }
    let mean = s * inv_n;
    var q = 0.0;
    for (var j = 0u; j < n; j++) {
        let d = x[base + j] - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(q * inv_n + p.eps);
    for (var j = 0u; j < n; j++) {
        y_out[base + j] = (x[base + j] - mean) * rstd * gamma[j] + beta[j];
    }
    mean_out[row] = mean;
    rstd_out[row] = rstd;
}

@compute @workgroup_size(64)
fn layer_norm_add_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = thread_index(wid, lid3, p.grid_x, ROWS_WG);
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    let inv_n = 1.0 / f32(n);
    var s = 0.0;
    for (var j = 0u; j < n; j++) {
        let v = x[base + j] + residual[base + j];
        sum_out[base + j] = v;
        s += v;
    }
    let mean = s * inv_n;
    var q = 0.0;
    for (var j = 0u; j < n; j++) {
        let d = (x[base + j] + residual[base + j]) - mean;
        q += d * d;
    }
    let rstd = 1.0 / sqrt(q * inv_n + p.eps);
    for (var j = 0u; j < n; j++) {
        y_out[base + j] = ((x[base + j] + residual[base + j]) - mean) * rstd * gamma[j] + beta[j];
    }
    mean_out[row] = mean;
    rstd_out[row] = rstd;
}

@compute @workgroup_size(64)
fn layer_norm_bwd_dx_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = thread_index(wid, lid3, p.grid_x, ROWS_WG);
    if (row >= p.rows) {
        return;
    }
    let n = p.n;
    let base = row * n;
    let mean = mean_in[row];
    let rstd = rstd_in[row];
    var acc = vec2<f32>(0.0, 0.0);
    for (var j = 0u; j < n; j++) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - mean) * rstd;
        acc += vec2<f32>(g, g * xhat);
    }
    let sums = acc * (1.0 / f32(n));
    for (var j = 0u; j < n; j++) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - mean) * rstd;
        dx_out[base + j] = rstd * (g - sums.x - xhat * sums.y);
    }
}
