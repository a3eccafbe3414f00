//! Split-K GEMM for tall-skinny products whose K (tokens) is long and whose output is
//! small, such as the adapter gradients `dB = s G^T H` (`[out, d r]`) and
//! `dA_s = dH^T x` (`[d r, in]`): few output tiles leave most of a device idle while each
//! walks all of K, so K is cut into `S` slices computed side by side.
//!
//! Two dispatches, one submit, nothing read back: the register variant of the chosen shape
//! writes the partial product of slice `z` into `P[z]` of a pooled `[S, M, N]` tensor (the
//! generated kernels take a K offset `z kz` and an extent `kl` in their parameters), then
//! `shaders/splitk.wgsl` sums the partials in the fixed order `z = 0, 1, ..` and applies
//! alpha, `beta C` and the bias ([`crate::kernels::splitk`]): deterministic, bit-identical
//! between runs (no atomics).
//!
//! Slices are a multiple of 4 long (vec4 loads along K stay aligned), so asking for `S`
//! gives `ceil(K / len)` partials with `len = round_up(ceil(K / S), 4)`: `S` of them for
//! the autotuner's counts on long K, fewer where the rounding makes slices longer (K = 10,
//! S = 4: slices of 4, 4 and 2, three partials).
//! `S` larger than K, or than [`MAX_SPLITS`], is refused.

use super::{Kernel, Operand, Params, Plan, launch};
use crate::runtime::error::{Error, Result};
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// The split counts the autotuner measures (bounded by K: see [`MIN_SLICE`]).
pub const SPLITS: [u32; 4] = [4, 8, 16, 32];
/// Shortest slice the autotuner tries: `S <= K / MIN_SLICE`.
pub const MIN_SLICE: usize = 32;
/// Most partials one split-K GEMM may ask for.
pub const MAX_SPLITS: u32 = 1024;

/// How K is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slices {
    /// Slice length, a multiple of 4 (the last slice may be shorter).
    pub len: usize,
    /// Number of slices, hence of partial products: `ceil(K / len)`, at most the `S` asked.
    pub parts: usize,
}

/// The slices of a K of `k` for `s` requested splits; `s = 0`, `s > k` and
/// `s >` [`MAX_SPLITS`] are errors.
pub fn slices(k: usize, s: u32) -> Result<Slices> {
    if s == 0 || s > MAX_SPLITS {
        return Err(Error::InvalidArgument(format!(
            "split-K: S = {s} splits; expected 1 to {MAX_SPLITS}"
        )));
    }
    if s as usize > k {
        return Err(Error::InvalidArgument(format!(
            "split-K: S = {s} splits but K = {k}; at most K splits (one element each)"
        )));
    }
    let len = k.div_ceil(s as usize).next_multiple_of(4);
    Ok(Slices {
        len,
        parts: k.div_ceil(len),
    })
}

/// Whether the autotuner tries split-K on an unbatched `[M, K] x [K, N]` problem: K is its
/// longest side, at least 256 and at least 8 times the short side of the output (the
/// adapter gradients `[out, d r]` and `[d r, in]` over tokens; not square or wide GEMMs).
pub fn worthy([m, k, n]: [usize; 3]) -> bool {
    k >= 256 && k >= m.max(n) && k >= 8 * m.min(n)
}

/// The split counts of [`SPLITS`] the autotuner measures for a K of `k`.
pub fn candidates(k: usize) -> impl Iterator<Item = u32> {
    SPLITS
        .into_iter()
        .filter(move |&s| s as usize * MIN_SLICE <= k)
}

/// Compiles the reduction pass (the partial kernel is the register variant's pipeline).
pub(super) fn prepare(gpu: &crate::Gpu) -> Result<()> {
    crate::kernels::splitk::prepare(gpu)
}

/// Records the split-K GEMM: the partials of `splits` slices with the parameters `p` of
/// the whole problem and the register variant `shader` over its `grid`, then the reduction
/// into `c` with `p`'s alpha and beta and `bias`.
pub(super) fn dispatch(
    rec: &mut Recorder,
    (kernel, splits, plan): (Kernel, u32, Plan),
    ops: (&Operand, &Operand),
    c: &Tensor,
    p: Params,
    bias: Option<&Tensor>,
) -> Result<()> {
    let grid = plan.grid;
    if grid[2] != 1 {
        return Err(Error::InvalidArgument(format!(
            "split-K takes an unbatched GEMM; this one has a batch of {}",
            grid[2]
        )));
    }
    let sl = slices(p.k as usize, splits)?;
    let parts = Tensor::empty(rec.gpu(), &[sl.parts, p.m as usize, p.n as usize])?;
    let len = crate::runtime::error::index_u32("split-K slice", sl.len)?;
    let inner = Params {
        stride_a: 0,
        stride_b: 0,
        kz: len,
        kl: len,
        alpha: 1.0,
        beta: 0.0,
        ..p
    };
    let z = crate::runtime::error::index_u32("split-K partials", sl.parts)?;
    let plan = Plan {
        grid: [grid[0], grid[1], z],
        ..plan
    };
    launch(rec, (kernel, plan), &inner, ops, &parts, None)?;
    crate::kernels::splitk::reduce_into(rec, &parts, c, (p.alpha, p.beta), bias)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_k_in_multiples_of_four() {
        for k in 1..200usize {
            for s in 1..=k.min(40) as u32 {
                let sl = slices(k, s).unwrap();
                assert_eq!(sl.len % 4, 0, "K={k} S={s}");
                assert!(
                    sl.parts >= 1 && sl.parts <= s as usize,
                    "K={k} S={s}: {sl:?}"
                );
                assert!(
                    (sl.parts - 1) * sl.len < k && sl.parts * sl.len >= k,
                    "{sl:?}"
                );
            }
        }
        assert_eq!(slices(10, 4).unwrap(), Slices { len: 4, parts: 3 });
        assert_eq!(
            slices(4096, 32).unwrap(),
            Slices {
                len: 128,
                parts: 32
            }
        );
    }

    #[test]
    fn bad_split_counts_are_refused_by_name() {
        for (k, s) in [(10, 0), (10, 11), (0, 1), (1 << 20, MAX_SPLITS + 1)] {
            let e = slices(k, s).unwrap_err().to_string();
            assert!(
                e.contains("split-K") && e.contains(&format!("S = {s}")),
                "{e}"
            );
        }
    }

    #[test]
    fn candidates_are_bounded_by_k() {
        assert_eq!(candidates(4096).collect::<Vec<_>>(), [4, 8, 16, 32]);
        assert_eq!(candidates(512).collect::<Vec<_>>(), [4, 8, 16]);
        assert_eq!(candidates(100).count(), 0);
        assert!(worthy([16, 512, 256]) && worthy([768, 4096, 16]));
        assert!(!worthy([512, 512, 512 + 1]) && !worthy([4096, 768, 16]));
        assert!(!worthy([256, 256, 256]) && !worthy([64, 511, 64]));
    }
}
