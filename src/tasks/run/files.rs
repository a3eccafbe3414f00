//! The run's logs: `metrics.jsonl` and `train_loss.csv`, appended one line at a time.

use std::io::Write;

use serde_json::Value;

use super::{METRICS, RunDir, TRAIN_LOSS, TRAIN_LOSS_HEADER, file_err};
use crate::runtime::error::{Error, Result};

impl RunDir {
    fn append(&self, name: &str, header: Option<&str>, line: &str) -> Result<()> {
        let path = self.path.join(name);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let empty = f.metadata().map_err(|e| Error::io(&path, e))?.len() == 0;
        // One write per call: a crash cuts at most this line, never interleaves two.
        let mut buf = String::new();
        if let (true, Some(h)) = (empty, header) {
            buf.push_str(h);
            buf.push('\n');
        }
        buf.push_str(line);
        buf.push('\n');
        f.write_all(buf.as_bytes())
            .and_then(|()| f.flush())
            .map_err(|e| Error::io(&path, e))
    }

    /// Cuts a torn last line (a crash or a full disk while appending) off the append-only
    /// logs, saying so, so that the next record starts on a line of its own.
    pub(crate) fn repair_logs(&self) -> Result<()> {
        for name in [METRICS, TRAIN_LOSS] {
            let path = self.path.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if bytes.is_empty() || bytes.ends_with(b"\n") {
                continue;
            }
            let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(keep as u64)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            eprintln!(
                "warning: {}: cut a torn last line ({} bytes) left by an interrupted write",
                path.display(),
                bytes.len() - keep
            );
        }
        Ok(())
    }

    /// Drops the log records of steps after `step` (the checkpoint a resume starts from:
    /// those steps are redone, and their records would be duplicated), saying so.
    pub fn trim_logs_after(&self, step: u64) -> Result<()> {
        let keep_metric = |l: &str| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(Value::as_u64))
                .is_none_or(|s| s <= step)
        };
        let keep_loss = |l: &str| {
            l.split(',')
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .is_none_or(|s| s <= step)
        };
        for (name, keep) in [
            (METRICS, &keep_metric as &dyn Fn(&str) -> bool),
            (TRAIN_LOSS, &keep_loss),
        ] {
            let path = self.path.join(name);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            let kept: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
            let dropped = text.lines().count() - kept.len();
            if dropped > 0 {
                let mut out = kept.join("\n");
                out.push('\n');
                crate::runtime::io::write_atomic(&path, out.as_bytes())?;
                eprintln!(
                    "{}: dropped {dropped} records after the checkpoint's step {step} (redone now)",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Appends one evaluation record (a JSON object with at least a non-negative integer
    /// `step`; usually also `epoch`, `split`, the task's metrics and `train_loss`) as one
    /// line of `metrics.jsonl`.
    pub fn log_metrics(&self, record: &Value) -> Result<()> {
        let obj = record.as_object().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "metrics record must be a JSON object, got {record}"
            ))
        })?;
        if obj.get("step").and_then(Value::as_u64).is_none() {
            return Err(Error::InvalidArgument(format!(
                "metrics record needs a non-negative integer 'step': {record}"
            )));
        }
        self.append(METRICS, None, &record.to_string())
    }

    /// Appends `step,epoch,loss,lr` to `train_loss.csv` (writing the header first when
    /// the file is new).
    pub fn log_train_loss(&self, step: u64, epoch: f64, loss: f64, lr: f64) -> Result<()> {
        self.append(
            TRAIN_LOSS,
            Some(TRAIN_LOSS_HEADER),
            &format!("{step},{epoch},{loss},{lr}"),
        )
    }

    /// The records of `metrics.jsonl`, in file order. A torn last line (a crash while
    /// appending) is skipped; a bad line elsewhere is an error.
    pub fn read_metrics(&self) -> Result<Vec<Value>> {
        let path = self.path.join(METRICS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => out.push(v),
                _ if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Ok(_) => {
                    return Err(file_err(
                        &path,
                        format!("line {}: not a JSON object", i + 1),
                    ));
                }
                Err(e) => return Err(file_err(&path, format!("line {}: {e}", i + 1))),
            }
        }
        Ok(out)
    }

    /// The rows of `train_loss.csv` as `(step, epoch, loss, lr)`; unparsable rows (a torn
    /// last line) are skipped.
    pub fn read_train_loss(&self) -> Result<Vec<(u64, f64, f64, f64)>> {
        let path = self.path.join(TRAIN_LOSS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        Ok(text
            .lines()
            .filter(|l| *l != TRAIN_LOSS_HEADER)
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                if f.len() != 4 {
                    return None;
                }
                Some((
                    f[0].parse().ok()?,
                    f[1].parse().ok()?,
                    f[2].parse().ok()?,
                    f[3].parse().ok()?,
                ))
            })
            .collect())
    }
}
