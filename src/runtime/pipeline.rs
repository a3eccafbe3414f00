//! Pipeline cache: each (shader, entry point, override constants) is compiled once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::runtime::error::{Error, Result};
use crate::runtime::gate::Gate;
use crate::runtime::recorder::Binding;
use crate::runtime::shaders::ShaderSource;

/// A compiled compute pipeline and the layout of its bind group 0.
#[derive(Debug)]
pub struct Pipeline {
    /// The wgpu pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Layout of bind group 0, derived from the entry point.
    pub layout: wgpu::BindGroupLayout,
    /// Unique id, used to key cached bind groups.
    pub id: u64,
}

/// Whether a shader module keeps wgpu's runtime checks (bounds checks on buffer, array and
/// vector indexing, loop bounding, integer division checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Checks {
    /// `create_shader_module`: every check wgpu inserts.
    Checked,
    /// `create_shader_module_trusted` with [`wgpu::ShaderRuntimeChecks::unchecked`]: none.
    /// Only for a dispatch whose every index the host has proven in range; see
    /// `kernels::gemm::trusted` for the one proof this crate relies on.
    Trusted,
}

/// Pipeline cache key: shader, entry point, override constants and the module's checks (a
/// trusted and a checked module of the same source are two entries).
type Key = (Source, &'static str, KeyConstants, Checks);

/// A pipeline key's override constants, inline (a kernel has at most a handful): the
/// dispatch-place check reads them from the slot itself, not from a heap block elsewhere.
type KeyConstants = smallvec::SmallVec<[(&'static str, u64); 4]>;

/// A shader source compared and hashed by its name's address: each source (static, or
/// generated and leaked once per process) owns its name, so a lookup on every dispatch
/// hashes two words instead of the name's text, and two sources that happened to share a
/// name could never share a pipeline.
#[derive(Clone, Copy)]
struct Source(&'static str);

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Source {}

impl std::hash::Hash for Source {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.0.as_ptr() as usize, self.0.len()).hash(h)
    }
}

/// Bindings a cached bind group may have (the most any kernel of this crate declares in
/// one entry point is well under this); a dispatch with more gets an uncached group.
const MAX_BIND_ENTRIES: usize = 20;

/// Bytes a binding binds: at least 4, a whole number of words.
fn bound_size(b: &Binding) -> u64 {
    b.bytes.max(4).div_ceil(4) * 4
}

/// Bind-group cache key: pipeline id and (binding, buffer id, offset, bound size), held
/// inline so that the lookup on every dispatch allocates nothing and compares without
/// following a pointer.
#[derive(Clone, Copy)]
struct BindKey {
    pipeline: u64,
    len: usize,
    entries: [(u32, u64, u64, u64); MAX_BIND_ENTRIES],
}

impl BindKey {
    fn new(pipeline: u64, bindings: &[(u32, &Binding)]) -> Option<Self> {
        if bindings.len() > MAX_BIND_ENTRIES {
            return None;
        }
        let mut key = BindKey {
            pipeline,
            len: bindings.len(),
            entries: [(0, 0, 0, 0); MAX_BIND_ENTRIES],
        };
        for (slot, &(i, b)) in key.entries.iter_mut().zip(bindings) {
            *slot = (i, b.buffer.id(), b.offset, bound_size(b));
        }
        Some(key)
    }

    fn used(&self) -> &[(u32, u64, u64, u64)] {
        &self.entries[..self.len]
    }

    /// Whether `bindings` give this key (with its own pipeline): the same test as
    /// `BindKey::new(self.pipeline, bindings) == Some(*self)`, without building and copying
    /// a key on the dispatch path.
    fn binds(&self, bindings: &[(u32, &Binding)]) -> bool {
        self.len == bindings.len()
            && self
                .used()
                .iter()
                .zip(bindings)
                .all(|(&e, &(i, b))| e == (i, b.buffer.id(), b.offset, bound_size(b)))
    }
}

impl PartialEq for BindKey {
    fn eq(&self, other: &Self) -> bool {
        self.pipeline == other.pipeline && self.used() == other.used()
    }
}

impl Eq for BindKey {}

impl std::hash::Hash for BindKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.pipeline.hash(h);
        self.used().hash(h);
    }
}

/// The pipeline a dispatch wants: shader, entry point, override constants, checks.
pub(crate) struct Want<'a> {
    pub(crate) shader: &'static ShaderSource,
    pub(crate) entry: &'static str,
    pub(crate) constants: &'a [(&'static str, f64)],
    pub(crate) checks: Checks,
}

