//! `Tensor`: f32, contiguous row-major, backed by a pooled GPU buffer.

use std::sync::Arc;

use crate::runtime::error::{Error, Result};
use crate::runtime::gpu::Gpu;
use crate::runtime::pool::{BufferKind, PooledBuffer};
use crate::runtime::recorder::{Binding, Recorder};

/// An f32 tensor on the GPU: a shape and a pooled buffer, contiguous and row-major.
///
/// Cloning is cheap and shares the storage (like a view of the whole tensor).
///
/// ```
/// # fn main() -> capaboost::Result<()> {
/// # let Some(gpu) = capaboost::Gpu::new_or_skip()? else { return Ok(()) };
/// use capaboost::Tensor;
/// let t = Tensor::from_slice(&gpu, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
/// assert!(Tensor::from_slice(&gpu, &[1.0], &[2, 3]).is_err()); // shape must fit the data
/// let flat = t.reshape(&[6])?; // the same storage
/// assert_eq!(flat.storage_id(), t.storage_id());
/// assert_eq!(flat.to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// assert_eq!(Tensor::full(&gpu, &[2], 0.5)?.to_vec()?, vec![0.5, 0.5]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tensor {
    gpu: Gpu,
    buffer: Arc<PooledBuffer>,
    shape: Shape,
}

/// A tensor's shape, inline up to four dimensions: a training step makes and reshapes
/// hundreds of tensors, and a heap block per shape was a malloc and a free each.
type Shape = smallvec::SmallVec<[usize; 4]>;

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("buffer", &self.buffer.id())
            .finish()
    }
}

/// Values per `write_buffer` call in [`Tensor::full`] (1 MiB).
const FILL_BLOCK: usize = 1 << 18;

fn numel_of(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::shape(format!("shape {shape:?} overflows usize")))
}

/// An empty host vector with room for exactly the values of an f32 tensor of `shape`, to
/// fill and upload. The element count is checked for overflow and against the device's
/// binding limit first (a tensor the device could not hold is never built on the host),
/// and the reservation is fallible: a size from user input is an error, never an abort.
pub fn host_buffer(gpu: &Gpu, shape: &[usize]) -> Result<Vec<f32>> {
    let numel = numel_of(shape)?;
    let bytes = (numel as u64)
        .checked_mul(4)
        .ok_or_else(|| Error::shape(format!("shape {shape:?} is too large")))?;
    gpu.check_binding_size(bytes)?;
    let mut v = Vec::new();
    v.try_reserve_exact(numel).map_err(|e| {
        Error::InvalidArgument(format!(
            "cannot allocate {bytes} bytes on the host for a tensor of shape {shape:?}: {e}"
        ))
    })?;
    Ok(v)
}

