//! `capaboost bench-step`: the host side of one training step. Records a MiniLM training
//! step (CapaBoost on the chosen projections, mean pooling, a linear head, cross-entropy,
//! backward, AdamW) over a synthetic batch and reports, apart from the GPU's execution,
//! the CPU time to record it, the time to finish and submit the command buffer, and what
//! was recorded: dispatches, compute passes, kernel parameter blocks and the buffer writes
//! that carry them, bind groups created.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::kernels::masks::MaskConfig;
use crate::models::bert::{Batch, Bert, Encoded, Target};
use crate::nn::Graph;
use crate::nn::modules::{CapaBoostConfig, Linear};
use crate::nn::optim::{AdamW, AdamWConfig};
use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::tensor::{Indices, Tensor};

/// `capaboost bench-step` arguments.
#[derive(clap::Args)]
pub struct BenchStepArgs {
    /// BERT model folder (default: where `scripts/fetch-minilm.sh` puts all-MiniLM-L6-v2).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Sequences per step.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Tokens per sequence (every sequence is this long: no padding).
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    /// CapaBoost branches (1 = plain LoRA).
    #[arg(long, default_value_t = 2)]
    d: u32,
    /// Adapter rank.
    #[arg(long, default_value_t = 8)]
    r: usize,
    /// Timed steps (median reported).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed steps first (pipelines compiled, GEMMs tuned, buffers pooled).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Then one more step with GPU timestamps around every dispatch (each in a pass of its
    /// own), printing the GPU time per kernel: where the step's GPU time goes.
    #[arg(long)]
    profile: bool,
}

