//! Both masked sums of one CapaBoost adapter's backward in one dispatch
//! (`shaders/masked_sums.wgsl`): `dA = sum_i M_i * S_A[i]` and `dB = sum_i N_i * S_B[:, i]`
//! from the stacked gradients `S_A [d r, in]` and `S_B [out, d r]`. Each entry adds its
//! branches in the order and form of [`masked_sum`](crate::kernels::masks::masked_sum), so
//! the results equal two `masked_sum` dispatches bit for bit; the f64 twin is [`cpu`].

use crate::kernels::capaboost::LayerMasks;
use crate::runtime::error::{Error, Result, index_u32};
use crate::runtime::recorder::Recorder;
use crate::runtime::shaders::MASKED_SUMS;
use crate::runtime::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PairParams {
    r: u32,
    in_f: u32,
    out_f: u32,
    branches: u32,
    numel_a: u32,
    total: u32,
    grid_x: u32,
    b_rows: u32,
}

/// How the stacked gradient of factor B is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackedB {
    /// `S_B [out, d r]`: branch i is columns `i r .. i r + r`.
    Columns,
    /// `S_B^T [d r, out]`: branch i is rows `i r .. i r + r` (what `H^T G` gives).
    Rows,
}

/// `(dA [r, in], dB [out, r])`: the masked sums over the d branches of the stacked
/// gradients `stacked_a [d r, in]` (factor A) and `stacked_b [out, d r]` (factor B) under
/// `masks`, in one dispatch.
pub fn masked_sum_pair(
    rec: &mut Recorder,
    masks: &LayerMasks,
    stacked_a: &Tensor,
    stacked_b: &Tensor,
) -> Result<(Tensor, Tensor)> {
    masked_sum_pair_as(rec, masks, stacked_a, (stacked_b, StackedB::Columns))
}

/// [`masked_sum_pair`] with factor B's stacked gradient laid out as `layout` says
/// (`[out, d r]` or `[d r, out]`); the sums are the same, bit for bit.
pub fn masked_sum_pair_as(
    rec: &mut Recorder,
    masks: &LayerMasks,
    stacked_a: &Tensor,
    (stacked_b, layout): (&Tensor, StackedB),
) -> Result<(Tensor, Tensor)> {
    let (r, in_f) = (masks.a.rows, masks.a.cols);
    let out_f = masks.b.rows;
    let d = masks.d();
    if masks.b.cols != r || masks.b.branches as usize != d {
        return Err(Error::shape(format!(
            "masked_sum_pair: masks of lora_B are {} x [{out_f}, {}], expected {d} x [{out_f}, {r}]",
            masks.b.branches, masks.b.cols
        )));
    }
    let want_b = match layout {
        StackedB::Columns => [out_f, d * r],
        StackedB::Rows => [d * r, out_f],
    };
    for (name, t, want) in [
        ("factor A", stacked_a, [d * r, in_f]),
        ("factor B", stacked_b, want_b),
    ] {
        if t.shape() != want {
            return Err(Error::shape(format!(
                "masked_sum_pair: stacked gradient of {name} has shape {:?}, expected {want:?}",
                t.shape()
            )));
        }
    }
    let (numel_a, numel_b) = (r * in_f, out_f * r);
    let total = index_u32("masked_sum_pair entries", numel_a + numel_b)?;
    let da = Tensor::empty(rec.gpu(), &[r, in_f])?;
    let db = Tensor::empty(rec.gpu(), &[out_f, r])?;
    let grid = rec.grid_1d(u64::from(total).div_ceil(256));
    let p = PairParams {
        r: r as u32,
        in_f: in_f as u32,
        out_f: out_f as u32,
        branches: d as u32,
        numel_a: numel_a as u32,
        total,
        grid_x: grid[0],
        b_rows: (layout == StackedB::Rows) as u32,
    };
    let uniform = rec.uniform(bytemuck::bytes_of(&p));
    let bindings = [
        (0, &uniform),
        (1, &masks.a.binding()),
        (2, &masks.b.binding()),
        (3, &stacked_a.binding()),
        (4, &stacked_b.binding()),
        (5, &da.binding()),
        (6, &db.binding()),
    ];
    rec.dispatch(&MASKED_SUMS, "masked_sum_pair", &[], &bindings, grid)?;
    Ok((da, db))
}

/// f64 CPU twin.
pub mod cpu {
    use crate::kernels::masks::{Factor, cpu::masked_sum};

    /// `(dA, dB)` of [`super::masked_sum_pair`] with masks as 0/1 bytes per branch
    /// (`masks_a[i]` `[r, in]`, `masks_b[i]` `[out, r]`).
    pub fn masked_sum_pair(
        (masks_a, masks_b): (&[Vec<u8>], &[Vec<u8>]),
        stacked_a: &[f32],
        stacked_b: &[f32],
        (r, in_f, out_f): (usize, usize, usize),
    ) -> (Vec<f64>, Vec<f64>) {
        (
            masked_sum(masks_a, Factor::A, stacked_a, r, in_f),
            masked_sum(masks_b, Factor::B, stacked_b, out_f, r),
        )
    }
}
