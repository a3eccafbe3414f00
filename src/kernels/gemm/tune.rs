//! The GEMM autotuner: picks a [`Kernel`] per device and problem class by measuring the
//! candidates on the device, checks the winner against [`Kernel::Reference`] there before
//! it is used, and persists the choice (`super::cache`), so a second process reuses it.
//!
//! The key ([`key`]): adapter (vendor, device, backend, driver, driver info), crate version
//! and a hash of the GEMM shader set, the views of A and B and whether they are batched,
//! M, N and K rounded up to powers of two, the storage of B (`h`: packed f16), and the
//! alignment class (the vec4 loads each
//! operand allows, whether K is a multiple of 4).
//!
//! `CAPABOOST_AUTOTUNE=off|on|exhaustive` (default `on`): `off` always runs the reference;
//! `on` measures each candidate once, drops those more than [`DROP`] times behind the
//! leader, then takes up to [`ON_SAMPLES`] samples of the rest within a budget of about a
//! second; `exhaustive` takes [`EXHAUSTIVE_SAMPLES`] of every candidate. Problems under
//! [`TINY_FLOP`] are not worth a measurement and run the reference.
//!
//! Candidates: the register variants, then on an unbatched tall-skinny problem
//! ([`split::worthy`]: the adapter gradients) split-K over the leading variant's shape
//! with S in [`split::SPLITS`] (at most K / [`split::MIN_SLICE`]); a split-K choice is
//! cached as `<shape>s<S>` and checked against the reference like any other, on a check
//! problem that keeps the full K.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::candidates::{candidates, split_candidates};
use super::{
    Kernel, Operand, Storage, cache, check_dims, coop, gemm_into_with, prepare, split, template,
};
use crate::kernels::masks::MaskBits;
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::half::HalfTensor;
use crate::runtime::tensor::Tensor;

/// A candidate whose first sample is this many times the leader's is dropped.
pub const DROP: f64 = 3.0;
/// Samples per surviving candidate in `on` mode (median).
pub const ON_SAMPLES: usize = 3;
/// Samples per candidate in `exhaustive` mode.
pub const EXHAUSTIVE_SAMPLES: usize = 7;
/// `2 M N K` (times the batch) below which the reference runs without tuning.
pub const TINY_FLOP: f64 = 2.0 * 64.0 * 64.0 * 64.0;
/// Largest relative Frobenius difference from the reference a winner with f32 arithmetic may
/// show ([`Kernel::check_tol`]: the cooperative-matrix kernels with f16 inputs have their own).
pub const CHECK_TOL: f64 = 1e-4;

/// What `CAPABOOST_AUTOTUNE` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Always the reference kernel.
    Off,
    /// Tune quickly, once per key; cached.
    On,
    /// Tune every candidate with more samples; cached.
    Exhaustive,
    /// No measurement and no cache: a register-blocked variant picked from the problem's
    /// shape alone ([`fixed_choice`]); deterministic across processes (the test suite's
    /// mode: fast on lavapipe, bit-identical between runs).
    Fixed,
}

/// Parses a `CAPABOOST_AUTOTUNE` value (`None` or empty: `on`).
pub fn parse_mode(v: Option<&str>) -> Result<Mode> {
    match v.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("on") | Some("1") => Ok(Mode::On),
        Some("off") | Some("0") => Ok(Mode::Off),
        Some("exhaustive") => Ok(Mode::Exhaustive),
        Some("fixed") => Ok(Mode::Fixed),
        Some(other) => Err(Error::InvalidArgument(format!(
            "CAPABOOST_AUTOTUNE={other}: expected off, on, exhaustive or fixed"
        ))),
    }
}

static OVERRIDE: AtomicU8 = AtomicU8::new(0);

/// Sets the mode for this process, over the environment (`None`: back to the environment).
pub fn set_mode(mode: Option<Mode>) {
    let v = match mode {
        None => 0,
        Some(Mode::Off) => 1,
        Some(Mode::On) => 2,
        Some(Mode::Exhaustive) => 3,
        Some(Mode::Fixed) => 4,
    };
    OVERRIDE.store(v, Ordering::Relaxed);
}

