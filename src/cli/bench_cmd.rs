//! `capaboost bench`: its arguments and output; the measurements are in [`super::bench`].

use std::path::PathBuf;

/// `capaboost bench` arguments.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Layer shapes as TOKENSxWIDTHxR, comma-separated.
    #[arg(long, default_value = "4096x768x8,4096x4096x8,16384x4096x16")]
    shapes: String,
    /// Branch counts.
    #[arg(long, default_value = "1,2,4,8")]
    ds: String,
    /// Square dense GEMM sizes for the arithmetic ceiling.
    #[arg(long, default_value = "4096,8192")]
    gemm: String,
    /// Copy-ceiling buffer in MiB.
    #[arg(long, default_value_t = 256)]
    copy_mb: usize,
    /// Timed repetitions (median reported).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Run everything twice in this process, with `CAPABOOST_AUTOTUNE=off` (today's kernel)
    /// then tuned afresh (`on`, or `exhaustive` where the environment asks for it), print
    /// every tuning candidate's time per shape and the off/on ratios.
    #[arg(long)]
    autotune: bool,
    /// Also write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_list<T: std::str::FromStr>(flag: &str, s: &str) -> crate::Result<Vec<T>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<T>()
                .map_err(|_| crate::Error::InvalidArgument(format!("--{flag}: bad value {p:?}")))
        })
        .collect()
}

/// Runs the benchmark and prints (and optionally writes) its table.
pub fn run(args: BenchArgs) -> crate::Result<()> {
    let shapes = args
        .shapes
        .split(',')
        .map(|sh| {
            let v = parse_list::<usize>("shapes", &sh.replace('x', ","))?;
            match v[..] {
                [t, w, r] if t > 0 && w > 0 && r > 0 => Ok((t, w, r)),
                _ => Err(crate::Error::InvalidArgument(format!(
                    "--shapes: {sh:?} is not TOKENSxWIDTHxR"
                ))),
            }
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let cfg = crate::cli::bench::BenchConfig {
        shapes,
        ds: parse_list("ds", &args.ds)?,
        gemm_sizes: parse_list("gemm", &args.gemm)?,
        copy_mib: args.copy_mb,
        reps: args.reps,
        warmup: args.warmup,
    };
    let gpu = crate::Gpu::new()?;
    cfg.check(&gpu)?;
    println!(
        "capaboost bench on {} ({})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend.to_str()
    );
    let log = |r: &crate::cli::bench::BenchRow| {
        eprintln!(
            "  measured {} {}x{}x{} d={}",
            r.kind, r.tokens, r.width, r.r, r.d
        )
    };
    let rows = if args.autotune {
        autotune_run(&gpu, &cfg, log)?
    } else {
        let rows = crate::cli::bench::run(&gpu, &cfg, log)?;
        print!("{}", crate::cli::bench::table(&rows));
        let tuned = crate::kernels::gemm::tune::reports();
        // (An empty f64 sum is -0.0.)
        let secs: f64 = tuned.iter().map(|r| r.seconds).sum::<f64>() + 0.0;
        println!(
            "GEMM shapes tuned in this process: {} ({secs:.2} s; the rest from the cache)",
            tuned.len()
        );
        rows
    };
    if let Some(path) = args.json {
        let json = serde_json::to_vec_pretty(&rows)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        crate::runtime::io::write_atomic(&path, &json)?;
    }
    Ok(())
}

/// `--autotune`: the benchmark with today's kernels, then tuned, in one process.
fn autotune_run(
    gpu: &crate::Gpu,
    cfg: &crate::cli::bench::BenchConfig,
    log: impl Fn(&crate::cli::bench::BenchRow),
) -> crate::Result<Vec<crate::cli::bench::BenchRow>> {
    use crate::kernels::gemm::tune::{self, Mode};
    let tuned = match tune::mode() {
        Mode::Exhaustive => Mode::Exhaustive,
        _ => Mode::On,
    };
    tune::set_mode(Some(Mode::Off));
    println!("== CAPABOOST_AUTOTUNE=off (reference GEMM)");
    let off = crate::cli::bench::run(gpu, cfg, &log)?;
    print!("{}", crate::cli::bench::table(&off));
    tune::retune();
    tune::set_mode(Some(tuned));
    println!("== CAPABOOST_AUTOTUNE={tuned:?} (tuned afresh)");
    let on = crate::cli::bench::run(gpu, cfg, &log)?;
    print!("{}", crate::cli::bench::table(&on));
    println!("== tuning (every candidate's median ms; '-' not measured, predicted far behind)");
    for r in tune::reports() {
        let [m, k, n] = r.mkn;
        let times: Vec<String> = r
            .times
            .iter()
            .map(|(kern, t)| match t {
                Some(t) => format!("{} {t:.3}", kern.label()),
                None => format!("{} -", kern.label()),
            })
            .collect();
        let views = r.key.split('|').nth(2).unwrap_or("");
        println!(
            "  M={m} K={k} N={n} {views}: {} -> {} ({:.2} s)",
            times.join(", "),
            r.chosen.label(),
            r.seconds
        );
    }
    println!("== off / on");
    for (a, b) in off.iter().zip(&on).filter(|(a, _)| a.kind != "copy") {
        println!(
            "  {} {}x{}x{} d={}: {:.3} ms -> {:.3} ms ({:.2}x)",
            a.kind,
            a.tokens,
            a.width,
            a.r,
            a.d,
            a.layer_ms,
            b.layer_ms,
            a.layer_ms / b.layer_ms
        );
    }
    let mut rows = off;
    rows.extend(on);
    Ok(rows)
}
