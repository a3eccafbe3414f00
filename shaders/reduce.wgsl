// Reductions to a scalar (sum, mean, MSE, cross-entropy) and their backward kernels.
//
// Scalars are [1] buffers that stay on the GPU. Sums run in stages: each workgroup of 256
// threads folds a chunk of CHUNK = 4096 elements (16 strided adds per thread, then a tree
// over the workgroup) into one partial, and the host repeats the stage on the partials
// until one value is left; short sequential runs keep large sums accurate in f32.
// Grids are 2-D (`wid.y * grid_x + wid.x`) so that more than 65535 workgroups fit.

struct Params {
    n: u32,         // elements (sum stages, elementwise) or rows (cross-entropy)
    grid_x: u32,    // workgroups along x in the dispatch
    scale: f32,     // factor applied to the stage's outputs
    classes: u32,   // cross-entropy: row length C
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> other: array<f32>;     // target (MSE)
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> g: array<f32>;         // upstream gradient, [1]
@group(0) @binding(5) var<storage, read> labels: array<u32>;

const WG: u32 = 256u;
const CHUNK: u32 = 4096u;

var<workgroup> red: array<f32, 256>;

fn group_index(wid: vec3<u32>) -> u32 {
    return wid.y * p.grid_x + wid.x;
}

// Tree sum over the workgroup; the result is valid in every thread.
fn block_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn block_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// dst[group] = scale * sum(src[group * CHUNK .. (group + 1) * CHUNK]).
@compute @workgroup_size(256)
fn sum_stage(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let grp = group_index(wid);
    let start = grp * CHUNK;
    if (start >= p.n) {
        return;
    }
    let lid = lid3.x;
    let end = min(p.n - start, CHUNK);
    var acc = 0.0;
    for (var i = lid; i < end; i += WG) {
        acc += src[start + i];
    }
    let total = block_sum(lid, acc);
    if (lid == 0u) {
        dst[grp] = p.scale * total;
    }
}

// The first stage of the MSE: like sum_stage over (src - other)^2.
@compute @workgroup_size(256)
fn sq_diff_stage(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let grp = group_index(wid);
    let start = grp * CHUNK;
    if (start >= p.n) {
        return;
    }
    let lid = lid3.x;
    let end = min(p.n - start, CHUNK);
    var acc = 0.0;
    for (var i = lid; i < end; i += WG) {
        let d = src[start + i] - other[start + i];
        acc += d * d;
    }
    let total = block_sum(lid, acc);
    if (lid == 0u) {
        dst[grp] = p.scale * total;
    }
}

// dst[i] = scale * g[0]: the backward of sum (scale 1) and mean (scale 1/n).
@compute @workgroup_size(256)
fn broadcast(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = group_index(wid) * WG + lid3.x;
    if (i < p.n) {
        dst[i] = p.scale * g[0];
    }
}

// dst[i] = g[0] * scale * (src[i] - other[i]), scale = 2 / n.
@compute @workgroup_size(256)
fn mse_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = group_index(wid) * WG + lid3.x;
    if (i < p.n) {
        dst[i] = g[0] * (p.scale * (src[i] - other[i]));
    }
}

// Row r of the logits [n, classes]: its max and log-sum-exp, valid in every thread.
fn row_logsumexp(lid: u32, base: u32) -> vec2<f32> {
    let c = p.classes;
    var m = src[base];
    for (var j = lid; j < c; j += WG) {
        m = max(m, src[base + j]);
    }
    let mx = block_max(lid, m);
    var s = 0.0;
    for (var j = lid; j < c; j += WG) {
        s += exp(src[base + j] - mx);
    }
    return vec2<f32>(mx, log(block_sum(lid, s)));
}

// dst[row] = logsumexp(row) - row[label]; an out-of-range label (>= classes) contributes 0.
@compute @workgroup_size(256)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid);
    if (row >= p.n) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.classes;
    let lse = row_logsumexp(lid, base);
    if (lid == 0u) {
        let label = labels[row];
        var loss = 0.0;
        if (label < p.classes) {
            // (max - x[label]) + log(sum): both terms >= 0, so no cancellation.
            loss = (lse.x - src[base + label]) + lse.y;
        }
        dst[row] = loss;
    }
}

// dst = g[0] * scale * (softmax(row) - onehot(label)), scale = 1 / n; a row whose label
// is out of range gets a zero gradient, matching its zero loss.
@compute @workgroup_size(256)
fn cross_entropy_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid);
    if (row >= p.n) {
        return;
    }
    let lid = lid3.x;
    let c = p.classes;
    let base = row * c;
    let lse = row_logsumexp(lid, base);
    let label = labels[row];
    let valid = label < c;
    let k = g[0] * p.scale;
    for (var j = lid; j < c; j += WG) {
        let prob = exp(src[base + j] - lse.x - lse.y);
        let d = prob - select(0.0, 1.0, j == label);
        dst[base + j] = select(0.0, k * d, valid);
    }
}
