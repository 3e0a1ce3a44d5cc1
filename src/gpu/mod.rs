//! GPU runtime: one device, the buffers it owns, a pipeline cache and batched dispatch.
//!
//! Everything here works under the WebGPU default limits (128 MiB per binding, 256 MiB
//! per buffer) on both hosts, and never blocks: readback is `map_async` awaited through
//! a channel, so the same code runs in a browser worker and natively.

pub mod batch;
mod buffer;
mod context;
mod pipeline;
mod profile;
mod self_test;

pub use batch::{Batch, Binding};
pub use buffer::{Buffer, MemoryStats};
pub use context::{Gpu, GpuOptions};
pub use pipeline::{Kernel, Pipeline};
pub use profile::{KernelTime, Profile};
pub use self_test::{scale_kernel, ScaleParams};

/// Errors of the GPU runtime. Each names the buffer, shader or request involved.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU adapter found ({0}); natively install mesa-vulkan-drivers, in Chrome enable WebGPU")]
    NoAdapter(String),
    #[error("the GPU refused the device request: {0}")]
    RequestDevice(String),
    #[error("shader `{kernel}` failed to compile: {message}")]
    Shader { kernel: String, message: String },
    #[error("buffer `{label}` needs {size} bytes but one binding may hold at most {limit} bytes")]
    TooLarge { label: String, size: u64, limit: u64 },
    #[error("out of GPU memory while allocating `{label}` ({size} bytes); try fewer sequences per step or shorter ones (CLI: --batch, --seq-len, --pass-tokens, --recompute)")]
    OutOfMemory { label: String, size: u64 },
    #[error("reading back `{label}` failed: {message}")]
    Readback { label: String, message: String },
    #[error("GPU validation error: {0}")]
    Validation(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("bad kernel arguments for `{kernel}`: {message}")]
    Shape { kernel: &'static str, message: String },
}

impl GpuError {
    /// A shape error for `kernel`; kernels check their arguments before dispatch with it.
    pub fn shape(kernel: &'static str, message: impl Into<String>) -> Self {
        GpuError::Shape { kernel, message: message.into() }
    }
}
