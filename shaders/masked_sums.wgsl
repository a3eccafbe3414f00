// The two masked sums of one CapaBoost adapter's backward in one dispatch:
//   dA = sum_i M_i * S_A[i]   (S_A is [d r, in], branch i is rows i r .. i r + r)
//   dB = sum_i N_i * S_B[:, i]  (S_B is [out, d r], branch i is columns i r .. i r + r;
//        with b_rows, S_B^T [d r, out] is given instead: branch i is rows i r .. i r + r)
// Threads 0 .. r in fold factor A, the next out r fold factor B; each entry adds its
// branches in order 0 .. d-1 with `select`, exactly as `masked_sum` in shaders/masks.wgsl
// (so the results are bit for bit those of two `masked_sum` dispatches).
//
// Shared parts (appended by src/shaders.rs): thread_index from shaders/common/grid.wgsl.

struct PairParams {
    r: u32,          // adapter rank
    in_f: u32,       // columns of lora_A
    out_f: u32,      // rows of lora_B
    branches: u32,   // d
    numel_a: u32,    // r * in
    total: u32,      // r * in + out * r
    grid_x: u32,
    b_rows: u32,     // 1: stacked_b holds S_B^T [d r, out]
}

@group(0) @binding(0) var<uniform> pp: PairParams;
@group(0) @binding(1) var<storage, read> bits_a: array<u32>;
@group(0) @binding(2) var<storage, read> bits_b: array<u32>;
@group(0) @binding(3) var<storage, read> stacked_a: array<f32>;
@group(0) @binding(4) var<storage, read> stacked_b: array<f32>;
@group(0) @binding(5) var<storage, read_write> sum_a: array<f32>;
@group(0) @binding(6) var<storage, read_write> sum_b: array<f32>;

fn bit_a(e: u32) -> bool {
    return ((bits_a[e >> 5u] >> (e & 31u)) & 1u) == 1u;
}

fn bit_b(e: u32) -> bool {
    return ((bits_b[e >> 5u] >> (e & 31u)) & 1u) == 1u;
}

@compute @workgroup_size(256)
fn masked_sum_pair(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = thread_index(wid, lid, pp.grid_x, 256u);
    if (idx >= pp.total) {
        return;
    }
    var acc = 0.0;
    if (idx < pp.numel_a) {
        // Factor A, [r, in]: entry (row, col) of branch i is row i r + row of S_A.
        for (var i = 0u; i < pp.branches; i++) {
            // select, not multiply: a masked-out entry never contributes, even if not finite.
            acc += select(0.0, stacked_a[i * pp.numel_a + idx], bit_a(i * pp.numel_a + idx));
        }
        sum_a[idx] = acc;
        return;
    }
    // Factor B, [out, r]: entry (row, col) of branch i is column i r + col of row `row`.
    let e = idx - pp.numel_a;
    let numel_b = pp.out_f * pp.r;
    let row = e / pp.r;
    let col = e - row * pp.r;
    for (var i = 0u; i < pp.branches; i++) {
        let src = select(row * (pp.branches * pp.r) + i * pp.r + col,
                         (i * pp.r + col) * pp.out_f + row, pp.b_rows == 1u);
        acc += select(0.0, stacked_b[src], bit_b(i * numel_b + e));
    }
    sum_b[e] = acc;
}
