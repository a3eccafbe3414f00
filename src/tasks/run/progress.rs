//! Training progress on stderr: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Mutable state behind [`Progress`]: when the bar started and the last plain line.
#[derive(Debug)]
struct ProgressState {
    start: Instant,
    first_step: Option<u64>,
    next_plain: u64,
    last_step: u64,
    last_message: String,
}

/// Training progress on stderr: an `indicatif` bar on a terminal, else (or when disabled)
/// a plain line about every 10% so logs stay readable.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    bar: Option<indicatif::ProgressBar>,
    state: Mutex<ProgressState>,
}

fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress {
    /// A display for `total_steps` optimizer steps. The bar is used only when `enabled`
    /// and stderr is a terminal.
    pub fn new(total_steps: u64, enabled: bool) -> Progress {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total_steps);
            let style =
                indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            total: total_steps,
            bar,
            state: Mutex::new(ProgressState {
                start: Instant::now(),
                first_step: None,
                next_plain: 0,
                last_step: 0,
                last_message: String::new(),
            }),
        }
    }

    /// Reports that `step` steps are done; `loss` is the latest training loss and
    /// `examples_per_s` the latest throughput, each if known ("-" otherwise). The ETA
    /// extrapolates from the steps done since the first update, so a resumed run does not
    /// count the steps it skipped.
    pub fn update(&self, step: u64, loss: Option<f64>, examples_per_s: Option<f64>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let first = match st.first_step {
            Some(f) => f,
            None => {
                st.start = Instant::now();
                st.first_step = Some(step);
                step
            }
        };
        let done = step.saturating_sub(first);
        let left = self.total.saturating_sub(step);
        let eta = if done > 0 {
            let per = st.start.elapsed().as_secs_f64() / done as f64;
            fmt_duration(Duration::from_secs_f64((per * left as f64).min(1e9)))
        } else {
            "?".into()
        };
        let loss = loss.map_or_else(|| "-".into(), |l| format!("{l:.4}"));
        let eps = examples_per_s.map_or_else(|| "-".into(), |e| format!("{e:.1}"));
        let msg = format!("loss {loss} | {eps} ex/s | ETA {eta}");
        st.last_step = step;
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(msg);
            }
            None => {
                if step >= st.next_plain || step >= self.total {
                    eprintln!("step {step}/{} | {msg}", self.total);
                    let tenth = (self.total / 10).max(1);
                    st.next_plain = (step / tenth + 1) * tenth;
                    if step >= self.total {
                        st.next_plain = u64::MAX;
                    }
                }
                st.last_message = msg;
            }
        }
    }

    /// Prints a line without breaking the bar.
    pub fn println(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    /// Ends the display, leaving the final state visible.
    pub fn finish(&self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if st.next_plain != u64::MAX && !st.last_message.is_empty() {
                    eprintln!("step {}/{} | {}", st.last_step, self.total, st.last_message);
                }
                st.next_plain = u64::MAX;
            }
        }
    }
}
