//! Which `finetune` flags were given, and what they may do: on `--resume` only the flags
//! of [`RESUME_MAY_CHANGE`] may differ from the run's `config.json` (they extend or
//! re-time the run); any other flag that would change the run is an error listing them.
//! Flags that the chosen method ignores are errors too.

use serde_json::Value;

use crate::runtime::error::{Error, Result};
use crate::tasks::config::{Method, TrainConfig};
use crate::tasks::image::config::IMAGE_FLAGS;
use crate::tasks::kind::TaskKind;
use crate::tasks::run::resolve;
use crate::tasks::squad::config::QA_FLAGS;

/// Flags that may change on `--resume`: the run's length (`--max-steps`, `--epochs`; a
/// linear or cosine learning-rate schedule then spans the new length, see
/// `Trainer::resume`) and how often it reports (`--eval-every`, `--log-every`). The invocation's own options (`--stop-after`,
/// `--no-progress`) are not part of the run and are always allowed.
pub const RESUME_MAY_CHANGE: [&str; 4] = ["max_steps", "epochs", "eval_every", "log_every"];

/// The `config.json` key of a flag (its clap id), with the mask flags under `mask`.
fn json_value<'a>(v: &'a Value, id: &str) -> Option<&'a Value> {
    match id {
        "mask" => v.get("mask")?.get("kind"),
        "d" | "density" | "seed" => v.get("mask")?.get(id),
        _ => v.get(id),
    }
}

fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// A path value resolved (so `./data` and its absolute form compare equal).
fn normalized(id: &str, v: &Value) -> Value {
    match (id, v.as_str()) {
        ("data" | "model", Some(p)) => Value::String(resolve(p.as_ref()).display().to_string()),
        _ => v.clone(),
    }
}

/// Checks the flags given with `--resume` (`explicit`, clap ids) against the run's
/// configuration `saved`, and applies those that may change.
pub fn apply_resume_flags(
    saved: &mut TrainConfig,
    given: &TrainConfig,
    explicit: &[String],
) -> Result<()> {
    let old = saved.to_json()?;
    let new = given.to_json()?;
    let mut changed = Vec::new();
    for id in explicit {
        let (Some(a), Some(b)) = (json_value(&old, id), json_value(&new, id)) else {
            continue;
        };
        if normalized(id, a) != normalized(id, b) && !RESUME_MAY_CHANGE.contains(&id.as_str()) {
            changed.push(format!("{} {b} (the run has {a})", flag(id)));
        }
    }
    if !changed.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--resume continues a run as it was configured; these flags would change it: {}. \
             Only --max-steps, --epochs, --eval-every, --log-every (and --stop-after, \
             --no-progress) may change on resume; start a new run for the others",
            changed.join(", ")
        )));
    }
    let has = |id: &str| explicit.iter().any(|e| e == id);
    if has("max_steps") {
        saved.run.max_steps = given.run.max_steps;
    }
    if has("epochs") {
        saved.run.epochs = given.run.epochs;
    }
    if has("eval_every") {
        saved.run.eval_every = given.run.eval_every;
    }
    if has("log_every") {
        saved.run.log_every = given.run.log_every;
    }
    saved.validate()
}

/// Errors on flags the method ignores (`--method lora --d 4`), naming them.
pub fn check_method_flags(method: Method, explicit: &[String]) -> Result<()> {
    let ignored: &[&str] = match method {
        Method::Lora => &["mask", "d", "density", "adapter_width", "placement"],
        Method::Capaboost => &["adapter_width", "placement"],
        Method::CapaboostAdapter => &["r", "alpha", "targets", "rank_scaling", "dropout"],
        Method::HeadOnly => &[
            "mask",
            "d",
            "density",
            "r",
            "alpha",
            "targets",
            "rank_scaling",
            "adapter_width",
            "placement",
            "dropout",
        ],
    };
    let given: Vec<String> = explicit
        .iter()
        .filter(|id| ignored.contains(&id.as_str()))
        .map(|id| flag(id))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "--method {} does not use {}; drop them (or choose another --method)",
        method.name(),
        given.join(", ")
    )))
}

/// Errors on QA flags given with another task than squad, and image flags with another
/// task than image, naming them.
pub fn check_task_flags(task: TaskKind, explicit: &[String]) -> Result<()> {
    let groups: [(&[&str], TaskKind, &str); 2] = [
        (
            &QA_FLAGS,
            TaskKind::Squad,
            "question-answering settings, for --task squad",
        ),
        (
            &IMAGE_FLAGS,
            TaskKind::Image,
            "image settings, for --task image",
        ),
    ];
    for (flags, owner, what) in groups {
        if task == owner {
            continue;
        }
        let given: Vec<String> = explicit
            .iter()
            .filter(|id| flags.contains(&id.as_str()))
            .map(|id| flag(id))
            .collect();
        if !given.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--task {task} does not use {} ({what})",
                given.join(", ")
            )));
        }
    }
    Ok(())
}
