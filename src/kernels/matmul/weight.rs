//! A GGUF weight matrix on the GPU, still quantized, in row chunks.
//!
//! GPU layout: every row starts on a 16-byte boundary (rows padded with zeros), so the
//! matrix-vector kernel can read it with `vec4<u32>` loads. Q4_0, Q4_1 and Q8_0 rows are
//! split into two planes: first the quants of every block (16 or 32 bytes each, so a
//! block's quants are one or two aligned vec4 loads), then the scales (Q4_0 and Q8_0:
//! one f16 per block, two per word; Q4_1: the (d, m) f16 pair, one word per block). Q4_K
//! (144 B) blocks are copied whole; Q6_K (210 B) blocks get two zero bytes at their end
//! (212 B). F32/F16/BF16 rows are copied as they are. A row is always whole vec4s, so a
//! chunk can start at any row.
//!
//! Chunks: no binding may exceed the device's `max_storage_buffer_binding_size` (128 MiB
//! in browsers), and e.g. Qwen2.5-0.5B's Q8_0 embedding is 144 MiB, so the rows are split
//! into as few chunks as fit; kernels dispatch once per chunk.

use crate::gguf::GgmlType;
use crate::gpu::{Buffer, Gpu, GpuError};

/// One contiguous range of rows in its own buffer.
pub(super) struct Chunk {
    pub(super) row0: usize,
    pub(super) rows: usize,
    pub(super) buffer: Buffer,
}

/// A [rows N × cols K] matrix in GGUF layout (row n holds K consecutive values; GGUF
/// dims are [K, N]), kept in its GGML type on the GPU.
pub struct Weight {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_words: usize,
    pub(super) chunks: Vec<Chunk>,
}

/// Bytes one GGML block takes on the GPU (before the row's padding).
pub fn gpu_block_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q6_K => 212,
        other => other.block_bytes(),
    }
}

/// Bytes one row of `cols` values takes on the GPU: whole blocks, padded to 16 bytes.
pub fn gpu_row_bytes(ty: GgmlType, cols: usize) -> usize {
    (cols / ty.block_len() * gpu_block_bytes(ty)).next_multiple_of(16)
}

impl Weight {
    /// Uploads `bytes` (the tensor's GGUF data, `rows · cols` values of type `ty`).
    pub fn upload(gpu: &Gpu, label: &str, ty: GgmlType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Weight, GpuError> {
        Weight::upload_chunked(gpu, label, ty, rows, cols, bytes, gpu.limits().max_storage_buffer_binding_size)
    }

    /// [`Weight::upload`] with chunks of at most `max_chunk_bytes` (capped by the device
    /// limit); lets tests exercise chunking without uploading 128 MiB.
    pub fn upload_chunked(
        gpu: &Gpu,
        label: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
        max_chunk_bytes: u64,
    ) -> Result<Weight, GpuError> {
        let shape = |m: String| GpuError::shape("Weight::upload", format!("`{label}` ({ty}, {rows}×{cols}): {m}"));
        if rows == 0 || cols == 0 || !cols.is_multiple_of(ty.block_len()) {
            return Err(shape(format!("cols must be a positive multiple of the block length {}", ty.block_len())));
        }
        let src_row = cols / ty.block_len() * ty.block_bytes();
        if bytes.len() != rows * src_row {
            return Err(shape(format!("expected {} bytes, got {}", rows * src_row, bytes.len())));
        }
        let row_bytes = gpu_row_bytes(ty, cols);
        let limit = max_chunk_bytes.min(gpu.limits().max_storage_buffer_binding_size);
        let rows_per_chunk = (limit / row_bytes as u64) as usize;
        if rows_per_chunk == 0 {
            return Err(GpuError::TooLarge { label: label.to_string(), size: row_bytes as u64, limit });
        }
        let mut chunks = Vec::new();
        let mut staging = Vec::new();
        for row0 in (0..rows).step_by(rows_per_chunk) {
            let count = rows_per_chunk.min(rows - row0);
            staging.clear();
            staging.reserve(count * row_bytes);
            for row in bytes[row0 * src_row..(row0 + count) * src_row].chunks_exact(src_row) {
                let end = staging.len() + row_bytes;
                repack_row(ty, row, &mut staging);
                staging.resize(end, 0);
            }
            let name = if rows_per_chunk >= rows { label.to_string() } else { format!("{label}[{row0}..]") };
            chunks.push(Chunk { row0, rows: count, buffer: gpu.upload(&name, &staging)? });
        }
        Ok(Weight { ty, rows, cols, row_words: row_bytes / 4, chunks })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn ty(&self) -> GgmlType {
        self.ty
    }
    /// Bytes held on the GPU (all chunks).
    pub fn gpu_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size()).sum()
    }
    /// How many buffers the rows were split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }
    pub(super) fn row_words(&self) -> usize {
        self.row_words
    }
}

/// Appends one row in the GPU layout (without the row's end padding).
fn repack_row(ty: GgmlType, row: &[u8], out: &mut Vec<u8>) {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => {
            // The scale bytes lead each GGML block: 2 (d) or 4 (d, m for Q4_1).
            let head = if ty == GgmlType::Q4_1 { 4 } else { 2 };
            let blocks = row.chunks_exact(ty.block_bytes());
            for block in blocks.clone() {
                out.extend_from_slice(&block[head..]);
            }
            for block in blocks {
                out.extend_from_slice(&block[..head]);
            }
        }
        GgmlType::Q6_K => {
            for block in row.chunks_exact(210) {
                out.extend_from_slice(block);
                out.extend_from_slice(&[0, 0]);
            }
        }
        _ => out.extend_from_slice(row),
    }
}
