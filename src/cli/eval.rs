//! `capaboost eval`: score a saved run on a GLUE-format folder or a SQuAD file.

use std::path::PathBuf;

/// `capaboost eval` arguments.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Run folder.
    #[arg(long, required_unless_present = "model")]
    run: Option<PathBuf>,
    /// Causal LM without a run: score this GGUF base model (no adapters) on --data, the
    /// baseline of a fine-tune.
    #[arg(long, conflicts_with = "run")]
    model: Option<PathBuf>,
    /// With --model: longest example in tokens (longer ones are truncated).
    #[arg(long, default_value_t = 512, requires = "model")]
    max_len: usize,
    /// GLUE-format folder, or (causal-LM runs) a JSONL file, or (QA runs) a SQuAD JSON file: the run's own file scores its
    /// evaluation articles, any other file every question; or (image runs) the run's data
    /// folder (its evaluation split), another folder (its dev/, else every class folder)
    /// or a TSV of path<TAB>label.
    #[arg(long)]
    data: PathBuf,
    /// GLUE: file inside --data to score (default: the task's dev file).
    #[arg(long)]
    split: Option<String>,
    /// GLUE: also write each example's prediction and head outputs to this TSV file; the
    /// scored file may then lack labels (GLUE's official test files). QA: write the
    /// official predictions JSON `{id: answer}`. Image: one row per image (path, label,
    /// prediction, logits).
    #[arg(long)]
    predictions: Option<PathBuf>,
    /// QA: also write every window's input and start/end logits as JSON lines (for
    /// comparison with another stack, e.g. scripts/check_hf_qa.py).
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Image: also draw the confusion matrix (true class by prediction) as a PNG.
    #[arg(long)]
    confusion: Option<PathBuf>,
}

/// Scores the run (or a causal LM's base model) and prints its metrics as JSON.
pub fn run(args: EvalArgs) -> crate::Result<()> {
    if args.model.is_some() {
        return eval_causal_lm(&args, None);
    }
    let run_path = args
        .run
        .clone()
        .ok_or_else(|| crate::Error::InvalidArgument("eval needs --run or --model".into()))?;
    let (_, cfg) = crate::tasks::train::read_run(&run_path)?;
    if cfg.kind()? == crate::tasks::kind::TaskKind::CausalLm {
        return eval_causal_lm(&args, Some(&run_path));
    }
    if args.confusion.is_some() && cfg.kind()? != crate::tasks::kind::TaskKind::Image {
        return Err(crate::Error::InvalidArgument(
            "--confusion is for image runs".into(),
        ));
    }
    if cfg.kind()? == crate::tasks::kind::TaskKind::Image {
        if args.split.is_some() || args.logits.is_some() {
            return Err(crate::Error::InvalidArgument(
                "--split and --logits are for text runs; an image run scores --data (its dev/ \
                 or its class folders) and writes --predictions"
                    .into(),
            ));
        }
        let gpu = crate::Gpu::new()?;
        let out = crate::tasks::image::run::EvalOutputs {
            predictions: args.predictions.as_deref(),
            confusion: args.confusion.as_deref(),
        };
        let m = crate::tasks::image::run::eval_run(&gpu, &run_path, &args.data, out)?;
        println!("{}", crate::tasks::train::metrics_json(&m));
        return Ok(());
    }
    if cfg.kind()? == crate::tasks::kind::TaskKind::Squad {
        if args.split.is_some() {
            return Err(crate::Error::InvalidArgument(
                "--split is for GLUE folders; a QA run scores the --data file".into(),
            ));
        }
        let gpu = crate::Gpu::new()?;
        let out = crate::tasks::squad::run::EvalOutputs {
            predictions: args.predictions.as_deref(),
            logits: args.logits.as_deref(),
        };
        let m = crate::tasks::squad::run::eval_run(&gpu, &run_path, &args.data, out)?;
        println!("{}", crate::tasks::train::metrics_json(&m));
        return Ok(());
    }
    if args.logits.is_some() {
        return Err(crate::Error::InvalidArgument(
            "--logits is for QA runs; a GLUE run writes its logits with --predictions".into(),
        ));
    }
    let gpu = crate::Gpu::new()?;
    let m = crate::tasks::glue_task::eval_run(
        &gpu,
        &run_path,
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

/// A causal-LM run (`run`), or the base model of `--model`, scored on the JSONL `--data`.
fn eval_causal_lm(args: &EvalArgs, run: Option<&std::path::Path>) -> crate::Result<()> {
    use crate::tasks::causal_lm::run as lm;
    let extras = args.split.is_some() || args.predictions.is_some() || args.logits.is_some();
    if extras || args.confusion.is_some() {
        return Err(crate::Error::InvalidArgument(
            "a causal LM is scored on the --data JSONL file alone (no --split, --predictions, \
             --logits or --confusion)"
                .into(),
        ));
    }
    let gpu = crate::Gpu::new()?;
    let m = match (run, &args.model) {
        (Some(run), _) => lm::eval_run(&gpu, run, &args.data)?,
        (None, Some(model)) => lm::eval_base(&gpu, model, &args.data, args.max_len)?,
        (None, None) => {
            return Err(crate::Error::InvalidArgument(
                "eval needs --run or --model".into(),
            ));
        }
    };
    println!("{}", crate::tasks::train::metrics_json(&m));
    Ok(())
}