impl Tensor {
    /// An uninitialised tensor (contents undefined), for kernels to write into.
    pub fn empty(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        let numel = numel_of(shape)?;
        let bytes = (numel as u64)
            .checked_mul(4)
            .ok_or_else(|| Error::shape(format!("shape {shape:?} is too large")))?;
        gpu.check_binding_size(bytes)?;
        let buffer =
            gpu.pool()
                .acquire_checked(BufferKind::Storage, bytes, "allocating a tensor")?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer: Arc::new(buffer),
            shape: Shape::from_slice(shape),
        })
    }

    /// Uploads `data` as a tensor of `shape`; the element count must match.
    pub fn from_slice(gpu: &Gpu, data: &[f32], shape: &[usize]) -> Result<Self> {
        let numel = numel_of(shape)?;
        if numel != data.len() {
            return Err(Error::shape(format!(
                "shape {shape:?} holds {numel} elements but {} were given",
                data.len()
            )));
        }
        let t = Self::empty(gpu, shape)?;
        if !data.is_empty() {
            gpu.write_buffer(t.buffer.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(t)
    }

    /// Adopts a buffer the host program owns as a tensor of `shape` (no copy). The buffer
    /// needs `STORAGE` usage (and `COPY_SRC` for [`Tensor::to_vec`]); the tensor is its first
    /// `numel * 4` bytes. Kernels read and write it in place.
    pub fn from_buffer(gpu: &Gpu, buffer: wgpu::Buffer, shape: &[usize]) -> Result<Self> {
        let numel = numel_of(shape)?;
        let bytes = numel as u64 * 4;
        if !buffer.usage().contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::InvalidArgument(format!(
                "buffer usage {:?} lacks STORAGE",
                buffer.usage()
            )));
        }
        if buffer.size() < bytes {
            return Err(Error::shape(format!(
                "buffer of {} bytes is too small for shape {shape:?} ({bytes} bytes)",
                buffer.size()
            )));
        }
        gpu.check_binding_size(bytes)?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer: Arc::new(PooledBuffer::external(buffer)),
            shape: Shape::from_slice(shape),
        })
    }

    /// A tensor of zeros (records a clear into `rec`).
    pub fn zeros_in(rec: &mut Recorder, shape: &[usize]) -> Result<Self> {
        let t = Self::empty(rec.gpu(), shape)?;
        rec.clear(&t);
        Ok(t)
    }

    /// A tensor of zeros, submitted at once.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        gpu.run(|rec| Self::zeros_in(rec, shape))
    }

    /// A tensor filled with `value`. Like [`Tensor::write`], the values are queued with
    /// `wgpu::Queue::write_buffer` and land before the next submit.
    pub fn full(gpu: &Gpu, shape: &[usize], value: f32) -> Result<Self> {
        let t = Self::empty(gpu, shape)?;
        // One block of at most FILL_BLOCK values, written as often as the tensor needs:
        // no host copy of a large tensor.
        let block = vec![value; t.numel().min(FILL_BLOCK)];
        let block_bytes = (block.len() * 4) as u64;
        let mut offset = 0;
        while offset < t.bytes() {
            let len = block_bytes.min(t.bytes() - offset) as usize;
            gpu.write_buffer(
                t.buffer.buffer(),
                offset,
                &bytemuck::cast_slice(&block)[..len],
            );
            offset += len as u64;
        }
        Ok(t)
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Size of the data in bytes.
    pub fn bytes(&self) -> u64 {
        self.numel() as u64 * 4
    }

    /// The GPU the tensor lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The underlying wgpu buffer (may be larger than the tensor: pooled size class).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.buffer()
    }

    /// Identity of the underlying storage: equal for clones and reshapes of one tensor.
    pub fn storage_id(&self) -> u64 {
        self.buffer.id()
    }

    /// This tensor as a dispatch binding.
    pub fn binding(&self) -> Binding {
        Binding::new(self.buffer.clone(), self.bytes())
    }

    /// The same storage under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let numel = numel_of(shape)?;
        if numel != self.numel() {
            return Err(Error::shape(format!(
                "cannot reshape {:?} ({} elements) to {shape:?} ({numel} elements)",
                self.shape,
                self.numel()
            )));
        }
        Ok(Self {
            gpu: self.gpu.clone(),
            buffer: self.buffer.clone(),
            shape: Shape::from_slice(shape),
        })
    }

    /// Overwrites the contents from `data` (same element count). Like
    /// `wgpu::Queue::write_buffer`, the write lands before the next submit.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(Error::shape(format!(
                "tensor of shape {:?} holds {} elements but {} were given",
                self.shape,
                self.numel(),
                data.len()
            )));
        }
        if !data.is_empty() {
            self.gpu
                .write_buffer(self.buffer.buffer(), 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Reads the tensor back to the host, blocking until all submitted work is done.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let raw = read_buffer(&self.gpu, self.buffer.buffer(), self.bytes())?;
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }
}

