//! Residual add `y += x` (shaders/add.wgsl), and the argument checks the other
//! kernel modules of this family share.

use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/add.wgsl");

/// Mirrors `Params` in add.wgsl and swiglu.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CountParams {
    pub n: u32,
    pub _pad: [u32; 3],
}

/// Fails unless `buffer` holds at least `count` 4-byte values. Pooled buffers may be
/// larger than asked for, so only a lower bound is checked.
pub(crate) fn ensure_len(kernel: &'static str, name: &str, buffer: &Buffer, count: u64) -> Result<(), GpuError> {
    let needed = count * 4;
    if buffer.size() < needed {
        return Err(GpuError::shape(
            kernel,
            format!("`{name}` (buffer `{}`) has {} bytes, needs {needed}", buffer.label(), buffer.size()),
        ));
    }
    Ok(())
}

/// `y[i] += x[i]` for `i < n`.
pub async fn add_forward(batch: &mut Batch<'_>, x: &Buffer, y: &Buffer, n: u32) -> Result<(), GpuError> {
    const NAME: &str = "add_forward";
    ensure_len(NAME, "x", x, n as u64)?;
    ensure_len(NAME, "y", y, n as u64)?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("add", SOURCE, NAME)).await?;
    batch.dispatch(&pipeline, &CountParams { n, _pad: [0; 3] }, &[x.into(), y.into()], grid(n.div_ceil(256)))
}

/// CPU reference of [`add_forward`].
pub fn add_forward_cpu(x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}
