//! f64 CPU references.

use super::View;

/// The logical `[rows, cols]` matrix an operand view reads, in f64. `masks` holds one
/// 0/1 mask per branch (factor-shaped) for the stacked views; `shape` is the stored
/// 2-D shape.
pub fn view(
    data: &[f32],
    shape: [usize; 2],
    view: View,
    masks: &[Vec<u8>],
) -> (Vec<f64>, usize, usize) {
    let [sr, sc] = shape;
    let d = masks.len();
    let at = |r: usize, c: usize| data[r * sc + c] as f64;
    match view {
        View::Plain => (data.iter().map(|&v| v as f64).collect(), sr, sc),
        View::Trans => {
            let mut out = vec![0.0; sr * sc];
            for r in 0..sr {
                for c in 0..sc {
                    out[c * sr + r] = at(r, c);
                }
            }
            (out, sc, sr)
        }
        View::AStacked | View::AStackedT => {
            // A [r, in] -> A_s [d r, in]
            let mut s = vec![0.0; d * sr * sc];
            for (i, m) in masks.iter().enumerate() {
                for j in 0..sr {
                    for c in 0..sc {
                        s[(i * sr + j) * sc + c] = at(j, c) * m[j * sc + c] as f64;
                    }
                }
            }
            if view == View::AStacked {
                (s, d * sr, sc)
            } else {
                (transpose(&s, d * sr, sc), sc, d * sr)
            }
        }
        View::BStacked | View::BStackedT => {
            // B [out, r] -> B_s [out, d r]
            let mut s = vec![0.0; sr * d * sc];
            for (i, m) in masks.iter().enumerate() {
                for o in 0..sr {
                    for j in 0..sc {
                        s[o * d * sc + i * sc + j] = at(o, j) * m[o * sc + j] as f64;
                    }
                }
            }
            if view == View::BStacked {
                (s, sr, d * sc)
            } else {
                (transpose(&s, sr, d * sc), d * sc, sr)
            }
        }
    }
}

/// Transpose of a row-major `[rows, cols]` matrix.
pub fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = a[r * cols + c];
        }
    }
    out
}

/// `a [m, k] b [k, n]` in f64.
pub fn matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let av = a[i * k + p];
            if av == 0.0 {
                continue;
            }
            for j in 0..n {
                c[i * n + j] += av * b[p * n + j];
            }
        }
    }
    c
}

/// `alpha a b + beta c + bias` in f64, for `a [m, k]`, `b [k, n]`, `c [m, n]`,
/// `bias [n]` and `[m, k, n]` as `dims`.
pub fn gemm(
    a: &[f64],
    b: &[f64],
    c: &[f64],
    bias: Option<&[f64]>,
    [m, k, n]: [usize; 3],
    alpha: f64,
    beta: f64,
) -> Vec<f64> {
    let ab = matmul(a, b, m, k, n);
    (0..m * n)
        .map(|i| alpha * ab[i] + beta * c[i] + bias.map_or(0.0, |bb| bb[i % n]))
        .collect()
}
