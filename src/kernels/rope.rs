//! Rotary position embedding (shaders/rope.wgsl), in place on q or k, and the CPU
//! side of it: the inverse frequencies with theta and rope scaling applied.
//!
//! Backward: RoPE is a rotation per pair, so the input gradient is the output gradient
//! rotated by the negative angle ([`rope_backward`], in place on dq or dk).

use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/rope.wgsl");

/// Which elements of a head form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): llama in GGUF space, after llama.cpp's Q/K row permutation.
    Interleaved,
    /// Pairs (i, i + head_dim/2): qwen2 (and llama in HF space).
    Neox,
}

/// Context-extension rules of transformers' `rope_scaling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `rope_type = "linear"`: every frequency divided by `factor`.
    Linear { factor: f32 },
    /// `rope_type = "llama3"`: long wavelengths divided by `factor`, short ones kept,
    /// the band between blended smoothly.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: u32 },
}

/// Mirrors `Params` in rope.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    heads: u32,
    head_dim: u32,
    neox: u32,
}

/// Mirrors `QkParams` in rope.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct QkParams {
    rows: u32,
    heads: u32,
    head_dim: u32,
    neox: u32,
    k_heads: u32,
    k_offset: u32,
    _pad: [u32; 2],
}

/// Where the keys of [`rope_forward_qk`] are: `heads` heads per row from element
/// `offset` of their buffer on (e.g. the first new row of a KV cache).
#[derive(Debug, Clone, Copy)]
pub struct KeyRows {
    pub heads: u32,
    pub offset: u32,
}

/// `inv_freq[i] = theta^(-2i/head_dim)` for `i < head_dim/2`, then scaled as
/// transformers' `_compute_linear_scaling_rope_parameters` /
/// `_compute_llama3_parameters` do. Computed in f64 and rounded once.
pub fn rope_inv_freq(head_dim: usize, theta: f32, scaling: Option<RopeScaling>) -> Vec<f32> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let inv = 1.0 / (theta as f64).powf((2 * i) as f64 / head_dim as f64);
            let scaled = match scaling {
                None => inv,
                Some(RopeScaling::Linear { factor }) => inv / factor as f64,
                Some(RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                }) => {
                    let (factor, low, high) = (factor as f64, low_freq_factor as f64, high_freq_factor as f64);
                    let old_len = original_max_position_embeddings as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / inv;
                    if wavelen < old_len / high {
                        inv
                    } else if wavelen > old_len / low {
                        inv / factor
                    } else if high > low {
                        let smooth = (old_len / wavelen - low) / (high - low);
                        (1.0 - smooth) * inv / factor + smooth * inv
                    } else {
                        // Empty blend band (high == low): the boundary frequency stays.
                        inv
                    }
                }
            };
            scaled as f32
        })
        .collect()
}

/// Rotates `x` [rows, heads, head_dim] in place: row `t` by angles
/// `pos[t] * inv_freq[i]` (`pos`: u32 [rows], `inv_freq`: f32 [head_dim/2]).
#[allow(clippy::too_many_arguments)]
pub async fn rope_forward(
    batch: &mut Batch<'_>,
    x: &Buffer,
    pos: &Buffer,
    inv_freq: &Buffer,
    rows: u32,
    heads: u32,
    head_dim: u32,
    style: RopeStyle,
) -> Result<(), GpuError> {
    rope_dispatch("rope_forward", batch, x, pos, inv_freq, [rows, heads, head_dim], style).await
}

/// [`rope_forward`] on the queries `q` [rows, heads, head_dim] and the keys
/// k[keys.offset ..] [rows, keys.heads, head_dim] in one dispatch, both in place.
/// Its backward is [`rope_backward`] on dq and dk separately.
#[allow(clippy::too_many_arguments)]
pub async fn rope_forward_qk(
    batch: &mut Batch<'_>,
    q: &Buffer,
    k: &Buffer,
    keys: KeyRows,
    pos: &Buffer,
    inv_freq: &Buffer,
    rows: u32,
    heads: u32,
    head_dim: u32,
    style: RopeStyle,
) -> Result<(), GpuError> {
    const NAME: &str = "rope_forward_qk";
    if !head_dim.is_multiple_of(2) {
        return Err(GpuError::shape(NAME, format!("head_dim {head_dim} must be even")));
    }
    super::ensure_distinct(NAME, &[("q", q), ("k", k)])?;
    let half = (head_dim / 2) as u64;
    let q_pairs = rows as u64 * heads as u64 * half;
    let k_pairs = rows as u64 * keys.heads as u64 * half;
    ensure_len(NAME, "q", q, 2 * q_pairs)?;
    ensure_len(NAME, "k", k, keys.offset as u64 + 2 * k_pairs)?;
    ensure_len(NAME, "pos", pos, rows as u64)?;
    ensure_len(NAME, "inv_freq", inv_freq, half)?;
    let pairs = q_pairs + k_pairs;
    if pairs == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("rope", SOURCE, NAME)).await?;
    let params = QkParams {
        rows,
        heads,
        head_dim,
        neox: (style == RopeStyle::Neox) as u32,
        k_heads: keys.heads,
        k_offset: keys.offset,
        _pad: [0; 2],
    };
    // Both tensors fit 128 MiB bindings, so pairs < 2^25 and the u32 cast is exact.
    let groups = grid((pairs as u32).div_ceil(64));
    batch.dispatch(&pipeline, &params, &[q.into(), pos.into(), inv_freq.into(), k.into()], groups)
}

