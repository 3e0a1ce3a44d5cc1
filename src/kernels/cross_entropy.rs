//! Causal-LM cross-entropy fused with the vocabulary-chunked lm_head
//! (shaders/cross_entropy.wgsl), so a `[tokens × vocab]` logits tensor never exists.
//!
//! Forward: `loss[t] = mask[t] · (logsumexp_v z[t, v] − z[t, target[t]])`, mean over the
//! unmasked tokens, with `z = x · Wᵀ` the lm_head. Backward, to the lm_head's input:
//! `dx[t] = (softmax(z[t]) · W − W[target[t]]) · mask[t] · scale / count`, in the same
//! pass over the chunks. Derivation in docs/training-math.md.
//!
//! Use, per pass (the lm_head matmul is `matmul_rows`, one chunk at a time):
//! 1. for each chunk `k`: logits of columns `start_k .. start_k + cols_k` into a chunk
//!    buffer, then [`cross_entropy_forward`] with `first = (k == 0)`; for the gradient
//!    with `weigh`: the chunk becomes `exp(z − running max)` in place, then
//!    [`cross_entropy_rescale`] moves the `dx` summed so far onto the new max (k > 0)
//!    and `matmul_input_grad` adds the chunk times `W_chunk` onto it;
//! 2. [`cross_entropy_finalize`]: per-row `lse` and `loss`, and `totals` = (sum of loss,
//!    count, mean loss, 1 / count), all on the GPU (no readback needed);
//! 3. for the gradient, [`cross_entropy_input_grad`] with the target rows of `W`
//!    (`matmul::embedding`) turns the sum into `dx`.

use super::add::ensure_len;
use super::ensure_distinct;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/cross_entropy.wgsl");

/// Most columns one chunk may have: each of 256 threads loops over `cols / 256` of them,
/// well inside lavapipe's 65,535 loop iterations per invocation.
pub const MAX_CHUNK_COLS: u32 = 1 << 20;

/// Most rows the finalize kernel takes (one workgroup loops over them, `rows / 256`
/// iterations per thread).
pub const MAX_ROWS: u32 = 1 << 22;

/// f32 values per row of the running state: (max, sum of exp, target logit, found).
pub const STATE_PER_ROW: u32 = 4;

/// f32 values of `totals`: (sum of loss, count, mean loss, 1 / count).
pub const TOTALS_LEN: u32 = 4;

/// Mirrors `Params` in cross_entropy.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    col_start: u32,
    stride: u32,
    first: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Where one vocabulary chunk's logits lie: `logits[t · stride + c]` is the logit of
/// vocabulary entry `col_start + c` for token `t < rows`, `c < cols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VocabChunk {
    pub rows: u32,
    pub cols: u32,
    pub col_start: u32,
    pub stride: u32,
}

impl VocabChunk {
    /// A densely packed chunk (`stride = cols`), as `matmul_rows` writes with
    /// `y_stride = cols`.
    pub fn dense(rows: u32, col_start: u32, cols: u32) -> VocabChunk {
        VocabChunk { rows, cols, col_start, stride: cols }
    }

    fn check(&self, name: &'static str, logits: &Buffer) -> Result<(), GpuError> {
        if self.stride < self.cols {
            return Err(GpuError::shape(name, format!("stride {} < cols {}", self.stride, self.cols)));
        }
        if self.cols > MAX_CHUNK_COLS {
            return Err(GpuError::shape(name, format!("chunk of {} columns exceeds {MAX_CHUNK_COLS}", self.cols)));
        }
        if self.col_start.checked_add(self.cols).is_none() || (self.rows as u64) * (self.cols as u64) > u32::MAX as u64 {
            return Err(GpuError::shape(name, format!("chunk {self:?} overflows 32-bit indexing")));
        }
        if self.rows > 0 && self.cols > 0 {
            ensure_len(name, "logits", logits, (self.rows as u64 - 1) * self.stride as u64 + self.cols as u64)?;
        }
        Ok(())
    }
}

/// One cross_entropy.wgsl entry point; WEIGH only matters to the forward.
fn kernel(entry: &'static str, weigh: bool) -> Kernel {
    Kernel::new("cross_entropy", SOURCE, entry).with("WEIGH", weigh)
}

