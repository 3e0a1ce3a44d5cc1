//! RMSNorm (shaders/rmsnorm.wgsl): `y = x * rstd * w`, `rstd = 1/sqrt(mean(x²) + eps)`
//! per row; rstd is written for the backward.

use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/rmsnorm.wgsl");

/// Mirrors `Params` in rmsnorm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
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
    let pipeline = batch.gpu().pipeline(&Kernel::new("rmsnorm", SOURCE, NAME)).await?;
    batch.dispatch(
        &pipeline,
        &Params { rows, dim, eps, _pad: 0 },
        &[x.into(), weight.into(), y.into(), rstd.into()],
        grid(rows),
    )
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