/// The backward of [`rope_forward`], in place: turns `dx` = dL/d(rotated x)
/// [rows, heads, head_dim] into dL/dx by rotating each pair by `-pos[t] * inv_freq[i]`.
#[allow(clippy::too_many_arguments)]
pub async fn rope_backward(
    batch: &mut Batch<'_>,
    dx: &Buffer,
    pos: &Buffer,
    inv_freq: &Buffer,
    rows: u32,
    heads: u32,
    head_dim: u32,
    style: RopeStyle,
) -> Result<(), GpuError> {
    rope_dispatch("rope_backward", batch, dx, pos, inv_freq, [rows, heads, head_dim], style).await
}

async fn rope_dispatch(
    name: &'static str,
    batch: &mut Batch<'_>,
    x: &Buffer,
    pos: &Buffer,
    inv_freq: &Buffer,
    [rows, heads, head_dim]: [u32; 3],
    style: RopeStyle,
) -> Result<(), GpuError> {
    if !head_dim.is_multiple_of(2) {
        return Err(GpuError::shape(name, format!("head_dim {head_dim} must be even")));
    }
    let pairs = rows as u64 * heads as u64 * (head_dim / 2) as u64;
    ensure_len(name, "x", x, 2 * pairs)?;
    ensure_len(name, "pos", pos, rows as u64)?;
    ensure_len(name, "inv_freq", inv_freq, (head_dim / 2) as u64)?;
    if pairs == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("rope", SOURCE, name)).await?;
    let params = Params { rows, heads, head_dim, neox: (style == RopeStyle::Neox) as u32 };
    // pairs <= 2^23 here (x fits one 128 MiB binding), so the u32 cast is exact.
    batch.dispatch(&pipeline, &params, &[x.into(), pos.into(), inv_freq.into()], grid((pairs as u32).div_ceil(64)))
}

/// Element pairs (a, b) each rotation acts on, with the angle as the GPU computes it
/// (an f32 product), for the CPU references.
fn pairs_cpu<'a>(
    pos: &'a [u32],
    inv_freq: &'a [f32],
    heads: usize,
    head_dim: usize,
    style: RopeStyle,
) -> impl Iterator<Item = (usize, usize, f64)> + 'a {
    let half = head_dim / 2;
    pos.iter().enumerate().flat_map(move |(t, &position)| {
        (0..heads).flat_map(move |h| {
            let base = (t * heads + h) * head_dim;
            inv_freq.iter().take(half).enumerate().map(move |(i, &f)| {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    RopeStyle::Neox => (base + i, base + i + half),
                };
                (a, b, (position as f32 * f) as f64)
            })
        })
    })
}

/// CPU reference of [`rope_forward`]: sine and cosine of the GPU's angle taken in f64.
pub fn rope_forward_cpu(x: &mut [f32], pos: &[u32], inv_freq: &[f32], heads: usize, head_dim: usize, style: RopeStyle) {
    for (a, b, angle) in pairs_cpu(pos, inv_freq, heads, head_dim, style) {
        let (s, c) = (angle.sin() as f32, angle.cos() as f32);
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// CPU reference of [`rope_backward`]: the rotation by the negative angle, in f64.
pub fn rope_backward_cpu(dx: &mut [f32], pos: &[u32], inv_freq: &[f32], heads: usize, head_dim: usize, style: RopeStyle) {
    for (a, b, angle) in pairs_cpu(pos, inv_freq, heads, head_dim, style) {
        let (s, c) = (angle.sin(), angle.cos());
        let (g0, g1) = (dx[a] as f64, dx[b] as f64);
        dx[a] = (g0 * c + g1 * s) as f32;
        dx[b] = (-g0 * s + g1 * c) as f32;
    }
}
