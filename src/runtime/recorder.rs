//! Recording GPU work: one command encoder, many dispatches, one submit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::pipeline::{Checks, Want};
use crate::runtime::pool::{BufferKind, PooledBuffer};
use crate::runtime::shaders::ShaderSource;
use crate::runtime::tensor::Tensor;
pub use crate::runtime::timing::{Timing, TimingSource};

/// A buffer bound to a dispatch: the pooled buffer and how many bytes of it are bound.
#[derive(Clone, Debug)]
pub struct Binding {
    pub(crate) buffer: Arc<PooledBuffer>,
    pub(crate) offset: u64,
    pub(crate) bytes: u64,
}

impl Binding {
    /// Binds the first `bytes` bytes of a pooled buffer.
    pub fn new(buffer: Arc<PooledBuffer>, bytes: u64) -> Self {
        Self {
            buffer,
            offset: 0,
            bytes,
        }
    }
}

/// Bytes of one uniform arena chunk: kernel parameters of up to this many / 256 dispatches
/// share one buffer and one `write_buffer`.
const ARENA_CHUNK: u64 = 64 * 1024;

/// Kernel parameters staged on the host, written to their buffer once, before the submit.
struct ArenaChunk {
    buffer: Arc<PooledBuffer>,
    bytes: Vec<u8>,
}

impl From<&Tensor> for Binding {
    fn from(t: &Tensor) -> Self {
        t.binding()
    }
}

/// Where a dispatch's passes write their begin/end timestamps.
struct Timestamps {
    query_set: wgpu::QuerySet,
    capacity: u32,
    used: u32,
    labels: Vec<&'static str>,
}

/// Buffers a recording reserves room to keep alive up front, at the least; it reserves
/// as many as the largest recording before it held (`BufferPool::held_hint`), so a
/// training step's list (a few thousand) never grows while it records.
const KEEP_CAPACITY: usize = 1024;

/// Idle pooled buffers below this many bytes are never shed after a submit
/// ([`Gpu::trim_excess`]).
pub const IDLE_FLOOR_BYTES: u64 = 256 << 20;

/// Records dispatches into one command encoder and submits them together.
///
/// Every buffer a recorded dispatch binds is held until [`Recorder::submit`], so the pool
/// cannot hand it out (and a later upload overwrite it) before the GPU has used it.
/// Dropping a recorder with work in it submits that work.
pub struct Recorder {
    gpu: Gpu,
    encoder: Option<wgpu::CommandEncoder>,
    /// The open compute pass: consecutive dispatches share it (wgpu still orders each
    /// dispatch after the writes of the previous ones); anything else that needs the
    /// encoder ends it first.
    pass: Option<wgpu::ComputePass<'static>>,
    arena: Vec<ArenaChunk>,
    keep: Vec<Arc<PooledBuffer>>,
    dispatches: usize,
    passes: usize,
    uniforms: usize,
    uniform_writes: usize,
    /// Dispatches per entry point, kept once [`Recorder::count_entries`] asks for it.
    entries: Option<std::collections::BTreeMap<&'static str, usize>>,
    timestamps: Option<Timestamps>,
    host_owned: bool,
}

