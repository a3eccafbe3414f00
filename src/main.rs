//! The `capaboost` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use capaboost::gpu::{AdapterSelection, choose_adapter, enumerate_adapters};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capaboost",
    version,
    about = "CapaBoost / LoRA adapter fine-tuning on wgpu"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the adapters wgpu finds, mark the one capaboost would use, and print its limits
    /// and features.
    Info,
    /// Run one CapaBoost-LoRA layer forward and backward on the GPU from a safetensors file
    /// (x, weight, optional bias, lora_A, lora_B, grad_y, optional mask_A.i / mask_B.i) and
    /// write y, grad_x, grad_lora_A, grad_lora_B, delta_weight and the masks used.
    Layer(LayerArgs),
    /// Fine-tune adapters. With no data, runs the built-in demo: LoRA r against CapaBoost r,
    /// d = 2, 4, 8 on a frozen random MLP with a planted update (flat and decaying spectra).
    Finetune(FinetuneArgs),
}

#[derive(clap::Args)]
struct FinetuneArgs {
    /// Also write the result tables as a JSON array to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Training steps per student (demo).
    #[arg(long, default_value_t = 500)]
    steps: u64,
    /// Seed of the base model, planted updates, masks and data stream (demo).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Learning rate (demo: AdamW, constant).
    #[arg(long)]
    lr: Option<f32>,
}

#[derive(clap::Args)]
struct LayerArgs {
    /// Input safetensors file.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file (written atomically).
    #[arg(long)]
    output: PathBuf,
    /// Number of branches d.
    #[arg(long, default_value_t = 2)]
    d: u32,
    /// Mask density p in (0, 1].
    #[arg(long, default_value_t = 0.5)]
    density: f64,
    /// Mask kind: exact, bernoulli or 2:4.
    #[arg(long, default_value = "exact")]
    mask: String,
    /// Mask seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// LoRA alpha (s = alpha / r, or alpha / sqrt(r) with rslora).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// lora or rslora.
    #[arg(long, default_value = "lora")]
    rank_scaling: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Layer(args) => layer(args),
        Command::Finetune(args) => finetune(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> capaboost::Result<()> {
    let sel = AdapterSelection::from_env()?;
    let adapters = enumerate_adapters();
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    let chosen = choose_adapter(&infos, &sel);
    println!("capaboost {}", capaboost::VERSION);
    println!("adapters found: {}", infos.len());
    for (i, a) in infos.iter().enumerate() {
        let mark = if Some(i) == chosen { "*" } else { " " };
        println!(
            "{mark} [{i}] {} | backend {} | {:?} | driver {} {}",
            a.name,
            a.backend.to_str(),
            a.device_type,
            a.driver,
            a.driver_info
        );
    }
    let Some(idx) = chosen else {
        println!("no adapter matches the selection; `*` marks none");
        return Err(capaboost::Error::NoAdapter {
            tried: format!("{sel:?}"),
        });
    };
    let a = &adapters[idx];
    let l = a.limits();
    let f = a.features();
    println!();
    println!(
        "selected: [{idx}] {} ({})",
        infos[idx].name,
        infos[idx].backend.to_str()
    );
    println!("limits:");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  max_storage_buffer_binding_size   {} ({:.0} MiB)",
        l.max_storage_buffer_binding_size,
        mib(l.max_storage_buffer_binding_size as u64)
    );
    println!(
        "  max_buffer_size                   {} ({:.0} MiB)",
        l.max_buffer_size,
        mib(l.max_buffer_size)
    );
    println!(
        "  max_storage_buffers_per_stage     {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage     {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_wg    {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size        {} x {} x {}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroups_per_dim    {}",
        l.max_compute_workgroups_per_dimension
    );
    println!("features:");
    for (name, feat) in [
        ("TIMESTAMP_QUERY", wgpu::Features::TIMESTAMP_QUERY),
        (
            "TIMESTAMP_QUERY_INSIDE_PASSES",
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        ),
        ("SHADER_F16", wgpu::Features::SHADER_F16),
        ("SUBGROUP", wgpu::Features::SUBGROUP),
        ("SHADER_F64", wgpu::Features::SHADER_F64),
        ("SHADER_INT64", wgpu::Features::SHADER_INT64),
    ] {
        println!(
            "  {name:<30}{}",
            if f.contains(feat) { "yes" } else { "no" }
        );
    }
    let i = &infos[idx];
    if i.subgroup_max_size > 0 {
        println!(
            "subgroup size: {}..{}",
            i.subgroup_min_size, i.subgroup_max_size
        );
    }
    Ok(())
}

fn layer(args: LayerArgs) -> capaboost::Result<()> {
    let cfg = capaboost::layer_file::LayerConfig {
        d: args.d,
        density: args.density,
        mask: capaboost::masks::MaskKind::parse(&args.mask)?,
        seed: args.seed,
        alpha: args.alpha,
        rank_scaling: capaboost::capaboost::RankScaling::parse(&args.rank_scaling)?,
    };
    let gpu = capaboost::Gpu::new()?;
    let s = capaboost::layer_file::run(&gpu, &args.input, &args.output, &cfg)?;
    println!(
        "layer T={} in={} out={} r={} d={} s={} masks={} on {}: wrote {}",
        s.t,
        s.in_features,
        s.out_features,
        s.r,
        cfg.d,
        s.scale,
        if s.masks_from_file {
            "from input"
        } else {
            "generated"
        },
        gpu.adapter_info().name,
        args.output.display()
    );
    Ok(())
}

fn finetune(args: FinetuneArgs) -> capaboost::Result<()> {
    let gpu = capaboost::Gpu::new()?;
    let mut cfg = capaboost::demo::DemoConfig {
        steps: args.steps,
        seed: args.seed,
        ..Default::default()
    };
    if let Some(lr) = args.lr {
        cfg.lr = lr;
    }
    println!(
        "capaboost demo on {} ({}): frozen random MLP {w}x{w}x{w}, planted update on the last \
         layer, r = {}, {} steps of batch {} per student",
        gpu.adapter_info().name,
        gpu.adapter_info().backend.to_str(),
        cfg.r,
        cfg.steps,
        cfg.batch,
        w = cfg.width
    );
    let rows = capaboost::demo::run(&gpu, &cfg, |r| {
        eprintln!(
            "  done: {:?} {} d={} final_loss={:.6} ({:.1} steps/s)",
            r.scenario, r.method, r.d, r.final_loss, r.steps_per_s
        )
    })?;
    print!("{}", capaboost::demo::table(&rows));
    if let Some(path) = args.report {
        let json = serde_json::to_vec_pretty(&rows)
            .map_err(|e| capaboost::Error::InvalidArgument(e.to_string()))?;
        capaboost::io::write_atomic(&path, &json)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
