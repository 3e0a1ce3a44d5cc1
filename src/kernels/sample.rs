//! Token choice on the GPU (shaders/sample.wgsl): repetition penalty, temperature,
//! top-k, top-p and a draw with a caller-supplied uniform number, in one workgroup;
//! plus a per-row argmax.
//!
//! The random number `u` comes from the caller so runs are reproducible: draw it from
//! a seeded RNG on the CPU, e.g. `u = (rng.next_u32() >> 8) as f32 / 16_777_216.0`
//! (24 random bits, exactly representable, always < 1).

use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/sample.wgsl");

/// Most history ids the penalty takes (half the shader's hash table, `TABLE / 2`).
pub const MAX_HISTORY: u32 = 1024;

/// Largest vocabulary: one thread's loops over it (64 bisection scans) stay well below
/// the 65535 loop iterations per invocation after which llvmpipe silently exits loops.
pub const MAX_VOCAB: u32 = 1 << 18;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy argmax (ties to the lowest id).
    pub temperature: f32,
    /// Keep the k most likely tokens (ties at the k-th value kept); 0 = off, 1 = greedy.
    pub top_k: u32,
    /// Keep the smallest most-likely set with this much probability; >= 1 = off.
    pub top_p: f32,
    /// Repetition penalty over the history ids (llama.cpp / transformers rule); 1 = off.
    pub repetition_penalty: f32,
}

impl SamplerConfig {
    pub fn greedy() -> Self {
        SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
    }
}

/// Where the logits, the penalised history and the result are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleShape {
    pub vocab: u32,
    /// Row of `logits` [rows, vocab] to choose from (the last prompt position after a
    /// prefill).
    pub row: u32,
    /// The penalty applies to `history[history_start .. history_start + history_len]`,
    /// e.g. the last 64 tokens.
    pub history_start: u32,
    pub history_len: u32,
    /// The chosen id is written to `out[out_index]`.
    pub out_index: u32,
}

/// Mirrors `Params` in sample.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    vocab: u32,
    row: u32,
    history_start: u32,
    history_len: u32,
    top_k: u32,
    out_index: u32,
    rows: u32,
    _pad: u32,
    temperature: f32,
    top_p: f32,
    penalty: f32,
    u: f32,
}

/// Chooses one token id from `logits` row `shape.row` and writes it (u32) to
/// `out[shape.out_index]`. `history` (u32) may be any non-empty buffer when
/// `history_len` is 0. `u` in [0, 1) is the draw (see the module docs).
#[allow(clippy::too_many_arguments)]
pub async fn sample_forward(
    batch: &mut Batch<'_>,
    logits: &Buffer,
    history: &Buffer,
    out: &Buffer,
    shape: SampleShape,
    config: &SamplerConfig,
    u: f32,
) -> Result<(), GpuError> {
    const NAME: &str = "sample_forward";
    let SampleShape { vocab, row, history_start, history_len, out_index } = shape;
    if vocab == 0 || vocab > MAX_VOCAB {
        return Err(GpuError::shape(NAME, format!("vocab {vocab} is not in 1..={MAX_VOCAB}")));
    }
    if history_len > MAX_HISTORY {
        return Err(GpuError::shape(NAME, format!("history_len {history_len} exceeds {MAX_HISTORY}")));
    }
    if !(0.0..1.0).contains(&u) {
        return Err(GpuError::shape(NAME, format!("u = {u} is not in [0, 1)")));
    }
    let SamplerConfig { temperature, top_k, top_p, repetition_penalty } = *config;
    let valid = temperature.is_finite() && temperature >= 0.0 && repetition_penalty.is_finite() && repetition_penalty > 0.0;
    if !valid || top_p.is_nan() {
        return Err(GpuError::shape(
            NAME,
            format!("temperature {temperature} must be finite and >= 0, penalty {repetition_penalty} > 0, top_p a number"),
        ));
    }
    ensure_len(NAME, "logits", logits, (row as u64 + 1) * vocab as u64)?;
    ensure_len(NAME, "history", history, (history_start as u64 + history_len as u64).max(1))?;
    ensure_len(NAME, "out", out, out_index as u64 + 1)?;
    let pipeline = batch.gpu().pipeline(&Kernel::new("sample", SOURCE, NAME)).await?;
    let params = Params {
        vocab,
        row,
        history_start,
        history_len,
        top_k,
        out_index,
        rows: 1,
        _pad: 0,
        temperature,
        top_p,
        penalty: repetition_penalty,
        u,
    };
    // Binding order follows sample.wgsl: out before history, shared with argmax_rows.
    batch.dispatch(&pipeline, &params, &[logits.into(), out.into(), history.into()], [1, 1, 1])
}