/// What one step cost on the host and what it recorded.
#[derive(Clone, Debug, Default)]
struct StepCost {
    record: Duration,
    record_cpu: Option<Duration>,
    submit: Duration,
    gpu: Duration,
    dispatches: usize,
    passes: usize,
    uniforms: usize,
    uniform_writes: usize,
    bind_groups_created: u64,
    pipelines_compiled: u64,
    entries: Vec<(&'static str, usize)>,
}

/// The model, optimizer and batch of the measured step.
struct Setup {
    bert: Bert,
    head: Linear,
    opt: AdamW,
    batch: Batch,
    labels: Indices,
}

fn setup(gpu: &Gpu, args: &BenchStepArgs) -> Result<Setup> {
    if args.batch_size == 0 || args.max_len < 2 || args.steps == 0 || args.d == 0 || args.r == 0 {
        return Err(Error::InvalidArgument(
            "bench-step: --batch-size, --steps, --d and --r must be at least 1, --max-len at least 2"
                .into(),
        ));
    }
    let dir = args
        .model
        .clone()
        .unwrap_or_else(crate::models::bert::default_model_dir);
    if !dir.join("config.json").is_file() {
        return Err(Error::InvalidArgument(format!(
            "--model {}: no BERT model there (run scripts/fetch-minilm.sh, or pass --model)",
            dir.display()
        )));
    }
    let mut bert = Bert::load(gpu, &dir)?;
    if args.max_len > bert.config.max_position_embeddings {
        return Err(Error::InvalidArgument(format!(
            "--max-len {} exceeds the model's {} positions",
            args.max_len, bert.config.max_position_embeddings
        )));
    }
    let mut rng = StdRng::seed_from_u64(0);
    let head = Linear::init(gpu, bert.config.hidden_size, 2, true, &mut rng)?;
    let mut layer = CapaBoostConfig::lora(args.r, 2.0 * args.r as f32);
    if args.d > 1 {
        layer.mask = MaskConfig::new(crate::kernels::masks::MaskKind::Exact, args.d, 0.5, 1);
    }
    bert.add_lora(gpu, &[Target::Query, Target::Value], &layer, &mut rng)?;
    let mut params: Vec<Tensor> = bert.params().into_iter().map(|(_, t)| t).collect();
    params.extend(head.params().into_iter().map(|(_, t)| t));
    let opt = AdamW::new(gpu, AdamWConfig::default(), &params)?;
    let vocab = bert.config.vocab_size;
    let items: Vec<Encoded> = (0..args.batch_size)
        .map(|_| Encoded {
            ids: (0..args.max_len)
                .map(|_| rng.random_range(1000..vocab as u32))
                .collect(),
            type_ids: vec![0; args.max_len],
        })
        .collect();
    let batch = Batch::new(gpu, &items, vocab)?;
    let labels: Vec<u32> = (0..args.batch_size)
        .map(|_| rng.random_range(0..2))
        .collect();
    let labels = Indices::from_slice(gpu, &labels, &[args.batch_size])?;
    Ok(Setup {
        bert,
        head,
        opt,
        batch,
        labels,
    })
}

/// Records the measured step into `g`: forward, mean pooling, head, loss, backward, AdamW.
fn record_step(g: &mut Graph, s: &mut Setup) -> Result<()> {
    let (last, _) = s.bert.forward(g, &s.batch, false)?;
    let pooled = g.mean_pool(&last, &s.batch.mask)?;
    let logits = s.head.forward(g, &pooled)?;
    let loss = g.cross_entropy(&logits, &s.labels)?;
    let grads = g.backward(&loss)?;
    s.opt.step(g.recorder(), &grads)?;
    Ok(())
}

/// Records, submits and waits for one step, timing each part. `count` also counts the
/// dispatches per kernel (a map lookup per dispatch that a training step does not make:
/// only in an untimed step).
fn step(gpu: &Gpu, s: &mut Setup, count: bool) -> Result<StepCost> {
    gpu.wait()?;
    let pipes = gpu.pipelines();
    let (bg0, pc0) = (pipes.bind_groups_created(), pipes.compiled_count());
    let c0 = thread_cpu();
    let t0 = Instant::now();
    let mut g = Graph::new(gpu);
    if count {
        g.recorder().count_entries();
    }
    record_step(&mut g, s)?;
    let rec = g.recorder();
    let (dispatches, passes) = (rec.dispatch_count(), rec.pass_count());
    let (uniforms, uniform_writes) = (rec.uniform_count(), rec.uniform_write_count());
    let entries = rec.entry_counts();
    let t1 = Instant::now();
    let c1 = thread_cpu();
    g.submit()?;
    let t2 = Instant::now();
    gpu.wait()?;
    let t3 = Instant::now();
    Ok(StepCost {
        record: t1 - t0,
        record_cpu: c0.zip(c1).map(|(a, b)| b.saturating_sub(a)),
        submit: t2 - t1,
        gpu: t3 - t2,
        dispatches,
        passes,
        uniforms,
        uniform_writes,
        bind_groups_created: pipes.bind_groups_created() - bg0,
        pipelines_compiled: pipes.compiled_count() - pc0,
        entries,
    })
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), where the platform has it.
#[cfg(unix)]
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

#[cfg(not(unix))]
fn thread_cpu() -> Option<Duration> {
    None
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the measurement and prints it.
pub fn run(args: BenchStepArgs) -> Result<()> {
    let gpu = Gpu::new()?;
    let mut s = setup(&gpu, &args)?;
    println!(
        "capaboost bench-step on {} ({}): MiniLM-shaped step, batch {} x {} tokens, \
         {} on query,value (r = {})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend.to_str(),
        args.batch_size,
        args.max_len,
        if args.d > 1 {
            format!("CapaBoost d = {}", args.d)
        } else {
            "LoRA".into()
        },
        args.r
    );
    // The per-kernel counts come from the last warm-up step (or one more step after).
    let mut entries = None;
    for i in 0..args.warmup {
        let last = i + 1 == args.warmup;
        let cost = step(&gpu, &mut s, last)?;
        entries = last.then_some(cost.entries);
    }
    let costs = (0..args.steps)
        .map(|_| step(&gpu, &mut s, false))
        .collect::<Result<Vec<_>>>()?;
    let mut entries = match entries {
        Some(e) => e,
        None => step(&gpu, &mut s, true)?.entries,
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let last = &costs[costs.len() - 1];
    let cpu: Option<Vec<Duration>> = costs.iter().map(|c| c.record_cpu).collect();
    let cpu = cpu.map_or("n/a".into(), |v| format!("{:.3} ms", ms(median(v))));
    println!(
        "host recording {:.3} ms wall, {cpu} recording thread CPU, finish + submit {:.3} ms, \
         GPU (wait after submit) {:.1} ms (medians of {})",
        ms(median(costs.iter().map(|c| c.record).collect())),
        ms(median(costs.iter().map(|c| c.submit).collect())),
        ms(median(costs.iter().map(|c| c.gpu).collect())),
        costs.len()
    );
    println!(
        "per step: {} dispatches in {} compute passes, {} parameter blocks in {} buffer \
         writes, {} bind groups created ({} cached in all), {} pipelines compiled",
        last.dispatches,
        last.passes,
        last.uniforms,
        last.uniform_writes,
        last.bind_groups_created,
        gpu.pipelines().bind_group_count(),
        last.pipelines_compiled
    );
    entries.sort_by_key(|&(name, n)| (std::cmp::Reverse(n), name));
    let list: Vec<String> = entries.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("dispatches per kernel: {}", list.join(", "));
    if args.profile {
        print_profile(&gpu, &mut s)?;
    }
    Ok(())
}

/// Records one step with timestamps around each dispatch and prints the GPU time per
/// entry point, largest first.
fn print_profile(gpu: &Gpu, s: &mut Setup) -> Result<()> {
    gpu.wait()?;
    let mut rec = gpu.recorder();
    if !rec.enable_timestamps(2048) {
        println!("profile: this device has no timestamp queries");
        return Ok(());
    }
    let mut g = Graph::with_recorder(rec);
    record_step(&mut g, s)?;
    let timing = g.into_recorder().submit_timed()?;
    let mut by_entry: Vec<(&'static str, usize, Duration)> = Vec::new();
    for &(entry, d) in &timing.passes {
        match by_entry.iter_mut().find(|(e, ..)| *e == entry) {
            Some((_, n, total)) => {
                *n += 1;
                *total += d;
            }
            None => by_entry.push((entry, 1, d)),
        }
    }
    by_entry.sort_by_key(|&(e, _, d)| (std::cmp::Reverse(d), e));
    let sum: Duration = by_entry.iter().map(|&(.., d)| d).sum();
    println!(
        "GPU time per kernel (one step, timestamps around each dispatch): {:.1} ms in all",
        sum.as_secs_f64() * 1e3
    );
    for (entry, n, d) in by_entry {
        println!(
            "  {entry:<28} {n:>4} dispatches {:>10.2} ms {:>5.1}%",
            d.as_secs_f64() * 1e3,
            100.0 * d.as_secs_f64() / sum.as_secs_f64().max(1e-12)
        );
    }
    Ok(())
}
