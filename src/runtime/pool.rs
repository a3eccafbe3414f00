//! Buffer pool: GPU buffers reused by size class, with live/peak statistics.
//!
//! Allocating a wgpu buffer is a driver call and, on some backends, a heap allocation;
//! a training step allocates the same sizes every step, so buffers released by one step
//! are handed to the next. Sizes are rounded up to quarter steps between powers of two
//! (at most 25% slack) so nearby sizes share a class.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::runtime::gate::Gate;

/// Staging vectors [`BufferPool::return_staging`] keeps at most.
const SPARE_STAGING: usize = 4;

/// Smallest buffer the pool hands out, in bytes.
pub const MIN_CLASS_BYTES: u64 = 256;

/// What a pooled buffer is used for; each kind has its own usage flags and free lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Storage buffer that can be copied to and from (tensors).
    Storage,
    /// Small uniform buffer for kernel parameters.
    Uniform,
    /// Mappable buffer for readback.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Readback => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// The size class a request of `bytes` is served from: the next of 1, 1.25, 1.5, 1.75
/// times a power of two, at least [`MIN_CLASS_BYTES`], capped at `max` (then the request
/// itself rounded up to 4 bytes).
pub fn size_class(bytes: u64, max: u64) -> u64 {
    let b = bytes.max(MIN_CLASS_BYTES);
    let p = b.next_power_of_two();
    let base = if p == b { b } else { p / 2 };
    let step = base / 4;
    let class = base + step * b.saturating_sub(base).div_ceil(step.max(1));
    if class > max {
        bytes.div_ceil(4) * 4
    } else {
        class
    }
}

/// Counters describing the pool at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in buffers currently handed out.
    pub live_bytes: u64,
    /// Buffers currently handed out.
    pub live_count: u64,
    /// Highest `live_bytes` ever seen.
    pub peak_live_bytes: u64,
    /// Bytes in free buffers kept for reuse.
    pub cached_bytes: u64,
    /// Free buffers kept for reuse.
    pub cached_count: u64,
    /// Buffers created over the pool's life.
    pub created_count: u64,
    /// Requests served from the free lists.
    pub reused_count: u64,
}

#[derive(Default)]
struct PoolState {
    /// Free buffers per kind and class, by id: a request takes the lowest id, so which
    /// buffer it gets depends only on the set that is free, not on the order buffers came
    /// back in. A training step that repeats the same requests then binds the same buffers
    /// every step, and its bind groups come from the cache.
    free: rustc_hash::FxHashMap<(BufferKind, u64), FreeList>,
    stats: PoolStats,
}

struct PoolShared {
    device: wgpu::Device,
    gate: Gate,
    max_buffer: u64,
    state: Mutex<PoolState>,
    next_id: AtomicU64,
    /// Most buffers one recording has held (see [`BufferPool::held_hint`]).
    held: AtomicUsize,
    /// Host staging vectors handed back by finished recordings ([`BufferPool::staging`]).
    staging: Mutex<Vec<Vec<u8>>>,
}

