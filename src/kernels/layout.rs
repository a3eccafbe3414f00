//! Layout kernels (`shaders/layout.wgsl`): the middle-dims swap of multi-head attention;
//! and [`copy_into`], a plain buffer copy (no kernel) that a KV cache appends with.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::LAYOUT;
use crate::runtime::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    dims: [u32; 4],
    grid_x: u32,
    _pad: [u32; 3],
}

/// `[A, B, C, D] -> [A, C, B, D]`. Its own inverse (and so its own backward).
pub fn swap_middle(rec: &mut Recorder, x: &Tensor) -> Result<Tensor> {
    let &[a, b, c, d] = x.shape() else {
        return Err(Error::shape(format!(
            "swap_middle needs a 4-D tensor, got {:?}",
            x.shape()
        )));
    };
    let out = Tensor::empty(rec.gpu(), &[a, c, b, d])?;
    let n = x.numel();
    if n == 0 {
        return Ok(out);
    }
    let dims = [a, b, c, d].map(|v| v as u32);
    let grid = rec.grid_1d((n as u64).div_ceil(256));
    let p = Params {
        dims,
        grid_x: grid[0],
        _pad: [0; 3],
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    rec.dispatch(
        &LAYOUT,
        "swap_middle",
        &[],
        &[(0, &uniform), (1, &x.binding()), (2, &out.binding())],
        grid,
    )?;
    Ok(out)
}

/// [`swap_middle`] of three tensors of one 4-D shape in one dispatch (the attention's
/// query, key and value, or their gradients).
pub fn swap_middle3(rec: &mut Recorder, xs: [&Tensor; 3]) -> Result<[Tensor; 3]> {
    let &[a, b, c, d] = xs[0].shape() else {
        return Err(Error::shape(format!(
            "swap_middle3 needs 4-D tensors, got {:?}",
            xs[0].shape()
        )));
    };
    if xs.iter().any(|x| x.shape() != xs[0].shape()) {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape()).collect();
        return Err(Error::shape(format!(
            "swap_middle3 needs three tensors of one shape, got {shapes:?}"
        )));
    }
    let empty = || Tensor::empty(rec.gpu(), &[a, c, b, d]);
    let outs = [empty()?, empty()?, empty()?];
    let n = xs[0].numel();
    if n == 0 {
        return Ok(outs);
    }
    let total = (n as u64) * 3;
    crate::runtime::error::index_u32("swap_middle3 elements", total as usize)?;
    let grid = rec.grid_1d(total.div_ceil(256));
    let p = Params {
        dims: [a, b, c, d].map(|v| v as u32),
        grid_x: grid[0],
        _pad: [0; 3],
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let ins = xs.map(Tensor::binding);
    let bo = [outs[0].binding(), outs[1].binding(), outs[2].binding()];
    let bindings = [
        (0, &uniform),
        (1, &ins[0]),
        (2, &bo[0]),
        (3, &ins[1]),
        (4, &bo[1]),
        (5, &ins[2]),
        (6, &bo[2]),
    ];
    rec.dispatch(&LAYOUT, "swap_middle3", &[], &bindings, grid)?;
    Ok(outs)
}

/// Copies all of `src` into `dst` starting at element `at` (a buffer copy recorded in
/// order with the dispatches); a range past the end of `dst` is an error naming both.
pub fn copy_into(rec: &mut Recorder, src: &Tensor, dst: &Tensor, at: usize) -> Result<()> {
    copy_range(rec, (src, 0), (dst, at), src.numel())
}

/// Copies `n` elements of `src` from element `from` into `dst` at element `to` (a buffer
/// copy); a range past the end of either is an error naming both shapes.
pub fn copy_range(
    rec: &mut Recorder,
    (src, from): (&Tensor, usize),
    (dst, to): (&Tensor, usize),
    n: usize,
) -> Result<()> {
    let fits = |at: usize, t: &Tensor| at.checked_add(n).is_some_and(|end| end <= t.numel());
    if !fits(from, src) || !fits(to, dst) {
        return Err(Error::shape(format!(
            "copy: {n} elements from {from} of {:?} to {to} of {:?} run past the end",
            src.shape(),
            dst.shape()
        )));
    }
    if n > 0 {
        let b = |e: usize| e as u64 * 4;
        let (bs, mut bd) = (src.binding(), dst.binding());
        bd.offset += b(to);
        rec.copy_bytes(bs, bd, b(from), b(n));
    }
    Ok(())
}

/// f64 CPU references.
pub mod cpu {
    /// `[A, B, C, D] -> [A, C, B, D]`.
    pub fn swap_middle(x: &[f32], [a, b, c, d]: [usize; 4]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for i in 0..a {
            for j in 0..b {
                for k in 0..c {
                    for l in 0..d {
                        out[((i * c + k) * b + j) * d + l] =
                            x[((i * b + j) * c + k) * d + l] as f64;
                    }
                }
            }
        }
        out
    }
}
