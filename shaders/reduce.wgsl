// Reductions to a scalar (sum, mean, MSE, cross-entropy) and their backward kernels.
//
// Scalars are [1] buffers that stay on the GPU. Sums run in stages: each workgroup of 256
// threads folds a chunk of CHUNK = 4096 elements (16 strided adds per thread, then a tree
// over the workgroup) into one partial, and the host repeats the stage on the partials
// until one value is left; short sequential runs keep large sums accurate in f32.
// Grids are 2-D (`wid.y * grid_x + wid.x`) so that more than 65535 workgroups fit.
//
// Shared parts (appended by src/shaders.rs): group_index and thread_index from
// shaders/common/grid.wgsl;
// WG and block_sum, block_max from shaders/common/block_reduce.wgsl.

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

const CHUNK: u32 = 4096u;

// dst[group] = scale * sum(src[group * CHUNK .. (group + 1) * CHUNK]).
@compute @workgroup_size(256)
fn sum_stage(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let grp = group_index(wid, p.grid_x);
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
    let grp = group_index(wid, p.grid_x);
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
    let i = thread_index(wid, lid3, p.grid_x, WG);
    if (i < p.n) {
        dst[i] = p.scale * g[0];
    }
}

// dst[i] = g[0] * scale * (src[i] - other[i]), scale = 2 / n.
@compute @workgroup_size(256)
fn mse_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let i = thread_index(wid, lid3, p.grid_x, WG);
    if (i < p.n) {
        dst[i] = g[0] * (p.scale * (src[i] - other[i]));
    }
}

// Row r of the logits [n, classes] as (max m, count of entries equal to m, rest = sum of
// exp(x - m) over the entries below m), valid in every thread. Keeping the max's own 1
// apart from `rest` is what lets a confident row's loss log(1 + rest) and its label
// gradient -rest / (1 + rest) keep their relative precision when rest is tiny: summed into
// one f32, 1 + rest would round rest away.
fn row_stats(lid: u32, base: u32) -> vec3<f32> {
    let c = p.classes;
    var m = src[base];
    for (var j = lid; j < c; j += WG) {
        m = max(m, src[base + j]);
    }
    let mx = block_max(lid, m);
    var count = 0.0;
    var rest = 0.0;
    for (var j = lid; j < c; j += WG) {
        let x = src[base + j];
        if (x == mx) {
            count += 1.0;
        } else {
            rest += exp(x - mx);
        }
    }
    let total_count = block_sum(lid, count);
    return vec3<f32>(mx, total_count, block_sum(lid, rest));
}

// log(1 + u) for u >= 0 to a few f32 ulps. Below 1/2 it uses the series
// 2 atanh(z), z = u / (2 + u) <= 1/5, instead of log(1 + u): GPU logs are only
// absolutely accurate (2^-21) near 1, which is no relative precision for a tiny log.
fn log1p_pos(u: f32) -> f32 {
    if (u >= 0.5) {
        return log(1.0 + u);
    }
    let z = u / (2.0 + u);
    let z2 = z * z;
    // Terms up to z^13 / 13: the first one left out is below 1e-9 relative.
    let poly = 1.0 + z2 * (1.0 / 3.0 + z2 * (1.0 / 5.0 + z2 * (1.0 / 7.0
        + z2 * (1.0 / 9.0 + z2 * (1.0 / 11.0 + z2 * (1.0 / 13.0))))));
    return 2.0 * z * poly;
}

// log(sum of exp(x - m)) = log(count + rest).
fn log_sum(st: vec3<f32>) -> f32 {
    if (st.y == 1.0) {
        return log1p_pos(st.z);
    }
    return log(st.y + st.z);
}

// dst[row] = logsumexp(row) - row[label]; an out-of-range label (>= classes) contributes 0.
@compute @workgroup_size(256)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.n) {
        return;
    }
    let lid = lid3.x;
    let base = row * p.classes;
    let st = row_stats(lid, base);
    if (lid == 0u) {
        let label = labels[row];
        var loss = 0.0;
        if (label < p.classes) {
            // (max - x[label]) + log(sum): both terms >= 0, so no cancellation.
            loss = (st.x - src[base + label]) + log_sum(st);
        }
        dst[row] = loss;
    }
}

// dst = g[0] * scale * (softmax(row) - onehot(label)), scale = 1 / n; a row whose label
// is out of range gets a zero gradient, matching its zero loss.
@compute @workgroup_size(256)
fn cross_entropy_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = group_index(wid, p.grid_x);
    if (row >= p.n) {
        return;
    }
    let lid = lid3.x;
    let c = p.classes;
    let base = row * c;
    let st = row_stats(lid, base);
    let sum = st.y + st.z;
    let label = labels[row];
    let valid = label < c;
    let k = g[0] * p.scale;
    for (var j = lid; j < c; j += WG) {
        let x = src[base + j];
        var d = exp(x - st.x) / sum;
        if (j == label) {
            if (x == st.x && st.y == 1.0) {
                // softmax - 1 = -(sum of the others) / sum, without cancelling.
                d = -st.z / sum;
            } else {
                // The label's probability is at most 1/2 here: no cancellation.
                d = d - 1.0;
            }
        }
        dst[base + j] = select(0.0, k * d, valid);
    }
}
