//! The GPU handle: adapter choice, device creation or adoption, and the shared caches.

use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::runtime::gate::{Gate, GateGuard};
use crate::runtime::pipeline::PipelineCache;
use crate::runtime::pool::{BufferPool, PoolStats};

/// Environment variable: a case-insensitive substring of the adapter name to use.
pub const ENV_ADAPTER: &str = "CAPABOOST_ADAPTER";
/// Environment variable: the backend to use (`vulkan`, `metal`, `dx12`, `gl`).
pub const ENV_BACKEND: &str = "CAPABOOST_BACKEND";

/// Optional features the crate asks for when the adapter has them.
pub const WANTED_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

/// How to choose an adapter; `Default` and [`AdapterSelection::from_env`] cover most uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterSelection {
    /// Case-insensitive substring the adapter name must contain.
    pub name_contains: Option<String>,
    /// Restrict to one backend.
    pub backend: Option<wgpu::Backend>,
}

impl AdapterSelection {
    /// Reads `CAPABOOST_ADAPTER` and `CAPABOOST_BACKEND`; an unknown backend is an error.
    pub fn from_env() -> Result<Self> {
        let name_contains = std::env::var(ENV_ADAPTER).ok().filter(|s| !s.is_empty());
        let backend = match std::env::var(ENV_BACKEND) {
            Ok(v) if !v.is_empty() => Some(parse_backend(&v).ok_or_else(|| Error::BadEnv {
                name: ENV_BACKEND,
                value: v.clone(),
                reason: "expected one of vulkan, metal, dx12, gl".into(),
            })?),
            _ => None,
        };
        Ok(Self {
            name_contains,
            backend,
        })
    }

    fn backends(&self) -> wgpu::Backends {
        match self.backend {
            Some(b) => wgpu::Backends::from(b),
            None => wgpu::Backends::all(),
        }
    }

    fn describe(&self) -> String {
        let backends = match self.backend {
            Some(b) => format!("backend {}", b.to_str()),
            None => "all backends".to_string(),
        };
        match &self.name_contains {
            Some(n) => format!("{backends}, name containing {n:?}"),
            None => backends,
        }
    }
}

/// Parses a backend name as `CAPABOOST_BACKEND` accepts it.
pub fn parse_backend(s: &str) -> Option<wgpu::Backend> {
    match s.trim().to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => Some(wgpu::Backend::Vulkan),
        "metal" | "mtl" => Some(wgpu::Backend::Metal),
        "dx12" | "d3d12" => Some(wgpu::Backend::Dx12),
        "gl" | "gles" | "opengl" => Some(wgpu::Backend::Gl),
        _ => None,
    }
}

fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn backend_rank(b: wgpu::Backend) -> u8 {
    match b {
        wgpu::Backend::Vulkan => 0,
        wgpu::Backend::Metal => 1,
        wgpu::Backend::Dx12 => 2,
        wgpu::Backend::Gl => 3,
        _ => 4,
    }
}

/// What adapter choice looks at: name, backend and device type.
#[derive(Clone, Copy, Debug)]
pub struct AdapterKey<'a> {
    /// Adapter name as the driver reports it.
    pub name: &'a str,
    /// Backend it was found on.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, virtual, other or CPU.
    pub device_type: wgpu::DeviceType,
}

impl<'a> From<&'a wgpu::AdapterInfo> for AdapterKey<'a> {
    fn from(i: &'a wgpu::AdapterInfo) -> Self {
        Self {
            name: &i.name,
            backend: i.backend,
            device_type: i.device_type,
        }
    }
}

/// Picks the index of the adapter `Gpu::new` would use among `infos`, or `None`.
///
/// Filters by the selection, then prefers the best device type (discrete > integrated >
/// virtual > other > CPU) and, for one device seen through several backends, Vulkan first.
pub fn choose_adapter(infos: &[wgpu::AdapterInfo], sel: &AdapterSelection) -> Option<usize> {
    let keys: Vec<AdapterKey> = infos.iter().map(AdapterKey::from).collect();
    choose_adapter_key(&keys, sel)
}

/// [`choose_adapter`] over bare keys.
pub fn choose_adapter_key(infos: &[AdapterKey], sel: &AdapterSelection) -> Option<usize> {
    let needle = sel.name_contains.as_ref().map(|s| s.to_lowercase());
    infos
        .iter()
        .enumerate()
        .filter(|(_, i)| sel.backend.is_none_or(|b| i.backend == b))
        .filter(|(_, i)| {
            needle
                .as_ref()
                .is_none_or(|n| i.name.to_lowercase().contains(n))
        })
        .min_by_key(|(idx, i)| {
            (
                device_type_rank(i.device_type),
                backend_rank(i.backend),
                *idx,
            )
        })
        .map(|(idx, _)| idx)
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
}