/// The mode in force: [`set_mode`]'s, else `CAPABOOST_AUTOTUNE` (an invalid value warns
/// once and means `on`).
pub fn mode() -> Mode {
    match OVERRIDE.load(Ordering::Relaxed) {
        1 => return Mode::Off,
        2 => return Mode::On,
        3 => return Mode::Exhaustive,
        4 => return Mode::Fixed,
        _ => {}
    }
    static ENV: OnceLock<Mode> = OnceLock::new();
    *ENV.get_or_init(|| {
        parse_mode(std::env::var("CAPABOOST_AUTOTUNE").ok().as_deref()).unwrap_or_else(|e| {
            eprintln!("warning: {e}; autotuning on");
            Mode::On
        })
    })
}

/// The tuning key of a problem on `gpu` (see the module docs).
pub fn key(gpu: &Gpu, a: &Operand, b: &Operand, [m, k, n]: [usize; 3]) -> String {
    let info = gpu.adapter_info();
    let batched = |o: &Operand| o.tensor.shape().len() > 2;
    let al = template::spec_for(0, a.view.code(), b.view.code(), [m, k, n]);
    format!(
        "{:04x}:{:04x}:{:?}:{}:{}|{}-{:016x}|a{}{}b{}{}{}|{}x{}x{}|{:?}{:?}k{}",
        info.vendor,
        info.device,
        info.backend,
        info.driver,
        info.driver_info,
        env!("CARGO_PKG_VERSION"),
        template::set_hash() ^ coop::set_hash(),
        a.view.code(),
        if batched(a) { "B" } else { "" },
        b.view.code(),
        if batched(b) { "B" } else { "" },
        if b.tensor.is_f16() { "h" } else { "" },
        m.next_power_of_two(),
        n.next_power_of_two(),
        k.next_power_of_two(),
        al.a,
        al.b,
        k % 4,
    )
}

/// One tuning: every candidate's median ms (or `None`: skipped) and the choice.
#[derive(Clone, Debug)]
pub struct Report {
    /// The key tuned.
    pub key: String,
    /// The problem measured, `[M, K, N]`.
    pub mkn: [usize; 3],
    /// Each candidate and its median ms (dropped: first sample; `None`: not measured).
    pub times: Vec<(Kernel, Option<f64>)>,
    /// The kernel chosen (checked against the reference).
    pub chosen: Kernel,
    /// Seconds the tuning took, compiling included.
    pub seconds: f64,
}

struct State {
    path: Option<std::path::PathBuf>,
    loaded: bool,
    choices: HashMap<String, Kernel>,
    /// The choices already looked up, by [`Seen`] problem: a repeated GEMM skips formatting
    /// its string key (the recording of a training step makes about 180 GEMM calls).
    seen: rustc_hash::FxHashMap<Seen, Kernel>,
    reports: Vec<Report>,
}

/// Everything the tuning key of a problem depends on, exactly (the key rounds the
/// sizes; this does not): the device by its [`Gpu::serial`], the operand views, batched
/// operands, f16 B and the sizes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Seen {
    gpu: u64,
    views: [u32; 2],
    batched: [bool; 2],
    half: bool,
    mkn: [usize; 3],
}

impl Seen {
    fn of(gpu: &Gpu, a: &Operand, b: &Operand, mkn: [usize; 3]) -> Self {
        let batched = |o: &Operand| o.tensor.shape().len() > 2;
        Seen {
            gpu: gpu.serial(),
            views: [a.view.code(), b.view.code()],
            batched: [batched(a), batched(b)],
            half: b.tensor.is_f16(),
            mkn,
        }
    }
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        Mutex::new(State {
            path: cache::default_dir().map(|d| cache::file_in(&d)),
            loaded: false,
            choices: HashMap::new(),
            seen: Default::default(),
            reports: Vec::new(),
        })
    })
}

fn lock() -> std::sync::MutexGuard<'static, State> {
    state().lock().unwrap_or_else(|e| e.into_inner())
}

/// Points this process's tuning cache at `path` (`None`: keep choices in memory only) and
/// forgets the choices made so far.
pub fn set_cache_file(path: Option<std::path::PathBuf>) {
    let mut s = lock();
    s.path = path;
    s.loaded = false;
    s.choices.clear();
    s.seen.clear();
}

/// Forgets this process's choices and does not read the cache file again: every key is
/// tuned afresh (and the file updated). `capaboost bench --autotune` uses it.
pub fn retune() {
    let mut s = lock();
    s.loaded = true;
    s.choices.clear();
    s.seen.clear();
}

/// The tunings this process has done so far.
pub fn reports() -> Vec<Report> {
    lock().reports.clone()
}

