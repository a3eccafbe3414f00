//! One CapaBoost-LoRA layer on the GPU: forward, backward and merge, composed from the
//! masked GEMMs and masked sums, with an f64 CPU reference written in the per-branch form
//! of the math (so the stacked GPU form is checked against an independent formulation).
//!
//! PEFT layout: `x [T, in]`, `W0 [out, in]`, `b0 [out]`, `lora_A [r, in]`,
//! `lora_B [out, r]`, masks `M_i [r, in]`, `N_i [out, r]`, `s = alpha / r` (rsLoRA:
//! `alpha / sqrt(r)`), no division by d.

use crate::kernels::gemm::{Operand, View, gemm, gemm_into};
use crate::kernels::masks::{Factor, MaskBits, MaskConfig, masked_sum};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// How the update is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "tasks", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RankScaling {
    /// `s = alpha / r` (LoRA).
    #[default]
    Lora,
    /// `s = alpha / sqrt(r)` (rsLoRA).
    #[serde(rename = "rslora")]
    #[cfg_attr(feature = "tasks", value(name = "rslora"))]
    RsLora,
}

impl RankScaling {
    /// The scale `s` for `alpha` and rank `r`.
    pub fn scale(self, alpha: f32, r: usize) -> f32 {
        match self {
            Self::Lora => alpha / r as f32,
            Self::RsLora => alpha / (r as f32).sqrt(),
        }
    }
}

/// One 0/1 byte mask per branch.
pub type BranchMasks = Vec<Vec<u8>>;

/// The masks of one adapted matrix: `M_i` on `lora_A`, `N_i` on `lora_B`.
#[derive(Clone, Debug)]
pub struct LayerMasks {
    /// Masks of `lora_A [r, in]`.
    pub a: MaskBits,
    /// Masks of `lora_B [out, r]`.
    pub b: MaskBits,
}

impl LayerMasks {
    /// Generates both factors' masks on the GPU, keyed by (seed, module, factor, branch):
    /// `a` for `lora_A [r, in]`, `b` for `lora_B [out, r]`.
    pub fn generate(
        rec: &mut Recorder,
        config: &MaskConfig,
        module: u32,
        r: usize,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        Ok(Self {
            a: MaskBits::generate(rec, &config.spec(module, Factor::A, r, in_features))?,
            b: MaskBits::generate(rec, &config.spec(module, Factor::B, out_features, r))?,
        })
    }

    /// Masks given as 0/1 bytes per branch (`a[i]` is `[r, in]`, `b[i]` is `[out, r]`).
    pub fn from_u8(
        gpu: &Gpu,
        a: &[Vec<u8>],
        b: &[Vec<u8>],
        r: usize,
        in_features: usize,
        out_features: usize,
    ) -> Result<Self> {
        if a.is_empty() || a.len() != b.len() {
            return Err(Error::shape(format!(
                "{} masks for lora_A but {} for lora_B (need d >= 1 of each)",
                a.len(),
                b.len()
            )));
        }
        for (i, m) in a.iter().enumerate() {
            if m.len() != r * in_features {
                return Err(Error::shape(format!(
                    "mask_A.{i} has {} entries, expected [{r}, {in_features}]",
                    m.len()
                )));
            }
        }
        for (i, m) in b.iter().enumerate() {
            if m.len() != out_features * r {
                return Err(Error::shape(format!(
                    "mask_B.{i} has {} entries, expected [{out_features}, {r}]",
                    m.len()
                )));
            }
        }
        let d = a.len() as u32;
        Ok(Self {
            a: MaskBits::from_words(gpu, &crate::kernels::masks::pack(a), d, r, in_features)?,
            b: MaskBits::from_words(gpu, &crate::kernels::masks::pack(b), d, out_features, r)?,
        })
    }

    /// Number of branches d.
    pub fn d(&self) -> usize {
        self.a.branches as usize
    }