/// Every adapter wgpu finds on this machine, on every enabled backend.
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
}

/// What the crate uses on a device, with the fallbacks it took (see [`Gpu::capabilities`]).
///
/// The kernels compute in f32 and use no subgroup operations; `SHADER_F16` only speeds
/// up f16 base weights (see `kernels::gemm::half_read`). The features the crate does
/// depend on are here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// How [`Gpu::time`] measures: GPU timestamps, or the wall clock around a blocking
    /// wait where the device has no `TIMESTAMP_QUERY`.
    pub timing: crate::TimingSource,
    /// Whether the crate serialises its calls into the device (the GL backend; see
    /// [`crate::runtime::gate`]).
    pub serialised_calls: bool,
    /// Largest tensor one storage binding holds; a larger one is refused with
    /// [`Error::TooLarge`] naming the limit (128 MiB on GL and under WebGPU's defaults).
    pub max_tensor_bytes: u64,
}

/// The next [`Gpu::serial`].
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct GpuInner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    features: wgpu::Features,
    half_in_f32: bool,
    coop: Vec<wgpu::CooperativeMatrixProperties>,
    pool: BufferPool,
    pipelines: PipelineCache,
    gate: Gate,
    dummy: std::sync::OnceLock<crate::Binding>,
    submits: std::sync::atomic::AtomicU64,
    serial: u64,
}

/// A wgpu device and queue plus the crate's buffer pool and pipeline cache.
///
/// Cheap to clone (reference counted); all clones share the caches. `Send + Sync`.
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish()
    }
}

impl Gpu {
    /// Picks an adapter (see [`choose_adapter`], honouring `CAPABOOST_ADAPTER` and
    /// `CAPABOOST_BACKEND`) and creates a device with the adapter's own limits and the
    /// optional features in [`WANTED_FEATURES`] it has.
    pub fn new() -> Result<Self> {
        Self::with_selection(&AdapterSelection::from_env()?)
    }

    /// [`Gpu::new`], or `None` with the reason printed when there is no adapter, unless
    /// `CAPABOOST_REQUIRE_ADAPTER=1` (then the error). For examples and tests that should
    /// skip cleanly on machines without a GPU or lavapipe.
    pub fn new_or_skip() -> Result<Option<Self>> {
        match Self::new() {
            Ok(g) => Ok(Some(g)),
            Err(e @ Error::NoAdapter { .. })
                if std::env::var("CAPABOOST_REQUIRE_ADAPTER").as_deref() != Ok("1") =>
            {
                eprintln!("skipping: {e}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Like [`Gpu::new`] with an explicit selection instead of the environment.
    pub fn with_selection(sel: &AdapterSelection) -> Result<Self> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(sel.backends()));
        let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
        let idx = choose_adapter(&infos, sel).ok_or_else(|| {
            let seen = if infos.is_empty() {
                "none".to_string()
            } else {
                infos
                    .iter()
                    .map(|i| format!("{} ({})", i.name, i.backend.to_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Error::NoAdapter {
                tried: format!(
                    "searched {}; adapters seen: {seen}. On Linux without a GPU install a \
                     software Vulkan device: apt-get install mesa-vulkan-drivers libvulkan1",
                    sel.describe()
                ),
            }
        })?;
        let adapter = &adapters[idx];
        let info = infos[idx].clone();
        let (coop, experimental, coop_props) =
            crate::runtime::coopmat::request(adapter, WANTED_FEATURES);
        let features = (adapter.features() & WANTED_FEATURES) | coop;
        let limits = adapter.limits();
        let half_in_f32 = adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("capaboost"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            ..Default::default()
        }))
        .map_err(|e| Error::RequestDevice {
            adapter: info.name.clone(),
            message: e.to_string(),
        })?;
        Ok(Self::build(device, queue, info, coop_props, half_in_f32))
    }

    /// Adopts a device and queue another program created (for trainers that embed this
    /// crate). Requests nothing: the device's own features and limits are used as they are
    /// (a device has no list of cooperative-matrix configurations, so those kernels are
    /// not used on an adopted one; nor is `unpack2x16float` without `SHADER_F16`, a
    /// downlevel flag a device does not report).
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let info = device.adapter_info();
        let half_in_f32 = device.features().contains(wgpu::Features::SHADER_F16);
        Self::build(device, queue, info, Vec::new(), half_in_f32)
    }

    fn build(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        coop: Vec<wgpu::CooperativeMatrixProperties>,
        half_in_f32: bool,
    ) -> Self {
        let limits = device.limits();
        let features = device.features();
        let gate = Gate::for_backend(info.backend);
        let pool = BufferPool::new(device.clone(), gate.clone());
        let pipelines = PipelineCache::new(device.clone(), gate.clone());
        Self {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                limits,
                features,
                half_in_f32,
                coop,
                pool,
                pipelines,
                gate,
                dummy: std::sync::OnceLock::new(),
                submits: std::sync::atomic::AtomicU64::new(0),
                serial: NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            }),
        }
    }

