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

// ---- Register forms (no workgroup memory, no barriers): each invocation owns 8 rows x 4
// columns of Y (forward; 1 x 4 for a single row) or 8 rows x 8 columns
// of dX (backward), decoding its weight words straight from the buffer (a block's scales
// once per block in the forward), each decoded weight feeding 8 rows. They are what CPU devices (llvmpipe) run fast, where the tiled forms
// above spend their time in barriers. Out-of-range rows and columns are clamped on load
// (every read stays in its buffer) and skipped on store, so any M and N work.
//
// A quant word index q in 0..4 of a block names 8 of its 32 elements: 4q..4q+3 (`lo`) and
// 16+4q..16+4q+3 (`hi`): the low and high nibbles of one word of a 4-bit block, or words q
// and q + 4 of a Q8_0 block.

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;  // X [M, K] as vec4s

fn nibbles(word: u32, shift: u32) -> vec4<f32> {
    let v = (vec4<u32>(word) >> vec4<u32>(shift, shift + 8u, shift + 16u, shift + 24u)) & vec4<u32>(0xfu);
    return vec4<f32>(v);
}

fn signed_bytes(word: u32) -> vec4<f32> {
    let v = bitcast<vec4<i32>>(vec4<u32>(word) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
    return vec4<f32>(v);
}

// Elements lo and hi (see above) of word q of block b (= row * K / 32 + block in the row).
fn wpair(b: u32, q: u32) -> mat2x4<f32> {
    return wpair_scaled(b, q, unpack2x16float(w[b]));
}

// wpair with the block's scale words `s` (d, m) already decoded.
fn wpair_scaled(b: u32, q: u32, s: vec2<f32>) -> mat2x4<f32> {
    if (p.format == FMT_Q8_0) {
        let base = p.blocks + b * 8u + q;
        return mat2x4<f32>(signed_bytes(w[base]) * s.x, signed_bytes(w[base + 4u]) * s.x);
    }
    let word = w[p.blocks + b * 4u + q];
    if (p.format == FMT_Q4_0) {
        return mat2x4<f32>((nibbles(word, 0u) - 8.0) * s.x, (nibbles(word, 4u) - 8.0) * s.x);
    }
    return mat2x4<f32>(nibbles(word, 0u) * s.x + s.y, nibbles(word, 4u) * s.x + s.y);
}

@compute @workgroup_size(64)
fn forward_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    let r0 = gid.y * 8u;
    if (c0 >= p.n || r0 >= p.m) {
        return;
    }
    let kb = p.k / 32u;
    let k4 = p.k / 4u;
    var wrow: vec4<u32>;
    var xa: vec4<u32>;
    var xb: vec4<u32>;
    for (var j = 0u; j < 4u; j++) {
        wrow[j] = min(c0 + j, p.n - 1u) * kb;
        xa[j] = min(r0 + j, p.m - 1u) * k4;
        xb[j] = min(r0 + 4u + j, p.m - 1u) * k4;
    }
    var acc = mat4x4<f32>();  // acc[i] = row r0 + i, columns c0..c0+3
    var acc2 = mat4x4<f32>();  // rows r0 + 4 + i
    for (var b = 0u; b < kb; b++) {
        let s0 = unpack2x16float(w[wrow.x + b]);
        let s1 = unpack2x16float(w[wrow.y + b]);
        let s2 = unpack2x16float(w[wrow.z + b]);
        let s3 = unpack2x16float(w[wrow.w + b]);
        for (var q = 0u; q < 4u; q++) {
            let w0 = wpair_scaled(wrow.x + b, q, s0);
            let w1 = wpair_scaled(wrow.y + b, q, s1);
            let w2 = wpair_scaled(wrow.z + b, q, s2);
            let w3 = wpair_scaled(wrow.w + b, q, s3);
            let lo = mat4x4<f32>(w0[0], w1[0], w2[0], w3[0]);
            let hi = mat4x4<f32>(w0[1], w1[1], w2[1], w3[1]);
            let xo = b * 8u + q;
            acc[0] += a4[xa.x + xo] * lo + a4[xa.x + xo + 4u] * hi;
            acc[1] += a4[xa.y + xo] * lo + a4[xa.y + xo + 4u] * hi;
            acc[2] += a4[xa.z + xo] * lo + a4[xa.z + xo + 4u] * hi;
            acc[3] += a4[xa.w + xo] * lo + a4[xa.w + xo + 4u] * hi;
            acc2[0] += a4[xb.x + xo] * lo + a4[xb.x + xo + 4u] * hi;
            acc2[1] += a4[xb.y + xo] * lo + a4[xb.y + xo + 4u] * hi;
            acc2[2] += a4[xb.z + xo] * lo + a4[xb.z + xo + 4u] * hi;
            acc2[3] += a4[xb.w + xo] * lo + a4[xb.w + xo + 4u] * hi;
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (r0 + i < p.m && c0 + j < p.n) {
                out[(r0 + i) * p.n + c0 + j] = acc[i][j];
            }
            if (r0 + 4u + i < p.m && c0 + j < p.n) {
                out[(r0 + 4u + i) * p.n + c0 + j] = acc2[i][j];
            }
        }
    }
}

