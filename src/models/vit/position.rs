//! Position embeddings at the input's patch grid: the trained table resampled bicubically
//! exactly as transformers' `interpolate_pos_encoding` does it
//! (`torch.nn.functional.interpolate(mode="bicubic", align_corners=False, size=...)`).

/// PyTorch's cubic convolution constant.
const A: f64 = -0.75;

fn cubic1(x: f64) -> f64 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cubic2(x: f64) -> f64 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

/// The four tap weights for fractional offset `t`.
fn coefficients(t: f64) -> [f64; 4] {
    [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)]
}

/// For each output index: the first of the four input taps and their weights
/// (`area_pixel_compute_source_index` with cubic = true: not clamped; taps are clamped
/// to the edge when read).
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|o| {
            let real = scale * (o as f64 + 0.5) - 0.5;
            let first = real.floor();
            let t = real - first;
            let idx = |k: i64| (first as i64 + k).clamp(0, input as i64 - 1) as usize;
            ([idx(-1), idx(0), idx(1), idx(2)], coefficients(t))
        })
        .collect()
}

/// `table` `[gh * gw, dim]` (row-major grid) resampled to `[oh * ow, dim]`. Equal sizes
/// return the table unchanged (the weights are then exactly 0, 1, 0, 0).
pub fn interpolate(
    table: &[f32],
    (gh, gw): (usize, usize),
    dim: usize,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    if (gh, gw) == (oh, ow) {
        return table.to_vec();
    }
    let (ty, tx) = (taps(gh, oh), taps(gw, ow));
    let mut out = vec![0f32; oh * ow * dim];
    for (y, (iy, wy)) in ty.iter().enumerate() {
        for (x, (ix, wx)) in tx.iter().enumerate() {
            let o = &mut out[(y * ow + x) * dim..(y * ow + x + 1) * dim];
            for (c, v) in o.iter_mut().enumerate() {
                let mut acc = 0f64;
                for (r, &wr) in iy.iter().zip(wy) {
                    let mut row = 0f64;
                    for (q, &wq) in ix.iter().zip(wx) {
                        row += wq * table[(r * gw + q) * dim + c] as f64;
                    }
                    acc += wr * row;
                }
                *v = acc as f32;
            }
        }
    }
    out
}
