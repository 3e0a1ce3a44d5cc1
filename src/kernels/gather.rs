//! Row gather `out[i, :] = src[index[i], :]` (shaders/gather.wgsl): training runs the
//! lm_head and the loss only on the positions that have a target, and spreads their
//! gradient back with the same kernel and the inverse index.

use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/gather.wgsl");

/// An `index` entry that selects no row: its output row is zeros.
pub const NONE: u32 = u32::MAX;

/// Mirrors `Params` in gather.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols4: u32,
    _pad: [u32; 2],
}

/// `out[i, :] = src[index[i], :]` for `i < rows` (`src_rows` rows of `cols` f32 in
/// `src`), zeros where `index[i]` is [`NONE`]; index is u32 [rows]. The host checks
/// nothing inside `index`: [`gather_rows_index`] builds valid ones.
pub async fn gather_rows(
    batch: &mut Batch<'_>,
    index: &Buffer,
    src: &Buffer,
    src_rows: u32,
    out: &Buffer,
    rows: u32,
    cols: u32,
) -> Result<(), GpuError> {
    const NAME: &str = "gather_rows";
    if !cols.is_multiple_of(4) {
        return Err(GpuError::shape(NAME, format!("cols {cols} must be a multiple of 4")));
    }
    ensure_len(NAME, "index", index, rows as u64)?;
    ensure_len(NAME, "src", src, src_rows as u64 * cols as u64)?;
    ensure_len(NAME, "out", out, rows as u64 * cols as u64)?;
    let n = rows as u64 * (cols / 4) as u64;
    if n > u32::MAX as u64 {
        return Err(GpuError::shape(NAME, format!("{rows} × {cols} overflows 32-bit indexing")));
    }
    if n == 0 {
        return Ok(());
    }
    let pipeline = batch.gpu().pipeline(&Kernel::new("gather", SOURCE, NAME)).await?;
    let params = Params { rows, cols4: cols / 4, _pad: [0; 2] };
    batch.dispatch(&pipeline, &params, &[index.into(), src.into(), out.into()], grid((n as u32).div_ceil(64)))
}

/// The positions whose `keep` is set, in order (the gather's index), and for each
/// position its row among them or [`NONE`] (the index that spreads them back).
pub fn gather_rows_index(keep: impl IntoIterator<Item = bool>) -> (Vec<u32>, Vec<u32>) {
    let (mut picked, mut slots) = (Vec::new(), Vec::new());
    for (t, k) in keep.into_iter().enumerate() {
        if k {
            slots.push(picked.len() as u32);
            picked.push(t as u32);
        } else {
            slots.push(NONE);
        }
    }
    (picked, slots)
}

/// CPU reference of [`gather_rows`].
pub fn gather_rows_cpu(index: &[u32], src: &[f32], cols: usize) -> Vec<f32> {
    index
        .iter()
        .flat_map(|&r| match r {
            NONE => vec![0.0; cols],
            r => src[r as usize * cols..(r as usize + 1) * cols].to_vec(),
        })
        .collect()
}