/// `out[t]` (u32) = argmax of `logits` row `t` of [rows, vocab], ties to the lowest id.
pub async fn argmax_rows(batch: &mut Batch<'_>, logits: &Buffer, out: &Buffer, rows: u32, vocab: u32) -> Result<(), GpuError> {
    const NAME: &str = "argmax_rows";
    if vocab == 0 || vocab > MAX_VOCAB {
        return Err(GpuError::shape(NAME, format!("vocab {vocab} is not in 1..={MAX_VOCAB}")));
    }
    ensure_len(NAME, "logits", logits, rows as u64 * vocab as u64)?;
    ensure_len(NAME, "out", out, rows as u64)?;
    if rows == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("sample", SOURCE, NAME)).await?;
    let params = Params { vocab, rows, temperature: 0.0, top_p: 1.0, penalty: 1.0, ..bytemuck::Zeroable::zeroed() };
    batch.dispatch(&pipeline, &params, &[logits.into(), out.into()], grid(rows))
}

/// The logits after the repetition penalty, each distinct history id once.
pub fn penalize_cpu(logits: &[f32], history: &[u32], penalty: f32) -> Vec<f32> {
    let mut out = logits.to_vec();
    if penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &id in history {
            let i = id as usize;
            if i < out.len() && !seen[i] {
                seen[i] = true;
                out[i] = if out[i] > 0.0 { out[i] / penalty } else { out[i] * penalty };
            }
        }
    }
    out
}

/// Argmax with ties to the lowest id (CPU reference of [`argmax_rows`] for one row).
pub fn argmax_cpu(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// CPU reference of [`sample_forward`] for one row of logits: the same rule, with the
/// thresholds found by sorting and the sums in f64. Results agree with the GPU except
/// when `u` or `top_p` lands within rounding of a boundary.
pub fn sample_forward_cpu(logits: &[f32], history: &[u32], config: &SamplerConfig, u: f32) -> u32 {
    let penalized = penalize_cpu(logits, history, config.repetition_penalty);
    if config.temperature <= 0.0 || config.top_k == 1 {
        return argmax_cpu(&penalized);
    }
    let x: Vec<f32> = penalized.iter().map(|&v| v / config.temperature).collect();
    let xmax = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = x.iter().map(|&v| ((v - xmax) as f64).exp()).collect();
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    let mut tau = f32::NEG_INFINITY;
    let k = config.top_k as usize;
    if k > 1 && k < x.len() {
        tau = x[order[k - 1]];
    }
    if config.top_p < 1.0 {
        let kept: f64 = (0..x.len()).filter(|&i| x[i] >= tau).map(|i| e[i]).sum();
        let target = config.top_p as f64 * kept;
        let mut run = 0.0;
        for &i in &order {
            if x[i] < tau {
                break;
            }
            run += e[i];
            // The threshold is a value: everything tied with it is kept as well.
            if run >= target {
                tau = x[i];
                break;
            }
        }
    }
    let total: f64 = (0..x.len()).filter(|&i| x[i] >= tau).map(|i| e[i]).sum();
    let target = u as f64 * total;
    let mut run = 0.0;
    let mut last = 0;
    for i in 0..x.len() {
        if x[i] >= tau {
            run += e[i];
            last = i;
            if run > target {
                return i as u32;
            }
        }
    }
    last as u32
}
