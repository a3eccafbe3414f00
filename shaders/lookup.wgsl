// Lookups: embedding rows by token id, and masked mean pooling over the sequence (the
// sentence-transformers pooling) with its backward.
//
// Grids are 2-D so that more than 65535 workgroups of 256 can be launched; the flat index
// is rebuilt from the x extent passed in `p.grid_x` by thread_index, a shared part from
// shaders/common/grid.wgsl that src/shaders.rs appends.

struct Params {
    n: u32,        // threads with work: output elements (or batch rows for pool_denominator)
    grid_x: u32,   // workgroups along x in the dispatch
    batch: u32,    // B (mean pooling)
    seq: u32,      // S (mean pooling)
    hidden: u32,   // H
    vocab: u32,    // V (embedding)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;   // [V, H]
@group(0) @binding(2) var<storage, read> ids: array<u32>;     // [N]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;       // [B, S, H]
@group(0) @binding(5) var<storage, read> mask: array<f32>;    // [B, S]
@group(0) @binding(6) var<storage, read> dy: array<f32>;      // [B, H]
@group(0) @binding(7) var<storage, read_write> denom: array<f32>;  // [B]

// Matches sentence-transformers' clamp(min=1e-9) on the token count.
const MIN_COUNT: f32 = 1e-9;

// out[i, :] = table[ids[i], :]; an id outside the vocabulary gives a zero row rather than a
// read past the table (hosts catch bad ids with lookup::check_ids before upload).
@compute @workgroup_size(256)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.n) {
        return;
    }
    let row = i / p.hidden;
    let col = i - row * p.hidden;
    let id = ids[row];
    var v = 0.0;
    if (id < p.vocab) {
        v = table[id * p.hidden + col];
    }
    out[i] = v;
}

// out[b, h] = sum_s mask[b, s] x[b, s, h] / max(sum_s mask[b, s], 1e-9); one thread per
// (b, h), so neighbouring threads read neighbouring x.
@compute @workgroup_size(256)
fn mean_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.n) {
        return;
    }
    let b = i / p.hidden;
    let h = i - b * p.hidden;
    var acc = 0.0;
    var count = 0.0;
    for (var s = 0u; s < p.seq; s++) {
        let w = mask[b * p.seq + s];
        count += w;
        // select, not multiply: a masked-out position never contributes, even if not finite.
        acc += select(0.0, w * x[(b * p.seq + s) * p.hidden + h], w != 0.0);
    }
    out[i] = acc / max(count, MIN_COUNT);
}

// denom[b] = max(sum_s mask[b, s], 1e-9), once per row for the backward.
@compute @workgroup_size(256)
fn pool_denominator(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = thread_index(wid, lid, p.grid_x, 256u);
    if (b >= p.n) {
        return;
    }
    var count = 0.0;
    for (var s = 0u; s < p.seq; s++) {
        count += mask[b * p.seq + s];
    }
    denom[b] = max(count, MIN_COUNT);
}

// dx[b, s, h] = (mask[b, s] / denom[b]) dy[b, h]; dividing the mask first keeps an all-zero
// row at exactly zero whatever dy holds.
@compute @workgroup_size(256)
fn mean_pool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.n) {
        return;
    }
    let bs = i / p.hidden;
    let h = i - bs * p.hidden;
    let b = bs / p.seq;
    let w = mask[bs];
    out[i] = select(0.0, (w / denom[b]) * dy[b * p.hidden + h], w != 0.0);
}
