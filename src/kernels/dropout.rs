//! Inverted dropout with a mask regenerated from a seed (shaders/dropout.wgsl): LoRA
//! dropout on a projection's input, and its backward on the input gradient.

use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

use super::add::ensure_len;
use super::ensure_distinct;

const SOURCE: &str = include_str!("../../shaders/dropout.wgsl");

/// Mirrors `Params` in dropout.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    seed: u32,
    threshold: u32,
    accumulate: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// `out (+)= keep · x / (1 − p)` over `n` values, element i kept unless
/// [`dropped`]`(seed, i, p)`; `accumulate` adds onto `out`. The backward of a dropout
/// is the same call on the gradient with the same seed.
pub async fn dropout_forward(
    batch: &mut Batch<'_>,
    x: &Buffer,
    out: &Buffer,
    n: u32,
    p: f32,
    seed: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    const NAME: &str = "dropout_forward";
    if !(0.0..1.0).contains(&p) {
        return Err(GpuError::shape(NAME, format!("dropout probability {p} must be in [0, 1)")));
    }
    ensure_len(NAME, "x", x, n as u64)?;
    ensure_len(NAME, "out", out, n as u64)?;
    ensure_distinct(NAME, &[("x", x), ("out", out)])?;
    if n == 0 {
        return Ok(());
    }
    let params = Params { n, seed, threshold: threshold(p), accumulate: accumulate as u32, scale: 1.0 / (1.0 - p), _pad: [0; 3] };
    let pipeline = batch.gpu().pipeline(&Kernel::new("dropout", SOURCE, NAME)).await?;
    batch.dispatch(&pipeline, &params, &[x.into(), out.into()], grid(n.div_ceil(256)))
}

fn threshold(p: f32) -> u32 {
    (p as f64 * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// Whether element `i` is dropped: the same hash as the shader.
pub fn dropped(seed: u32, i: u32, p: f32) -> bool {
    pcg_hash(i.wrapping_add(pcg_hash(seed))) < threshold(p)
}

/// CPU reference of [`dropout_forward`] (without accumulation).
pub fn dropout_forward_cpu(x: &[f32], p: f32, seed: u32) -> Vec<f32> {
    let scale = 1.0 / (1.0 - p);
    x.iter().enumerate().map(|(i, &v)| if dropped(seed, i as u32, p) { 0.0 } else { v * scale }).collect()
}
