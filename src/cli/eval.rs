//! `capaboost eval`: score a saved run on a GLUE-format folder.

use std::path::PathBuf;

/// `capaboost eval` arguments.
#[derive(clap::Args)]
pub struct EvalArgs {
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

/// Scores the run and prints its metrics as JSON.
pub fn run(args: EvalArgs) -> crate::Result<()> {
    let gpu = crate::Gpu::new()?;
    let m = crate::tasks::glue_task::eval_run(
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