    /// Reads both factors' masks back as 0/1 bytes per branch: `(M_i, N_i)`.
    pub fn to_u8(&self) -> Result<(BranchMasks, BranchMasks)> {
        let d = self.d();
        let a = crate::kernels::masks::unpack(&self.a.to_words()?, d, self.a.rows * self.a.cols);
        let b = crate::kernels::masks::unpack(&self.b.to_words()?, d, self.b.rows * self.b.cols);
        Ok((a, b))
    }
}

/// Checks every tensor of a layer against the others; errors name the tensor.
pub fn check_layer_shapes(
    x: &Tensor,
    w0: &Tensor,
    b0: Option<&Tensor>,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
) -> Result<()> {
    let [out_f, in_f] = dims2("weight", w0)?;
    let [t, xin] = dims2("x", x)?;
    let [r, ain] = dims2("lora_A", lora_a)?;
    let [bout, br] = dims2("lora_B", lora_b)?;
    let _ = t;
    if xin != in_f {
        return Err(Error::shape(format!(
            "x is [{t}, {xin}] but weight is [{out_f}, {in_f}]"
        )));
    }
    if ain != in_f {
        return Err(Error::shape(format!(
            "lora_A is [{r}, {ain}] but weight has in = {in_f}"
        )));
    }
    if bout != out_f || br != r {
        return Err(Error::shape(format!(
            "lora_B is [{bout}, {br}], expected [{out_f}, {r}]"
        )));
    }
    if let Some(b) = b0
        && b.shape() != [out_f]
    {
        return Err(Error::shape(format!(
            "bias is {:?}, expected [{out_f}]",
            b.shape()
        )));
    }
    if (masks.a.rows, masks.a.cols) != (r, in_f) || (masks.b.rows, masks.b.cols) != (out_f, r) {
        return Err(Error::shape("masks do not match lora_A / lora_B"));
    }
    Ok(())
}

fn dims2(name: &str, t: &Tensor) -> Result<[usize; 2]> {
    match t.shape() {
        &[a, b] => Ok([a, b]),
        s => Err(Error::shape(format!("{name} must be 2-D, got {s:?}"))),
    }
}

/// The forward's outputs: `y` and the activation `H = x A_s^T` the backward needs.
#[derive(Clone, Debug)]
pub struct Forward {
    /// `x W0^T + b0 + s H B_s^T`, `[T, out]`.
    pub y: Tensor,
    /// `x A_s^T`, `[T, d r]`.
    pub h: Tensor,
}

/// `y = x W0^T + b0 + s (x A_s^T) B_s^T`: three GEMM dispatches, masks applied on load.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    rec: &mut Recorder,
    x: &Tensor,
    w0: &Tensor,
    b0: Option<&Tensor>,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
) -> Result<Forward> {
    check_layer_shapes(x, w0, b0, lora_a, lora_b, masks)?;
    let y = gemm(rec, Operand::plain(x), Operand::trans(w0), 1.0, b0)?;
    let h = gemm(
        rec,
        Operand::plain(x),
        Operand::stacked(lora_a, View::AStackedT, &masks.a),
        1.0,
        None,
    )?;
    gemm_into(
        rec,
        Operand::plain(&h),
        Operand::stacked(lora_b, View::BStackedT, &masks.b),
        &y,
        s,
        1.0,
        None,
    )?;
    Ok(Forward { y, h })
}

/// Gradients of a layer.
#[derive(Clone, Debug)]
pub struct Grads {
    /// `dL/dx`, `[T, in]` (`None` when not asked for).
    pub dx: Option<Tensor>,
    /// `dL/dlora_A`, `[r, in]`.
    pub da: Tensor,
    /// `dL/dlora_B`, `[out, r]`.
    pub db: Tensor,
}

