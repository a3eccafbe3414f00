//! The `capaboost` command-line tool: argument parsing and the subcommands.

pub mod bench;
pub mod layer;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::runtime::gpu::{AdapterSelection, choose_adapter, enumerate_adapters};
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
    Finetune(Box<FinetuneArgs>),
    /// Benchmark one CapaBoost layer (fwd + bwd with dx) per shape and d against the copy
    /// and GEMM ceilings measured in the same run.
    Bench(BenchArgs),
    /// Score a saved run on a GLUE-format folder.
    Eval(EvalArgs),
    /// Export a run's adapters: native (weights + mask keys) or HF PEFT.
    Export(ExportArgs),
    /// Write the full model with the adapters merged (plain BERT for HF transformers).
    Merge(MergeArgs),
}

#[derive(clap::Args)]
struct FinetuneArgs {
    /// GLUE task (sst2, cola, mrpc, rte, stsb, qnli, qqp, mnli). With no --data and no
    /// --resume, the built-in demo runs instead.
    #[arg(long)]
    task: Option<String>,
    /// GLUE-format folder with train.tsv and dev.tsv.
    #[arg(long)]
    data: Option<PathBuf>,
    /// BERT-family model folder (config.json, model.safetensors, tokenizer.json); default:
    /// the all-MiniLM-L6-v2 that scripts/fetch-minilm.sh installs.
    #[arg(long)]
    model: Option<PathBuf>,
    /// lora, capaboost, capaboost-adapter or head-only.
    #[arg(long, default_value = "capaboost")]
    method: String,
    /// Rank r.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// LoRA alpha (s = alpha / r).
    #[arg(long, default_value_t = 16.0)]
    alpha: f32,
    /// Branches d.
    #[arg(long, default_value_t = 2)]
    d: u32,
    /// Mask density p.
    #[arg(long, default_value_t = 0.5)]
    density: f64,
    /// exact, bernoulli or 2:4.
    #[arg(long, default_value = "exact")]
    mask: String,
    /// Adapted layers: query,key,value,attention_output,intermediate,output or all-linear.
    #[arg(long, default_value = "query,value")]
    targets: String,
    /// lora or rslora.
    #[arg(long, default_value = "lora")]
    rank_scaling: String,
    /// Bottleneck width for capaboost-adapter.
    #[arg(long, default_value_t = 16)]
    adapter_width: usize,
    /// pfeiffer or houlsby (capaboost-adapter).
    #[arg(long, default_value = "pfeiffer")]
    placement: String,
    /// Dropout on adapter inputs.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Run folder (default runs/<task>-<method>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder exactly where its checkpoint stopped.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Epochs.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Stop after N steps.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Use only the first N training rows.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Use only the first N dev rows (quick runs).
    #[arg(long)]
    dev_limit: Option<usize>,
    /// Stop this invocation after N steps, saving a checkpoint as Ctrl-C does; continue
    /// with --resume.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Also evaluate on dev every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Truncation length in tokens.
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// Peak learning rate (demo default 1e-2, GLUE default 1e-3).
    #[arg(long)]
    lr: Option<f32>,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f32,
    /// Fraction of steps of linear warmup.
    #[arg(long, default_value_t = 0.06)]
    warmup_ratio: f64,
    /// linear, cosine or constant after warmup.
    #[arg(long, default_value = "linear")]
    schedule: String,
    /// Global gradient-norm clipping.
    #[arg(long)]
    max_grad_norm: Option<f32>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Text column override.
    #[arg(long)]
    text_a: Option<String>,
    /// Second text column override.
    #[arg(long)]
    text_b: Option<String>,
    /// Label column override.
    #[arg(long)]
    label_column: Option<String>,
    /// Read the loss back (for the progress bar and train_loss.csv) every N steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Demo: also write the result tables as a JSON array to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Demo: training steps per student.
    #[arg(long, default_value_t = 500)]
    steps: u64,
}