/// The cached choice for `key`, reading the cache file on first use.
fn cached(key: &str) -> Option<Kernel> {
    let mut s = lock();
    if !s.loaded {
        s.loaded = true;
        if let Some(path) = s.path.clone() {
            for (k, e) in cache::load(&path).entries {
                if let Some(kernel) = Kernel::from_label(&e.kernel) {
                    s.choices.insert(k, kernel);
                }
            }
        }
    }
    s.choices.get(key).copied()
}

fn remember(report: &Report) {
    let mut s = lock();
    s.choices.insert(report.key.clone(), report.chosen);
    s.reports.push(report.clone());
    let Some(path) = s.path.clone() else { return };
    let entry = cache::Entry {
        kernel: report.chosen.label(),
        times_ms: report
            .times
            .iter()
            .filter_map(|(k, t)| t.map(|t| (k.label(), t)))
            .collect(),
    };
    let entries = BTreeMap::from([(report.key.clone(), entry)]);
    if let Err(e) = cache::store(&path, &entries) {
        eprintln!(
            "warning: could not write GEMM tuning cache {}: {e}",
            path.display()
        );
    }
}

/// The kernel for this problem on `gpu`: the reference when tuning is off or the problem
/// tiny, else the cached choice, else a fresh tuning (then cached).
pub fn choose(gpu: &Gpu, a: &Operand, b: &Operand, mkn: [usize; 3]) -> Result<Kernel> {
    choose_with(gpu, a, b, mkn, true)
}

/// Like [`choose`]; with `may_tune = false` (recording into a host program's encoder,
/// where nothing may be submitted) an uncached problem gets the reference kernel.
pub fn choose_with(
    gpu: &Gpu,
    a: &Operand,
    b: &Operand,
    mkn: [usize; 3],
    may_tune: bool,
) -> Result<Kernel> {
    let mode = mode();
    let [m, k, n] = mkn;
    let f16_off = b.tensor.is_f16() && !super::f16_variants(gpu);
    // A batched problem is as large as all its batches (attention: 192 products of
    // 32 x 32 x 32 at batch 16 x 32 are one 25-MFLOP dispatch, not a tiny one).
    let batch = [a, b].map(|o| o.tensor.shape().iter().rev().skip(2).product::<usize>());
    let flop = 2.0 * (m * n * k) as f64 * batch.into_iter().max().unwrap_or(1) as f64;
    if mode == Mode::Off || flop <= TINY_FLOP || f16_off {
        return Ok(Kernel::Reference);
    }
    if mode == Mode::Fixed {
        return Ok(fixed_choice(mkn));
    }
    let problem = Seen::of(gpu, a, b, mkn);
    if let Some(&kernel) = lock().seen.get(&problem) {
        return Ok(kernel);
    }
    let key = key(gpu, a, b, mkn);
    let kernel = match cached(&key) {
        Some(kernel) => kernel,
        // Not remembered: a later call that may tune must still tune.
        None if !may_tune => return Ok(Kernel::Reference),
        None => {
            let report = tune(gpu, a, b, mkn, mode)?;
            remember(&report);
            report.chosen
        }
    };
    lock().seen.insert(problem, kernel);
    Ok(kernel)
}

/// The variant [`Mode::Fixed`] takes: the narrow-N block (4x4 per invocation, 4x16
/// invocations: 16 columns) when N is at most 16, the narrow-M block when M is, else the
/// 8x8-per-invocation block (64x64 per workgroup). Every variant is checked against the
/// f64 reference on odd shapes and every operand view (`tests/gemm_variants.rs`).
pub fn fixed_choice([m, _, n]: [usize; 3]) -> Kernel {
    let shape = if n <= 16 {
        3
    } else if m <= 16 {
        4
    } else {
        0
    };
    Kernel::Register(shape)
}

/// A synthetic operand like `op` (batch 1, fresh random values and masks; packed f16
/// where `op` is).
struct Synth {
    tensor: Tensor,
    half: Option<HalfTensor>,
    masks: Option<MaskBits>,
}

impl Synth {
    fn like(
        gpu: &Gpu,
        op: &Operand,
        rows_cols: Option<[usize; 2]>,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let s = op.tensor.shape();
        let [r, c] = rows_cols.unwrap_or([s[s.len() - 2], s[s.len() - 1]]);
        let v: Vec<f32> = (0..r * c).map(|_| rng.random_range(-1.0..1.0)).collect();
        let tensor = Tensor::from_slice(gpu, &v, &[r, c])?;
        let half = match op.tensor.is_f16() {
            true => Some(HalfTensor::from_f32(gpu, "tuning operand", &v, &[r, c])?),
            false => None,
        };
        let masks = match op.masks {
            Some(mb) => {
                let words = (mb.rows * mb.cols * mb.branches as usize).div_ceil(32);
                let w: Vec<u32> = (0..words).map(|_| rng.random()).collect();
                Some(MaskBits::from_words(
                    gpu,
                    &w,
                    mb.branches,
                    mb.rows,
                    mb.cols,
                )?)
            }
            None => None,
        };
        Ok(Self {
            tensor,
            half,
            masks,
        })
    }

