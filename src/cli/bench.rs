//! `capaboost bench`: one CapaBoost-LoRA layer forward + backward (with dx) per shape and
//! d, timed with GPU timestamps, against ceilings measured in the same run (a vec4 copy for
//! bandwidth, the dense GEMM for arithmetic). Results are checked against the f64 reference
//! on a sample before anything is timed.

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;

use crate::kernels::capaboost::{Adapter, Dx, Layer, LayerMasks, Needs};
use crate::kernels::elementwise;
use crate::kernels::gemm;
use crate::kernels::masks::{MaskConfig, MaskKind};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;
use crate::runtime::tensor::Tensor;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// (tokens, width, r): the layer is width x width.
    pub shapes: Vec<(usize, usize, usize)>,
    /// Branch counts.
    pub ds: Vec<u32>,
    /// Square dense GEMM sizes.
    pub gemm_sizes: Vec<usize>,
    /// Copy ceiling buffer size in MiB.
    pub copy_mib: usize,
    /// Timed repetitions (the median is reported).
    pub reps: usize,
    /// Untimed warm-up runs.
    pub warmup: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            shapes: vec![(4096, 768, 8), (4096, 4096, 8), (16384, 4096, 16)],
            ds: vec![1, 2, 4, 8],
            gemm_sizes: vec![4096, 8192],
            copy_mib: 256,
            reps: 20,
            warmup: 3,
        }
    }
}

/// One measured row.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// `layer`, `gemm` or `copy`.
    pub kind: String,
    /// Tokens (layer) or M = N = K (gemm).
    pub tokens: usize,
    /// Layer width (in = out).
    pub width: usize,
    /// Rank.
    pub r: usize,
    /// Branches.
    pub d: u32,
    /// Median ms of the whole layer forward + backward including dx.
    pub layer_ms: f64,
    /// Median ms of the adapter path alone (fwd + bwd, including its dx term).
    pub adapter_ms: f64,
    /// Median ms of the frozen base GEMMs (`x W0^T` and `G W0`).
    pub base_ms: f64,
    /// Median ms of the masked-sum passes inside the adapter path (0 without timestamps).
    pub masked_sum_ms: f64,
    /// Adapter-path GFLOP.
    pub adapter_gflop: f64,
    /// Adapter TFLOP/s.
    pub adapter_tflops: f64,
    /// Adapter GB/s (operands read and results written once per kernel).
    pub adapter_gbps: f64,
    /// Share of the measured GEMM ceiling.
    pub flops_share: f64,
    /// Share of the measured copy ceiling.
    pub bandwidth_share: f64,
    /// Largest relative error of the sampled check against the f64 reference.
    pub check_rel_err: f64,
    /// Adapter name.
    pub device: String,
}

fn random(gpu: &Gpu, rng: &mut StdRng, shape: &[usize], scale: f32) -> Result<(Tensor, Vec<f32>)> {
    let mut v = crate::runtime::tensor::host_buffer(gpu, shape)?;
    let n: usize = shape.iter().product(); // checked by host_buffer
    v.extend((0..n).map(|_| rng.random_range(-scale..scale)));
    Ok((Tensor::from_slice(gpu, &v, shape)?, v))
}

