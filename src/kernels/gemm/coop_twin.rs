//! A CPU twin of the cooperative-matrix GEMM ([`super::coop`]), step for step: the same
//! blocks and K steps, the same invocation-to-element maps of the staging with zero padding
//! past M, N and K and rounding to the input type, tiles owned by subgroups as the kernel
//! assigns them, f32 multiply-adds per tile, the C block in (simulated) workgroup memory
//! and the epilogue. It returns an error where a staging or C slot would be written twice
//! or never, so the index formulas are checked too. Lavapipe has no cooperative matrices;
//! this is how the tiling and edge handling are tested against the f64 reference
//! (`tests/gemm_coop.rs`) on machines without them.

use super::coop::{TILES, WORKGROUP};
use crate::runtime::coopmat::{CoopInput, CoopShape};

/// `x` rounded to the nearest f16 (ties to even), as f32: subnormals below `2^-14`,
/// zero below `2^-25`, infinity from 65520 on.
pub fn round_f16(x: f32) -> f32 {
    if !x.is_finite() {
        return x;
    }
    let ax = x.abs();
    // The f16 exponent of `ax` (at least -14, the subnormal range's).
    let e = if ax < f32::powi(2.0, -14) {
        -14
    } else {
        ((ax.to_bits() >> 23) as i32) - 127
    };
    let quantum = f32::powi(2.0, e - 10);
    let r = (x / quantum).round_ties_even() * quantum;
    if r.abs() > 65504.0 {
        f32::INFINITY.copysign(x)
    } else {
        r
    }
}

/// A problem for the twin: op(A) `[M, K]` and op(B) `[K, N]` as logical row-major
/// matrices, and whether each is stored transposed (which picks the staging map).
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    /// `[M, K, N]`.
    pub mkn: [usize; 3],
    /// op(A), `M x K` row-major.
    pub a: &'a [f32],
    /// op(B), `K x N` row-major.
    pub b: &'a [f32],
    /// The view of A has an odd code (stored transposed).
    pub a_transposed: bool,
    /// The view of B has an odd code.
    pub b_transposed: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the old C (not read when 0).
    pub beta: f32,
    /// Added to every row.
    pub bias: Option<&'a [f32]>,
}

/// The tile each accumulator of subgroup `sg` (of `ns`) holds, `None` where it idles.
pub fn owned_tiles(sg: u32, ns: u32, per_subgroup: u32) -> Vec<Option<u32>> {
    (0..per_subgroup)
        .map(|j| Some(sg + j * ns).filter(|&t| t < TILES * TILES))
        .collect()
}

fn round(shape: CoopShape, v: f32) -> f32 {
    match shape.input {
        CoopInput::F16 => round_f16(v),
        CoopInput::F32 => v,
    }
}

/// Writes `value(i)` for every `i` the workgroup's staging loop visits to `slot(i)` of
/// `out`; an error where a slot is written twice or never.
fn stage_into(
    out: &mut [f32],
    slot: impl Fn(usize) -> usize,
    value: impl Fn(usize) -> f32,
) -> Result<(), String> {
    let mut written = vec![false; out.len()];
    for lid in 0..WORKGROUP as usize {
        for i in (lid..out.len()).step_by(WORKGROUP as usize) {
            let s = slot(i);
            if std::mem::replace(&mut written[s], true) {
                return Err(format!("staging slot {s} written twice"));
            }
            out[s] = value(i);
        }
    }
    match written.iter().position(|w| !w) {
        Some(s) => Err(format!("staging slot {s} never written")),
        None => Ok(()),
    }
}

/// The staged op(A) `[BLK, BK]` and op(B) `[BK, BLK]` of the block at `(m0, n0)`, step `k0`.
fn stage(
    shape: CoopShape,
    p: &Problem,
    [m0, n0, k0]: [usize; 3],
    (sa, sb): (&mut [f32], &mut [f32]),
) -> Result<(), String> {
    let [m, k, n] = p.mkn;
    let (blk, bk) = (shape.block() as usize, shape.bk() as usize);
    let a_at = |i: usize| {
        if p.a_transposed {
            (i % blk, i / blk)
        } else {
            (i / bk, i % bk)
        }
    };
    let b_at = |i: usize| {
        if p.b_transposed {
            (i % bk, i / bk)
        } else {
            (i / blk, i % blk)
        }
    };
    stage_into(
        sa,
        |i| a_at(i).0 * bk + a_at(i).1,
        |i| {
            let (r, kk) = a_at(i);
            let inside = m0 + r < m && k0 + kk < k;
            round(
                shape,
                if inside {
                    p.a[(m0 + r) * k + k0 + kk]
                } else {
                    0.0
                },
            )
        },
    )?;
    stage_into(
        sb,
        |i| b_at(i).0 * blk + b_at(i).1,
        |i| {
            let (kk, cl) = b_at(i);
            let inside = k0 + kk < k && n0 + cl < n;
            round(
                shape,
                if inside {
                    p.b[(k0 + kk) * n + n0 + cl]
                } else {
                    0.0
                },
            )
        },
    )
}