impl Want<'_> {
    /// The pipeline cache's key of this pipeline.
    fn key(&self) -> Key {
        let constants = self.constants.iter().map(|&(k, v)| (k, v.to_bits()));
        (
            Source(self.shader.name),
            self.entry,
            constants.collect(),
            self.checks,
        )
    }

    /// Whether `key` names this pipeline (compared field by field, without building a key).
    fn is(&self, (source, entry, constants, checks): &Key) -> bool {
        *source == Source(self.shader.name)
            && *entry == self.entry
            && *checks == self.checks
            && constants.len() == self.constants.len()
            && constants
                .iter()
                .zip(self.constants)
                .all(|(&(k, v), &(wk, wv))| k == wk && v == wv.to_bits())
    }
}

/// What one dispatch place of a recording bound last time: the pipeline with its cache
/// key, the bind group with its key.
struct Slot {
    pipeline_key: Key,
    pipeline: Arc<Pipeline>,
    key: BindKey,
    group: wgpu::BindGroup,
}

/// Bind groups kept at most; past this the cache starts over, so it cannot grow without
/// bound when buffers churn.
const MAX_BIND_GROUPS: usize = 4096;

/// Compiled pipelines, shader modules and bind groups, shared by every clone of a
/// [`crate::Gpu`].
pub struct PipelineCache {
    device: wgpu::Device,
    gate: Gate,
    modules: Mutex<HashMap<(&'static str, Checks), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Key, Arc<Pipeline>>>,
    bind_groups: Mutex<HashMap<BindKey, wgpu::BindGroup>>,
    /// What the latest recordings bound, by dispatch ordinal (see `prepare`).
    sequence: Mutex<Vec<Option<Slot>>>,
    next_id: AtomicU64,
    compiled: AtomicU64,
    bind_groups_created: AtomicU64,
}

impl PipelineCache {
    pub(crate) fn new(device: wgpu::Device, gate: Gate) -> Self {
        Self {
            device,
            gate,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            bind_groups: Mutex::new(HashMap::new()),
            sequence: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            compiled: AtomicU64::new(0),
            bind_groups_created: AtomicU64::new(0),
        }
    }

    /// Number of pipelines compiled so far (cache misses).
    pub fn compiled_count(&self) -> u64 {
        self.compiled.load(Ordering::Relaxed)
    }

    /// Number of bind groups created so far (cache misses).
    pub fn bind_groups_created(&self) -> u64 {
        self.bind_groups_created.load(Ordering::Relaxed)
    }

    /// The pipeline for `entry` in `shader` with the given override constants, compiled on
    /// first use. Compilation or validation errors come back as [`Error::Shader`].
    pub fn get(
        &self,
        shader: &'static ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        self.get_with(shader, entry, constants, Checks::Checked)
    }

    /// [`PipelineCache::get`] with the module's runtime checks chosen. Crate-private:
    /// [`Checks::Trusted`] is sound only for dispatches the caller has proven in range.
    pub(crate) fn get_with(
        &self,
        shader: &'static ShaderSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        checks: Checks,
    ) -> Result<Arc<Pipeline>> {
        let want = Want {
            shader,
            entry,
            constants,
            checks,
        };
        let key = want.key();
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let err = |message: String| Error::Shader {
            shader: shader.name.to_string(),
            entry: entry.to_string(),
            message,
        };
        // Parse with naga first: its message names the file and line (a shared part's
        // own, see `shaders`), and a bad shader never reaches the driver.
        let module =
            naga::front::wgsl::parse_str(shader.source).map_err(|e| err(shader.parse_error(&e)))?;
        if !module.entry_points.iter().any(|ep| ep.name == entry) {
            return Err(err("no such entry point".into()));
        }
        // Compiling runs inside the device's gate (GL; see `runtime::gate`).
        let _gate = self.gate.enter();
        let scope = Scope::push(&self.device);
        let shader_module = self.module(shader, checks);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &shader_module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let layout = pipeline.get_bind_group_layout(0);
        if let Some(e) = scope.pop() {
            // A module that failed once must not be reused.
            self.modules.lock().unwrap().remove(&(shader.name, checks));
            return Err(err(shader.with_part_lines(e)));
        }
        self.compiled.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(Pipeline {
            pipeline,
            layout,
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
        });
        self.pipelines.lock().unwrap().insert(key, p.clone());
        Ok(p)
    }

