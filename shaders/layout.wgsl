// Layout changes expressed as copies: swapping the two middle dims of [A, B, C, D]
// (the head split and merge of multi-head attention: [batch, seq, heads, dh] <->
// [batch, heads, seq, dh]), of one tensor or of three at once. The swap is its own
// inverse, so it is also its backward.
//
// Shared part (appended by src/shaders.rs): thread_index from shaders/common/grid.wgsl.

struct Params {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> src_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst_b: array<f32>;
@group(0) @binding(5) var<storage, read> src_c: array<f32>;
@group(0) @binding(6) var<storage, read_write> dst_c: array<f32>;

// Where output element o of [A, C, B, D] comes from in [A, B, C, D].
fn swapped_from(o: u32) -> u32 {
    let dd = o % p.d;
    let rest = o / p.d;
    let bb = rest % p.b;
    let rest2 = rest / p.b;
    let cc = rest2 % p.c;
    let aa = rest2 / p.c;
    return ((aa * p.b + bb) * p.c + cc) * p.d + dd;
}

@compute @workgroup_size(256)
fn swap_middle(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = thread_index(wid, lid, p.grid_x, 256u);
    if (o >= p.a * p.b * p.c * p.d) {
        return;
    }
    // Output index o walks [A, C, B, D].
    dst[o] = src[swapped_from(o)];
}

// The same swap of three tensors of one shape (the attention's query, key and value, or
// their gradients) in one dispatch: thread o handles element o % n of tensor o / n.
@compute @workgroup_size(256)
fn swap_middle3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let n = p.a * p.b * p.c * p.d;
    let t = thread_index(wid, lid, p.grid_x, 256u);
    if (t >= 3u * n) {
        return;
    }
    let o = t % n;
    let i = swapped_from(o);
    switch t / n {
        case 0u: { dst[o] = src[i]; }
        case 1u: { dst_b[o] = src_b[i]; }
        default: { dst_c[o] = src_c[i]; }
    }
}
