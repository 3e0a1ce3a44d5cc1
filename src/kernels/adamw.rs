//! AdamW with decoupled weight decay and bias correction over a flat f32 parameter
//! buffer, and the global gradient norm for clipping (shaders/adamw.wgsl), computed as
//! `torch.optim.AdamW` and `torch.nn.utils.clip_grad_norm_` do:
//!
//! `g = c · grad` with `c = min(1, max_norm / (‖grad‖ + 1e-6))` when clipping;
//! `θ ← θ(1 − lr·λ)`; `m ← β1·m + (1 − β1)·g`; `v ← β2·v + (1 − β2)·g²`;
//! `θ ← θ − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)`.
//!
//! A step: [`grad_norm_sq`] over every gradient buffer (accumulating into one `[1]`
//! buffer), then [`adamw_step`] on each parameter buffer with that buffer as `clip`; the
//! norm never leaves the GPU (read it back for logging when convenient).

use super::add::ensure_len;
use super::ensure_distinct;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/adamw.wgsl");

/// Elements one workgroup of the first `grad_norm_sq` pass sums (64 per thread).
const NORM_SPAN: u32 = 256 * 64;

/// Mirrors `Params` in adamw.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    zero_grad: u32,
    clip: u32,
    span: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    max_norm: f32,
    accumulate: u32,
    square: u32,
    _pad: [u32; 2],
}

/// The optimizer's hyperparameters (the learning rate comes per step, from the schedule).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamW {
    /// transformers' `TrainingArguments` defaults, with its weight decay of 0.
    fn default() -> Self {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// One optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// 1 for the first step (bias correction).
    pub step: u32,
    pub lr: f32,
    /// Set the gradient to 0 after using it, ready for the next accumulation.
    pub zero_grad: bool,
}

/// The buffers one [`adamw_step`] updates, each f32 [n]; `m` and `v` start at zero.
pub struct AdamWBuffers<'a> {
    pub param: &'a Buffer,
    pub grad: &'a Buffer,
    pub m: &'a Buffer,
    pub v: &'a Buffer,
}

/// Global-norm clipping: `norm_sq` [1] holds Σ grad² over all parameters (from
/// [`grad_norm_sq`]); gradients are scaled by `min(1, max_norm / (√norm_sq + 1e-6))`.
#[derive(Clone, Copy)]
pub struct Clip<'a> {
    pub norm_sq: &'a Buffer,
    pub max_norm: f32,
}

/// One AdamW step over the first `n` values of the buffers.
pub async fn adamw_step(
    batch: &mut Batch<'_>,
    buffers: AdamWBuffers<'_>,
    clip: Option<Clip<'_>>,
    n: u32,
    config: &AdamW,
    step: &AdamWStep,
) -> Result<(), GpuError> {
    const NAME: &str = "adamw_step";
    let AdamWBuffers { param, grad, m, v } = buffers;
    for (name, buffer) in [("param", param), ("grad", grad), ("m", m), ("v", v)] {
        ensure_len(NAME, name, buffer, n as u64)?;
    }
    ensure_distinct(NAME, &[("param", param), ("grad", grad), ("m", m), ("v", v)])?;
    if step.step == 0 {
        return Err(GpuError::shape(NAME, "steps count from 1 (bias correction divides by 1 − β1^step)"));
    }
    let AdamW { beta1, beta2, eps, weight_decay } = *config;
    let ok = (0.0..1.0).contains(&beta1)
        && (0.0..1.0).contains(&beta2)
        && eps > 0.0
        && weight_decay >= 0.0
        && step.lr.is_finite()
        && step.lr >= 0.0;
    if !ok {
        return Err(GpuError::shape(NAME, format!("bad hyperparameters {config:?}, lr {}", step.lr)));
    }
    if let Some(c) = clip {
        ensure_len(NAME, "norm_sq", c.norm_sq, 1)?;
        if !(c.max_norm > 0.0 && c.max_norm.is_finite()) {
            return Err(GpuError::shape(NAME, format!("max_norm {} must be positive", c.max_norm)));
        }
        ensure_distinct(NAME, &[("norm_sq", c.norm_sq), ("param", param), ("grad", grad), ("m", m), ("v", v)])?;
    }
    if n == 0 {
        return Ok(());
    }
    let (bc1, bc2) = bias_corrections(beta1, beta2, step.step);
    let params = Params {
        n,
        zero_grad: step.zero_grad as u32,
        clip: clip.is_some() as u32,
        lr: step.lr,
        beta1,
        beta2,
        eps,
        weight_decay,
        step_size: (step.lr as f64 / bc1) as f32,
        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
        max_norm: clip.map_or(0.0, |c| c.max_norm),
        ..Params::default()
    };
    // Without clipping binding 5 is never read, but it needs a buffer that is not
    // already bound for writing.
    let unused = match clip {
        Some(_) => None,
        None => Some(batch.gpu().scratch("adamw_no_clip", 4)?),
    };
    let norm_sq = match (clip, &unused) {
        (Some(c), _) => c.norm_sq,
        (None, Some(b)) => b,
        (None, None) => return Err(GpuError::shape(NAME, "no buffer for binding 5")),
    };
    let pipeline = batch.gpu().pipeline(&Kernel::new("adamw", SOURCE, NAME)).await?;
    batch.dispatch(
        &pipeline,
        &params,
        &[param.into(), grad.into(), m.into(), v.into(), norm_sq.into()],
        grid(n.div_ceil(256)),
    )?;
    batch.retain(unused);
    Ok(())
}