    /// The shader module of `shader` with `checks`, created on first use.
    fn module(&self, shader: &'static ShaderSource, checks: Checks) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().unwrap();
        modules
            .entry((shader.name, checks))
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.name),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                };
                match checks {
                    Checks::Checked => self.device.create_shader_module(desc),
                    // SAFETY: `get_with` is crate-private and its one caller with `Trusted`
                    // (`kernels::gemm`) dispatches the module only on problems whose every
                    // index it has proven in range (`kernels::gemm::trusted`).
                    Checks::Trusted => unsafe {
                        self.device.create_shader_module_trusted(
                            desc,
                            wgpu::ShaderRuntimeChecks::unchecked(),
                        )
                    },
                }
            })
            .clone()
    }

    /// The pipeline and bind group of a dispatch: `want`'s pipeline with `bindings` bound
    /// in group 0. `ordinal` is the dispatch's place in its recording: a training step
    /// records the same dispatches over the same pooled buffers every time, so the slot
    /// the previous recording left at that place is tried first (its keys compared, no
    /// hashing, no allocation); the maps answer the rest.
    ///
    /// `record` gets them; on the usual path it runs under the lock of the slot it found,
    /// so neither the pipeline's nor the bind group's reference count is touched here.
    pub(crate) fn prepare<T>(
        &self,
        want: &Want,
        bindings: &[(u32, &Binding)],
        ordinal: usize,
        record: impl FnOnce(&Pipeline, &wgpu::BindGroup) -> T,
    ) -> Result<T> {
        if ordinal < MAX_BIND_GROUPS
            && let Some(Some(slot)) = self.sequence.lock().unwrap().get(ordinal)
            && want.is(&slot.pipeline_key)
            && slot.key.binds(bindings)
        {
            return Ok(record(&slot.pipeline, &slot.group));
        }
        let (pipeline, group) = self.prepare_slow(want, bindings, ordinal)?;
        Ok(record(&pipeline, &group))
    }

    /// [`PipelineCache::prepare`] when the dispatch place's slot does not match: from the
    /// maps (or new), and the slot updated.
    fn prepare_slow(
        &self,
        want: &Want,
        bindings: &[(u32, &Binding)],
        ordinal: usize,
    ) -> Result<(Arc<Pipeline>, wgpu::BindGroup)> {
        let pipeline = self.get_with(want.shader, want.entry, want.constants, want.checks)?;
        let key = BindKey::new(pipeline.id, bindings);
        let group = self.lookup_or_create(&pipeline, bindings, key)?;
        if let Some(key) = key.filter(|_| ordinal < MAX_BIND_GROUPS) {
            let mut seq = self.sequence.lock().unwrap();
            if seq.len() <= ordinal {
                seq.resize_with(ordinal + 1, || None);
            }
            seq[ordinal] = Some(Slot {
                pipeline_key: want.key(),
                pipeline: pipeline.clone(),
                key,
                group: group.clone(),
            });
        }
        Ok((pipeline, group))
    }

    /// The cached bind group of `key`, or a new one (cached when `key` is some).
    fn lookup_or_create(
        &self,
        pipeline: &Pipeline,
        bindings: &[(u32, &Binding)],
        key: Option<BindKey>,
    ) -> Result<wgpu::BindGroup> {
        if let Some(bg) = key.and_then(|k| self.bind_groups.lock().unwrap().get(&k).cloned()) {
            return Ok(bg);
        }
        let scope = Scope::push(&self.device);
        let wgpu_entries: Vec<_> = bindings
            .iter()
            .map(|&(binding, b)| wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer.buffer(),
                    offset: b.offset,
                    size: wgpu::BufferSize::new(bound_size(b)),
                }),
            })
            .collect();
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.layout,
            entries: &wgpu_entries,
        });
        if let Some(e) = scope.pop() {
            return Err(Error::Gpu {
                during: "creating a bind group".into(),
                message: e,
            });
        }
        self.bind_groups_created.fetch_add(1, Ordering::Relaxed);
        let Some(key) = key else { return Ok(bg) };
        let mut cache = self.bind_groups.lock().unwrap();
        if cache.len() >= MAX_BIND_GROUPS {
            cache.clear();
        }
        cache.insert(key, bg.clone());
        Ok(bg)
    }

    /// Forgets every cached bind group (they keep their buffers alive).
    pub fn clear_bind_groups(&self) {
        self.bind_groups.lock().unwrap().clear();
        self.sequence.lock().unwrap().clear();
    }

    /// Number of cached bind groups.
    pub fn bind_group_count(&self) -> usize {
        self.bind_groups.lock().unwrap().len()
    }
}

/// Validation, internal and out-of-memory error scopes, popped together.
pub(crate) struct Scope {
    guards: [wgpu::ErrorScopeGuard; 3],
}

impl Scope {
    pub(crate) fn push(device: &wgpu::Device) -> Self {
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        Self {
            guards: [validation, internal, oom],
        }
    }

    /// The first error any scope caught, as text.
    pub(crate) fn pop(self) -> Option<String> {
        let mut first = None;
        for g in self.guards {
            if let Some(e) = pollster::block_on(g.pop()) {
                first.get_or_insert_with(|| e.to_string());
            }
        }
        first
    }
}
