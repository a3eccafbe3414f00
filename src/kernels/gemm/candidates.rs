//! The autotuner's candidate lists: which variants [`super::tune`] measures on a problem.

use super::tune::Mode;
use super::{Kernel, Operand, split, template, tiled};
use crate::runtime::gpu::Gpu;

/// The split-K settings measured on an unbatched problem [`split::worthy`] of it: each of
/// [`split::candidates`] over the register shape that led the single-pass candidates
/// (`exhaustive`: over every register shape measured). Split-K adds no compile but the
/// reduction's (the partials run the register variant's own pipeline).
pub(super) fn split_candidates(
    a: &Operand,
    b: &Operand,
    mkn: [usize; 3],
    mode: Mode,
    times: &[(Kernel, Vec<f64>)],
) -> Vec<Kernel> {
    let batched = |o: &Operand| o.tensor.shape().len() > 2;
    if batched(a) || batched(b) || !split::worthy(mkn) {
        return Vec::new();
    }
    let mut shapes: Vec<(usize, f64)> = times
        .iter()
        .filter_map(|(k, t)| match k {
            Kernel::Register(s) | Kernel::RegisterTrusted(s) => Some((*s, t[0])),
            _ => None,
        })
        .collect();
    shapes.sort_by(|x, y| x.1.total_cmp(&y.1));
    if mode != Mode::Exhaustive {
        shapes.truncate(1);
    }
    shapes
        .iter()
        .flat_map(|&(s, _)| split::candidates(mkn[1]).map(move |p| Kernel::SplitK(s, p)))
        .collect()
}

/// The variants measured. Register-only: in `on` mode the square 8x8 and 4x4 blocks, and
/// the narrow-N (narrow-M) workgroup only where N (M) is at most 32, since compiling each
/// candidate costs about a quarter of a second on llvmpipe. Workgroup-memory: in `on` mode
/// only on adapters that are not CPUs (on llvmpipe compiling and first running each took
/// 0.7-4.3 s, which alone breaks the 2 s first-use budget, and they lost the square
/// GEMMs; they won some adapter shapes in `exhaustive` mode: BENCHMARKS.md); there the
/// 64x64 tile, the 128x128 one where M and N reach 128 and the 128x64 one where only M
/// does, only tiles whose workgroup storage and size fit the device. Where the host proves
/// the problem in range (aligned), `on` mode takes each variant's trusted form instead of
/// its checked one (the same code without runtime checks, falling back to it where
/// unproven); `exhaustive` mode measures every variant that fits in both forms.
pub(super) fn candidates(
    gpu: &Gpu,
    a: &Operand,
    b: &Operand,
    mkn: [usize; 3],
    mode: Mode,
) -> Vec<Kernel> {
    let [m, _, n] = mkn;
    let all = mode == Mode::Exhaustive;
    let (av, bv) = (a.view.code(), b.view.code());
    let forms = |k: Kernel, aligned: bool| match (aligned, all) {
        (false, _) => vec![k],
        (true, false) => vec![k.trusted_form()],
        (true, true) => vec![k, k.trusted_form()],
    };
    let mut out = Vec::new();
    for (s, shape) in template::SHAPES.iter().enumerate() {
        if all
            || (shape.tm == shape.tn && shape.wx == shape.wy)
            || (shape.wx < shape.wy && n <= 32)
            || (shape.wx > shape.wy && m <= 32)
        {
            let aligned = template::spec_for(s, av, bv, mkn).aligned;
            out.extend(forms(Kernel::Register(s), aligned));
        }
    }
    let cpu = gpu.adapter_info().device_type == wgpu::DeviceType::Cpu;
    if b.tensor.is_f16() {
        // The workgroup-memory and cooperative-matrix kernels read f32 operands only.
        return out;
    }
    for (t, tile) in tiled::TILES.iter().enumerate() {
        let wide = tile.bn >= 128;
        let worth = !cpu && (tile.bm == 64 || (m >= 128 && (n >= 128) == wide));
        if (all || worth) && tiled::fits(tile, gpu).is_ok() {
            let aligned = tiled::spec_for(t, av, bv, mkn).aligned;
            out.extend(forms(Kernel::Tiled(t), aligned));
        }
    }
    out
}
