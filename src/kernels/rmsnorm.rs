//! RMSNorm (shaders/rmsnorm.wgsl): `y = x * rstd * w`, `rstd = 1/sqrt(mean(x²) + eps)`
//! per row; rstd is written for the backward.
//!
//! Backward (docs/training-math.md), with `g = dy * w`:
//! `dx = rstd * (g - x * rstd² * mean(g * x))`. No `dw`: the norm weights are frozen
//! in LoRA training, so only the gradient flowing through to `x` is computed.

use super::add::ensure_len;
use super::ensure_distinct;
use crate::gpu::{batch::grid, Batch, Buffer, Gpu, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/rmsnorm.wgsl");

/// How a row's sum is computed (rmsnorm.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKernel {
    /// One 256-lane workgroup per row, a tree sum through workgroup memory.
    Workgroup,
    /// One lane per row, 64 rows per workgroup, no barrier: CPU devices, where a
    /// barrier switches between the workgroup's lanes.
    Lanes,
}

impl RowKernel {
    /// The faster shape on this device for `rows` rows. A single row (decoding) keeps
    /// the workgroup on CPU devices too: one lane alone over the row measured 0.16 ms
    /// on llvmpipe against 0.1 ms for the tree; from two rows on the lanes win.
    pub fn choose(gpu: &Gpu, rows: u32) -> RowKernel {
        if gpu.is_software() && rows > 1 {
            RowKernel::Lanes
        } else {
            RowKernel::Workgroup
        }
    }

    fn kernel(self, entry: &'static str) -> Kernel {
        let lanes = self == RowKernel::Lanes;
        Kernel::new("rmsnorm", SOURCE, entry).with("LANES", lanes).with("WG", if lanes { "64u" } else { "256u" })
    }

    fn groups(self, rows: u32) -> [u32; 3] {
        match self {
            RowKernel::Workgroup => grid(rows),
            RowKernel::Lanes => grid(rows.div_ceil(64)),
        }
    }
}

/// Mirrors `Params` in rmsnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    /// Backward only: 1 adds onto `dx`, 0 overwrites it.
    accumulate: u32,
}

/// Normalises each row of `x` [rows, dim] into `y` [rows, dim] with `weight` [dim];
/// writes `rstd` [rows]. `x` and `y` must be different buffers.
#[allow(clippy::too_many_arguments)]
pub async fn rmsnorm_forward(
    batch: &mut Batch<'_>,
    x: &Buffer,
    weight: &Buffer,
    y: &Buffer,
    rstd: &Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<(), GpuError> {
    let kernel = RowKernel::choose(batch.gpu(), rows);
    rmsnorm_forward_with(batch, kernel, x, weight, y, rstd, rows, dim, eps).await
}

/// [`rmsnorm_forward`] with the given kernel shape.
#[allow(clippy::too_many_arguments)]
pub async fn rmsnorm_forward_with(
    batch: &mut Batch<'_>,
    kernel: RowKernel,
    x: &Buffer,
    weight: &Buffer,
    y: &Buffer,
    rstd: &Buffer,
    rows: u32,
    dim: u32,
    eps: f32,
) -> Result<(), GpuError> {
    const NAME: &str = "rmsnorm_forward";
    let n = rows as u64 * dim as u64;
    ensure_len(NAME, "x", x, n)?;
    ensure_len(NAME, "weight", weight, dim as u64)?;
    ensure_len(NAME, "y", y, n)?;
    ensure_len(NAME, "rstd", rstd, rows as u64)?;
    if eps.is_nan() || eps < 0.0 {
        return Err(GpuError::shape(NAME, format!("eps {eps} must be >= 0")));
    }
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&kernel.kernel(NAME)).await?;
    batch.dispatch(
        &pipeline,
        &Params { rows, dim, eps, accumulate: 0 },
        &[x.into(), weight.into(), y.into(), rstd.into()],
        kernel.groups(rows),
    )
}

/// `dx` [rows, dim] from `x` [rows, dim], `weight` [dim], the forward's `rstd` [rows]
/// and `dy` [rows, dim]; with `accumulate` the result is added onto `dx` (the residual
/// stream's gradient), else it overwrites it. `dx` must differ from the inputs.
#[allow(clippy::too_many_arguments)]
pub async fn rmsnorm_backward(
    batch: &mut Batch<'_>,
    x: &Buffer,
    weight: &Buffer,
    rstd: &Buffer,
    dy: &Buffer,
    dx: &Buffer,
    rows: u32,
    dim: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    let kernel = RowKernel::choose(batch.gpu(), rows);
    rmsnorm_backward_with(batch, kernel, x, weight, rstd, dy, dx, rows, dim, accumulate).await
}

/// [`rmsnorm_backward`] with the given kernel shape.
#[allow(clippy::too_many_arguments)]
pub async fn rmsnorm_backward_with(
    batch: &mut Batch<'_>,
    kernel: RowKernel,
    x: &Buffer,
    weight: &Buffer,
    rstd: &Buffer,
    dy: &Buffer,
    dx: &Buffer,
    rows: u32,
    dim: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    const NAME: &str = "rmsnorm_backward";
    let n = rows as u64 * dim as u64;
    ensure_len(NAME, "x", x, n)?;
    ensure_len(NAME, "weight", weight, dim as u64)?;
    ensure_len(NAME, "rstd", rstd, rows as u64)?;
    ensure_len(NAME, "dy", dy, n)?;
    ensure_len(NAME, "dx", dx, n)?;
    ensure_distinct(NAME, &[("x", x), ("weight", weight), ("rstd", rstd), ("dy", dy), ("dx", dx)])?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&kernel.kernel(NAME)).await?;
    batch.dispatch(
        &pipeline,
        &Params { rows, dim, eps: 0.0, accumulate: accumulate as u32 },
        &[x.into(), weight.into(), dy.into(), rstd.into(), dx.into()],
        kernel.groups(rows),
    )
}

/// CPU reference of [`rmsnorm_backward`] (without accumulation), in f64 from the given
/// `rstd`.
pub fn rmsnorm_backward_cpu(x: &[f32], weight: &[f32], rstd: &[f32], dy: &[f32], rows: usize, dim: usize) -> Vec<f32> {
    let mut dx = vec![0.0; rows * dim];
    for (t, &r) in rstd.iter().enumerate().take(rows) {
        let r = r as f64;
        let base = t * dim;
        let gx: f64 = (0..dim).map(|d| dy[base + d] as f64 * weight[d] as f64 * x[base + d] as f64).sum();
        let c = r * r * gx / dim as f64;
        for d in 0..dim {
            dx[base + d] = (r * (dy[base + d] as f64 * weight[d] as f64 - x[base + d] as f64 * c)) as f32;
        }
    }
    dx
}

/// CPU reference of [`rmsnorm_forward`]: returns `(y, rstd)`.
pub fn rmsnorm_forward_cpu(x: &[f32], weight: &[f32], rows: usize, dim: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0.0; rows * dim];
    let mut rstd = vec![0.0; rows];
    for t in 0..rows {
        let row = &x[t * dim..(t + 1) * dim];
        let mean = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
        let r = (1.0 / (mean + eps as f64).sqrt()) as f32;
        rstd[t] = r;
        for d in 0..dim {
            y[t * dim + d] = row[d] * r * weight[d];
        }
    }
    (y, rstd)
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(super::super::wgsl_struct_bytes(super::SOURCE, "Params"), Some(std::mem::size_of::<super::Params>()));
    }
}