/// Folds one chunk's logits into the running per-row state [rows, 4] f32
/// (max, sum of exp, target logit, found); `first` starts it afresh. `targets`: u32
/// [rows], vocabulary ids (masked rows may hold anything). `factor` (f32 [rows]) gets
/// `exp(m − m')`, m and m' the running max before and after this chunk (1 for the
/// first); with `weigh` the chunk's logits become `exp(z − m')` in place, for the
/// gradient.
#[allow(clippy::too_many_arguments)]
pub async fn cross_entropy_forward(
    batch: &mut Batch<'_>,
    logits: &Buffer,
    targets: &Buffer,
    state: &Buffer,
    factor: &Buffer,
    chunk: VocabChunk,
    first: bool,
    weigh: bool,
) -> Result<(), GpuError> {
    const NAME: &str = "cross_entropy_forward";
    chunk.check(NAME, logits)?;
    ensure_len(NAME, "targets", targets, chunk.rows as u64)?;
    ensure_len(NAME, "state", state, STATE_PER_ROW as u64 * chunk.rows as u64)?;
    ensure_len(NAME, "factor", factor, chunk.rows as u64)?;
    ensure_distinct(NAME, &[("logits", logits), ("targets", targets), ("state", state), ("factor", factor)])?;
    if chunk.rows == 0 {
        return Ok(());
    }
    if chunk.cols == 0 {
        return Err(GpuError::shape(NAME, "a chunk needs at least one column"));
    }
    let pipeline = batch.gpu().pipeline(&kernel(NAME, weigh)).await?;
    let params = Params {
        rows: chunk.rows,
        cols: chunk.cols,
        col_start: chunk.col_start,
        stride: chunk.stride,
        first: first as u32,
        ..Params::default()
    };
    batch.dispatch(&pipeline, &params, &[logits.into(), targets.into(), state.into(), factor.into()], grid(chunk.rows))
}

/// From the state after the last chunk: `lse` [rows], `loss` [rows] (0 where `mask` is
/// 0; NaN where an unmasked row's target was in no chunk) and `totals` [4] = (sum of
/// loss, count of unmasked rows, mean loss, 1 / count; the last two 0 when count is 0).
/// `mask`: u32 [rows], 0 or 1.
pub async fn cross_entropy_finalize(
    batch: &mut Batch<'_>,
    state: &Buffer,
    mask: &Buffer,
    lse: &Buffer,
    loss: &Buffer,
    totals: &Buffer,
    rows: u32,
) -> Result<(), GpuError> {
    const NAME: &str = "cross_entropy_finalize";
    if rows > MAX_ROWS {
        return Err(GpuError::shape(NAME, format!("{rows} rows exceed {MAX_ROWS}")));
    }
    ensure_len(NAME, "state", state, STATE_PER_ROW as u64 * rows as u64)?;
    ensure_len(NAME, "mask", mask, rows as u64)?;
    ensure_len(NAME, "lse", lse, rows as u64)?;
    ensure_len(NAME, "loss", loss, rows as u64)?;
    ensure_len(NAME, "totals", totals, TOTALS_LEN as u64)?;
    ensure_distinct(NAME, &[("state", state), ("mask", mask), ("lse", lse), ("loss", loss), ("totals", totals)])?;
    let pipeline = batch.gpu().pipeline(&kernel(NAME, false)).await?;
    // Also with 0 rows: totals become zeros, so a step on an all-masked batch is a no-op.
    let params = Params { rows, ..Params::default() };
    batch.dispatch(&pipeline, &params, &[state.into(), mask.into(), lse.into(), loss.into(), totals.into()], [1, 1, 1])
}

/// `dx[row, :] *= factor[row]` for `rows` rows of `cols`: the gradient summed over the
/// chunks so far, moved onto the running max after the next chunk.
pub async fn cross_entropy_rescale(batch: &mut Batch<'_>, factor: &Buffer, dx: &Buffer, rows: u32, cols: u32) -> Result<(), GpuError> {
    const NAME: &str = "cross_entropy_rescale";
    ensure_len(NAME, "factor", factor, rows as u64)?;
    ensure_len(NAME, "dx", dx, rows as u64 * cols as u64)?;
    ensure_distinct(NAME, &[("factor", factor), ("dx", dx)])?;
    let n = elements(NAME, rows, cols)?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&kernel(NAME, false)).await?;
    let params = Params { rows, cols, ..Params::default() };
    batch.dispatch(&pipeline, &params, &[factor.into(), dx.into()], grid(n.div_ceil(256)))
}