impl Recorder {
    pub(crate) fn new(gpu: &Gpu) -> Self {
        let encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("capaboost"),
            });
        Self::over(gpu, encoder, false)
    }

    /// A recorder over `encoder`; `host_owned` for [`Recorder::wrap`].
    fn over(gpu: &Gpu, encoder: wgpu::CommandEncoder, host_owned: bool) -> Self {
        Self {
            gpu: gpu.clone(),
            encoder: Some(encoder),
            pass: None,
            arena: Vec::new(),
            keep: Vec::with_capacity(gpu.pool().held_hint().max(KEEP_CAPACITY)),
            dispatches: 0,
            passes: 0,
            uniforms: 0,
            uniform_writes: 0,
            entries: None,
            timestamps: None,
            host_owned,
        }
    }

    /// Records into a command encoder the host program owns; get it back with
    /// [`Recorder::into_encoder`] and submit it when you choose. Nothing is submitted or
    /// read back on this path (kernel parameters are staged with `Queue::write_buffer`,
    /// which lands at your next submit).
    pub fn wrap(gpu: &Gpu, encoder: wgpu::CommandEncoder) -> Self {
        Self::over(gpu, encoder, true)
    }

    /// Whether this recorder records into a host program's encoder ([`Recorder::wrap`]):
    /// kernels then submit nothing of their own (a GEMM autotuner, for one, does not tune
    /// on this path and takes its cached choice or the reference kernel).
    pub fn records_for_host(&self) -> bool {
        self.host_owned
    }

    /// Hands the encoder back without submitting, with the buffers its commands use; keep
    /// the [`KeepAlive`] until you have submitted the encoder's command buffer.
    pub fn into_encoder(mut self) -> (wgpu::CommandEncoder, KeepAlive) {
        self.end_pass();
        self.flush_uniforms();
        let encoder = self.encoder.take().expect("recorder used after submit");
        let keep = KeepAlive(std::mem::take(&mut self.keep));
        (encoder, keep)
    }

    /// The GPU this recorder records for.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    /// The encoder, with any open compute pass ended.
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.end_pass();
        self.encoder.as_mut().expect("recorder used after submit")
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// The open compute pass, begun if none is.
    fn open_pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let enc = self.encoder.as_mut().expect("recorder used after submit");
            let pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("capaboost"),
                timestamp_writes: None,
            });
            self.pass = Some(pass.forget_lifetime());
            self.passes += 1;
        }
        self.pass.as_mut().expect("pass just opened")
    }

    /// Writes the staged kernel parameters: one `write_buffer` per arena chunk, landing
    /// before the submit that follows.
    fn flush_uniforms(&mut self) {
        for chunk in self.arena.drain(..) {
            if !chunk.bytes.is_empty() {
                self.gpu
                    .write_buffer(chunk.buffer.buffer(), 0, &chunk.bytes);
                self.uniform_writes += 1;
            }
            self.gpu.pool().return_staging(chunk.bytes);
            self.keep.push(chunk.buffer);
        }
    }

    /// Compute passes recorded so far.
    pub fn pass_count(&self) -> usize {
        self.passes
    }

    /// From now on, counts dispatches per entry point (see [`Recorder::entry_counts`]).
    pub fn count_entries(&mut self) {
        self.entries.get_or_insert_with(Default::default);
    }

    /// Dispatches per entry point since [`Recorder::count_entries`] (empty before).
    pub fn entry_counts(&self) -> Vec<(&'static str, usize)> {
        self.entries
            .iter()
            .flatten()
            .map(|(k, v)| (*k, *v))
            .collect()
    }

    /// Kernel parameter blocks (uniforms) recorded so far.
    pub fn uniform_count(&self) -> usize {
        self.uniforms
    }

    /// `write_buffer` calls for kernel parameters so far, made or due (one per arena
    /// chunk, made when the recording is submitted or handed back).
    pub fn uniform_write_count(&self) -> usize {
        self.uniform_writes + self.arena.iter().filter(|c| !c.bytes.is_empty()).count()
    }

    /// Keeps a buffer alive (out of the pool) until this recorder is submitted.
    pub fn keep_alive(&mut self, buffer: Arc<PooledBuffer>) {
        self.keep.push(buffer);
    }

    /// A uniform binding holding `bytes`: a slot of this recording's arena (written with
    /// the others before the submit), alive until submit.
    pub(crate) fn uniform(&mut self, bytes: &[u8]) -> Binding {
        let align = (self.gpu.limits().min_uniform_buffer_offset_alignment as u64).max(16);
        let size = (bytes.len() as u64).div_ceil(16) * 16;
        let fits =
            |c: &ArenaChunk| (c.bytes.len() as u64).div_ceil(align) * align + size <= ARENA_CHUNK;
        if size > ARENA_CHUNK / 4 {
            // Not a kernel's parameters: a buffer of its own.
            let buf = Arc::new(self.gpu.pool().acquire(BufferKind::Uniform, size));
            self.gpu.write_buffer(buf.buffer(), 0, bytes);
            self.uniforms += 1;
            self.uniform_writes += 1;
            return Binding::new(buf, bytes.len() as u64);
        }
        if !self.arena.last().is_some_and(fits) {
            let buffer = Arc::new(self.gpu.pool().acquire(BufferKind::Uniform, ARENA_CHUNK));
            let bytes = self.gpu.pool().staging(ARENA_CHUNK as usize);
            self.arena.push(ArenaChunk { buffer, bytes });
        }
        let chunk = self.arena.last_mut().expect("chunk just ensured");
        let offset = (chunk.bytes.len() as u64).div_ceil(align) * align;
        chunk.bytes.resize(offset as usize, 0);
        chunk.bytes.extend_from_slice(bytes);
        chunk.bytes.resize((offset + size) as usize, 0);
        self.uniforms += 1;
        Binding {
            buffer: chunk.buffer.clone(),
            offset,
            bytes: bytes.len() as u64,
        }
    }

    /// Records a compute dispatch of `entry` in `shader`, binding `bindings` as
    /// `(binding index, buffer)` in group 0.
    pub fn dispatch(
        &mut self,
        shader: &'static ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        bindings: &[(u32, &Binding)],
        workgroups: [u32; 3],
    ) -> Result<()> {
        self.dispatch_with(
            shader,
            (entry, Checks::Checked),
            constants,
            bindings,
            workgroups,
        )
    }

    /// [`Recorder::dispatch`] of a module with the given runtime checks (crate-private:
    /// see [`Checks::Trusted`]).
    pub(crate) fn dispatch_with(
        &mut self,
        shader: &'static ShaderSource,
        (entry, checks): (&'static str, Checks),
        constants: &[(&'static str, f64)],
        bindings: &[(u32, &Binding)],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let max = self.gpu.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::TooLarge {
                bytes: 0,
                limit_name: "max_compute_workgroups_per_dimension",
                limit: max as u64,
                adapter: self.gpu.adapter_info().name.clone(),
            });
        }
        if workgroups.contains(&0) {
            return Ok(());
        }
        let want = Want {
            shader,
            entry,
            constants,
            checks,
        };
        if self.timestamps.is_some() {
            let (pipeline, group) =
                self.gpu
                    .pipelines()
                    .prepare(&want, bindings, self.dispatches, |p, g| {
                        (p.pipeline.clone(), g.clone())
                    })?;
            self.note(entry, bindings);
            return self.timed_pass(entry, &pipeline, &group, workgroups);
        }
        self.open_pass();
        let pass = self.pass.as_mut().expect("pass just opened");
        let [x, y, z] = workgroups;
        self.gpu
            .pipelines()
            .prepare(&want, bindings, self.dispatches, |p, g| {
                pass.set_pipeline(&p.pipeline);
                pass.set_bind_group(0, g, &[]);
                pass.dispatch_workgroups(x, y, z);
            })?;
        self.note(entry, bindings);
        self.dispatches += 1;
        Ok(())
    }

    /// Keeps a dispatch's buffers alive until the submit and counts it under its entry.
    fn note(&mut self, entry: &'static str, bindings: &[(u32, &Binding)]) {
        for (_, b) in bindings {
            self.keep.push(b.buffer.clone());
        }
        if let Some(counts) = &mut self.entries {
            *counts.entry(entry).or_default() += 1;
        }
    }

    /// One dispatch in a pass of its own, with timestamps written around it.
    fn timed_pass(
        &mut self,
        entry: &'static str,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        workgroups: [u32; 3],
    ) -> Result<()> {
        let ts = self.timestamps.as_mut().expect("timed recording");
        if ts.used + 2 > ts.capacity {
            return Err(Error::InvalidArgument(format!(
                "timed recording holds at most {} passes",
                ts.capacity / 2
            )));
        }
        ts.used += 2;
        ts.labels.push(entry);
        let (query_set, i) = (ts.query_set.clone(), ts.used - 2);
        let mut pass = self
            .encoder()
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(i),
                    end_of_pass_write_index: Some(i + 1),
                }),
            });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        drop(pass);
        self.dispatches += 1;
        self.passes += 1;
        Ok(())
    }

    /// Records `entry` over `groups` workgroups laid out by [`Recorder::grid_1d`]: `params`
    /// builds the uniform from the grid's x extent (kernels rebuild the flat index from
    /// it), bound at binding 0 ahead of `bindings`. Nothing is recorded for 0 groups.
    pub fn dispatch_groups<P: bytemuck::Pod>(
        &mut self,
        shader: &'static ShaderSource,
        entry: &'static str,
        groups: u64,
        params: impl FnOnce(u32) -> P,
        bindings: &[(u32, &Binding)],
    ) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let grid = self.grid_1d(groups);
        let uniform = self.uniform(bytemuck::bytes_of(&params(grid[0])));
        let mut all = Vec::with_capacity(bindings.len() + 1);
        all.push((0u32, &uniform));
        all.extend_from_slice(bindings);
        self.dispatch(shader, entry, &[], &all, grid)
    }

    /// Records zeroing of a tensor's bytes.
    pub fn clear(&mut self, t: &Tensor) {
        let b = t.binding();
        let bytes = b.bytes.div_ceil(4) * 4;
        if bytes > 0 {
            self.encoder()
                .clear_buffer(b.buffer.buffer(), 0, Some(bytes));
        }
        self.keep.push(b.buffer);
    }

    /// Records a buffer copy of `bytes` from byte `from` of `src` to `dst` (ranges checked
    /// by the caller: `kernels::layout::copy_range`).
    pub(crate) fn copy_bytes(&mut self, src: Binding, dst: Binding, from: u64, bytes: u64) {
        let (s, d) = (src.buffer.buffer(), dst.buffer.buffer());
        self.encoder()
            .copy_buffer_to_buffer(s, src.offset + from, d, dst.offset, bytes);
        self.keep.extend([src.buffer, dst.buffer]);
    }

    /// A 2-D grid of workgroups covering `groups` workgroups within the per-dimension
    /// limit; shaders rebuild the linear index as `y * grid_x + x`.
    pub fn grid_1d(&self, groups: u64) -> [u32; 3] {
        let max = self.gpu.limits().max_compute_workgroups_per_dimension as u64;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            [max as u32, groups.div_ceil(max) as u32, 1]
        }
    }

    /// Finishes the encoder and submits it; returns the number of dispatches submitted.
    pub fn submit(mut self) -> Result<usize> {
        self.submit_inner().map(|_| self.dispatches)
    }

    fn submit_inner(&mut self) -> Result<Option<wgpu::SubmissionIndex>> {
        self.end_pass();
        self.flush_uniforms();
        let Some(encoder) = self.encoder.take() else {
            return Ok(None);
        };
        let gpu = self.gpu.clone();
        let idx = gpu.scoped("submitting recorded work", || gpu.submit(encoder.finish()))?;
        gpu.pool().note_held(self.keep.len());
        self.keep.clear();
        // This work's buffers are back in the pool: shed the idle ones if shapes moved on
        // (an evaluation over length-sorted batches, length-bucketed training steps).
        gpu.trim_excess(IDLE_FLOOR_BYTES);
        Ok(Some(idx))
    }

    /// Turns on GPU timestamps for up to `max_passes` dispatches; false where the device
    /// lacks `TIMESTAMP_QUERY`.
    pub(crate) fn enable_timestamps(&mut self, max_passes: u32) -> bool {
        if !self.gpu.has_timestamps() || max_passes == 0 {
            return false;
        }
        let capacity = max_passes.min(2048) * 2;
        let gate = self.gpu.gate();
        let query_set = self
            .gpu
            .device()
            .create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("capaboost timing"),
                ty: wgpu::QueryType::Timestamp,
                count: capacity,
            });
        drop(gate);
        self.timestamps = Some(Timestamps {
            query_set,
            capacity,
            used: 0,
            labels: Vec::new(),
        });
        true
    }

    /// Submits and waits; returns GPU timestamps per pass where enabled, otherwise the
    /// wall-clock time from submit to completion.
    pub(crate) fn submit_timed(mut self) -> Result<Timing> {
        let gpu = self.gpu.clone();
        let Some(ts) = self.timestamps.take() else {
            gpu.wait()?;
            let t0 = Instant::now();
            self.submit_inner()?;
            gpu.wait()?;
            return Ok(Timing {
                total: t0.elapsed(),
                passes: Vec::new(),
                source: TimingSource::WallClock,
            });
        };
        let bytes = ts.used as u64 * 8;
        if ts.used == 0 {
            self.submit_inner()?;
            gpu.wait()?;
            return Ok(Timing {
                total: Duration::ZERO,
                passes: Vec::new(),
                source: TimingSource::Timestamps,
            });
        }
        let resolve = {
            let _gate = gpu.gate();
            gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("capaboost timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let staging = gpu.pool().acquire(BufferKind::Readback, bytes);
        let enc = self.encoder();
        enc.resolve_query_set(&ts.query_set, 0..ts.used, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, staging.buffer(), 0, bytes);
        self.submit_inner()?;
        let raw = crate::runtime::tensor::map_read(&gpu, staging.buffer(), bytes)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        let period = gpu.queue().get_timestamp_period() as f64;
        let ns = |t: u64| Duration::from_nanos((t as f64 * period) as u64);
        let passes: Vec<_> = ticks
            .chunks(2)
            .zip(&ts.labels)
            .map(|(c, label)| (*label, ns(c[1].saturating_sub(c[0]))))
            .collect();
        let total = ns(ticks[ticks.len() - 1].saturating_sub(ticks[0]));
        Ok(Timing {
            total,
            passes,
            source: TimingSource::Timestamps,
        })
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.dispatches > 0 || !self.keep.is_empty() || !self.arena.is_empty() {
            // Work recorded but never submitted would silently vanish; submit it.
            let _ = self.submit_inner();
        }
    }
}

/// Buffers recorded commands still need: holding it keeps the pool from reusing them
/// before the host program submits.
#[derive(Debug)]
pub struct KeepAlive(Vec<Arc<PooledBuffer>>);

impl KeepAlive {
    /// Buffers held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