/// The backward of [`forward`] for `G = dL/dy`:
/// `dB = s sum_i N_i (G^T H_i)`, `dH = s G B_s`, `dA = sum_i M_i (dH_i^T x)`,
/// `dx = G W0 + dH A_s` (skipped when `want_dx` is false).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    rec: &mut Recorder,
    x: &Tensor,
    w0: &Tensor,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
    h: &Tensor,
    g: &Tensor,
    want_dx: bool,
) -> Result<Grads> {
    check_layer_shapes(x, w0, None, lora_a, lora_b, masks)?;
    let t = x.shape()[0];
    let out_f = w0.shape()[0];
    if g.shape() != [t, out_f] {
        return Err(Error::shape(format!(
            "grad_y is {:?}, expected [{t}, {out_f}]",
            g.shape()
        )));
    }
    let dr = masks.d() * lora_a.shape()[0];
    if h.shape() != [t, dr] {
        return Err(Error::shape(format!(
            "saved H is {:?}, expected [{t}, {dr}]",
            h.shape()
        )));
    }
    let db_stacked = gemm(rec, Operand::trans(g), Operand::plain(h), s, None)?;
    let db = masked_sum(rec, &masks.b, Factor::B, &db_stacked)?;
    let dh = gemm(
        rec,
        Operand::plain(g),
        Operand::stacked(lora_b, View::BStacked, &masks.b),
        s,
        None,
    )?;
    let da_stacked = gemm(rec, Operand::trans(&dh), Operand::plain(x), 1.0, None)?;
    let da = masked_sum(rec, &masks.a, Factor::A, &da_stacked)?;
    let dx = if want_dx {
        let dx = gemm(rec, Operand::plain(g), Operand::plain(w0), 1.0, None)?;
        gemm_into(
            rec,
            Operand::plain(&dh),
            Operand::stacked(lora_a, View::AStacked, &masks.a),
            &dx,
            1.0,
            1.0,
            None,
        )?;
        Some(dx)
    } else {
        None
    };
    Ok(Grads { dx, da, db })
}

/// `delta_W = s sum_i (B*N_i)(A*M_i) = s B_s A_s`, `[out, in]`.
pub fn delta_weight(
    rec: &mut Recorder,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
) -> Result<Tensor> {
    gemm(
        rec,
        Operand::stacked(lora_b, View::BStacked, &masks.b),
        Operand::stacked(lora_a, View::AStacked, &masks.a),
        s,
        None,
    )
}

/// `W0 += delta_W` in place, for inference at the base model's cost.
pub fn merge(
    rec: &mut Recorder,
    w0: &Tensor,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
) -> Result<()> {
    fold(rec, w0, lora_a, lora_b, masks, s)
}

/// `W0 -= delta_W` in place: undoes [`merge`] (up to f32 rounding).
pub fn unmerge(
    rec: &mut Recorder,
    w0: &Tensor,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
) -> Result<()> {
    fold(rec, w0, lora_a, lora_b, masks, -s)
}

fn fold(
    rec: &mut Recorder,
    w0: &Tensor,
    lora_a: &Tensor,
    lora_b: &Tensor,
    masks: &LayerMasks,
    s: f32,
) -> Result<()> {
    let out_f = lora_b.shape().first().copied().unwrap_or(0);
    let in_f = lora_a.shape().get(1).copied().unwrap_or(0);
    if w0.shape() != [out_f, in_f] {
        return Err(Error::shape(format!(
            "weight is {:?}, expected [{out_f}, {in_f}]",
            w0.shape()
        )));
    }
    gemm_into(
        rec,
        Operand::stacked(lora_b, View::BStacked, &masks.b),
        Operand::stacked(lora_a, View::AStacked, &masks.a),
        w0,
        s,
        1.0,
        None,
    )
}

