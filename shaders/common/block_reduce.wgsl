// Workgroup tree reductions over the named workgroup arrays `red_a` and `red_b` (shared
// part, appended by src/shaders.rs to the shaders that use it; not a shader on its own).
//
// For workgroups of WG = 256 threads along x. Every thread of the workgroup must call a
// reduction, in uniform control flow (they contain barriers); the result is valid in every
// thread, and the trailing barrier lets the next reduction reuse the arrays at once.
// log2(256) levels of pairwise adds keep the rounding error small for long rows.

const WG: u32 = 256u;

var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

// Tree sum over the workgroup.
fn block_sum(lid: u32, v: f32) -> f32 {
    red_a[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_a[lid] = red_a[lid] + red_a[lid + s];
        }
        workgroupBarrier();
    }
    let r = red_a[0];
    // The next reduction overwrites red_a: every thread must have read the result first.
    workgroupBarrier();
    return r;
}

// Two tree sums at once (one barrier sequence instead of two).
fn block_sum2(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red_a[lid] = v.x;
    red_b[lid] = v.y;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_a[lid] = red_a[lid] + red_a[lid + s];
            red_b[lid] = red_b[lid] + red_b[lid + s];
        }
        workgroupBarrier();
    }
    let r = vec2<f32>(red_a[0], red_b[0]);
    workgroupBarrier();
    return r;
}

// Tree maximum over the workgroup.
fn block_max(lid: u32, v: f32) -> f32 {
    red_a[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red_a[lid] = max(red_a[lid], red_a[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red_a[0];
    workgroupBarrier();
    return r;
}