/// The f32 block of C at `(m0, n0)`, as the kernel's subgroups leave it in workgroup
/// memory, with `subgroups` subgroups holding `per_subgroup` accumulators each.
fn block(
    shape: CoopShape,
    (per_subgroup, subgroups): (u32, u32),
    p: &Problem,
    (m0, n0): (usize, usize),
) -> Result<Vec<f32>, String> {
    let (s, blk, bk) = (
        shape.size as usize,
        shape.block() as usize,
        shape.bk() as usize,
    );
    let owners: Vec<(u32, usize, u32)> = (0..subgroups)
        .flat_map(|sg| {
            owned_tiles(sg, subgroups, per_subgroup)
                .into_iter()
                .enumerate()
                .filter_map(move |(j, t)| t.map(|t| (sg, j, t)))
        })
        .collect();
    let mut acc = vec![vec![0f32; s * s]; owners.len()];
    let (mut sa, mut sb) = (vec![0f32; blk * bk], vec![0f32; bk * blk]);
    for k0 in (0..p.mkn[1]).step_by(bk) {
        stage(shape, p, [m0, n0, k0], (&mut sa, &mut sb))?;
        for (acc, &(_, _, t)) in acc.iter_mut().zip(&owners) {
            let (ti, tj) = ((t / TILES) as usize, (t % TILES) as usize);
            for q in 0..bk / s {
                for r in 0..s {
                    for cl in 0..s {
                        let mut v = acc[r * s + cl];
                        for x in 0..s {
                            let av = sa[(ti * s + r) * bk + q * s + x];
                            let bv = sb[(q * s + x) * blk + tj * s + cl];
                            v += av * bv;
                        }
                        acc[r * s + cl] = v;
                    }
                }
            }
        }
    }
    let mut cs = vec![f32::NAN; blk * blk];
    for (acc, &(sg, j, t)) in acc.iter().zip(&owners) {
        let (ti, tj) = ((t / TILES) as usize, (t % TILES) as usize);
        for r in 0..s {
            for cl in 0..s {
                let slot = &mut cs[(ti * s + r) * blk + tj * s + cl];
                if !slot.is_nan() {
                    return Err(format!("tile {t} stored twice (subgroup {sg}, slot {j})"));
                }
                *slot = acc[r * s + cl];
            }
        }
    }
    match cs.iter().position(|v| v.is_nan()) {
        Some(i) => Err(format!("C block element {i} never stored")),
        None => Ok(cs),
    }
}

/// `c = alpha op(A) op(B) + beta c + bias` as the cooperative-matrix kernel computes it with
/// `per_subgroup` accumulators per subgroup and `subgroups` subgroups per workgroup;
/// an error where its index maps would write a slot twice or miss one.
pub fn gemm(
    shape: CoopShape,
    per_subgroup: u32,
    subgroups: u32,
    p: &Problem,
    c: &mut [f32],
) -> Result<(), String> {
    let [m, _, n] = p.mkn;
    let blk = shape.block() as usize;
    for m0 in (0..m).step_by(blk) {
        for n0 in (0..n).step_by(blk) {
            let cs = block(shape, (per_subgroup, subgroups), p, (m0, n0))?;
            for (i, v) in cs.iter().enumerate() {
                let (row, col) = (m0 + i / blk, n0 + i % blk);
                if row < m && col < n {
                    let idx = row * n + col;
                    let mut out = p.alpha * v;
                    if p.beta != 0.0 {
                        out = p.beta.mul_add(c[idx], out);
                    }
                    if let Some(bias) = p.bias {
                        out += bias[col];
                    }
                    c[idx] = out;
                }
            }
        }
    }
    Ok(())
}