// dX[M, K] = dY[M, N] W: invocation (gid.x = block * 4 + q, gid.y = row group) owns rows
// r0..r0+7 and the 8 columns of word q of the column block.
@compute @workgroup_size(64)
fn backward_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
    let kb = p.k / 32u;
    let blk = gid.x / 4u;
    let q = gid.x % 4u;
    let r0 = gid.y * 8u;
    if (blk >= kb || r0 >= p.m) {
        return;
    }
    var row: vec4<u32>;
    var row2: vec4<u32>;
    for (var j = 0u; j < 4u; j++) {
        row[j] = min(r0 + j, p.m - 1u) * p.n;
        row2[j] = min(r0 + 4u + j, p.m - 1u) * p.n;
    }
    var lo = mat4x4<f32>();  // lo[i] = row r0 + i, columns 4q..4q+3 of the block
    var hi = mat4x4<f32>();
    var lo2 = mat4x4<f32>();  // rows r0 + 4 + i
    var hi2 = mat4x4<f32>();
    for (var n = 0u; n < p.n; n++) {
        let wv = wpair(n * kb + blk, q);
        let g = vec4<f32>(a[row.x + n], a[row.y + n], a[row.z + n], a[row.w + n]);
        let g2 = vec4<f32>(a[row2.x + n], a[row2.y + n], a[row2.z + n], a[row2.w + n]);
        lo += mat4x4<f32>(g.x * wv[0], g.y * wv[0], g.z * wv[0], g.w * wv[0]);
        hi += mat4x4<f32>(g.x * wv[1], g.y * wv[1], g.z * wv[1], g.w * wv[1]);
        lo2 += mat4x4<f32>(g2.x * wv[0], g2.y * wv[0], g2.z * wv[0], g2.w * wv[0]);
        hi2 += mat4x4<f32>(g2.x * wv[1], g2.y * wv[1], g2.z * wv[1], g2.w * wv[1]);
    }
    let c = blk * 32u + 4u * q;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (r0 + i < p.m) {
                let o = (r0 + i) * p.k + c;
                out[o + j] = lo[i][j];
                out[o + 16u + j] = hi[i][j];
            }
            if (r0 + 4u + i < p.m) {
                let o = (r0 + 4u + i) * p.k + c;
                out[o + j] = lo2[i][j];
                out[o + 16u + j] = hi2[i][j];
            }
        }
    }
}

// One row (M = 1, a decoding step): invocation gid.x owns columns 4 gid.x .. 4 gid.x + 3.
@compute @workgroup_size(64)
fn forward_row(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c0 = gid.x * 4u;
    if (c0 >= p.n) {
        return;
    }
    let kb = p.k / 32u;
    var wrow: vec4<u32>;
    for (var j = 0u; j < 4u; j++) {
        wrow[j] = min(c0 + j, p.n - 1u) * kb;
    }
    var acc = vec4<f32>();
    for (var b = 0u; b < kb; b++) {
        for (var q = 0u; q < 4u; q++) {
            let w0 = wpair(wrow.x + b, q);
            let w1 = wpair(wrow.y + b, q);
            let w2 = wpair(wrow.z + b, q);
            let w3 = wpair(wrow.w + b, q);
            let xo = b * 8u + q;
            acc += a4[xo] * mat4x4<f32>(w0[0], w1[0], w2[0], w3[0])
                + a4[xo + 4u] * mat4x4<f32>(w0[1], w1[1], w2[1], w3[1]);
        }
    }
    for (var j = 0u; j < 4u; j++) {
        if (c0 + j < p.n) {
            out[c0 + j] = acc[j];
        }
    }
}