impl PoolShared {
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pool of reusable GPU buffers; owned by [`crate::Gpu`].
pub struct BufferPool {
    shared: Arc<PoolShared>,
}

impl BufferPool {
    pub(crate) fn new(device: wgpu::Device, gate: Gate) -> Self {
        let max_buffer = device.limits().max_buffer_size;
        Self {
            shared: Arc::new(PoolShared {
                device,
                gate,
                max_buffer,
                state: Mutex::new(PoolState::default()),
                next_id: AtomicU64::new(1),
                held: AtomicUsize::new(0),
                staging: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The most buffers one recording has held until its submit so far: a new recording
    /// reserves room for that many up front (a training step holds a few thousand).
    pub(crate) fn held_hint(&self) -> usize {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// Notes that a recording held `n` buffers until its submit.
    pub(crate) fn note_held(&self, n: usize) {
        self.shared.held.fetch_max(n, Ordering::Relaxed);
    }

    /// An empty host vector with room for at least `capacity` bytes, for staging a
    /// recording's kernel parameters: one handed back by an earlier recording when there
    /// is one, so a training step does not allocate (and fault in) a fresh one each time.
    pub(crate) fn staging(&self, capacity: usize) -> Vec<u8> {
        let spare = self
            .shared
            .staging
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut v = spare.unwrap_or_default();
        v.reserve(capacity);
        v
    }

    /// Takes a staging vector back (emptied; at most [`SPARE_STAGING`] are kept).
    pub(crate) fn return_staging(&self, mut v: Vec<u8>) {
        v.clear();
        let mut spare = self
            .shared
            .staging
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_STAGING {
            spare.push(v);
        }
    }

    /// Hands out a buffer of at least `bytes` bytes (contents undefined when reused).
    ///
    /// Creation errors (out of memory, over a limit) surface through wgpu's error scopes;
    /// callers check sizes against the device limits first.
    pub fn acquire(&self, kind: BufferKind, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes, self.shared.max_buffer);
        if let Some(reused) = self.take_free(kind, class) {
            return reused;
        }
        let (buffer, id) = self.create(kind, class);
        self.hand_out(buffer, id, kind, class)
    }

    /// [`BufferPool::acquire`] with a creation error returned (naming `during`) instead of
    /// left to wgpu's error handler: a new buffer is created inside error scopes; a reused
    /// one needs no device call, so a step whose buffers all come from the free lists
    /// pushes no scope at all.
    pub fn acquire_checked(
        &self,
        kind: BufferKind,
        bytes: u64,
        during: &str,
    ) -> crate::Result<PooledBuffer> {
        let class = size_class(bytes, self.shared.max_buffer);
        if let Some(reused) = self.take_free(kind, class) {
            return Ok(reused);
        }
        let scope = crate::runtime::pipeline::Scope::push(&self.shared.device);
        let (buffer, id) = self.create(kind, class);
        if let Some(message) = scope.pop() {
            return Err(crate::Error::Gpu {
                during: during.to_string(),
                message,
            });
        }
        Ok(self.hand_out(buffer, id, kind, class))
    }

    /// The lowest-id free buffer of the class handed out, if any, counted as reused (else
    /// counted as created, for the caller to create): one lock for the whole reuse.
    fn take_free(&self, kind: BufferKind, class: u64) -> Option<PooledBuffer> {
        let mut st = self.state();
        let Some((buffer, id)) = st
            .free
            .get_mut(&(kind, class))
            .and_then(FreeList::take_lowest)
        else {
            st.stats.created_count += 1;
            return None;
        };
        st.stats.cached_bytes -= class;
        st.stats.cached_count -= 1;
        st.stats.reused_count += 1;
        Some(self.live(&mut st, buffer, id, (kind, class)))
    }

    /// A new buffer of the class. The device call runs outside the pool's lock (a panic
    /// inside wgpu cannot poison it) and inside the device's gate (GL).
    fn create(&self, kind: BufferKind, class: u64) -> (wgpu::Buffer, u64) {
        let _gate = self.shared.gate.enter();
        let b = self.shared.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("capaboost pooled"),
            size: class,
            usage: kind.usage(),
            mapped_at_creation: false,
        });
        (b, self.shared.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn hand_out(
        &self,
        buffer: wgpu::Buffer,
        id: u64,
        kind: BufferKind,
        class: u64,
    ) -> PooledBuffer {
        let mut st = self.state();
        self.live(&mut st, buffer, id, (kind, class))
    }

    /// `buffer` handed out, counted live (under the pool's lock).
    fn live(
        &self,
        st: &mut PoolState,
        buffer: wgpu::Buffer,
        id: u64,
        (kind, class): (BufferKind, u64),
    ) -> PooledBuffer {
        st.stats.live_bytes += class;
        st.stats.live_count += 1;
        st.stats.peak_live_bytes = st.stats.peak_live_bytes.max(st.stats.live_bytes);
        PooledBuffer {
            buffer,
            id,
            class,
            kind,
            pool: Some(self.shared.clone()),
        }
    }

    /// Current statistics.
    pub fn stats(&self) -> PoolStats {
        self.state().stats
    }

    /// The pool's bookkeeping; a panic elsewhere while it was held does not poison it
    /// (every update leaves it consistent).
    fn state(&self) -> MutexGuard<'_, PoolState> {
        self.shared.state()
    }

    /// Destroys every free buffer (live ones are untouched). Called through
    /// [`crate::Gpu::trim`], which also drops the bind groups that name them.
    pub(crate) fn trim(&self) {
        let freed: Vec<_> = {
            let mut st = self.state();
            st.stats.cached_bytes = 0;
            st.stats.cached_count = 0;
            st.free
                .drain()
                .flat_map(|(_, bufs)| bufs.0.into_iter().map(|(_, b)| b))
                .collect()
        };
        let _gate = self.shared.gate.enter();
        for b in freed {
            b.destroy();
        }
    }
}

/// The free buffers of one class, sorted by descending id: the lowest id is the last, so
/// taking it and (usually) putting it back touch the end of a vector that keeps its
/// capacity (a tree map allocated and freed a node whenever a class emptied and refilled,
/// which a training step does for most classes).
#[derive(Default)]
struct FreeList(Vec<(u64, wgpu::Buffer)>);

impl FreeList {
    fn take_lowest(&mut self) -> Option<(wgpu::Buffer, u64)> {
        self.0.pop().map(|(id, b)| (b, id))
    }

    fn put(&mut self, id: u64, buffer: wgpu::Buffer) {
        let at = self.0.partition_point(|&(other, _)| other > id);
        self.0.insert(at, (id, buffer));
    }
}

/// A buffer on loan from the pool; it goes back to its free list when dropped.
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    id: u64,
    class: u64,
    kind: BufferKind,
    /// `None` for a buffer the host program owns: never returned to the pool.
    pool: Option<Arc<PoolShared>>,
}

/// Ids of adopted host buffers count down from the top so they never meet pool ids.
static NEXT_EXTERNAL_ID: AtomicU64 = AtomicU64::new(u64::MAX);

impl PooledBuffer {
    /// Wraps a buffer another program created; it is bound as it is and never pooled.
    pub fn external(buffer: wgpu::Buffer) -> Self {
        Self {
            class: buffer.size(),
            buffer,
            id: NEXT_EXTERNAL_ID.fetch_sub(1, Ordering::Relaxed),
            kind: BufferKind::Storage,
            pool: None,
        }
    }

    /// The wgpu buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// A unique id of the underlying buffer (stable across loans), used to key cached
    /// bind groups.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Allocated size in bytes (the size class, at least what was asked for).
    pub fn capacity(&self) -> u64 {
        self.class
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBuffer")
            .field("id", &self.id)
            .field("bytes", &self.class)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let Some(pool) = &self.pool else { return };
        let mut st = pool.state();
        st.stats.live_bytes -= self.class;
        st.stats.live_count -= 1;
        st.stats.cached_bytes += self.class;
        st.stats.cached_count += 1;
        st.free
            .entry((self.kind, self.class))
            .or_default()
            .put(self.id, self.buffer.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up_by_at_most_a_quarter() {
        let max = 1 << 40;
        assert_eq!(size_class(1, max), 256);
        assert_eq!(size_class(256, max), 256);
        assert_eq!(size_class(257, max), 320);
        assert_eq!(size_class(320, max), 320);
        assert_eq!(size_class(321, max), 384);
        assert_eq!(size_class(449, max), 512);
        assert_eq!(size_class(4 * 100_003, max), 458_752);
        for b in [1u64, 7, 300, 1000, 65_537, 400_012, 134_217_732, 1 << 33] {
            let c = size_class(b, max);
            assert!(c >= b && c.is_multiple_of(4), "{b} -> {c}");
            assert!(b < 256 || c as f64 <= b as f64 * 1.25 + 1.0, "{b} -> {c}");
        }
        // A class above the device's largest buffer falls back to the exact size.
        assert_eq!(size_class(1000, 1000), 1000);
        assert_eq!(size_class(998, 1000), 1000);
    }
}