/// `(1 − β1ᵗ, 1 − β2ᵗ)` in f64.
fn bias_corrections(beta1: f32, beta2: f32, step: u32) -> (f64, f64) {
    let t = step.min(i32::MAX as u32) as i32;
    (1.0 - (beta1 as f64).powi(t), 1.0 - (beta2 as f64).powi(t))
}

/// `out[0] = Σ grad[i]²` over `i < n` (or `+=` with `accumulate`, to sum several
/// gradient buffers into one norm), in a fixed reduction order: deterministic.
pub async fn grad_norm_sq(
    batch: &mut Batch<'_>,
    grad: &Buffer,
    out: &Buffer,
    n: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    const NAME: &str = "grad_norm_sq";
    ensure_len(NAME, "grad", grad, n as u64)?;
    ensure_len(NAME, "out", out, 1)?;
    ensure_distinct(NAME, &[("grad", grad), ("out", out)])?;
    let pipeline = batch.gpu().pipeline(&Kernel::new("adamw", SOURCE, NAME)).await?;
    if n == 0 {
        let params = Params { n, span: NORM_SPAN, accumulate: accumulate as u32, square: 1, ..Params::default() };
        return batch.dispatch(&pipeline, &params, &[grad.into(), out.into()], [1, 1, 1]);
    }
    let groups = n.div_ceil(NORM_SPAN);
    let partials = batch.gpu().scratch("grad_norm_partials", 4 * groups as u64)?;
    let first = Params { n, span: NORM_SPAN, square: 1, ..Params::default() };
    batch.dispatch(&pipeline, &first, &[grad.into(), (&partials).into()], grid(groups))?;
    // groups <= 2^25 / 2^14 = 2048 partials: 8 loop steps per thread in one workgroup.
    let second = Params { n: groups, span: groups, accumulate: accumulate as u32, ..Params::default() };
    batch.dispatch(&pipeline, &second, &[(&partials).into(), out.into()], [1, 1, 1])?;
    batch.retain([partials]);
    Ok(())
}

/// CPU reference of [`adamw_step`], the same operations in the same order in f32 (as
/// PyTorch's single-tensor AdamW); `norm_sq` with `max_norm` when clipping.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step_cpu(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    clip: Option<(f32, f32)>,
    config: &AdamW,
    step: &AdamWStep,
) {
    let (bc1, bc2) = bias_corrections(config.beta1, config.beta2, step.step);
    let step_size = (step.lr as f64 / bc1) as f32;
    let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
    let c = clip.map_or(1.0, |(norm_sq, max_norm)| (max_norm / (norm_sq.sqrt() + 1e-6)).min(1.0));
    for i in 0..param.len() {
        let g = grad[i] * c;
        let theta = param[i] * (1.0 - step.lr * config.weight_decay);
        m[i] += (1.0 - config.beta1) * (g - m[i]);
        v[i] = config.beta2 * v[i] + (1.0 - config.beta2) * g * g;
        param[i] = theta - step_size * m[i] / (v[i].sqrt() * inv_sqrt_bc2 + config.eps);
    }
}

/// CPU reference of [`grad_norm_sq`], in f64.
pub fn grad_norm_sq_cpu(grad: &[f32]) -> f64 {
    grad.iter().map(|&g| g as f64 * g as f64).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(super::super::wgsl_struct_bytes(super::SOURCE, "Params"), Some(std::mem::size_of::<super::Params>()));
    }
}