/// Turns `dx` [rows, cols] = Σ over chunks of `exp(z − max) · W_chunk` into the gradient
/// of `scale · mean loss` with respect to the lm_head's input:
/// `(dx / s − target_rows) · mask · scale / count`, with `s` from `state` and `count`
/// from `totals` ([`cross_entropy_finalize`]); `target_rows` [rows, cols] holds
/// `W[target]`. For gradient accumulation over micro-batches pass `scale = 1 /
/// micro_batches` (mean of means) or `count_here / count_all` (mean over all tokens).
#[allow(clippy::too_many_arguments)]
pub async fn cross_entropy_input_grad(
    batch: &mut Batch<'_>,
    dx: &Buffer,
    state: &Buffer,
    mask: &Buffer,
    target_rows: &Buffer,
    totals: &Buffer,
    rows: u32,
    cols: u32,
    scale: f32,
) -> Result<(), GpuError> {
    const NAME: &str = "cross_entropy_input_grad";
    ensure_len(NAME, "dx", dx, rows as u64 * cols as u64)?;
    ensure_len(NAME, "state", state, STATE_PER_ROW as u64 * rows as u64)?;
    ensure_len(NAME, "mask", mask, rows as u64)?;
    ensure_len(NAME, "target_rows", target_rows, rows as u64 * cols as u64)?;
    ensure_len(NAME, "totals", totals, TOTALS_LEN as u64)?;
    ensure_distinct(NAME, &[("dx", dx), ("state", state), ("mask", mask), ("target_rows", target_rows), ("totals", totals)])?;
    if !scale.is_finite() {
        return Err(GpuError::shape(NAME, format!("scale {scale} must be finite")));
    }
    let n = elements(NAME, rows, cols)?;
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&kernel(NAME, false)).await?;
    let params = Params { rows, cols, scale, ..Params::default() };
    batch.dispatch(
        &pipeline,
        &params,
        &[dx.into(), state.into(), mask.into(), target_rows.into(), totals.into()],
        grid(n.div_ceil(256)),
    )
}

/// rows × cols, checked to fit the kernels' 32-bit element index.
fn elements(name: &'static str, rows: u32, cols: u32) -> Result<u32, GpuError> {
    u32::try_from(rows as u64 * cols as u64).map_err(|_| GpuError::shape(name, format!("{rows} × {cols} overflows 32-bit indexing")))
}

/// The CPU reference, in f64 over full logits [rows, vocab]: per-row loss (0 where
/// masked) and lse, and the mean over unmasked rows (0 if none).
pub struct CrossEntropyCpu {
    pub loss: Vec<f64>,
    pub lse: Vec<f64>,
    pub count: usize,
    pub mean: f64,
}

/// CPU reference of the forward (log-softmax cross-entropy, plain loops).
pub fn cross_entropy_cpu(logits: &[f32], targets: &[u32], mask: &[u32], vocab: usize) -> CrossEntropyCpu {
    let rows = targets.len();
    let mut out = CrossEntropyCpu { loss: vec![0.0; rows], lse: vec![0.0; rows], count: 0, mean: 0.0 };
    for t in 0..rows {
        let z = &logits[t * vocab..(t + 1) * vocab];
        let m = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = m + z.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        out.lse[t] = lse;
        if mask[t] != 0 {
            out.loss[t] = lse - z[targets[t] as usize] as f64;
            out.count += 1;
        }
    }
    if out.count > 0 {
        out.mean = out.loss.iter().sum::<f64>() / out.count as f64;
    }
    out
}

/// CPU reference of the input gradient: for logits `z = x · Wᵀ` (x [rows, dim], W
/// [vocab, dim]), d(scale · mean loss)/dx [rows, dim] in f64.
pub fn cross_entropy_input_grad_cpu(x: &[f32], w: &[f32], targets: &[u32], mask: &[u32], dim: usize, scale: f64) -> Vec<f64> {
    let (rows, vocab) = (targets.len(), w.len() / dim);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|i| {
            let (t, v) = (i / vocab, i % vocab);
            (0..dim).map(|j| x[t * dim + j] as f64 * w[v * dim + j] as f64).sum::<f64>() as f32
        })
        .collect();
    let fwd = cross_entropy_cpu(&logits, targets, mask, vocab);
    let mut dx = vec![0.0; rows * dim];
    if fwd.count == 0 {
        return dx;
    }
    let k = scale / fwd.count as f64;
    for t in (0..rows).filter(|&t| mask[t] != 0) {
        for v in 0..vocab {
            let dz = (logits[t * vocab + v] as f64 - fwd.lse[t]).exp() - if v == targets[t] as usize { 1.0 } else { 0.0 };
            for j in 0..dim {
                dx[t * dim + j] += dz * k * w[v * dim + j] as f64;
            }
        }
    }
    dx
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(super::super::wgsl_struct_bytes(super::SOURCE, "Params"), Some(std::mem::size_of::<super::Params>()));
    }
}