impl BenchConfig {
    /// Checks every size against the device before anything is allocated: each tensor a
    /// shape, branch count, GEMM size or copy buffer implies must fit one binding of `gpu`
    /// (and the masks the kernels' u32 indexing). Errors name the flag and the value.
    pub fn check(&self, gpu: &Gpu) -> Result<()> {
        let limit = gpu.max_binding_bytes();
        let fits = |flag: &str, value: &str, what: &str, dims: &[usize]| -> Result<()> {
            let bytes = dims
                .iter()
                .try_fold(4u64, |acc, &d| acc.checked_mul(d as u64))
                .filter(|&b| b <= limit);
            match bytes {
                Some(_) => Ok(()),
                None => Err(Error::InvalidArgument(format!(
                    "{flag} {value}: {what} {dims:?} does not fit in one buffer of this device \
                     ({limit} bytes at most)"
                ))),
            }
        };
        let zero =
            |flag: &str| Error::InvalidArgument(format!("{flag}: values must be at least 1"));
        if self.ds.contains(&0) {
            return Err(zero("--ds"));
        }
        if self.gemm_sizes.contains(&0) {
            return Err(zero("--gemm"));
        }
        if self.copy_mib == 0 {
            return Err(zero("--copy-mb"));
        }
        fits(
            "--copy-mb",
            &self.copy_mib.to_string(),
            "copy buffer",
            &[self.copy_mib, 1 << 18],
        )?;
        for &m in &self.gemm_sizes {
            fits("--gemm", &m.to_string(), "matrix", &[m, m])?;
        }
        for &(t, w, r) in &self.shapes {
            let v = format!("{t}x{w}x{r}");
            fits("--shapes", &v, "x", &[t, w])?;
            fits("--shapes", &v, "W0", &[w, w])?;
            fits("--shapes", &v, "A", &[r, w])?;
            for &d in &self.ds {
                let dr = (d as usize).saturating_mul(r);
                let v = format!("{v} with --ds {d}");
                fits("--shapes", &v, "the branch activations", &[t, dr])?;
                fits("--shapes", &v, "the masks", &[dr, w])?;
                if dr.checked_mul(w).is_none_or(|n| n > u32::MAX as usize) {
                    return Err(Error::InvalidArgument(format!(
                        "--shapes {v}: d x r x width mask bits exceed the kernels' u32 indexing"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median GPU milliseconds of `f` over `reps` runs after `warmup` runs.
fn time_ms(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    f: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<f64> {
    Ok(time_split(gpu, warmup, reps, "", f)?.0)
}

/// Like [`time_ms`], also the median time of the passes of entry point `label`.
fn time_split(
    gpu: &Gpu,
    warmup: usize,
    reps: usize,
    label: &str,
    mut f: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<(f64, f64)> {
    for _ in 0..warmup {
        gpu.run(&mut f)?;
    }
    gpu.wait()?;
    let (mut total, mut part) = (Vec::with_capacity(reps), Vec::with_capacity(reps));
    for _ in 0..reps.max(1) {
        let t = gpu.time(&mut f)?;
        total.push(t.total.as_secs_f64() * 1e3);
        part.push(
            t.passes
                .iter()
                .filter(|p| p.0 == label)
                .map(|p| p.1.as_secs_f64() * 1e3)
                .sum(),
        );
    }
    Ok((median(total), median(part)))
}

/// The adapter path alone: the update into an existing y, its backward with the dx term
/// accumulated into `dx`.
fn adapter_path(
    rec: &mut Recorder,
    adapter: &Adapter,
    x: &Tensor,
    y: &Tensor,
    g: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let h = adapter.update(rec, x, y)?;
    adapter
        .backward(rec, x, &h, g, Needs::all(Dx::AddTo(dx)))
        .map(drop)
}

/// One benchmarked layer shape, on the GPU and on the host (for the check).
struct Case {
    t: usize,
    w: usize,
    r: usize,
    s: f32,
    x: Tensor,
    w0: Tensor,
    a: Tensor,
    b: Tensor,
    g: Tensor,
    /// x, W0, A, B, G as uploaded.
    host: [Vec<f32>; 5],
}

impl Case {
    fn random(gpu: &Gpu, rng: &mut StdRng, (t, w, r): (usize, usize, usize)) -> Result<Self> {
        let (x, hx) = random(gpu, rng, &[t, w], 1.0)?;
        let (w0, hw) = random(gpu, rng, &[w, w], 1.0 / (w as f32).sqrt())?;
        let (a, ha) = random(gpu, rng, &[r, w], 1.0 / (w as f32).sqrt())?;
        let (b, hb) = random(gpu, rng, &[w, r], 0.1)?;
        let (g, hg) = random(gpu, rng, &[t, w], 1.0)?;
        let s = 2.0 / r as f32;
        Ok(Self {
            t,
            w,
            r,
            s,
            x,
            w0,
            a,
            b,
            g,
            host: [hx, hw, ha, hb, hg],
        })
    }

    fn layer<'a>(&'a self, masks: &'a LayerMasks) -> Layer<'a> {
        Layer::new(
            &self.w0,
            None,
            Adapter::new(&self.a, &self.b, masks, self.s),
        )
    }
}

/// Samples y, dx (rows) and dA, dB (entries) against the f64 reference.
fn check(case: &Case, masks: &LayerMasks, got: [&Tensor; 4]) -> Result<f64> {
    let (t, w, r, s) = (case.t, case.w, case.r, case.s as f64);
    let [x, w0, a, b, g] = &case.host;
    let (ma, mb) = masks.to_u8()?;
    let d = ma.len();
    let am = |i: usize, j: usize, c: usize| a[j * w + c] as f64 * ma[i][j * w + c] as f64;
    let bm = |i: usize, o: usize, j: usize| b[o * r + j] as f64 * mb[i][o * r + j] as f64;
    let (y, dx, da, db) = (
        got[0].to_vec()?,
        got[1].to_vec()?,
        got[2].to_vec()?,
        got[3].to_vec()?,
    );
    let mut worst = 0.0f64;
    let mut rel = |got: f32, want: f64, scale: f64| {
        worst = worst.max((got as f64 - want).abs() / scale.max(1e-30))
    };
    let mut rng = StdRng::seed_from_u64(17);
    let rows: Vec<usize> = (0..3).map(|_| rng.random_range(0..t)).collect();
    // dH_i[t, j] = s G[t] (B*N_i)[:, j]
    let dh = |tt: usize, i: usize, j: usize| -> f64 {
        s * (0..w)
            .map(|o| g[tt * w + o] as f64 * bm(i, o, j))
            .sum::<f64>()
    };
    // H_i[t, j] = x[t] (A*M_i)[j]
    let h = |tt: usize, i: usize, j: usize| -> f64 {
        (0..w).map(|c| x[tt * w + c] as f64 * am(i, j, c)).sum()
    };
    for &tt in &rows {
        let hs: Vec<f64> = (0..d * r).map(|p| h(tt, p / r, p % r)).collect();
        let dhs: Vec<f64> = (0..d * r).map(|p| dh(tt, p / r, p % r)).collect();
        let base = |o: usize, c: usize, v: &[f32]| v[tt * w + o] as f64 * w0[o * w + c] as f64;
        let want_y: Vec<f64> = (0..w)
            .map(|o| {
                let xw: f64 = (0..w)
                    .map(|c| x[tt * w + c] as f64 * w0[o * w + c] as f64)
                    .sum();
                xw + s * (0..d * r).map(|p| hs[p] * bm(p / r, o, p % r)).sum::<f64>()
            })
            .collect();
        let want_dx: Vec<f64> = (0..w)
            .map(|c| {
                let gw: f64 = (0..w).map(|o| base(o, c, g)).sum();
                gw + (0..d * r)
                    .map(|p| dhs[p] * am(p / r, p % r, c))
                    .sum::<f64>()
            })
            .collect();
        let sy = want_y.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let sx = want_dx.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for c in 0..w {
            rel(y[tt * w + c], want_y[c], sy);
            rel(dx[tt * w + c], want_dx[c], sx);
        }
    }
    // Two entries each of dA and dB: full reductions over the tokens.
    let sa = da.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    let sb = db.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
    for _ in 0..2 {
        // dA[j, c] = sum_i M_i[j, c] sum_t dH_i[t, j] x[t, c]
        let (j, c) = (rng.random_range(0..r), rng.random_range(0..w));
        let want: f64 = (0..d)
            .filter(|&i| ma[i][j * w + c] == 1)
            .flat_map(|i| (0..t).map(move |tt| (i, tt)))
            .map(|(i, tt)| dh(tt, i, j) * x[tt * w + c] as f64)
            .sum();
        rel(da[j * w + c], want, sa);
        // dB[o, j] = s sum_i N_i[o, j] sum_t G[t, o] H_i[t, j]
        let (o, j) = (rng.random_range(0..w), rng.random_range(0..r));
        let want: f64 = (0..d)
            .filter(|&i| mb[i][o * r + j] == 1)
            .flat_map(|i| (0..t).map(move |tt| (i, tt)))
            .map(|(i, tt)| s * g[tt * w + o] as f64 * h(tt, i, j))
            .sum();
        rel(db[o * r + j], want, sb);
    }
    Ok(worst)
}

/// A row with every field zero but `kind` and `device`.
fn empty_row(kind: &str, device: &str) -> BenchRow {
    BenchRow {
        kind: kind.into(),
        tokens: 0,
        width: 0,
        r: 0,
        d: 0,
        layer_ms: 0.0,
        adapter_ms: 0.0,
        base_ms: 0.0,
        masked_sum_ms: 0.0,
        adapter_gflop: 0.0,
        adapter_tflops: 0.0,
        adapter_gbps: 0.0,
        flops_share: 0.0,
        bandwidth_share: 0.0,
        check_rel_err: 0.0,
        device: device.into(),
    }
}

/// The ceilings: the bandwidth of a vec4 copy (first row) and the dense GEMM rates; `log`
/// gets each row as it is measured.
fn ceilings(
    gpu: &Gpu,
    cfg: &BenchConfig,
    rng: &mut StdRng,
    device: &str,
    log: &mut impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>> {
    let n = cfg.copy_mib.saturating_mul(1 << 18); // checked by BenchConfig::check
    let src = Tensor::full(gpu, &[n.max(4)], 1.5)?;
    let copy_ms = time_ms(gpu, cfg.warmup, cfg.reps, |rec| {
        elementwise::copy(rec, &src).map(drop)
    })?;
    drop(src);
    let mut rows = vec![BenchRow {
        adapter_gbps: 2.0 * n as f64 * 4.0 / (copy_ms * 1e-3) / 1e9,
        layer_ms: copy_ms,
        ..empty_row("copy", device)
    }];
    log(&rows[0]);
    for &m in &cfg.gemm_sizes {
        let (a, _) = random(gpu, rng, &[m, m], 1.0)?;
        let (b, _) = random(gpu, rng, &[m, m], 1.0)?;
        let ms = time_ms(gpu, cfg.warmup, cfg.reps, |rec| {
            gemm::matmul(rec, &a, false, &b, false).map(drop)
        })?;
        rows.push(BenchRow {
            tokens: m,
            layer_ms: ms,
            adapter_tflops: 2.0 * (m as f64).powi(3) / (ms * 1e-3) / 1e12,
            ..empty_row("gemm", device)
        });
        log(rows.last().expect("just pushed"));
    }
    Ok(rows)
}

/// Checks one layer (shape and d) against the f64 reference, then times it: the whole
/// layer, the adapter path with its masked sums, the frozen base. The row's shares are
/// left for [`run`] to fill in.
fn measure(gpu: &Gpu, cfg: &BenchConfig, case: &Case, d: u32, device: &str) -> Result<BenchRow> {
    let (t, w, r) = (case.t, case.w, case.r);
    let masks = gpu.run(|rec| {
        LayerMasks::generate(
            rec,
            &MaskConfig::new(MaskKind::Exact, d, 0.5, 0),
            0,
            r,
            w,
            w,
        )
    })?;
    let layer = case.layer(&masks);
    // Correctness before speed.
    let (f, gr) = gpu.run(|rec| {
        let f = layer.forward(rec, &case.x)?;
        let gr = layer.backward(rec, &case.x, &f.h, &case.g, true)?;
        Ok((f, gr))
    })?;
    let dx = gr
        .dx
        .clone()
        .ok_or_else(|| Error::InvalidArgument("dx missing".into()))?;
    let err = check(case, &masks, [&f.y, &dx, &gr.da, &gr.db])?;
    if err > 1e-3 {
        return Err(Error::InvalidArgument(format!(
            "bench check failed at T={t} w={w} r={r} d={d}: relative error {err:.2e}"
        )));
    }
    drop((f, gr, dx));
    let (x, g) = (&case.x, &case.g);
    let layer_ms = time_ms(gpu, cfg.warmup, cfg.reps, |rec| {
        let f = layer.forward(rec, x)?;
        layer.backward(rec, x, &f.h, g, true).map(drop)
    })?;
    let y = Tensor::zeros(gpu, &[t, w])?;
    let dxb = Tensor::zeros(gpu, &[t, w])?;
    let (adapter_ms, masked_sum_ms) = time_split(gpu, cfg.warmup, cfg.reps, "masked_sum", |rec| {
        adapter_path(rec, &layer.adapter, x, &y, g, &dxb)
    })?;
    let base_ms = time_ms(gpu, cfg.warmup, cfg.reps, |rec| {
        gemm::linear(rec, x, &case.w0, None)?;
        gemm::matmul(rec, g, false, &case.w0, false).map(drop)
    })?;
    let dr = (d as usize * r) as f64;
    let (tf, wf) = (t as f64, w as f64);
    // x A_s^T, H B_s^T, G^T H, G B_s, dH^T x, dH A_s: six GEMMs of T x dr x w.
    let flop = 6.0 * 2.0 * tf * dr * wf;
    // Bytes each kernel reads and writes once (f32), masks as bits.
    let bytes =
        4.0 * (tf * wf * 3.0 + tf * dr * 6.0 + tf * wf * 2.0 + tf * wf * 2.0 + 2.0 * dr * wf * 3.0);
    Ok(BenchRow {
        tokens: t,
        width: w,
        r,
        d,
        layer_ms,
        adapter_ms,
        base_ms,
        masked_sum_ms,
        adapter_gflop: flop / 1e9,
        adapter_tflops: flop / (adapter_ms * 1e-3) / 1e12,
        adapter_gbps: bytes / (adapter_ms * 1e-3) / 1e9,
        check_rel_err: err,
        ..empty_row("layer", device)
    })
}

/// Runs the benchmark; `log` gets each row as it is measured.
pub fn run(gpu: &Gpu, cfg: &BenchConfig, mut log: impl FnMut(&BenchRow)) -> Result<Vec<BenchRow>> {
    cfg.check(gpu)?;
    if !gpu.has_timestamps() {
        eprintln!(
            "note: no TIMESTAMP_QUERY on this adapter: wall-clock timings include submit overhead"
        );
    }
    let device = gpu.adapter_info().name.clone();
    let mut rng = StdRng::seed_from_u64(1);
    // Ceilings first: the bandwidth of a vec4 copy and the best dense GEMM rate.
    let mut rows = ceilings(gpu, cfg, &mut rng, &device, &mut log)?;
    let copy_gbps = rows[0].adapter_gbps;
    let best_tflops = rows.iter().fold(0.0f64, |m, r| m.max(r.adapter_tflops));
    for &shape in &cfg.shapes {
        let case = Case::random(gpu, &mut rng, shape)?;
        for &d in &cfg.ds {
            let mut row = measure(gpu, cfg, &case, d, &device)?;
            row.flops_share = if best_tflops > 0.0 {
                row.adapter_tflops / best_tflops
            } else {
                0.0
            };
            row.bandwidth_share = row.adapter_gbps / copy_gbps;
            log(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The rows as a text table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.kind != "layer") {
        match r.kind.as_str() {
            "copy" => out.push_str(&format!(
                "ceiling: vec4 copy {:.1} GB/s ({:.3} ms)\n",
                r.adapter_gbps, r.layer_ms
            )),
            _ => out.push_str(&format!(
                "ceiling: dense GEMM {0}x{0}x{0} {1:.3} TFLOP/s ({2:.3} ms)\n",
                r.tokens, r.adapter_tflops, r.layer_ms
            )),
        }
    }
    out.push_str(&format!(
        "{:>6} {:>6} {:>3} {:>2} {:>10} {:>11} {:>8} {:>9} {:>9} {:>8} {:>7} {:>7} {:>9}\n",
        "tokens",
        "width",
        "r",
        "d",
        "layer ms",
        "adapter ms",
        "msum ms",
        "base ms",
        "TFLOP/s",
        "GB/s",
        "%flops",
        "%bw",
        "check"
    ));
    for r in rows.iter().filter(|r| r.kind == "layer") {
        out.push_str(&format!(
            "{:>6} {:>6} {:>3} {:>2} {:>10.3} {:>11.3} {:>8.3} {:>9.3} {:>9.4} {:>8.1} {:>6.1}% {:>6.1}% {:>9.1e}\n",
            r.tokens,
            r.width,
            r.r,
            r.d,
            r.layer_ms,
            r.adapter_ms,
            r.masked_sum_ms,
            r.base_ms,
            r.adapter_tflops,
            r.adapter_gbps,
            100.0 * r.flops_share,
            100.0 * r.bandwidth_share,
            r.check_rel_err
        ));
    }
    out
}
