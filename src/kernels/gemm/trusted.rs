//! When a generated GEMM may run as a trusted module ([`Checks::Trusted`]: wgpu's
//! `create_shader_module_trusted` with every runtime check off), and why that is sound.
//!
//! A [`Kernel::RegisterTrusted`] or [`Kernel::TiledTrusted`] dispatch uses the trusted
//! module only when [`proven`] holds; otherwise the checked module of the same source
//! runs (the pipeline cache keys the two apart). The proof that every index is in range:
//!
//! 1. **The grid is exact** (`aligned`: the spec's own test, made on the host from the
//!    problem): M and N are multiples of the workgroup's rows and columns and the grid is
//!    `(N / cols, M / rows, batch)`, so every row index `m0 + ...` is `< M` and every
//!    column index `< N`. K is a multiple of the K step (4 for the register family, `bk`
//!    for the workgroup-memory one), so the K loops (`k < K & ~3` by 4; `t < ntiles` with
//!    slab `t` at `t bk`) only read `k < K`, and the register family's K tail loop is empty.
//! 2. **Operand views map in range**: for `row < R`, `col < C` of the logical `[R, C]`, a
//!    dense view reads element `off + row C + col` (or `off + col R + row`) with
//!    `off = z * stride` and `stride` either 0 (a broadcast batch of 1) or `R C`, so below
//!    `batch_o R C`; a vec4 load starts at such an index that is a multiple of 4 (its
//!    contiguous dimension is a multiple of 4) and ends below the same bound, i.e. within
//!    `floor(len / 4)` vec4s. The stacked views read the factor at `(row % r) C + col`,
//!    `(col % r) R + row`, `row r + col % r` or `col r + row % r`, each below the factor's
//!    `r x (R C / (d r))` elements, and mask bit `< d x` the factor's elements. `r >= 1`, so
//!    the `%` and `/` by `r` never divide by zero; every other divisor is a constant.
//! 3. **The buffers hold those extents**, checked here on the bound sizes: A, B, C
//!    (`batch M N`), the bias (`N`, read only when bound) and the mask words; the dummy
//!    buffer bound in place of absent masks and bias is never read (the view modes that
//!    read bits are the stacked ones, which require masks; `HAS_BIAS` is false).
//!    `beta == 0` never reads C.
//! 4. **No u32 wraps**: every extent above is below 2^32 (checked here), and every index
//!    expression is a sum of non-negative products each below its final value.
//! 5. **Workgroup and private memory**: the workgroup arrays are indexed by generator
//!    constants plus `lid`, `tid` and `cur` terms bounded by construction
//!    (`tid < threads`, `cur < 2`, `(tid + v threads) / (bk / 4) < bm`, ...), and the
//!    register family has no private arrays (every value a named `let`/`var`).
//! 6. **Loops terminate**: each counts up by a constant to a bound it cannot overshoot.

use super::{Dims, Operand};
use crate::runtime::tensor::Tensor;

#[cfg(doc)]
use super::Kernel;
#[cfg(doc)]
use crate::runtime::pipeline::Checks;

/// Whether a generated variant whose spec is `aligned` is proven in range on this problem
/// (see the module docs): the host half of the proof, on the sizes actually bound.
pub(super) fn proven(
    aligned: bool,
    (a, b): (&Operand, &Operand),
    c: &Tensor,
    bias: Option<&Tensor>,
    d: &Dims,
) -> bool {
    let fits = |len: usize, extent: usize| extent <= len && len <= u32::MAX as usize;
    let operand = |o: &Operand, batch: usize, rows: usize, cols: usize| match o.masks {
        None if !o.view.stacked() => fits(o.tensor.numel(), batch * rows * cols),
        Some(m) if o.view.stacked() => {
            let factor = m.rows * m.cols;
            let bits = factor * m.branches as usize;
            let words = (m.binding().bytes / 4) as usize;
            o.tensor.numel() == factor
                && batch == 1
                && rows * cols == bits
                && bits <= words.saturating_mul(32)
                && bits <= u32::MAX as usize
        }
        _ => false,
    };
    aligned
        && d.r >= 1
        && operand(a, d.ba, d.m, d.k)
        && operand(b, d.bb, d.k, d.n)
        && fits(c.numel(), d.batch * d.m * d.n)
        && bias.is_none_or(|t| fits(t.numel(), d.n))
}
