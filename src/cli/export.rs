//! `capaboost export` and `capaboost merge`: a run's adapters as files for other stacks.

use std::path::PathBuf;

use crate::tasks::export_run::ExportFormat;

/// `capaboost export` arguments.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Peft)]
    format: ExportFormat,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
}

/// `capaboost merge` arguments.
#[derive(clap::Args)]
pub struct MergeArgs {
    /// Run folder.
    #[arg(long)]
    run: PathBuf,
    /// Output folder for the merged model.
    #[arg(long)]
    out: PathBuf,
}

/// Exports the run's adapters and head.
pub fn export(args: ExportArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    crate::tasks::export_run::export_run(&gpu, &args.run, args.format, &args.out)?;
    println!("exported {} to {}", args.run.display(), args.out.display());
    Ok(())
}

/// Writes the merged model.
pub fn merge(args: MergeArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    crate::tasks::merge::merge_run(&gpu, &args.run, &args.out)?;
    println!("merged model written to {}", args.out.display());
    Ok(())
}
