//! Elementwise kernels (`shaders/elementwise.wgsl`): add, mul, scale, fill, vec4 copy,
//! with their f64 CPU references.

use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::{Binding, Recorder};
use crate::runtime::shaders::ELEMENTWISE;
use crate::runtime::tensor::Tensor;

const WORKGROUP: u64 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    grid_x: u32,
    alpha: f32,
    offset: u32,
}

fn count_u32(n: usize) -> Result<u32> {
    crate::runtime::error::index_u32("elements", n)
}

/// Records one elementwise dispatch over `n` items.
fn launch(
    rec: &mut Recorder,
    entry: &'static str,
    n: usize,
    alpha: f32,
    offset: u32,
    bindings: &[(u32, &Binding)],
) -> Result<()> {
    let n32 = count_u32(n)?;
    let groups = (n as u64).div_ceil(WORKGROUP);
    rec.dispatch_groups(
        &ELEMENTWISE,
        entry,
        groups,
        |grid_x| Params {
            n: n32,
            grid_x,
            alpha,
            offset,
        },
        bindings,
    )
}

fn same_shape(op: &str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape(format!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape(),
            b.shape()
        )));
    }
    Ok(())
}

fn binary(rec: &mut Recorder, entry: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_shape(entry, a, b)?;
    let out = Tensor::empty(rec.gpu(), a.shape())?;
    let (ba, bb, bo) = (a.binding(), b.binding(), out.binding());
    launch(
        rec,
        entry,
        a.numel(),
        0.0,
        0,
        &[(1, &ba), (2, &bb), (3, &bo)],
    )?;
    Ok(out)
}

/// `a + b` (same shapes).
pub fn add(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, "add", a, b)
}

/// Most tensors [`add_many`] sums in one dispatch.
pub const ADD_MANY_MAX: usize = 4;

/// The sum of `parts` (same shapes, at least one), left to right: the same bits as adding
/// them two at a time in order, in one dispatch for up to [`ADD_MANY_MAX`] (none for one:
/// the tensor itself is returned).
pub fn add_many(rec: &mut Recorder, parts: &[Tensor]) -> Result<Tensor> {
    let Some((first, rest)) = parts.split_first() else {
        return Err(Error::InvalidArgument("add_many: no tensors".into()));
    };
    for t in rest {
        same_shape("add_many", first, t)?;
    }
    if parts.len() > ADD_MANY_MAX {
        let head = add_many(rec, &parts[..ADD_MANY_MAX])?;
        let mut tail = vec![head];
        tail.extend_from_slice(&parts[ADD_MANY_MAX..]);
        return add_many(rec, &tail);
    }
    let entry = match parts.len() {
        1 => return Ok(first.clone()),
        2 => "add",
        3 => "add3",
        _ => "add4",
    };
    let out = Tensor::empty(rec.gpu(), first.shape())?;
    let bound: Vec<Binding> = parts.iter().map(Tensor::binding).collect();
    let bo = out.binding();
    let mut bindings: Vec<(u32, &Binding)> = [1, 2, 6, 7].into_iter().zip(&bound).collect();
    bindings.push((3, &bo));
    launch(rec, entry, first.numel(), 0.0, 0, &bindings)?;
    Ok(out)
}

/// `a * b` elementwise (same shapes).
pub fn mul(rec: &mut Recorder, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(rec, "mul", a, b)
}

/// `alpha * a`.
pub fn scale(rec: &mut Recorder, a: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = Tensor::empty(rec.gpu(), a.shape())?;
    let (ba, bo) = (a.binding(), out.binding());
    launch(rec, "scale", a.numel(), alpha, 0, &[(1, &ba), (3, &bo)])?;
    Ok(out)
}

/// Sets every element of `t` to `value`.
pub fn fill(rec: &mut Recorder, t: &Tensor, value: f32) -> Result<()> {
    let bt = t.binding();
    launch(rec, "fill", t.numel(), value, 0, &[(3, &bt)])
}

/// A copy of `a`, moved 16 bytes per thread (plus a scalar pass for the last `n % 4`).
pub fn copy(rec: &mut Recorder, a: &Tensor) -> Result<Tensor> {
    let out = Tensor::empty(rec.gpu(), a.shape())?;
    let n = a.numel();
    let n4 = n / 4;
    if n4 > 0 {
        let src = Binding::new(a.binding().buffer, n4 as u64 * 16);
        let dst = Binding::new(out.binding().buffer, n4 as u64 * 16);
        launch(rec, "copy_vec4", n4, 0.0, 0, &[(4, &src), (5, &dst)])?;
    }
    if !n.is_multiple_of(4) {
        let (ba, bo) = (a.binding(), out.binding());
        launch(
            rec,
            "copy_tail",
            n % 4,
            0.0,
            count_u32(n4 * 4)?,
            &[(1, &ba), (3, &bo)],
        )?;
    }
    Ok(out)
}

/// f64 CPU references for the kernels above.
pub mod cpu {
    /// `a + b`.
    pub fn add(a: &[f32], b: &[f32]) -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x as f64 + y as f64)
            .collect()
    }

    /// `a * b`.
    pub fn mul(a: &[f32], b: &[f32]) -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| x as f64 * y as f64)
            .collect()
    }

    /// `alpha * a`.
    pub fn scale(a: &[f32], alpha: f32) -> Vec<f64> {
        a.iter().map(|&x| alpha as f64 * x as f64).collect()
    }

    /// `n` copies of `value`.
    pub fn fill(n: usize, value: f32) -> Vec<f64> {
        vec![value as f64; n]
    }

    /// `a` itself.
    pub fn copy(a: &[f32]) -> Vec<f64> {
        a.iter().map(|&x| x as f64).collect()
    }
}
