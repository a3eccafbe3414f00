// CapaBoost masks: generation (exact, bernoulli, 2:4) into packed bits, and the masked
// sums over branches that fold stacked gradients back onto the shared factors.
//
// Integer arithmetic only, so every vendor and the CPU twin in src/masks.rs produce the
// same bits. Bits are packed 32 to a u32, bit e at word e / 32, position e % 32; the bits of
// branch i follow those of branch i - 1 (element e of branch i is bit i * numel + e).
//
// Shared parts (appended by src/shaders.rs): thread_index from shaders/common/grid.wgsl;
// mix32 (Chris Wellons' lowbias32) from shaders/common/hash.wgsl.

struct GenParams {
    numel: u32,      // entries per branch
    branches: u32,   // d
    kind: u32,       // 0 exact, 1 bernoulli, 2 two-of-four
    half_bits: u32,  // exact: the Feistel domain is 2^(2 half_bits) >= numel
    keep: u32,       // exact: keep e iff perm(e) < keep; bernoulli: keep iff hash >> 8 < keep
    words: u32,      // output words
    grid_x: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> gp: GenParams;
@group(0) @binding(1) var<storage, read> keys: array<vec2<u32>>;   // one key per branch
@group(0) @binding(2) var<storage, read_write> bits_out: array<u32>;

fn hash3(k: vec2<u32>, x: u32) -> u32 {
    return mix32(mix32(x ^ k.x) + k.y);
}

// Four-round balanced Feistel network on 2 * h bits: a keyed bijection.
fn feistel(x: u32, k: vec2<u32>, h: u32) -> u32 {
    let m = (1u << h) - 1u;
    var l = (x >> h) & m;
    var r = x & m;
    for (var round = 0u; round < 4u; round++) {
        let f = hash3(vec2<u32>(k.x + round * 0x9e3779b9u, k.y), r) & m;
        let t = r;
        r = l ^ f;
        l = t;
    }
    return (l << h) | r;
}

// Cycle-walking restricts the bijection on [0, 2^(2h)) to one on [0, numel).
fn permute(e: u32, k: vec2<u32>) -> u32 {
    var x = feistel(e, k, gp.half_bits);
    while (x >= gp.numel) {
        x = feistel(x, k, gp.half_bits);
    }
    return x;
}

// The six ways to keep 2 of 4, as nibbles.
const TWO_OF_FOUR = array<u32, 6>(3u, 5u, 9u, 6u, 10u, 12u);

fn mask_bit(e: u32, k: vec2<u32>) -> u32 {
    switch gp.kind {
        case 0u: {
            return select(0u, 1u, permute(e, k) < gp.keep);
        }
        case 1u: {
            return select(0u, 1u, (hash3(k, e) >> 8u) < gp.keep);
        }
        default: {
            let pattern = TWO_OF_FOUR[hash3(k, e >> 2u) % 6u];
            return (pattern >> (e & 3u)) & 1u;
        }
    }
}

@compute @workgroup_size(64)
fn generate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = thread_index(wid, lid, gp.grid_x, 64u);
    if (w >= gp.words) {
        return;
    }
    var word = 0u;
    for (var b = 0u; b < 32u; b++) {
        // Global bit index, computed as branch and offset to stay inside u32 per branch.
        let g = w * 32u + b;
        let branch = g / gp.numel;
        if (branch >= gp.branches) {
            break;
        }
        let e = g - branch * gp.numel;
        word |= mask_bit(e, keys[branch]) << b;
    }
    bits_out[w] = word;
}

// Masked sums: out = sum_i mask_i * stacked_i.
struct SumParams {
    rows: u32,      // r for factor A ([r, cols]); out for factor B ([out, cols = r])
    cols: u32,
    branches: u32,
    factor_b: u32,  // 0: stacked is [d r, cols] (A); 1: stacked is [out, d r] (B)
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(3) var<uniform> sp: SumParams;
@group(0) @binding(4) var<storage, read> mask_bits: array<u32>;
@group(0) @binding(5) var<storage, read> stacked: array<f32>;
@group(0) @binding(6) var<storage, read_write> summed: array<f32>;

fn bit_at(e: u32) -> bool {
    return ((mask_bits[e >> 5u] >> (e & 31u)) & 1u) == 1u;
}

@compute @workgroup_size(256)
fn masked_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = thread_index(wid, lid, sp.grid_x, 256u);
    let numel = sp.rows * sp.cols;
    if (idx >= numel) {
        return;
    }
    let row = idx / sp.cols;
    let col = idx - row * sp.cols;
    var acc = 0.0;
    for (var i = 0u; i < sp.branches; i++) {
        // Mask bit of (row, col) in branch i is i * numel + idx for both factors.
        var src: u32;
        if (sp.factor_b == 0u) {
            src = (i * sp.rows + row) * sp.cols + col;
        } else {
            src = row * (sp.branches * sp.cols) + i * sp.cols + col;
        }
        // select, not multiply: a masked-out entry never contributes, even if not finite.
        acc += select(0.0, stacked[src], bit_at(i * numel + idx));
    }
    summed[idx] = acc;
}

// One branch's masked copy of a factor, out = src * mask_i: used only by the naive
// reference path that the benchmarks compare the fused kernels against.
struct ApplyParams {
    numel: u32,
    branch: u32,
    grid_x: u32,
    _pad: u32,
}

@group(0) @binding(7) var<uniform> ap: ApplyParams;

@compute @workgroup_size(256)
fn apply_mask(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = thread_index(wid, lid, ap.grid_x, 256u);
    if (e >= ap.numel) {
        return;
    }
    summed[e] = select(0.0, stacked[e], bit_at(ap.branch * ap.numel + e));
}
