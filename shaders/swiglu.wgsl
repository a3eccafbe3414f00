// SwiGLU (Llama's MLP gate): y = silu(g) u with silu(g) = g / (1 + exp(-g)), and its
// gradients dg = dy u silu'(g), du = dy silu(g), silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
// One thread per element; grids are 2-D (thread_index from shaders/common/grid.wgsl).
//
// The sigmoid is evaluated without overflow for any finite g: exp of a non-positive argument
// only.

struct Params {
    n: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dg_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> du_out: array<f32>;

fn sigmoid(v: f32) -> f32 {
    let e = exp(-abs(v));
    return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.n) {
        return;
    }
    y_out[i] = g[i] * sigmoid(g[i]) * u[i];
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.n) {
        return;
    }
    let v = g[i];
    let s = sigmoid(v);
    dg_out[i] = dy[i] * u[i] * s * (1.0 + v * (1.0 - s));
    du_out[i] = dy[i] * v * s;
}