/// f64 CPU reference of the layer, in the per-branch form of the math document.
pub mod cpu {
    /// A layer's data on the host (f32 as stored, masks as 0/1 per branch).
    pub struct Layer<'a> {
        /// `[T, in]`.
        pub x: &'a [f32],
        /// `[out, in]`.
        pub w0: &'a [f32],
        /// `[out]`.
        pub b0: Option<&'a [f32]>,
        /// `[r, in]`.
        pub a: &'a [f32],
        /// `[out, r]`.
        pub b: &'a [f32],
        /// `M_i`, each `[r, in]`.
        pub ma: &'a [Vec<u8>],
        /// `N_i`, each `[out, r]`.
        pub mb: &'a [Vec<u8>],
        /// Scale.
        pub s: f64,
        /// Tokens.
        pub t: usize,
        /// In features.
        pub in_f: usize,
        /// Out features.
        pub out_f: usize,
        /// Rank.
        pub r: usize,
    }

    impl Layer<'_> {
        fn am(&self, i: usize) -> Vec<f64> {
            (0..self.r * self.in_f)
                .map(|e| self.a[e] as f64 * self.ma[i][e] as f64)
                .collect()
        }

        fn bm(&self, i: usize) -> Vec<f64> {
            (0..self.out_f * self.r)
                .map(|e| self.b[e] as f64 * self.mb[i][e] as f64)
                .collect()
        }

        /// `H_i = x (A*M_i)^T`, `[T, r]`.
        fn h(&self, i: usize) -> Vec<f64> {
            let am = self.am(i);
            let mut h = vec![0.0; self.t * self.r];
            for t in 0..self.t {
                for j in 0..self.r {
                    h[t * self.r + j] = (0..self.in_f)
                        .map(|c| self.x[t * self.in_f + c] as f64 * am[j * self.in_f + c])
                        .sum();
                }
            }
            h
        }

        /// `y = x W0^T + b0 + s sum_i H_i (B*N_i)^T`.
        pub fn forward(&self) -> Vec<f64> {
            let (t_n, in_f, out_f, r) = (self.t, self.in_f, self.out_f, self.r);
            let mut y = vec![0.0; t_n * out_f];
            for t in 0..t_n {
                for o in 0..out_f {
                    let base: f64 = (0..in_f)
                        .map(|c| self.x[t * in_f + c] as f64 * self.w0[o * in_f + c] as f64)
                        .sum();
                    y[t * out_f + o] = base + self.b0.map_or(0.0, |b| b[o] as f64);
                }
            }
            for i in 0..self.ma.len() {
                let (h, bm) = (self.h(i), self.bm(i));
                for t in 0..t_n {
                    for o in 0..out_f {
                        let v: f64 = (0..r).map(|j| h[t * r + j] * bm[o * r + j]).sum();
                        y[t * out_f + o] += self.s * v;
                    }
                }
            }
            y
        }

        /// `(dx, dA, dB)` for `G = dL/dy`.
        pub fn backward(&self, g: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
            let (t_n, in_f, out_f, r) = (self.t, self.in_f, self.out_f, self.r);
            let g = |t: usize, o: usize| g[t * out_f + o] as f64;
            let mut dx = vec![0.0; t_n * in_f];
            let mut da = vec![0.0; r * in_f];
            let mut db = vec![0.0; out_f * r];
            for t in 0..t_n {
                for c in 0..in_f {
                    dx[t * in_f + c] = (0..out_f)
                        .map(|o| g(t, o) * self.w0[o * in_f + c] as f64)
                        .sum();
                }
            }
            for i in 0..self.ma.len() {
                let (h, am, bm) = (self.h(i), self.am(i), self.bm(i));
                // dH_i = s G (B*N_i), [T, r]
                let mut dh = vec![0.0; t_n * r];
                for t in 0..t_n {
                    for j in 0..r {
                        dh[t * r + j] =
                            self.s * (0..out_f).map(|o| g(t, o) * bm[o * r + j]).sum::<f64>();
                    }
                }
                for o in 0..out_f {
                    for j in 0..r {
                        if self.mb[i][o * r + j] != 0 {
                            db[o * r + j] +=
                                self.s * (0..t_n).map(|t| g(t, o) * h[t * r + j]).sum::<f64>();
                        }
                    }
                }
                for j in 0..r {
                    for c in 0..in_f {
                        if self.ma[i][j * in_f + c] != 0 {
                            da[j * in_f + c] += (0..t_n)
                                .map(|t| dh[t * r + j] * self.x[t * in_f + c] as f64)
                                .sum::<f64>();
                        }
                    }
                }
                for t in 0..t_n {
                    for c in 0..in_f {
                        dx[t * in_f + c] += (0..r)
                            .map(|j| dh[t * r + j] * am[j * in_f + c])
                            .sum::<f64>();
                    }
                }
            }
            (dx, da, db)
        }

        /// `delta_W = s sum_i (B*N_i)(A*M_i)`, `[out, in]`.
        pub fn delta_weight(&self) -> Vec<f64> {
            let (in_f, out_f, r) = (self.in_f, self.out_f, self.r);
            let mut dw = vec![0.0; out_f * in_f];
            for i in 0..self.ma.len() {
                let (am, bm) = (self.am(i), self.bm(i));
                for o in 0..out_f {
                    for c in 0..in_f {
                        dw[o * in_f + c] += self.s
                            * (0..r)
                                .map(|j| bm[o * r + j] * am[j * in_f + c])
                                .sum::<f64>();
                    }
                }
            }
            dw
        }
    }

    /// Numerical rank of a row-major `[rows, cols]` matrix: Gaussian elimination with full
    /// pivoting, counting pivots above `rel_tol` times the largest entry.
    pub fn rank(m: &[f64], rows: usize, cols: usize, rel_tol: f64) -> usize {
        let mut a = m.to_vec();
        let scale = a.iter().fold(0.0f64, |acc, v| acc.max(v.abs()));
        if scale == 0.0 {
            return 0;
        }
        let mut rank = 0;
        let mut row_used = vec![false; rows];
        let mut col_used = vec![false; cols];
        loop {
            let mut best = (0.0, 0, 0);
            for r in (0..rows).filter(|&r| !row_used[r]) {
                for c in (0..cols).filter(|&c| !col_used[c]) {
                    if a[r * cols + c].abs() > best.0 {
                        best = (a[r * cols + c].abs(), r, c);
                    }
                }
            }
            if best.0 <= rel_tol * scale {
                return rank;
            }
            let (_, pr, pc) = best;
            row_used[pr] = true;
            col_used[pc] = true;
            rank += 1;
            let pivot = a[pr * cols + pc];
            for r in (0..rows).filter(|&r| !row_used[r]) {
                let f = a[r * cols + pc] / pivot;
                if f != 0.0 {
                    for c in 0..cols {
                        a[r * cols + c] -= f * a[pr * cols + c];
                    }
                }
            }
        }
    }
}

