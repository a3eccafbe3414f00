//! Timing recorded GPU work: [`Gpu::time`] runs a recording once and reports its GPU time,
//! per pass with timestamps where the device has them, else by the wall clock.

use std::time::Duration;

use crate::runtime::error::Result;
use crate::runtime::gpu::Gpu;
use crate::runtime::recorder::Recorder;

/// How a [`Timing`] was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimingSource {
    /// GPU timestamps written at the start and end of each pass.
    Timestamps,
    /// Host wall clock from submit to completion (no `TIMESTAMP_QUERY`).
    WallClock,
}

/// GPU time of a recorded sequence of passes.
#[derive(Clone, Debug)]
pub struct Timing {
    /// From the start of the first pass to the end of the last.
    pub total: Duration,
    /// Each pass's entry point and duration (empty for wall-clock timings).
    pub passes: Vec<(&'static str, Duration)>,
    /// How it was measured.
    pub source: TimingSource,
}

impl Gpu {
    /// Records the work of `f`, runs it once, and times it: with GPU timestamps around
    /// each pass where the device has them, otherwise with the wall clock around a
    /// blocking wait.
    pub fn time(&self, f: impl FnOnce(&mut Recorder) -> Result<()>) -> Result<Timing> {
        self.time_with(true, f)
    }

    /// Like [`Gpu::time`]; `use_timestamps = false` forces the wall-clock path.
    pub fn time_with(
        &self,
        use_timestamps: bool,
        f: impl FnOnce(&mut Recorder) -> Result<()>,
    ) -> Result<Timing> {
        let mut rec = self.recorder();
        if use_timestamps {
            rec.enable_timestamps(1024);
        }
        f(&mut rec)?;
        rec.submit_timed()
    }
}
