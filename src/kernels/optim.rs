//! Optimizer kernels (`shaders/optim.wgsl`): the squared global gradient norm, the clip
//! coefficient, and the fused AdamW update of one parameter tensor. The optimizer that
//! drives them (state, schedule, save/load) is [`crate::nn::optim::AdamW`].
//!
//! Nothing here reads back: the norm and the clip coefficient live in one-element GPU
//! buffers that the update kernel reads.

use crate::runtime::error::{Result, index_u32};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::OPTIM;
use crate::runtime::tensor::Tensor;

pub mod multi;

const WORKGROUP: u64 = 256;
/// Elements one `sq_partial` workgroup covers (`WG * PER_THREAD` in the shader).
const SQ_CHUNK: u64 = 256 * 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SqParams {
    n: u32,
    grid_x: u32,
    offset: u32,
    groups: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ClipParams {
    max_norm: f32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct AdamParams {
    n: u32,
    grid_x: u32,
    beta2: f32,
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    eps: f32,
    decay: f32,
    step_size: f32,
    bc2_sqrt: f32,
    _pad: [u32; 3],
}

/// The squared global L2 norm of `grads`, `sum_t sum_i grads[t][i]^2`, as a `[1]` tensor.
///
/// Each tensor is reduced to per-workgroup partial sums in one shared buffer (as many
/// tensors per dispatch as the device allows: [`multi::sq_slots`]), and a single workgroup
/// then adds those up, so the result never leaves the GPU.
pub fn grad_sq_norm(rec: &mut Recorder, grads: &[&Tensor]) -> Result<Tensor> {
    let per = multi::sq_slots(rec.gpu());
    grad_sq_norm_in(rec, grads, per)
}

/// [`grad_sq_norm`] with at most `per_dispatch` tensors per partial-sum dispatch (1: one
/// dispatch each; capped at [`multi::sq_slots`]). The result is the same bits whatever
/// the count: each tensor's partial sums are computed and stored alike.
pub fn grad_sq_norm_in(
    rec: &mut Recorder,
    grads: &[&Tensor],
    per_dispatch: usize,
) -> Result<Tensor> {
    let groups: Vec<u64> = grads
        .iter()
        .map(|g| (g.numel() as u64).div_ceil(SQ_CHUNK))
        .collect();
    let total: u64 = groups.iter().sum();
    let total = index_u32("grad_sq_norm partial sums", total as usize)?;
    let out = Tensor::empty(rec.gpu(), &[1])?;
    if total == 0 {
        rec.clear(&out);
        return Ok(out);
    }
    let partials = Tensor::empty(rec.gpu(), &[total as usize])?;
    let bp = partials.binding();
    let per = per_dispatch.min(multi::sq_slots(rec.gpu()));
    let live: Vec<(usize, &Tensor)> = grads
        .iter()
        .enumerate()
        .filter(|&(i, _)| groups[i] > 0)
        .map(|(i, g)| (i, *g))
        .collect();
    for (i, g) in &live {
        index_u32(&format!("grad_sq_norm: gradient {i}"), g.numel())?;
    }
    let mut offset = 0u32;
    if per >= 2 {
        for chunk in live.chunks(per) {
            let ts: Vec<&Tensor> = chunk.iter().map(|&(_, g)| g).collect();
            multi::sq_partials(rec, &ts, &bp, offset)?;
            offset += chunk.iter().map(|&(i, _)| groups[i] as u32).sum::<u32>();
        }
    } else {
        for &(i, g) in &live {
            sq_partial(rec, g, &bp, (offset, groups[i] as u32))?;
            offset += groups[i] as u32;
        }
    }
    let p = SqParams {
        n: total,
        grid_x: 1,
        offset: 0,
        groups: 1,
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let bo = out.binding();
    rec.dispatch(
        &OPTIM,
        "sum_partials",
        &[],
        &[(0, &uniform), (2, &bp), (3, &bo)],
        [1, 1, 1],
    )?;
    Ok(out)
}

/// One tensor's `sq_partial`: its `n_groups` partial sums from `offset` of `partials`.
fn sq_partial(
    rec: &mut Recorder,
    g: &Tensor,
    partials: &Binding,
    (offset, n_groups): (u32, u32),
) -> Result<()> {
    let grid = rec.grid_1d(n_groups as u64);
    let p = SqParams {
        n: g.numel() as u32,
        grid_x: grid[0],
        offset,
        groups: n_groups,
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let bg = g.binding();
    rec.dispatch(
        &OPTIM,
        "sq_partial",
        &[],
        &[(0, &uniform), (1, &bg), (2, partials)],
        grid,
    )
}

/// From a squared norm `sq` (`[1]`): `(norm, clip)` with `norm = sqrt(sq)` and
/// `clip = min(1, max_norm / (norm + 1e-6))`, both `[1]` on the GPU.
pub fn clip_coef(rec: &mut Recorder, sq: &Tensor, max_norm: f32) -> Result<(Tensor, Tensor)> {
    let norm = Tensor::empty(rec.gpu(), &[1])?;
    let clip = Tensor::empty(rec.gpu(), &[1])?;
    let p = ClipParams {
        max_norm,
        _pad: [0; 3],
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let (bs, bn, bc) = (sq.binding(), norm.binding(), clip.binding());
    rec.dispatch(
        &OPTIM,
        "clip_coef",
        &[],
        &[(4, &uniform), (3, &bs), (5, &bn), (6, &bc)],
        [1, 1, 1],
    )?;
    Ok((norm, clip))
}

/// The per-step scalars of an AdamW update, computed on the host in f64 (as PyTorch does
/// in Python floats) and rounded once to f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the bias-corrected second moment.
    pub eps: f64,
    /// Learning rate of this step.
    pub lr: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Step number, from 1 (for the bias corrections).
    pub t: u64,
}

/// One fused AdamW update of `p` in place from its gradient `g` (scaled by the `[1]` clip
/// coefficient `clip`) and its moments `m`, `v`.
pub fn adamw_update(
    rec: &mut Recorder,
    state: [&Tensor; 4],
    clip: &Tensor,
    s: &AdamStep,
) -> Result<()> {
    let [p, g, m, v] = state;
    let n = index_u32("AdamW parameter", p.numel())?;
    if n == 0 {
        return Ok(());
    }
    let grid = rec.grid_1d((n as u64).div_ceil(WORKGROUP));
    let ap = adam_params(n, grid[0], s);
    let uniform = rec.uniform(bytemuck::bytes_of(&ap));
    let (bp, bg, bm, bv, bc) = (
        p.binding(),
        g.binding(),
        m.binding(),
        v.binding(),
        clip.binding(),
    );
    let bindings = [
        (7, &uniform),
        (8, &bp),
        (9, &bg),
        (10, &bm),
        (11, &bv),
        (12, &bc),
    ];
    rec.dispatch(&OPTIM, "adamw", &[], &bindings, grid)
}

/// The kernel scalars of step `s` (`n` and `grid_x` for the single-tensor kernel; the
/// multi-tensor one ignores them).
fn adam_params(n: u32, grid_x: u32, s: &AdamStep) -> AdamParams {
    let bc1 = 1.0 - s.beta1.powf(s.t as f64);
    let bc2 = 1.0 - s.beta2.powf(s.t as f64);
    AdamParams {
        n,
        grid_x,
        beta2: s.beta2 as f32,
        one_minus_beta1: (1.0 - s.beta1) as f32,
        one_minus_beta2: (1.0 - s.beta2) as f32,
        eps: s.eps as f32,
        decay: (1.0 - s.lr * s.weight_decay) as f32,
        step_size: (s.lr / bc1) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        _pad: [0; 3],
    }
}

/// [`adamw_update`] of several parameters (each `[p, g, m, v]`), as many per dispatch as
/// the device's binding limit allows ([`multi::adam_slots`], at most
/// [`multi::ADAM_SLOTS`]): the same bits as one `adamw_update` each, in fewer dispatches.
pub fn adamw_update_many(
    rec: &mut Recorder,
    states: &[[&Tensor; 4]],
    clip: &Tensor,
    s: &AdamStep,
) -> Result<()> {
    let per = multi::adam_slots(rec.gpu());
    adamw_update_many_in(rec, states, clip, (s, per))
}

/// [`adamw_update_many`] with at most `per_dispatch` parameters per dispatch (1: one
/// dispatch each; capped at [`multi::adam_slots`]); the same bits whatever the count.
pub fn adamw_update_many_in(
    rec: &mut Recorder,
    states: &[[&Tensor; 4]],
    clip: &Tensor,
    (s, per_dispatch): (&AdamStep, usize),
) -> Result<()> {
    let mut live = Vec::with_capacity(states.len());
    for (i, st) in states.iter().enumerate() {
        if index_u32(&format!("AdamW parameter {i}"), st[0].numel())? > 0 {
            live.push(*st);
        }
    }
    let per = per_dispatch.min(multi::adam_slots(rec.gpu()));
    if per < 2 {
        return live
            .iter()
            .try_for_each(|st| adamw_update(rec, *st, clip, s));
    }
    let params = adam_params(0, 0, s);
    live.chunks(per)
        .try_for_each(|chunk| multi::adamw(rec, chunk, clip, params))
}

/// f64 CPU references for the kernels above.
pub mod cpu {
    use super::AdamStep;

    /// Squared global L2 norm.
    pub fn grad_sq_norm(grads: &[&[f32]]) -> f64 {
        grads
            .iter()
            .flat_map(|g| g.iter())
            .map(|&x| (x as f64) * (x as f64))
            .sum()
    }

    /// The clip coefficient `min(1, max_norm / (norm + 1e-6))`.
    pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
        (max_norm / (norm + 1e-6)).min(1.0)
    }

    /// One AdamW update of `p` with moments `m`, `v` from gradient `g` times `clip`:
    /// `p -= lr (mhat / (sqrt(vhat) + eps) + wd p)`.
    pub fn adamw_update(
        p: &mut [f64],
        m: &mut [f64],
        v: &mut [f64],
        g: &[f32],
        clip: f64,
        s: &AdamStep,
    ) {
        let bc1 = 1.0 - s.beta1.powf(s.t as f64);
        let bc2 = 1.0 - s.beta2.powf(s.t as f64);
        for j in 0..p.len() {
            let g = clip * g[j] as f64;
            m[j] = s.beta1 * m[j] + (1.0 - s.beta1) * g;
            v[j] = s.beta2 * v[j] + (1.0 - s.beta2) * g * g;
            let update = (m[j] / bc1) / ((v[j] / bc2).sqrt() + s.eps) + s.weight_decay * p[j];
            p[j] -= s.lr * update;
        }
    }
}
