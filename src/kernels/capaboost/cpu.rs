//! f64 CPU reference of the layer, in the per-branch form of the math document: the same
//! shape as the GPU side ([`Adapter`] for the update, its backward and `delta_W`, reused
//! by [`Layer`] on a frozen base), written branch by branch instead of stacked.

/// An adapter's data on the host (f32 as stored, masks as 0/1 per branch).
#[derive(Clone, Copy, Debug)]
pub struct Adapter<'a> {
    /// `lora_A`, `[r, in]`.
    pub a: &'a [f32],
    /// `lora_B`, `[out, r]`.
    pub b: &'a [f32],
    /// `M_i`, each `[r, in]`.
    pub ma: &'a [Vec<u8>],
    /// `N_i`, each `[out, r]`.
    pub mb: &'a [Vec<u8>],
    /// Scale.
    pub s: f64,
    /// In features.
    pub in_f: usize,
    /// Out features.
    pub out_f: usize,
    /// Rank.
    pub r: usize,
}

impl Adapter<'_> {
    /// Number of branches d.
    pub fn d(&self) -> usize {
        self.ma.len()
    }

    /// `A*M_i`, `[r, in]`.
    fn am(&self, i: usize) -> Vec<f64> {
        (0..self.r * self.in_f)
            .map(|e| self.a[e] as f64 * self.ma[i][e] as f64)
            .collect()
    }

    /// `B*N_i`, `[out, r]`.
    fn bm(&self, i: usize) -> Vec<f64> {
        (0..self.out_f * self.r)
            .map(|e| self.b[e] as f64 * self.mb[i][e] as f64)
            .collect()
    }

    /// `H_i = x (A*M_i)^T`, `[T, r]`, for `x [T, in]`.
    pub fn h(&self, x: &[f32], t_n: usize, i: usize) -> Vec<f64> {
        let (in_f, r) = (self.in_f, self.r);
        let am = self.am(i);
        let mut h = vec![0.0; t_n * r];
        for t in 0..t_n {
            for j in 0..r {
                h[t * r + j] = (0..in_f)
                    .map(|c| x[t * in_f + c] as f64 * am[j * in_f + c])
                    .sum();
            }
        }
        h
    }

    /// `y += s sum_i H_i (B*N_i)^T` for `x [T, in]`, `y [T, out]`.
    pub fn update(&self, x: &[f32], t_n: usize, y: &mut [f64]) {
        let (out_f, r) = (self.out_f, self.r);
        for i in 0..self.d() {
            let (h, bm) = (self.h(x, t_n, i), self.bm(i));
            for t in 0..t_n {
                for o in 0..out_f {
                    let v: f64 = (0..r).map(|j| h[t * r + j] * bm[o * r + j]).sum();
                    y[t * out_f + o] += self.s * v;
                }
            }
        }
    }

    /// `(dA, dB)` for `G = dL/dy [T, out]`, and `dx += sum_i dH_i (A*M_i)` when given,
    /// branch by branch: `dH_i = s G (B*N_i)`, `dB += s N_i (G^T H_i)`,
    /// `dA += M_i (dH_i^T x)`.
    pub fn backward(
        &self,
        x: &[f32],
        t_n: usize,
        g: &[f32],
        mut dx: Option<&mut [f64]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let (in_f, r) = (self.in_f, self.r);
        let mut da = vec![0.0; r * in_f];
        let mut db = vec![0.0; self.out_f * r];
        for i in 0..self.d() {
            let h = self.h(x, t_n, i);
            let dh = self.dh(g, t_n, i);
            self.add_db(g, t_n, i, &h, &mut db);
            for j in 0..r {
                for c in 0..in_f {
                    if self.ma[i][j * in_f + c] != 0 {
                        da[j * in_f + c] += (0..t_n)
                            .map(|t| dh[t * r + j] * x[t * in_f + c] as f64)
                            .sum::<f64>();
                    }
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                let am = self.am(i);
                for t in 0..t_n {
                    for c in 0..in_f {
                        dx[t * in_f + c] += (0..r)
                            .map(|j| dh[t * r + j] * am[j * in_f + c])
                            .sum::<f64>();
                    }
                }
            }
        }
        (da, db)
    }

    /// `dH_i = s G (B*N_i)`, `[T, r]`.
    fn dh(&self, g: &[f32], t_n: usize, i: usize) -> Vec<f64> {
        let (out_f, r) = (self.out_f, self.r);
        let bm = self.bm(i);
        let mut dh = vec![0.0; t_n * r];
        for t in 0..t_n {
            for j in 0..r {
                dh[t * r + j] = self.s
                    * (0..out_f)
                        .map(|o| g[t * out_f + o] as f64 * bm[o * r + j])
                        .sum::<f64>();
            }
        }
        dh
    }

    /// `dB += s N_i (G^T H_i)`.
    fn add_db(&self, g: &[f32], t_n: usize, i: usize, h: &[f64], db: &mut [f64]) {
        let (out_f, r) = (self.out_f, self.r);
        for o in 0..out_f {
            for j in 0..r {
                if self.mb[i][o * r + j] != 0 {
                    db[o * r + j] += self.s
                        * (0..t_n)
                            .map(|t| g[t * out_f + o] as f64 * h[t * r + j])
                            .sum::<f64>();
                }
            }
        }
    }

    /// `delta_W = s sum_i (B*N_i)(A*M_i)`, `[out, in]`.
    pub fn delta_weight(&self) -> Vec<f64> {
        let (in_f, out_f, r) = (self.in_f, self.out_f, self.r);
        let mut dw = vec![0.0; out_f * in_f];
        for i in 0..self.d() {
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

/// A layer's data on the host: the input, the frozen base and the [`Adapter`].
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// `[T, in]`.
    pub x: &'a [f32],
    /// Tokens T.
    pub t: usize,
    /// `[out, in]`.
    pub w0: &'a [f32],
    /// `[out]`.
    pub b0: Option<&'a [f32]>,
    /// The adapter on top.
    pub adapter: Adapter<'a>,
}

impl Layer<'_> {
    /// `y = x W0^T + b0 + s sum_i H_i (B*N_i)^T`.
    pub fn forward(&self) -> Vec<f64> {
        let (t_n, in_f, out_f) = (self.t, self.adapter.in_f, self.adapter.out_f);
        let mut y = vec![0.0; t_n * out_f];
        for t in 0..t_n {
            for o in 0..out_f {
                let base: f64 = (0..in_f)
                    .map(|c| self.x[t * in_f + c] as f64 * self.w0[o * in_f + c] as f64)
                    .sum();
                y[t * out_f + o] = base + self.b0.map_or(0.0, |b| b[o] as f64);
            }
        }
        self.adapter.update(self.x, t_n, &mut y);
        y
    }

    /// `(dx, dA, dB)` for `G = dL/dy`, with `dx = G W0 + sum_i dH_i (A*M_i)`.
    pub fn backward(&self, g: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (t_n, in_f, out_f) = (self.t, self.adapter.in_f, self.adapter.out_f);
        let mut dx = vec![0.0; t_n * in_f];
        for t in 0..t_n {
            for c in 0..in_f {
                dx[t * in_f + c] = (0..out_f)
                    .map(|o| g[t * out_f + o] as f64 * self.w0[o * in_f + c] as f64)
                    .sum();
            }
        }
        let (da, db) = self.adapter.backward(self.x, t_n, g, Some(&mut dx));
        (dx, da, db)
    }

    /// `delta_W = s sum_i (B*N_i)(A*M_i)`, `[out, in]`.
    pub fn delta_weight(&self) -> Vec<f64> {
        self.adapter.delta_weight()
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
