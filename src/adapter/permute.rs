//! llama.cpp's Q/K row order. Its converter stores the llama architecture's Q and K
//! weights as `W.reshape(heads, 2, hd/2, in).swapaxes(1, 2)`: within each head of `hd`
//! rows, Hugging Face row `s·hd/2 + j` (s = 0, 1: the two halves RoPE rotates together)
//! becomes GGUF row `2j + s`, so RoPE pairs are adjacent. An adapter's `lora_B` for Q or K
//! has one row per output feature and must be moved the same way to act on the same
//! features; `lora_A` acts on the (unpermuted) hidden state and is left alone.

use crate::model::{Arch, Config};

use super::{AdapterError, Target};

/// The head count that orders `target`'s output rows in GGUF space, when they are
/// permuted: llama Q (attention heads) and K (KV heads). Qwen2 uses NEOX RoPE on the
/// rows as they are.
pub fn permuted_heads(model: &Config, target: Target) -> Option<usize> {
    match (model.arch, target) {
        (Arch::Llama, Target::Q) => Some(model.n_heads),
        (Arch::Llama, Target::K) => Some(model.n_kv_heads),
        _ => None,
    }
}

/// Rows of a row-major `[rows, cols]` matrix from Hugging Face into GGUF order.
pub fn hf_to_gguf_rows(w: &[f32], cols: usize, heads: usize) -> Result<Vec<f32>, AdapterError> {
    move_rows(w, cols, heads, true)
}

/// Rows of a row-major `[rows, cols]` matrix from GGUF into Hugging Face order.
pub fn gguf_to_hf_rows(w: &[f32], cols: usize, heads: usize) -> Result<Vec<f32>, AdapterError> {
    move_rows(w, cols, heads, false)
}

fn move_rows(w: &[f32], cols: usize, heads: usize, to_gguf: bool) -> Result<Vec<f32>, AdapterError> {
    if w.is_empty() {
        return Ok(Vec::new());
    }
    let rows = w.len().checked_div(cols).unwrap_or(0);
    if cols == 0 || rows * cols != w.len() || heads == 0 || !rows.is_multiple_of(2 * heads) {
        return Err(AdapterError::HeadSplit { rows, heads });
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for hf in 0..rows {
        let (h, s, j) = (hf / hd, (hf % hd) / half, hf % half);
        let gguf = h * hd + 2 * j + s;
        let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
        out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
    }
    Ok(out)
}
