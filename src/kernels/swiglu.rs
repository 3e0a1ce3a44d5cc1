//! SwiGLU gating `out = silu(gate) * up` (shaders/swiglu.wgsl).

use super::add::{ensure_len, CountParams};
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/swiglu.wgsl");

/// `out = silu(gate) * up` elementwise over `n = rows * ffn` values.
pub async fn swiglu_forward(
    batch: &mut Batch<'_>,
    gate: &Buffer,
    up: &Buffer,
    out: &Buffer,
    n: u32,
) -> Result<(), GpuError> {
    const NAME: &str = "swiglu_forward";
    ensure_len(NAME, "gate", gate, n as u64)?;
    ensure_len(NAME, "up", up, n as u64)?;
    ensure_len(NAME, "out", out, n as u64)?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("swiglu", SOURCE, NAME)).await?;
    batch.dispatch(
        &pipeline,
        &CountParams { n, _pad: [0; 3] },
        &[gate.into(), up.into(), out.into()],
        grid(n.div_ceil(256)),
    )
}

/// CPU reference of [`swiglu_forward`].
pub fn swiglu_forward_cpu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}