    /// This device's number in the process (1, 2, ... in creation order; clones share
    /// it): a cheap identity for caches keyed per device.
    pub fn serial(&self) -> u64 {
        self.inner.serial
    }

    /// The wgpu device.
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend, type and driver.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The device's limits (the adapter's own for a device made by [`Gpu::new`]).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// The device's enabled features.
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// Whether shaders may use the f16-in-f32 builtins (`unpack2x16float`): the adapter's
    /// downlevel flag `SHADER_F16_IN_F32` (the GL backend has it without `SHADER_F16`;
    /// llvmpipe over Vulkan only with it).
    pub fn has_f16_in_f32(&self) -> bool {
        self.inner.half_in_f32
    }

    /// The cooperative-matrix configurations the adapter lists, where the device was
    /// created with `EXPERIMENTAL_COOPERATIVE_MATRIX` (see [`crate::runtime::coopmat`]);
    /// empty elsewhere.
    pub fn cooperative_matrix_properties(&self) -> &[wgpu::CooperativeMatrixProperties] {
        &self.inner.coop
    }

    /// Whether GPU timestamps can be written around compute passes.
    pub fn has_timestamps(&self) -> bool {
        self.inner
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// What the crate uses on this device and the fallback it takes where a feature or
    /// limit is missing; `capaboost info` prints it.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            timing: if self.has_timestamps() {
                crate::TimingSource::Timestamps
            } else {
                crate::TimingSource::WallClock
            },
            serialised_calls: self.serialises_calls(),
            max_tensor_bytes: self.max_binding_bytes(),
        }
    }

    /// Largest tensor, in bytes, that one storage binding can hold on this device.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner
            .limits
            .max_storage_buffer_binding_size
            .min(self.inner.limits.max_buffer_size)
    }

    /// Errors with [`Error::TooLarge`] when `bytes` cannot be bound as one storage buffer.
    pub fn check_binding_size(&self, bytes: u64) -> Result<()> {
        let l = &self.inner.limits;
        let (limit_name, limit) = if l.max_storage_buffer_binding_size < l.max_buffer_size {
            (
                "max_storage_buffer_binding_size",
                l.max_storage_buffer_binding_size,
            )
        } else {
            ("max_buffer_size", l.max_buffer_size)
        };
        if bytes > limit {
            return Err(Error::TooLarge {
                bytes,
                limit_name,
                limit,
                adapter: self.inner.info.name.clone(),
            });
        }
        Ok(())
    }

    /// The buffer pool (live/peak statistics, trimming).
    pub fn pool(&self) -> &BufferPool {
        &self.inner.pool
    }

    /// Current buffer pool statistics.
    pub fn pool_stats(&self) -> PoolStats {
        self.inner.pool.stats()
    }

    /// Frees the pool's idle buffers and the cached bind groups that refer to them.
    pub fn trim(&self) {
        self.inner.pipelines.clear_bind_groups();
        self.inner.pool.trim();
    }

    /// Frees the pool's idle buffers when they hold more bytes than the most ever in use at
    /// once (and more than `floor`); returns whether it did. Work whose shapes vary (length-
    /// bucketed batches) leaves free buffers in many size classes that the next shapes
    /// may never ask for: every [`crate::Recorder::submit`] calls this (with
    /// [`crate::runtime::recorder::IDLE_FLOOR_BYTES`]) so that memory stays near twice the
    /// peak in use instead of growing with every new length.
    pub fn trim_excess(&self, floor: u64) -> bool {
        let s = self.pool_stats();
        let over = s.cached_bytes > s.peak_live_bytes.max(floor);
        if over {
            self.trim();
        }
        over
    }

    /// A small buffer bound where a kernel's optional input is absent (never read). Held
    /// as a bare pooled buffer, not a `Tensor`, which would keep this `Gpu` alive.
    pub(crate) fn dummy(&self) -> Result<crate::Binding> {
        if let Some(b) = self.inner.dummy.get() {
            return Ok(b.clone());
        }
        let buf = crate::runtime::tensor::upload_bytes(self, &[0u8; 16])?;
        Ok(self
            .inner
            .dummy
            .get_or_init(|| crate::Binding::new(buf, 16))
            .clone())
    }

    /// The compiled-pipeline cache.
    pub fn pipelines(&self) -> &PipelineCache {
        &self.inner.pipelines
    }

    /// Runs `f` inside wgpu error scopes and turns any captured error into
    /// [`Error::Gpu`], so wgpu validation failures never reach the uncaptured-error handler.
    pub fn scoped<T>(&self, during: &str, f: impl FnOnce() -> T) -> Result<T> {
        let scope = crate::runtime::pipeline::Scope::push(&self.inner.device);
        let out = f();
        match scope.pop() {
            Some(message) => Err(Error::Gpu {
                during: during.to_string(),
                message,
            }),
            None => Ok(out),
        }
    }

    /// Command buffers this crate has submitted on this device (recorders and readbacks).
    pub fn submit_count(&self) -> u64 {
        self.inner
            .submits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Submits one command buffer and counts it.
    pub(crate) fn submit(&self, cb: wgpu::CommandBuffer) -> wgpu::SubmissionIndex {
        self.inner
            .submits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _gate = self.gate();
        self.inner.queue.submit(Some(cb))
    }

    /// Enters the device's gate: on the GL backend, a mutex that serialises every call
    /// this crate makes into the device (see [`crate::runtime::gate`]); elsewhere nothing.
    pub fn gate(&self) -> GateGuard<'_> {
        self.inner.gate.enter()
    }

    /// Whether calls into this device are serialised (the GL backend).
    pub fn serialises_calls(&self) -> bool {
        self.inner.gate.is_serialising()
    }

    /// `Queue::write_buffer` through the gate: the bytes land before the next submit.
    pub fn write_buffer(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        let _gate = self.gate();
        self.inner.queue.write_buffer(buffer, offset, data);
    }

    /// Blocks until all submitted work has finished.
    pub fn wait(&self) -> Result<()> {
        let _gate = self.gate();
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu {
                during: "waiting for the GPU".into(),
                message: e.to_string(),
            })
    }

    /// Starts recording GPU work into a new command encoder; see [`crate::Recorder`].
    pub fn recorder(&self) -> crate::Recorder {
        crate::Recorder::new(self)
    }

    /// Records the work of `f` into one encoder and submits it once.
    pub fn run<T>(&self, f: impl FnOnce(&mut crate::Recorder) -> Result<T>) -> Result<T> {
        let mut rec = self.recorder();
        let out = f(&mut rec)?;
        rec.submit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, backend: wgpu::Backend, t: wgpu::DeviceType) -> AdapterKey<'_> {
        AdapterKey {
            name,
            backend,
            device_type: t,
        }
    }

    #[test]
    fn prefers_discrete_then_vulkan() {
        use wgpu::{Backend::*, DeviceType::*};
        let infos = vec![
            info("llvmpipe", Vulkan, Cpu),
            info("Intel UHD", Vulkan, IntegratedGpu),
            info("NVIDIA H100", Gl, DiscreteGpu),
            info("NVIDIA H100", Vulkan, DiscreteGpu),
        ];
        assert_eq!(
            choose_adapter_key(&infos, &AdapterSelection::default()),
            Some(3)
        );
        let sel = AdapterSelection {
            name_contains: Some("llvm".into()),
            backend: None,
        };
        assert_eq!(choose_adapter_key(&infos, &sel), Some(0));
        let sel = AdapterSelection {
            name_contains: None,
            backend: Some(Gl),
        };
        assert_eq!(choose_adapter_key(&infos, &sel), Some(2));
        let sel = AdapterSelection {
            name_contains: Some("radeon".into()),
            backend: None,
        };
        assert_eq!(choose_adapter_key(&infos, &sel), None);
        assert_eq!(choose_adapter_key(&[], &AdapterSelection::default()), None);
    }

    #[test]
    fn parses_backends() {
        assert_eq!(parse_backend("Vulkan"), Some(wgpu::Backend::Vulkan));
        assert_eq!(parse_backend("dx12"), Some(wgpu::Backend::Dx12));
        assert_eq!(parse_backend("metal"), Some(wgpu::Backend::Metal));
        assert_eq!(parse_backend("gl"), Some(wgpu::Backend::Gl));
        assert_eq!(parse_backend("cuda"), None);
    }
}