    fn operand(&self, view: super::View) -> Operand<'_> {
        if let Some(h) = &self.half {
            return Operand::f16(h, view);
        }
        Operand {
            tensor: Storage::F32(&self.tensor),
            view,
            masks: self.masks.as_ref(),
        }
    }
}

/// Stored `[rows, cols]` of a dense view of logical `[lr, lc]`.
fn stored(view: super::View, lr: usize, lc: usize) -> Option<[usize; 2]> {
    match view {
        super::View::Plain => Some([lr, lc]),
        super::View::Trans => Some([lc, lr]),
        _ => None,
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The dimension the correctness check uses for `x`: itself up to 192, else one with the
/// same residue modulo 64 (so the same tile edges, vec4 loads and alignment).
fn reduced(x: usize) -> usize {
    if x <= 192 { x } else { 128 + x % 64 }
}

/// The operands of the correctness check: reduced dense ones, full-size stacked ones (their
/// sizes are tied to the factor's); K kept where split-K is tried (it is what is split).
fn check_problem(a: &Operand, b: &Operand, [m, k, n]: [usize; 3]) -> [usize; 3] {
    if a.view.stacked() || b.view.stacked() {
        [m, k, n]
    } else if split::worthy([m, k, n]) {
        [reduced(m), k, reduced(n)]
    } else {
        [reduced(m), reduced(k), reduced(n)]
    }
}

struct Problem {
    a: Synth,
    b: Synth,
    views: (super::View, super::View),
    c: Tensor,
    mkn: [usize; 3],
}

impl Problem {
    fn new(gpu: &Gpu, a: &Operand, b: &Operand, [m, k, n]: [usize; 3], seed: u64) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let p = Self {
            a: Synth::like(gpu, a, stored(a.view, m, k), &mut rng)?,
            b: Synth::like(gpu, b, stored(b.view, k, n), &mut rng)?,
            views: (a.view, b.view),
            c: Tensor::empty(gpu, &[m, n])?,
            mkn: [m, k, n],
        };
        check_dims(&p.oa(), &p.ob(), &p.c, None)?;
        Ok(p)
    }

    fn oa(&self) -> Operand<'_> {
        self.a.operand(self.views.0)
    }

    fn ob(&self) -> Operand<'_> {
        self.b.operand(self.views.1)
    }

    fn flop(&self) -> f64 {
        2.0 * self.mkn.iter().map(|&x| x as f64).product::<f64>()
    }

    /// Compiles and runs `kernel` once (first-use costs, wall clock), then returns its first
    /// sample; where the first run alone was [`DROP`] times `best`, that run's time instead
    /// (the candidate is dropped without a second run).
    fn first(&self, gpu: &Gpu, kernel: Kernel, best: f64) -> Result<f64> {
        prepare(gpu, kernel, &self.oa(), &self.ob(), &self.c)?;
        let t0 = Instant::now();
        self.run(gpu, kernel)?;
        gpu.wait()?;
        let warm = t0.elapsed().as_secs_f64() * 1e3;
        if warm > DROP * best {
            return Ok(warm);
        }
        self.sample(gpu, kernel)
    }

    fn run(&self, gpu: &Gpu, kernel: Kernel) -> Result<()> {
        gpu.run(|rec| gemm_into_with(rec, kernel, self.oa(), self.ob(), &self.c, 1.0, 0.0, None))
    }

    fn sample(&self, gpu: &Gpu, kernel: Kernel) -> Result<f64> {
        let t = gpu.time(|rec| {
            gemm_into_with(rec, kernel, self.oa(), self.ob(), &self.c, 1.0, 0.0, None)
        })?;
        Ok(t.total.as_secs_f64() * 1e3)
    }
}

