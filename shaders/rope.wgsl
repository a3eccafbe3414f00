// Rotary position embeddings in llama.cpp's layout (the one GGUF q/k weights are permuted
// for): within each head of width D, the adjacent pair (2i, 2i + 1) at sequence position t
// is rotated by the angle t_pos * theta^(-2i/D). The angles come as a cos/sin table
// [T, D/2] computed on the host in f64 (no f32 pow or large-angle sin here).
//
//   forward:  (a, b) -> (a c - b s, a s + b c)
//   backward: (g, h) -> (g c + h s, -g s + h c)   (the transpose: rotation by -angle)
//
// x is [..., T, H, D] contiguous; one thread per pair. Grids are 2-D (shaders/common/grid.wgsl).

struct Params {
    pairs: u32,   // pairs in x: numel / 2
    grid_x: u32,  // workgroups along x
    seq: u32,     // T
    heads: u32,   // H
    half: u32,    // D / 2
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;  // [T, D/2]
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;  // [T, D/2]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

// The pair's table index: (t, i) from the flat pair index.
fn table_index(k: u32) -> u32 {
    let i = k % p.half;
    let t = (k / (p.half * p.heads)) % p.seq;
    return t * p.half + i;
}

// Rotates pair k by the table's angle (sgn = 1) or by its negative (sgn = -1: the backward,
// the transpose of the rotation; negating sin is exact, so both match their twins bit for
// bit as the two separate bodies did).
fn rotate(k: u32, sgn: f32) {
    let j = table_index(k);
    let c = cos_t[j];
    let s = sgn * sin_t[j];
    let a = x[2u * k];
    let b = x[2u * k + 1u];
    out[2u * k] = a * c - b * s;
    out[2u * k + 1u] = a * s + b * c;
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = thread_index(wid, lid, p.grid_x, 256u);
    if (k < p.pairs) {
        rotate(k, 1.0);
    }
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let k = thread_index(wid, lid, p.grid_x, 256u);
    if (k < p.pairs) {
        rotate(k, -1.0);
    }
}
