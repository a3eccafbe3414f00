// Integer hashing shared by mask generation (masks.wgsl) and dropout (activations.wgsl)
// (shared part, appended by src/shaders.rs to the shaders that use it; not a shader on its
// own). The CPU twin is `mix32` in src/masks.rs: both must stay bit for bit equal.

// Chris Wellons' lowbias32: a full-avalanche 32-bit mix.
fn mix32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}
