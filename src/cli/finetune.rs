//! `capaboost finetune`: a GLUE or SQuAD run (new or resumed) with a run folder, or the built-in
//! demo when there is no data.

use std::path::{Path, PathBuf};

use super::resume;
use crate::tasks::config::TrainConfig;
use crate::tasks::run::{RunDir, check_new_run_folder, refuse_overwriting_inputs};
use crate::tasks::train::{self, RunOptions};

/// `capaboost finetune` arguments: the training configuration and this invocation's
/// options.
#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// What defines the run (saved as its config.json).
    #[command(flatten)]
    config: TrainConfig,
    /// Run folder (default runs/<task>-<method>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder exactly where its checkpoint stopped. Only
    /// --max-steps, --epochs, --eval-every, --log-every (and this invocation's
    /// --stop-after, --no-progress) may differ from the run's configuration.
    #[arg(long, conflicts_with_all = ["out", "overwrite"])]
    resume: Option<PathBuf>,
    /// Replace the run already in --out (its checkpoint and logs are deleted).
    #[arg(long)]
    overwrite: bool,
    /// Stop this invocation after N steps, saving a checkpoint as Ctrl-C does; continue
    /// with --resume.
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Write a step trace into this folder (init.safetensors, steps.jsonl, final.safetensors,
    /// recipe.json) for scripts/replay_torch.py; reads the loss back every step.
    #[arg(long, conflicts_with = "resume")]
    trace: Option<PathBuf>,
    /// Demo: also write the result tables as a JSON array to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Demo: training steps per student.
    #[arg(long, default_value_t = 500)]
    steps: u64,
}

/// Validates the arguments (`given`: the flags given on the command line), then runs the
/// fine-tuning (GLUE or SQuAD) or the demo.
pub fn run(args: FinetuneArgs, given: &[String]) -> crate::Result<()> {
    args.config.validate()?;
    if args.config.data.data.is_some() || args.resume.is_some() {
        train_run(args, given)
    } else {
        demo(args)
    }
}

fn demo(args: FinetuneArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    let mut cfg = crate::tasks::demo::DemoConfig {
        steps: args.steps,
        seed: args.config.seed(),
        ..Default::default()
    };
    if let Some(lr) = args.config.optim.lr {
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

/// `path` (the value of `flag`) made absolute, or an error naming the flag when it does
/// not exist: a run folder records absolute paths, so it resumes from any folder.
fn absolute(flag: &str, path: &Path) -> crate::Result<PathBuf> {
    std::fs::canonicalize(path)
        .map_err(|e| crate::Error::InvalidArgument(format!("{flag} {}: {e}", path.display())))
}

/// The configuration and options of a run: read back from the run folder when
/// resuming (with the flags that may change applied), else the arguments (with the
/// learning-rate default filled in). Nothing is written here.
fn run_setup(args: FinetuneArgs, given: &[String]) -> crate::Result<(TrainConfig, RunOptions)> {
    let progress = !args.no_progress;
    if let Some(run) = args.resume {
        let dir = RunDir::open(&run)?;
        let mut cfg = TrainConfig::from_json(dir.config()?, &run.join("config.json"))?;
        resume::apply_resume_flags(&mut cfg, &args.config, given)?;
        let opts = RunOptions {
            out: run,
            resume: true,
            progress,
            stop_after: args.stop_after,
            overwrite: false,
            trace: None,
        };
        return Ok((cfg, opts));
    }
    let mut cfg = args.config;
    let task = cfg.kind()?;
    resume::check_method_flags(cfg.adapter.method, given)?;
    resume::check_task_flags(task, given)?;
    cfg.optim.lr = Some(cfg.lr());
    cfg.data.data = Some(absolute("--data", cfg.data_dir()?)?);
    cfg.model.model = absolute("--model", &cfg.model.model)?;
    if let Some(e) = &cfg.data.eval_data {
        cfg.data.eval_data = Some(absolute("--eval-data", e)?);
    }
    cfg.data.max_len = Some(match task {
        crate::tasks::kind::TaskKind::CausalLm => {
            let g = crate::runtime::gguf::Gguf::open(&cfg.model.model)?;
            crate::tasks::causal_lm::run::max_len(&cfg, &g)?
        }
        _ => cfg.max_len(),
    });
    let out = args.out.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!(
            "runs/{}-{}-{t}",
            task.id(),
            cfg.adapter.method.name()
        ))
    });
    refuse_overwriting_inputs(
        "--out",
        &out,
        &[
            (task.data_label(), cfg.data_dir()?),
            ("base model folder", &cfg.model.model),
        ],
    )?;
    check_new_run_folder(&out, args.overwrite)?;
    if let Some(dir) = &args.trace {
        crate::tasks::trace::check_dir(dir)?;
    }
    let opts = RunOptions {
        out,
        resume: false,
        progress,
        stop_after: args.stop_after,
        overwrite: args.overwrite,
        trace: args.trace,
    };
    Ok((cfg, opts))
}

fn train_run(args: FinetuneArgs, given: &[String]) -> crate::Result<()> {
    let (cfg, opts) = run_setup(args, given)?;
    let gpu = crate::Gpu::new()?;
    let summary = train::finetune(&gpu, &cfg, &opts)?;
    println!(
        "{} {} steps, {:.1} examples/s, {} trainable parameters, GPU buffers at most {} MiB \
         in use; dev {}; run folder {}{}",
        cfg.kind()?.id(),
        summary.steps,
        summary.examples_per_s,
        summary.trainable,
        gpu.pool_stats().peak_live_bytes >> 20,
        train::metrics_json(&summary.dev),
        opts.out.display(),
        if summary.interrupted {
            " (interrupted: checkpoint saved, continue with --resume)"
        } else {
            ""
        }
    );
    if summary.terminated {
        eprintln!("terminated (SIGTERM): checkpoint saved, exiting with status 143");
        std::process::exit(143);
    }
    Ok(())
}
