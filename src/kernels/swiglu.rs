//! SwiGLU gating `out = silu(gate) * up` (shaders/swiglu.wgsl).
//!
//! Backward, with `s = sigmoid(gate)`: `dgate = dout * up * s * (1 + gate * (1 - s))`,
//! `dup = dout * gate * s`.

use super::add::{ensure_len, CountParams};
use super::ensure_distinct;
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

/// `dgate`, `dup` [n] from the forward's inputs `gate`, `up` [n] and `dout` [n];
/// both outputs are overwritten and must differ from the inputs.
#[allow(clippy::too_many_arguments)]
pub async fn swiglu_backward(
    batch: &mut Batch<'_>,
    gate: &Buffer,
    up: &Buffer,
    dout: &Buffer,
    dgate: &Buffer,
    dup: &Buffer,
    n: u32,
) -> Result<(), GpuError> {
    const NAME: &str = "swiglu_backward";
    for (name, buffer) in [("gate", gate), ("up", up), ("dout", dout), ("dgate", dgate), ("dup", dup)] {
        ensure_len(NAME, name, buffer, n as u64)?;
    }
    ensure_distinct(NAME, &[("gate", gate), ("up", up), ("dout", dout), ("dgate", dgate), ("dup", dup)])?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("swiglu", SOURCE, NAME)).await?;
    batch.dispatch(
        &pipeline,
        &CountParams { n, _pad: [0; 3] },
        &[gate.into(), up.into(), dout.into(), dgate.into(), dup.into()],
        grid(n.div_ceil(256)),
    )
}

/// CPU reference of [`swiglu_backward`] in f64: returns `(dgate, dup)`.
pub fn swiglu_backward_cpu(gate: &[f32], up: &[f32], dout: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dgate = Vec::with_capacity(gate.len());
    let mut dup = Vec::with_capacity(gate.len());
    for ((&g, &u), &d) in gate.iter().zip(up).zip(dout) {
        let (g, u, d) = (g as f64, u as f64, d as f64);
        let s = 1.0 / (1.0 + (-g).exp());
        dgate.push((d * u * s * (1.0 + g * (1.0 - s))) as f32);
        dup.push((d * g * s) as f32);
    }
    (dgate, dup)
}

/// CPU reference of [`swiglu_forward`].
pub fn swiglu_forward_cpu(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}
