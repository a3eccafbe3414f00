//! The `capaboost` command-line tool: one file per command, this one parses the command
//! line and maps a command's error to the exit code.

pub mod bench;
mod bench_cmd;
mod bench_step;
mod eval;
mod export;
mod finetune;
mod generate;
mod info;
pub mod layer;
mod resume;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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
    Layer(layer::LayerArgs),
    /// Fine-tune adapters. With no data, runs the built-in demo: LoRA r against CapaBoost r,
    /// d = 2, 4, 8 on a frozen random MLP with a planted update (flat and decaying spectra).
    Finetune(Box<finetune::FinetuneArgs>),
    /// Benchmark one CapaBoost layer (fwd + bwd with dx) per shape and d against the copy
    /// and GEMM ceilings measured in the same run.
    Bench(bench_cmd::BenchArgs),
    /// Measure the host side of one MiniLM training step (CPU time to record and submit,
    /// dispatches, passes, bind groups) apart from the GPU's execution.
    BenchStep(bench_step::BenchStepArgs),
    /// Score a saved run on a GLUE-format folder.
    Eval(eval::EvalArgs),
    /// Export a run's adapters: native (weights + mask keys) or HF PEFT.
    Export(export::ExportArgs),
    /// Write the full model with the adapters merged (plain BERT for HF transformers).
    Merge(export::MergeArgs),
    /// Generate text from a Llama-family GGUF model (greedy, or sampled with a seed).
    Generate(generate::GenerateArgs),
}

/// The ids of the flags given on the command line to `subcommand` (not defaults).
fn given_flags(matches: &clap::ArgMatches, subcommand: &str) -> Vec<String> {
    let Some(sub) = matches.subcommand_matches(subcommand) else {
        return Vec::new();
    };
    sub.ids()
        .map(|id| id.as_str().to_string())
        .filter(|id| {
            sub.try_get_raw(id).is_ok_and(|v| v.is_some())
                && sub.value_source(id) == Some(ValueSource::CommandLine)
        })
        .collect()
}

/// Parses the command line, runs the subcommand and maps its error to an exit code.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Info => info::run(),
        Command::Layer(args) => layer::command(args),
        Command::Finetune(args) => finetune::run(*args, &given_flags(&matches, "finetune")),
        Command::Bench(args) => bench_cmd::run(args),
        Command::BenchStep(args) => bench_step::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::export(args),
        Command::Merge(args) => export::merge(args),
        Command::Generate(args) => generate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