/// Measures every candidate on synthetic operands shaped like `a` and `b`, then checks the
/// fastest against the reference (the next fastest on a mismatch). The reference itself
/// is first run on the check problem; where that predicts it [`DROP`] times behind the
/// leader and over 50 ms, it is not measured at full size (`None` in the report).
pub fn tune(gpu: &Gpu, a: &Operand, b: &Operand, mkn: [usize; 3], mode: Mode) -> Result<Report> {
    let start = Instant::now();
    let full = Problem::new(gpu, a, b, mkn, 0x7e57)?;
    let small = Problem::new(gpu, a, b, check_problem(a, b, mkn), 0x5eed)?;
    let ref_small = small.first(gpu, Kernel::Reference, f64::INFINITY)?;
    let want = small.c.to_vec()?;
    let ref_estimate = ref_small * full.flop() / small.flop();
    let (samples, budget) = match mode {
        Mode::Exhaustive => (EXHAUSTIVE_SAMPLES, Duration::from_secs(600)),
        _ => (ON_SAMPLES, Duration::from_millis(600)),
    };
    let mut times: Vec<(Kernel, Vec<f64>)> = Vec::new();
    let mut best = f64::INFINITY;
    let coop = if b.tensor.is_f16() {
        Vec::new()
    } else {
        coop::candidates(gpu)
    };
    let single = candidates(gpu, a, b, mkn, mode)
        .into_iter()
        .chain(coop)
        .collect();
    measure(gpu, &full, single, &mut times, &mut best)?;
    let splits = split_candidates(a, b, mkn, mode, &times);
    measure(gpu, &full, splits, &mut times, &mut best)?;
    let skip_reference =
        mode != Mode::Exhaustive && ref_estimate > DROP * best && ref_estimate > 50.0;
    if !skip_reference {
        let t = full.first(gpu, Kernel::Reference, best)?;
        best = best.min(t);
        times.push((Kernel::Reference, vec![t]));
    }
    // More samples of those near the leader, fastest first, while the budget lasts.
    times.sort_by(|x, y| x.1[0].total_cmp(&y.1[0]));
    for (kernel, t) in times.iter_mut() {
        while t.len() < samples
            && (mode == Mode::Exhaustive || (t[0] <= DROP * best && start.elapsed() < budget))
        {
            t.push(full.sample(gpu, *kernel)?);
        }
    }
    let mut ranked: Vec<(Kernel, f64)> = times.iter_mut().map(|(k, t)| (*k, median(t))).collect();
    ranked.sort_by(|x, y| x.1.total_cmp(&y.1));
    let chosen = first_correct(gpu, &small, &want, &ranked)?;
    let mut report_times: Vec<(Kernel, Option<f64>)> =
        ranked.iter().map(|&(k, t)| (k, Some(t))).collect();
    if skip_reference {
        report_times.push((Kernel::Reference, None));
    }
    Ok(Report {
        key: key(gpu, a, b, mkn),
        mkn,
        times: report_times,
        chosen,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The first sample of each of `kernels` (see [`Problem::first`]), appended to `times`.
fn measure(
    gpu: &Gpu,
    full: &Problem,
    kernels: Vec<Kernel>,
    times: &mut Vec<(Kernel, Vec<f64>)>,
    best: &mut f64,
) -> Result<()> {
    for kernel in kernels {
        let t = full.first(gpu, kernel, *best)?;
        *best = best.min(t);
        times.push((kernel, vec![t]));
    }
    Ok(())
}

/// The fastest of `ranked` whose output on the check problem matches the reference's
/// (`want`) within the kernel's tolerance ([`Kernel::check_tol`]).
fn first_correct(
    gpu: &Gpu,
    small: &Problem,
    want: &[f32],
    ranked: &[(Kernel, f64)],
) -> Result<Kernel> {
    for &(kernel, _) in ranked {
        if kernel == Kernel::Reference {
            return Ok(kernel);
        }
        small.run(gpu, kernel)?;
        let got = small.c.to_vec()?;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for (g, w) in got.iter().zip(want) {
            num += (*g as f64 - *w as f64).powi(2);
            den += (*w as f64).powi(2);
        }
        let err = (num / den.max(1e-30)).sqrt();
        if err.is_finite() && err <= kernel.check_tol() {
            return Ok(kernel);
        }
        eprintln!(
            "warning: GEMM variant {} differs from the reference on this device (relative error {err:.2e}); not used",
            kernel.label()
        );
    }
    Ok(Kernel::Reference)
}

/// The choices a cache file holds, key to kernel label (empty for a missing or corrupt
/// file).
pub fn cache_entries(path: &std::path::Path) -> BTreeMap<String, String> {
    cache::load(path)
        .entries
        .into_iter()
        .map(|(k, e)| (k, e.kernel))
        .collect()
}
