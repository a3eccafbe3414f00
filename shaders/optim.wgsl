// Optimizer kernels: the squared global gradient norm (per-tensor partial sums, then one
// workgroup that adds them up), the clip coefficient, and the fused AdamW update.
//
// Everything stays on the GPU so that a training step never waits on a readback: the clip
// coefficient is read by the AdamW kernel from a one-element buffer.
//
// Shared parts (appended by src/shaders.rs): group_index and thread_index from
// shaders/common/grid.wgsl; WG and block_sum from shaders/common/block_reduce.wgsl.

// ---- squared norm ----

struct SqParams {
    n: u32,        // sq_partial: elements of this tensor; sum_partials: partial sums in all
    grid_x: u32,   // workgroups along x in the dispatch
    offset: u32,   // sq_partial: where this tensor's partial sums start in `partials`
    groups: u32,   // sq_partial: workgroups with elements (the 2-D grid may have more)
}

@group(0) @binding(0) var<uniform> sq: SqParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> sq_out: array<f32>;   // [1]

// Elements per thread in sq_partial: each workgroup covers WG * PER_THREAD elements.
const PER_THREAD: u32 = 4u;

@compute @workgroup_size(256)
fn sq_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = group_index(wid, sq.grid_x);
    var acc = 0.0;
    // Strided by WG so that neighbouring threads read neighbouring elements.
    for (var k = 0u; k < PER_THREAD; k++) {
        let i = (g * PER_THREAD + k) * WG + lid.x;
        if (g < sq.groups && i < sq.n) {
            let v = src[i];
            acc += v * v;
        }
    }
    let total = block_sum(lid.x, acc);
    if (lid.x == 0u && g < sq.groups) {
        partials[sq.offset + g] = total;
    }
}

// One workgroup adds all partial sums; each thread keeps a Kahan-compensated running sum so
// that many partials (large models) do not lose precision.
@compute @workgroup_size(256)
fn sum_partials(@builtin(local_invocation_id) lid: vec3<u32>) {
    var sum = 0.0;
    var comp = 0.0;
    for (var i = lid.x; i < sq.n; i += WG) {
        let y = partials[i] - comp;
        let t = sum + y;
        comp = (t - sum) - y;
        sum = t;
    }
    let total = block_sum(lid.x, sum);
    if (lid.x == 0u) {
        sq_out[0] = total;
    }
}

// ---- clip coefficient ----

struct ClipParams {
    max_norm: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(4) var<uniform> cp: ClipParams;
@group(0) @binding(5) var<storage, read_write> norm_out: array<f32>;   // [1]
@group(0) @binding(6) var<storage, read_write> clip_out: array<f32>;   // [1]

// torch.nn.utils.clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped to 1.
@compute @workgroup_size(1)
fn clip_coef() {
    let norm = sqrt(sq_out[0]);
    norm_out[0] = norm;
    clip_out[0] = min(1.0, cp.max_norm / (norm + 1e-6));
}

// ---- AdamW ----

struct AdamParams {
    n: u32,
    grid_x: u32,
    beta2: f32,
    one_minus_beta1: f32,  // the lerp weight of the first moment
    one_minus_beta2: f32,
    eps: f32,
    decay: f32,            // 1 - lr * weight_decay (decoupled weight decay)
    step_size: f32,        // lr / (1 - beta1^t)
    bc2_sqrt: f32,         // sqrt(1 - beta2^t)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(7) var<uniform> ap: AdamParams;
@group(0) @binding(8) var<storage, read_write> param: array<f32>;
@group(0) @binding(9) var<storage, read> grad: array<f32>;
@group(0) @binding(10) var<storage, read_write> m1: array<f32>;
@group(0) @binding(11) var<storage, read_write> m2: array<f32>;
@group(0) @binding(12) var<storage, read> clip: array<f32>;   // [1]

// torch.lerp: a + w (b - a) for w < 0.5, otherwise b - (b - a)(1 - w).
fn lerp(a: f32, b: f32, w: f32) -> f32 {
    if (w < 0.5) {
        return a + w * (b - a);
    }
    return b - (b - a) * (1.0 - w);
}

// The operations of torch.optim.AdamW's single-tensor path, in its order: decay the
// parameter, update the moments, then p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps).
// From the parameter, its clipped gradient and moments: the new (parameter, m, v). The
// multi-tensor entry points (src/kernels/optim/multi.rs) call it too, so both paths give
// the same bits.
fn adam_update(p: f32, g: f32, m_old: f32, v_old: f32, k: AdamParams) -> vec3<f32> {
    let m = lerp(m_old, g, k.one_minus_beta1);
    let v = v_old * k.beta2 + k.one_minus_beta2 * (g * g);
    let denom = sqrt(v) / k.bc2_sqrt + k.eps;
    return vec3<f32>(p * k.decay - k.step_size * (m / denom), m, v);
}

@compute @workgroup_size(256)
fn adamw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = thread_index(wid, lid, ap.grid_x, WG);
    if (i >= ap.n) {
        return;
    }
    let u = adam_update(param[i], grad[i] * clip[0], m1[i], m2[i], ap);
    param[i] = u.x;
    m1[i] = u.y;
    m2[i] = u.z;
}
