// GEMMs through a frozen weight kept in a ggml block format (Q4_0, Q4_1, Q8_0), decoded
// while loading tiles into workgroup memory and accumulated in f32:
//
//   forward:  Y[M, N]  = X[M, K]  W^T   (W [N, K], rows of K elements, K a multiple of 32)
//   backward: dX[M, K] = dY[M, N] W
//
// The weight buffer holds, as src/runtime/quant.rs packs it, `blocks` scale words (f16 d in
// the low half, f16 m of Q4_1 in the high half, decoded with unpack2x16float) followed by
// each block's quant bytes as little-endian words (4 per block for the 4-bit formats, 8 for
// Q8_0). Quants are extracted with integer shifts and masks only.
//
// Workgroups of 16 x 16 threads, one output each; wid.x walks the output columns, wid.y the
// rows. Tiles outside the matrix load zeros, so any M and N work.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    format: u32,   // FMT_*
    blocks: u32,   // scale words, i.e. where the quant words start
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const FMT_Q4_0: u32 = 0u;
const FMT_Q4_1: u32 = 1u;
const FMT_Q8_0: u32 = 2u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // X [M, K] or dY [M, N]
@group(0) @binding(2) var<storage, read> w: array<u32>;        // packed blocks of W [N, K]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // Y [M, N] or dX [M, K]

// W[row, col] decoded from its block.
fn weight(row: u32, col: u32) -> f32 {
    let b = row * (p.k / 32u) + col / 32u;
    let j = col % 32u;
    let s = unpack2x16float(w[b]);
    if (p.format == FMT_Q8_0) {
        let word = w[p.blocks + b * 8u + j / 4u];
        let byte = (word >> (8u * (j % 4u))) & 0xffu;
        // Sign-extend the byte: move it to the top, then shift back arithmetically.
        let q = bitcast<i32>(byte << 24u) >> 24u;
        return f32(q) * s.x;
    }
    // Byte i of a 4-bit block holds element i (low nibble) and element i + 16 (high).
    let i = j % 16u;
    let word = w[p.blocks + b * 4u + i / 4u];
    let byte = (word >> (8u * (i % 4u))) & 0xffu;
    let q = (byte >> (4u * (j / 16u))) & 0xfu;
    if (p.format == FMT_Q4_0) {
        return f32(i32(q) - 8) * s.x;
    }
    return f32(q) * s.x + s.y;
}

const T: u32 = 16u;   // output tile edge
const KT: u32 = 32u;  // forward reduction tile: one block

var<workgroup> xs: array<f32, 512>;  // forward: X tile [16 rows, 32]
var<workgroup> ws: array<f32, 512>;  // forward: W tile [16 rows, 32]
var<workgroup> gs: array<f32, 256>;  // backward: dY tile [16 rows, 16]
var<workgroup> vs: array<f32, 256>;  // backward: W tile [16 rows of N, 16 of K]

@compute @workgroup_size(16, 16)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wid.y * T;
    let n0 = wid.x * T;
    let flat = lid.y * T + lid.x;
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        for (var e = flat; e < T * KT; e += T * T) {
            let r = e / KT;
            let c = e % KT;
            var xv = 0.0;
            if (m0 + r < p.m) {
                xv = a[(m0 + r) * p.k + k0 + c];
            }
            xs[e] = xv;
            var wv = 0.0;
            if (n0 + r < p.n) {
                wv = weight(n0 + r, k0 + c);
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var c = 0u; c < KT; c++) {
            acc += xs[lid.y * KT + c] * ws[lid.x * KT + c];
        }
        workgroupBarrier();
    }
    let row = m0 + lid.y;
    let col = n0 + lid.x;
    if (row < p.m && col < p.n) {
        out[row * p.n + col] = acc;
    }
}

@compute @workgroup_size(16, 16)
fn backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m0 = wid.y * T;
    let k0 = wid.x * T;
    let flat = lid.y * T + lid.x;
    var acc = 0.0;
    for (var n0 = 0u; n0 < p.n; n0 += T) {
        let r = flat / T;
        let c = flat % T;
        var gv = 0.0;
        if (m0 + r < p.m && n0 + c < p.n) {
            gv = a[(m0 + r) * p.n + n0 + c];
        }
        gs[flat] = gv;
        var wv = 0.0;
        if (n0 + r < p.n && k0 + c < p.k) {
            wv = weight(n0 + r, k0 + c);
        }
        vs[flat] = wv;
        workgroupBarrier();
        for (var j = 0u; j < T; j++) {
            acc += gs[lid.y * T + j] * vs[j * T + lid.x];
        }
        workgroupBarrier();
    }
    let row = m0 + lid.y;
    let col = k0 + lid.x;
    if (row < p.m && col < p.k) {
        out[row * p.k + col] = acc;
    }
}
