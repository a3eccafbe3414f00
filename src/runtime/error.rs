//! The crate's error type: every failure a user can cause comes back as one of these.

use std::fmt;

/// Everything that can go wrong in capaboost, as a value the caller can match on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the request; `tried` says which backends and filters were used
    /// and which adapters were seen.
    #[error("no GPU adapter found: {tried}")]
    NoAdapter {
        /// What was tried, in words.
        tried: String,
    },
    /// The adapter was found but the device could not be created.
    #[error("could not create a device on adapter '{adapter}': {message}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        message: String,
    },
    /// An environment variable holds a value the crate does not understand.
    #[error("environment variable {name}={value:?} is invalid: {reason}")]
    BadEnv {
        /// Variable name.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A tensor's shape does not fit its data or the operation.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A tensor or buffer exceeds what the device can bind or allocate.
    #[error(
        "tensor of {bytes} bytes exceeds the device limit {limit_name} = {limit} bytes \
         (adapter '{adapter}')"
    )]
    TooLarge {
        /// Bytes requested.
        bytes: u64,
        /// The limit that was hit (e.g. `max_storage_buffer_binding_size`).
        limit_name: &'static str,
        /// Its value.
        limit: u64,
        /// Adapter name.
        adapter: String,
    },
    /// A WGSL shader failed to parse or validate, or a pipeline could not be created.
    #[error("shader '{shader}' entry point '{entry}': {message}")]
    Shader {
        /// Shader file stem.
        shader: String,
        /// Entry point.
        entry: String,
        /// The compiler's message.
        message: String,
    },
    /// wgpu reported a validation, out-of-memory or internal error while recording or
    /// submitting work.
    #[error("GPU error during {during}: {message}")]
    Gpu {
        /// What the crate was doing.
        during: String,
        /// wgpu's message.
        message: String,
    },
    /// Mapping a buffer for readback failed or the device was lost while waiting.
    #[error("readback failed: {0}")]
    Readback(String),
    /// An invalid argument that is not a shape (a density outside (0, 1], say).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file that exists but cannot be used: corrupt, wrong format, a tensor missing or of
    /// the wrong dtype or shape. The message names the tensor.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `n` as a u32 kernel index, or an error naming `what`: the kernels index with u32.
pub(crate) fn index_u32(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!("{what}: {n} exceeds the kernels' u32 indexing"))
    })
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A shape error built from any displayable description.
    pub fn shape(msg: impl fmt::Display) -> Self {
        Error::Shape(msg.to_string())
    }
}
