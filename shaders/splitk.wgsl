// Split-K reduction: C = alpha * sum_s P[s] + beta * C (+ bias), the second pass of a
// split-K GEMM (src/kernels/gemm/split.rs). P holds `splits` partial products [M, N] one
// after another; each output element sums them in the fixed order s = 0, 1, ..., so the
// result is bit-identical from run to run. The epilogue is the GEMM's: alpha first, then
// fma(beta, C, .) only when beta != 0 (C is not read otherwise), then the bias of the column.
//
// Grids are 2-D so that more than 65535 workgroups of 256 can be launched; the flat index
// is rebuilt from the x extent in `p.grid_x` (shaders/common/grid.wgsl).

struct Params {
    count: u32,    // elements of C: M * N
    n: u32,        // columns of C (the bias index is i % n)
    splits: u32,   // partials in P
    grid_x: u32,   // workgroups along x in the dispatch
    alpha: f32,
    beta: f32,
    has_bias: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> parts: array<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

@compute @workgroup_size(256)
fn reduce_splits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i >= p.count) {
        return;
    }
    var acc = parts[i];
    for (var s = 1u; s < p.splits; s++) {
        acc += parts[s * p.count + i];
    }
    var v = p.alpha * acc;
    if (p.beta != 0.0) {
        v = fma(p.beta, c[i], v);
    }
    if (p.has_bias != 0u) {
        v += bias[i % p.n];
    }
    c[i] = v;
}
