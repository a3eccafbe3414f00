//! Serialises this crate's calls into a device on wgpu's GL backend.
//!
//! wgpu's GLES backend guards its one GL context with a lock that a caller waits for at
//! most 6 s before panicking ("Could not lock adapter context. This is most-likely a
//! deadlock."), and it holds that lock for the whole of each call, including a queue
//! submit. On llvmpipe (Mesa's software GL) a compute dispatch runs to completion inside
//! the submit, so one submit of heavy work holds the lock for seconds: measured 5-9 s on
//! this project's 2-core machine with two test threads, which made the second thread's
//! `create_buffer` panic. Vulkan, Metal and DX12 submit asynchronously and have no such
//! lock.
//!
//! On GL every call this crate makes into the device (buffer creation, writes, pipeline
//! creation, submits, waits, mapping) first takes this gate, so a second thread waits on
//! the gate, without a time limit, instead of on wgpu's lock. A host program that shares
//! the device ([`crate::Gpu::from_wgpu`]) and calls wgpu itself from other threads should
//! hold [`crate::Gpu::gate`] around those calls too.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A per-device mutex on backends that need one (GL), nothing elsewhere.
#[derive(Clone, Debug, Default)]
pub struct Gate(Option<Arc<Mutex<()>>>);

/// Held while a call into the device runs; releases the gate on drop.
pub type GateGuard<'a> = Option<MutexGuard<'a, ()>>;

impl Gate {
    /// The gate a device of `backend` needs: a mutex on GL, none elsewhere.
    pub fn for_backend(backend: wgpu::Backend) -> Self {
        match backend {
            wgpu::Backend::Gl => Self(Some(Arc::new(Mutex::new(())))),
            _ => Self(None),
        }
    }

    /// Whether calls are serialised (GL).
    pub fn is_serialising(&self) -> bool {
        self.0.is_some()
    }

    /// Waits for the gate (no time limit) and holds it until the guard drops. A thread
    /// that panicked while holding it does not poison it: the gate guards no data.
    pub fn enter(&self) -> GateGuard<'_> {
        self.0
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