/// The naive path the fused kernels replace, kept as the benchmarks' baseline (the
/// reference implementation's way): d masked copies of A and B materialized, d separate
/// GEMMs per product, gradients masked and summed branch by branch.
pub mod naive {
    use super::LayerMasks;
    use crate::kernels::elementwise;
    use crate::kernels::gemm::{Operand, gemm, gemm_into, linear, matmul};
    use crate::kernels::masks::apply_mask;
    use crate::runtime::error::Result;
    use crate::runtime::recorder::Recorder;
    use crate::runtime::tensor::Tensor;

    /// Forward and backward of one layer: `(y, dx, dA, dB)`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        rec: &mut Recorder,
        x: &Tensor,
        w0: &Tensor,
        b0: Option<&Tensor>,
        lora_a: &Tensor,
        lora_b: &Tensor,
        masks: &LayerMasks,
        s: f32,
        g: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor, Tensor)> {
        let y = linear(rec, x, w0, b0)?;
        let dx = matmul(rec, g, false, w0, false)?;
        let mut da: Option<Tensor> = None;
        let mut db: Option<Tensor> = None;
        for i in 0..masks.d() as u32 {
            let am = apply_mask(rec, &masks.a, lora_a, i)?;
            let bm = apply_mask(rec, &masks.b, lora_b, i)?;
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
            db = Some(match db {
                Some(acc) => elementwise::add(rec, &acc, &dbm)?,
                None => dbm,
            });
            da = Some(match da {
                Some(acc) => elementwise::add(rec, &acc, &dam)?,
                None => dam,
            });
        }
        Ok((y, dx, da.expect("d >= 1"), db.expect("d >= 1")))
    }
}