/// Reads several tensors back with one copy pass and one wait (one readback, however
/// many tensors), each as its own vector, in order.
pub fn read_together(gpu: &Gpu, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
    let total: u64 = tensors.iter().map(|t| t.bytes()).sum();
    if total == 0 {
        return Ok(tensors.iter().map(|_| Vec::new()).collect());
    }
    let staging = gpu.scoped("allocating a readback buffer", || {
        gpu.pool().acquire(BufferKind::Readback, total)
    })?;
    gpu.scoped("copying buffers for readback", || {
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("capaboost readback"),
            });
        let mut at = 0;
        for t in tensors {
            if t.bytes() > 0 {
                enc.copy_buffer_to_buffer(t.buffer.buffer(), 0, staging.buffer(), at, t.bytes());
            }
            at += t.bytes();
        }
        gpu.submit(enc.finish());
    })?;
    let raw = map_read(gpu, staging.buffer(), total)?;
    let mut at = 0;
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let end = at + t.bytes() as usize;
        out.push(bytemuck::pod_collect_to_vec(&raw[at..end]));
        at = end;
    }
    Ok(out)
}

/// Uploads raw bytes into a pooled storage buffer (for integer data such as mask words).
pub(crate) fn upload_bytes(gpu: &Gpu, data: &[u8]) -> Result<Arc<PooledBuffer>> {
    let bytes = (data.len() as u64).div_ceil(4) * 4;
    gpu.check_binding_size(bytes)?;
    let buffer = gpu
        .pool()
        .acquire_checked(BufferKind::Storage, bytes, "allocating a buffer")?;
    if !data.is_empty() {
        gpu.write_buffer(buffer.buffer(), 0, data);
    }
    Ok(Arc::new(buffer))
}

/// Copies the first `bytes` bytes of a storage buffer to the host (blocking).
pub(crate) fn read_buffer(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let staging = gpu.scoped("allocating a readback buffer", || {
        gpu.pool().acquire(BufferKind::Readback, bytes)
    })?;
    gpu.scoped("copying a buffer for readback", || {
        let mut enc = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("capaboost readback"),
            });
        enc.copy_buffer_to_buffer(buffer, 0, staging.buffer(), 0, bytes);
        gpu.submit(enc.finish());
    })?;
    map_read(gpu, staging.buffer(), bytes)
}

/// Maps the first `bytes` bytes of a MAP_READ buffer, waits, and copies them out.
pub(crate) fn map_read(gpu: &Gpu, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let _gate = gpu.gate();
        buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
    }
    gpu.wait()?;
    rx.recv()
        .map_err(|_| Error::Readback("map callback never ran".into()))?
        .map_err(|e| Error::Readback(e.to_string()))?;
    let out = {
        let view = buffer
            .get_mapped_range(0..bytes)
            .map_err(|e| Error::Readback(e.to_string()))?;
        view.to_vec()
    };
    let _gate = gpu.gate();
    buffer.unmap();
    Ok(out)
}

/// A u32 tensor on the GPU (token ids, labels), contiguous row-major.
#[derive(Clone)]
pub struct Indices {
    gpu: Gpu,
    buffer: Arc<PooledBuffer>,
    shape: Shape,
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indices")
            .field("shape", &self.shape)
            .finish()
    }
}

impl Indices {
    /// Uploads `data` as indices of `shape`; the element count must match.
    pub fn from_slice(gpu: &Gpu, data: &[u32], shape: &[usize]) -> Result<Self> {
        let numel = numel_of(shape)?;
        if numel != data.len() {
            return Err(Error::shape(format!(
                "shape {shape:?} holds {numel} indices but {} were given",
                data.len()
            )));
        }
        let buffer = upload_bytes(gpu, bytemuck::cast_slice(data))?;
        Ok(Self {
            gpu: gpu.clone(),
            buffer,
            shape: Shape::from_slice(shape),
        })
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The GPU it lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// As a dispatch binding.
    pub fn binding(&self) -> Binding {
        Binding::new(self.buffer.clone(), self.numel() as u64 * 4)
    }

    /// Reads the indices back (blocking).
    pub fn to_vec(&self) -> Result<Vec<u32>> {
        let raw = read_buffer(&self.gpu, self.buffer.buffer(), self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&raw))
    }
}
