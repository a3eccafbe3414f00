// RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w per row, and its gradient with respect
// to x for a frozen w:
//
//   dx_k = r w_k dy_k - r^3 x_k / n * sum_j dy_j w_j x_j,   r = 1 / sqrt(mean(x^2) + eps)
//
// One workgroup of 256 threads per row (row index from the 2-D grid, so early returns are
// uniform); group_index from shaders/common/grid.wgsl, WG and block_sum from
// shaders/common/block_reduce.wgsl.

struct Params {
    rows: u32,
    n: u32,
    grid_x: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // [rows, n]
@group(0) @binding(2) var<storage, read> w: array<f32>;        // [n]
@group(0) @binding(3) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> rstd_out: array<f32>;  // [rows]
@group(0) @binding(5) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx_out: array<f32>;

@compute @workgroup_size(256)
fn rms_norm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.n;
    var q = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        let v = x[base + j];
        q += v * v;
    }
    let r = 1.0 / sqrt(block_sum(lid, q) / f32(p.n) + p.eps);
    for (var j = lid; j < p.n; j += WG) {
        y_out[base + j] = x[base + j] * r * w[j];
    }
    if (lid == 0u) {
        rstd_out[row] = r;
    }
}

@compute @workgroup_size(256)
fn rms_norm_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.rows) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.n;
    var s = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        s += dy[base + j] * w[j] * x[base + j];
    }
    let r = rstd_in[row];
    let c = block_sum(lid, s) * r * r * r / f32(p.n);
    for (var j = lid; j < p.n; j += WG) {
        dx_out[base + j] = r * w[j] * dy[base + j] - c * x[base + j];
    }
}