#[derive(clap::Args)]
struct BenchArgs {
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

#[derive(clap::Args)]
struct EvalArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// GLUE-format folder.
    #[arg(long)]
    data: PathBuf,
    /// File inside --data to score (default: the task's dev file).
    #[arg(long)]
    split: Option<String>,
    /// Also write each example's prediction and head outputs to this TSV file; the scored
    /// file may then lack labels (GLUE's official test files).
    #[arg(long)]
    predictions: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// native or peft.
    #[arg(long, default_value = "peft")]
    format: String,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Output folder for the merged model.
    #[arg(long)]
    out: PathBuf,
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

/// Parses the command line, runs the subcommand and maps its error to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
        Command::Layer(args) => layer(args),
        Command::Finetune(args) => finetune(*args),
        Command::Bench(args) => bench(args),
        Command::Eval(args) => eval(args),
        Command::Export(args) => export(args),
        Command::Merge(args) => merge(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info() -> crate::Result<()> {
    let sel = AdapterSelection::from_env()?;
    let adapters = enumerate_adapters();
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    let chosen = choose_adapter(&infos, &sel);
    println!("capaboost {}", crate::VERSION);
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
        return Err(crate::Error::NoAdapter {
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

fn layer(args: LayerArgs) -> crate::Result<()> {
    let cfg = crate::cli::layer::LayerConfig {
        d: args.d,
        density: args.density,
        mask: crate::kernels::masks::MaskKind::parse(&args.mask)?,
        seed: args.seed,
        alpha: args.alpha,
        rank_scaling: crate::kernels::capaboost::RankScaling::parse(&args.rank_scaling)?,
    };
    let gpu = crate::Gpu::new()?;
    let s = crate::cli::layer::run(&gpu, &args.input, &args.output, &cfg)?;
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

fn finetune(args: FinetuneArgs) -> crate::Result<()> {
    if args.data.is_some() || args.resume.is_some() {
        return finetune_glue(args);
    }
    let gpu = crate::Gpu::new()?;
    let mut cfg = crate::tasks::demo::DemoConfig {
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
    let rows = crate::tasks::demo::run(&gpu, &cfg, |r| {
        eprintln!(
            "  done: {:?} {} d={} final_loss={:.6} ({:.1} steps/s)",
            r.scenario, r.method, r.d, r.final_loss, r.steps_per_s
        )
    })?;
    print!("{}", crate::tasks::demo::table(&rows));
    if let Some(path) = args.report {
        let json = serde_json::to_vec_pretty(&rows)
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        crate::runtime::io::write_atomic(&path, &json)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

fn finetune_glue(args: FinetuneArgs) -> crate::Result<()> {
    use crate::tasks::train::{self, Method, RunOptions, TrainConfig};
    let gpu = crate::Gpu::new()?;
    let (cfg, opts) = if let Some(run) = &args.resume {
        let dir = crate::tasks::run_dir::RunDir::open(run)?;
        let cfg: TrainConfig = serde_json::from_value(dir.config()?)
            .map_err(|e| crate::Error::InvalidArgument(format!("{}: {e}", run.display())))?;
        (
            cfg,
            RunOptions {
                out: run.clone(),
                resume: true,
                progress: !args.no_progress,
                stop_after: args.stop_after,
            },
        )
    } else {
        let task = args.task.clone().ok_or_else(|| {
            crate::Error::InvalidArgument("--data needs --task (sst2, cola, mrpc, ...)".into())
        })?;
        let method = Method::parse(&args.method)?;
        let cfg = TrainConfig {
            task: task.clone(),
            data: args.data.clone().expect("checked above"),
            model: args
                .model
                .clone()
                .unwrap_or_else(crate::models::bert::default_model_dir),
            method,
            r: args.r,
            alpha: args.alpha,
            d: args.d,
            density: args.density,
            mask: args.mask.clone(),
            targets: args.targets.clone(),
            rank_scaling: args.rank_scaling.clone(),
            adapter_width: args.adapter_width,
            placement: args.placement.clone(),
            dropout: args.dropout,
            epochs: args.epochs,
            max_steps: args.max_steps,
            train_limit: args.train_limit,
            dev_limit: args.dev_limit,
            eval_every: args.eval_every,
            batch_size: args.batch_size,
            max_len: args.max_len,
            lr: args.lr.unwrap_or(1e-3),
            weight_decay: args.weight_decay,
            warmup_ratio: args.warmup_ratio,
            schedule: args.schedule.clone(),
            max_grad_norm: args.max_grad_norm,
            seed: args.seed,
            text_a: args.text_a.clone(),
            text_b: args.text_b.clone(),
            label_column: args.label_column.clone(),
            log_every: args.log_every,
        };
        let out = args.out.clone().unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("runs/{task}-{}-{t}", args.method))
        });
        (
            cfg,
            RunOptions {
                out,
                resume: false,
                progress: !args.no_progress,
                stop_after: args.stop_after,
            },
        )
    };
    let summary = train::finetune(&gpu, &cfg, &opts)?;
    println!(
        "{} {} steps, {:.1} examples/s, {} trainable parameters; dev {}; run folder {}{}",
        cfg.task,
        summary.steps,
        summary.examples_per_s,
        summary.trainable,
        train::metrics_json(&summary.dev),
        opts.out.display(),
        if summary.interrupted {
            " (interrupted: checkpoint saved, continue with --resume)"
        } else {
            ""
        }
    );
    Ok(())
}

fn eval(args: EvalArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    let m = crate::tasks::train::eval_run(
        &gpu,
        &args.run,
        &args.data,
        args.split.as_deref(),
        args.predictions.as_deref(),
    )?;
    if let (true, Some(p)) = (m.is_empty(), &args.predictions) {
        eprintln!(
            "the file has no label column: predictions written to {}, no metrics",
            p.display()
        );
    }
    println!("{}", crate::tasks::train::metrics_json(&m));
    Ok(())
}

fn export(args: ExportArgs) -> crate::Result<()> {
    use crate::tasks::train::ExportFormat;
    let format = match args.format.as_str() {
        "native" => ExportFormat::Native,
        "peft" => ExportFormat::Peft,
        f => {
            return Err(crate::Error::InvalidArgument(format!(
                "unknown format {f:?}: native or peft"
            )));
        }
    };
    let gpu = crate::Gpu::new()?;
    crate::tasks::train::export_run(&gpu, &args.run, format, &args.out)?;
    println!("exported {} to {}", args.run.display(), args.out.display());
    Ok(())
}

fn merge(args: MergeArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    crate::tasks::train::merge_run(&gpu, &args.run, &args.out)?;
    println!("merged model written to {}", args.out.display());
    Ok(())
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

fn bench(args: BenchArgs) -> crate::Result<()> {
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
