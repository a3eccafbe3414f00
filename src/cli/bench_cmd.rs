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
    println!(
        "capaboost bench on {} ({})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend.to_str()
    );
    let rows = crate::cli::bench::run(&gpu, &cfg, |r| {
        eprintln!(
            "  measured {} {}x{}x{} d={}",
            r.kind, r.tokens, r.width, r.r, r.d
        )
    })?;
    print!("{}", crate::cli::bench::table(&rows));
    if let Some(path) = args.json {
        let json = serde_json::to_vec_pretty(&rows)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        crate::runtime::io::write_atomic(&path, &json)?;
    }
    Ok(())
}
