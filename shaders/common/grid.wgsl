// Index prologues for the 2-D grids every family launches (shared part, appended by
// src/shaders.rs to the shaders that use it; not a shader on its own).
//
// A dispatch of more than 65535 workgroups wraps into y (Recorder::dispatch_groups on the
// host), and the kernels rebuild the linear workgroup index from the x extent `grid_x`
// that the host passes in the family's uniform params. The index depends only on the
// workgroup id and uniform values, so early returns on it stay in uniform control flow.

// Linear index of the workgroup in a 2-D grid whose x extent is `grid_x`.
fn group_index(wid: vec3<u32>, grid_x: u32) -> u32 {
    return wid.y * grid_x + wid.x;
}

// Linear index of the thread, for 1-D workgroups of `size` threads (workgroup_size(size)).
fn thread_index(wid: vec3<u32>, lid: vec3<u32>, grid_x: u32, size: u32) -> u32 {
    return group_index(wid, grid_x) * size + lid.x;
}
