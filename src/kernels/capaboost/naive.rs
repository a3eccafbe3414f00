//! The naive path the fused kernels replace, kept as the benchmarks' baseline (the
//! reference implementation's way): d masked copies of A and B materialized, d separate
//! GEMMs per product, gradients masked and summed branch by branch.

use super::{Grads, Layer};
use crate::kernels::elementwise;
use crate::kernels::gemm::{Operand, gemm, gemm_into, linear, matmul};
use crate::kernels::masks::apply_mask;
use crate::runtime::error::Result;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// Sums branch contributions as they come.
fn accumulate(rec: &mut Recorder, acc: Option<Tensor>, t: Tensor) -> Result<Option<Tensor>> {
    Ok(Some(match acc {
        Some(acc) => elementwise::add(rec, &acc, &t)?,
        None => t,
    }))
}

/// Forward and backward (with `dx`) of `layer` for input `x` and `G = dL/dy`:
/// `(y, grads)`, the same values as [`Layer::forward`] and [`Layer::backward`].
pub fn forward_backward(
    rec: &mut Recorder,
    layer: &Layer,
    x: &Tensor,
    g: &Tensor,
) -> Result<(Tensor, Grads)> {
    layer.check(x)?;
    let ad = &layer.adapter;
    let (masks, s) = (ad.masks, ad.scale);
    let y = linear(rec, x, layer.w0, layer.b0)?;
    let dx = matmul(rec, g, false, layer.w0, false)?;
    let mut da: Option<Tensor> = None;
    let mut db: Option<Tensor> = None;
    for i in 0..masks.d() as u32 {
        let am = apply_mask(rec, &masks.a, ad.a, i)?;
        let bm = apply_mask(rec, &masks.b, ad.b, i)?;
        let h = matmul(rec, x, false, &am, true)?;
        gemm_into(
            rec,
            Operand::plain(&h),
            Operand::trans(&bm),
            &y,
            s,
            1.0,
            None,
        )?;
        let dh = gemm(rec, Operand::plain(g), Operand::plain(&bm), s, None)?;
        let dbm = gemm(rec, Operand::trans(g), Operand::plain(&h), s, None)?;
        let dam = matmul(rec, &dh, true, x, false)?;
        gemm_into(
            rec,
            Operand::plain(&dh),
            Operand::plain(&am),
            &dx,
            1.0,
            1.0,
            None,
        )?;
        let dbm = apply_mask(rec, &masks.b, &dbm, i)?;
        let dam = apply_mask(rec, &masks.a, &dam, i)?;
        db = accumulate(rec, db, dbm)?;
        da = accumulate(rec, da, dam)?;
    }
    let grads = Grads {
        dx: Some(dx),
        da: da.expect("d >= 1"),
        db: db.expect("d >= 1"),
    };
    Ok((y, grads))
}
