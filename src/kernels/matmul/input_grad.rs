//! Input gradient of the matmul on frozen, quantized weights (QLoRA: W stays in its GGML
//! type on the GPU and the shader dequantizes; there is no dW):
//!
//!   dx[t, k] (+)= Σ_{n ∈ rows} dy[t · dy_stride + (n − rows.start)] · W[n, k]
//!
//! For a projection y = x · Wᵀ that is dx = dy · W with rows 0..N; for the lm_head it runs
//! once per vocabulary chunk, dy being that chunk's logit gradients, accumulating.
//! Kernels in shaders/matmul_grad.wgsl, which also explains the ways of reading dy and
//! of splitting the rows ([`InputGradKernel`]).

use std::ops::Range;
use std::sync::OnceLock;

use super::{adapter_vec4, check_adapter, format_id, Weight, SOURCE};
use crate::gguf::GgmlType;
use crate::gpu::{batch::grid, Batch, Binding, Buffer, GpuError, Kernel};
use crate::kernels::lora::{lora_backward_input, LoraShape, View};

const NAME: &str = "matmul_input_grad";
const SUBGROUP_ENTRY: &str = "matmul_input_grad_subgroup";
const OUTER: &str = "outer_sum";
const LORA: &str = "matmul_input_grad_lora";
const GRAD_SOURCE: &str = include_str!("../../../shaders/matmul_grad.wgsl");

/// Tokens per tile (the hand-written accumulators of the shader).
const TILE_TOKENS: u32 = 16;

/// Columns per lane: one `dequant8`.
const LANE_COLS: u32 = 8;

/// Bytes of the uniform dy window (`dyw` in the shader): WebGPU's default limit.
const WINDOW_BYTES: u64 = 64 << 10;

/// Rows of one token tile a window holds (16 f32 each).
const WINDOW_ROWS: usize = (WINDOW_BYTES / (4 * TILE_TOKENS as u64)) as usize;

/// Bytes of one packed row of a token tile; 4 rows are the 256-byte offset alignment.
const PACKED_ROW_BYTES: u64 = 4 * TILE_TOKENS as u64;

/// Bytes of packed dy per pack dispatch (the uniform kernel packs and walks the rows in
/// pieces of this size, so its scratch buffer stays small: 4096 rows at 256 tokens).
const PACK_BYTES: u64 = 4 << 20;

/// Rows one storage-path dispatch walks. Every 8 rows are one loop iteration of every
/// invocation, and llvmpipe silently leaves all loops of an invocation after 65,535
/// iterations in all, so longer ranges are split into dispatches that accumulate.
const DISPATCH_ROWS: usize = 32_768;

/// Mirrors `Params` in shaders/matmul_grad.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tokens: u32,
    rows: u32,
    cols: u32,
    row0: u32,
    row_words: u32,
    dy_stride: u32,
    dy_col: u32,
    tile0: u32,
    tiles: u32,
    tile_rows: u32,
    /// 0: dx = result, 1: dx += result.
    epilogue: u32,
    /// Rows per segment (split kernel); 0: one segment of all rows.
    seg_rows: u32,
    /// Partial slices the reduce adds.
    segments: u32,
    /// The subgroup kernel's adapter rows ([`matmul_input_grad_lora`]): rank (0: none)
    /// and A's f32 offset.
    lora_rank: u32,
    lora_a: u32,
    /// dx[t, k] at `dx_off + t · dx_ts + k · dx_ks`, times `dx_scale`: [tokens, cols]
    /// for the input gradient, a slice of a gradient buffer (transposed for dB) for
    /// [`outer_sum`].
    dx_off: u32,
    dx_ts: u32,
    dx_ks: u32,
    dx_scale: f32,
    _pad: u32,
}

/// How the kernel reads dy; both give the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputGradKernel {
    /// dy packed into token tiles, then read through 64 KiB uniform windows, one dispatch
    /// per window (up to 1024 rows of 16 tokens): uniform loads are what a CPU device
    /// (llvmpipe) loads once for all lanes. Needs a dy-sized scratch buffer.
    Uniform,
    /// dy read in place from storage, one dispatch per weight chunk.
    Storage,
    /// As `Storage`, with the rows split into segments that run side by side and a
    /// second dispatch adding their partial sums: for GPUs, where one lane per 8 columns
    /// × 16 tokens leaves most of the device idle when there are few of both.
    Split,
    /// dy read in place as vec4s of 4 rows, each lane loading one token's and the
    /// subgroup sharing them: for CPU devices with subgroups of 8 lanes or more, where
    /// it beats the uniform windows (docs/benchmarks.md) and needs no packed copy. Needs
    /// dy's stride and the row range's columns in multiples of 4.
    Subgroup,
}

impl InputGradKernel {
    /// The faster kernel for this device (for dy that lines up on vec4s: see
    /// [`matmul_input_grad`] for the choice per call).
    pub fn choose(batch: &Batch<'_>) -> InputGradKernel {
        Self::choose_for(batch, true)
    }

    /// [`InputGradKernel::choose`], `vec4_rows` telling whether the subgroup kernel can
    /// read this call's dy.
    fn choose_for(batch: &Batch<'_>, vec4_rows: bool) -> InputGradKernel {
        if batch.gpu().is_software() {
            if vec4_rows && subgroup_lanes(batch) {
                InputGradKernel::Subgroup
            } else if uniform_windows(batch) {
                InputGradKernel::Uniform
            } else {
                InputGradKernel::Storage
            }
        } else {
            InputGradKernel::Split
        }
    }

    fn kernel(self, ty: GgmlType, lanes: u32, entry: &'static str) -> Kernel {
        self.kernel_rows(ty, lanes, entry, false, 1)
    }

    /// With `dy_t`, the subgroup kernel reads dy rows-major ([`outer_sum`]); it walks
    /// `tiles_per_lane` token tiles a lane (see the function of that name).
    fn kernel_rows(self, ty: GgmlType, lanes: u32, entry: &'static str, dy_t: bool, tiles_per_lane: u32) -> Kernel {
        let kernel = Kernel::new("matmul_grad", module(self), entry).with("FMT", format!("{}u", format_id(ty))).with("WG", format!("{lanes}u"));
        if self == InputGradKernel::Subgroup {
            kernel.with("DY_T", dy_t).with("TG", format!("{tiles_per_lane}u")).with_subgroups()
        } else {
            kernel
        }
    }
}

/// Token tiles a lane of the subgroup kernel walks for `tokens` tokens: two (each
/// row step's shared weight loads serving 32 tokens, 1.1–1.2× the rate on llvmpipe)
/// where pairs of tiles compute at most an eighth more tokens than single tiles.
fn tiles_per_lane(tokens: u32) -> u32 {
    if super::wide_tiles_fit(tokens, TILE_TOKENS, 2 * TILE_TOKENS) {
        2
    } else {
        1
    }
}

/// Whether the device's subgroups hold the 8 lanes the subgroup kernel shares dy over.
fn subgroup_lanes(batch: &Batch<'_>) -> bool {
    batch.gpu().has_subgroups() && batch.gpu().info().subgroup_min_size >= 8
}

/// Whether the device binds a 64 KiB uniform window at the 256-byte offsets we use.
fn uniform_windows(batch: &Batch<'_>) -> bool {
    let limits = batch.gpu().limits();
    limits.max_uniform_buffer_binding_size >= WINDOW_BYTES && 256 % limits.min_uniform_buffer_offset_alignment == 0
}

/// matmul_grad.wgsl holds three modules that share its middle (see there), each
/// followed by matmul.wgsl's `W8` and `dequant8`.
fn module(kernel: InputGradKernel) -> &'static str {
    static MODULES: OnceLock<[String; 3]> = OnceLock::new();
    let modules = MODULES.get_or_init(|| {
        let dequant_start = SOURCE.find("// ---- dequant").unwrap_or(0);
        let dequant_end = SOURCE.find("// ---- end dequant").unwrap_or(SOURCE.len());
        let dequant = &SOURCE[dequant_start..dequant_end];
        let subgroup_at = GRAD_SOURCE.find("// ---- subgroup dy").unwrap_or(GRAD_SOURCE.len());
        let storage_at = GRAD_SOURCE.find("// ---- storage dy").unwrap_or(subgroup_at);
        let shared_at = GRAD_SOURCE.find("// ---- shared: all modules").unwrap_or(0);
        [
            format!("{}\n{dequant}", &GRAD_SOURCE[..storage_at]),
            format!("{}\n{dequant}", &GRAD_SOURCE[shared_at..subgroup_at]),
            format!("{}{}\n{dequant}", &GRAD_SOURCE[shared_at..storage_at], &GRAD_SOURCE[subgroup_at..]),
        ]
    });
    match kernel {
        InputGradKernel::Uniform => &modules[0],
        InputGradKernel::Storage | InputGradKernel::Split => &modules[1],
        InputGradKernel::Subgroup => &modules[2],
    }
}

/// Lanes the split kernel aims for: enough to fill a large GPU (an H100 runs 132 SMs ×
/// 2048 lanes; a quarter of that hides the loads).
const SPLIT_LANES: u32 = 1 << 16;

/// Bytes of partial sums the split kernel may keep.
const SPLIT_BYTES: u64 = 32 << 20;

/// Segments for `rows` rows over `lanes` lanes: up to [`SPLIT_LANES`] lanes in all, at
/// least 256 rows each, within [`SPLIT_BYTES`] of `slice` bytes each, and at most
/// [`DISPATCH_ROWS`] rows each (llvmpipe's loop budget, for tests forcing this kernel).
fn segments(rows: usize, lanes: u32, slice: u64) -> u32 {
    let wanted = (SPLIT_LANES / lanes.max(1)).min((rows / 256) as u32).min((SPLIT_BYTES / slice.max(1)) as u32);
    wanted.max(rows.div_ceil(DISPATCH_ROWS) as u32).max(1)
}

/// Lanes per workgroup (8 columns each) for `cols` columns. The uniform kernel is the CPU
/// one: 8, one SIMD row of llvmpipe (K = 576 is then 9 workgroups per token tile, enough
/// to keep its threads busy). The storage kernel is the GPU one: 64, or 32 where that
/// leaves fewer lanes idle (K = 576: 3 × 32 lanes for 72 instead of 2 × 64).
fn lanes(kernel: InputGradKernel, cols: u32) -> u32 {
    let octets = cols / LANE_COLS;
    let idle = |l: u32| octets.div_ceil(l) * l - octets;
    match kernel {
        InputGradKernel::Uniform | InputGradKernel::Subgroup => 8,
        _ if idle(32) < idle(64) => 32,
        _ => 64,
    }
}

/// dx[t, k] (+)= Σ_{n ∈ rows} dy[t · dy_stride + (n − rows.start)] · W[n, k] for t <
/// tokens, k < K: dy f32 [tokens, dy_stride] (its first rows.len() columns used), dx f32
/// [tokens, K]. `accumulate` adds onto dx, else overwrites it (an empty `rows` then
/// zeroes it). `rows` may span the weight's row chunks.
#[allow(clippy::too_many_arguments)] // the row range and dy stride are the point of it
pub async fn matmul_input_grad(
    batch: &mut Batch<'_>,
    dy: &Buffer,
    dy_stride: u32,
    w: &Weight,
    rows: Range<usize>,
    dx: &Buffer,
    tokens: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    let kernel = InputGradKernel::choose_for(batch, vec4_rows(dy, dy_stride, w, &rows, tokens));
    matmul_input_grad_with(batch, kernel, dy, dy_stride, w, rows, dx, tokens, accumulate).await
}

/// The adapter's share `du · A` of a LoRA projection's input gradient, with
/// `du = scale · dy · B` already computed ([`crate::kernels::lora::lora_backward_u`]).
#[derive(Clone, Copy)]
pub struct LoraDx<'a> {
    pub du: &'a Buffer,
    pub a: View<'a>,
    pub shape: LoraShape,
}

/// dx (+)= dy · W + du · A for a LoRA projection y = x · Wᵀ + scale · x · Aᵀ · Bᵀ (dy
/// [tokens, N]). The subgroup kernel (CPU devices) adds the adapter's rows inside its
/// sums; other kernels, and ranks or offsets off whole vec4s, run the base gradient then
/// [`lora_backward_input`]. Same values either way.
pub async fn matmul_input_grad_lora(
    batch: &mut Batch<'_>,
    dy: &Buffer,
    w: &Weight,
    dx: &Buffer,
    tokens: u32,
    accumulate: bool,
    lora: LoraDx<'_>,
) -> Result<(), GpuError> {
    check_adapter(LORA, &lora.shape, w)?;
    let (n, rows) = (w.rows() as u32, 0..w.rows());
    let kernel = InputGradKernel::choose_for(batch, vec4_rows(dy, n, w, &rows, tokens));
    let fused = kernel == InputGradKernel::Subgroup && adapter_vec4(&lora.shape, lora.a.offset);
    grad_impl(batch, kernel, dy, n, w, rows, dx, tokens, accumulate, fused.then_some(lora)).await?;
    if !fused {
        lora_backward_input(batch, lora.du, lora.a, dx, lora.shape, true).await?;
    }
    Ok(())
}

/// Whether the subgroup kernel's vec4 loads of dy line up: the stride and every dispatch's
/// first column (the row range's and each weight chunk's start within it) multiples of 4,
/// and dy holding the last token's final vec4 whole.
fn vec4_rows(dy: &Buffer, dy_stride: u32, w: &Weight, rows: &Range<usize>, tokens: u32) -> bool {
    let starts_aligned = w.chunks.iter().all(|c| c.row0 <= rows.start || c.row0 >= rows.end || (c.row0 - rows.start).is_multiple_of(4));
    let last = (tokens as u64).saturating_sub(1) * dy_stride as u64 + rows.len().next_multiple_of(4) as u64;
    dy_stride.is_multiple_of(4) && starts_aligned && dy.size() >= 4 * last
}

/// [`matmul_input_grad`] with an explicit kernel (tests and benches force each).
#[allow(clippy::too_many_arguments)]
pub async fn matmul_input_grad_with(
    batch: &mut Batch<'_>,
    kernel: InputGradKernel,
    dy: &Buffer,
    dy_stride: u32,
    w: &Weight,
    rows: Range<usize>,
    dx: &Buffer,
    tokens: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    grad_impl(batch, kernel, dy, dy_stride, w, rows, dx, tokens, accumulate, None).await
}

/// [`matmul_input_grad_with`], the subgroup kernel adding `lora`'s rows.
#[allow(clippy::too_many_arguments)]
async fn grad_impl(
    batch: &mut Batch<'_>,
    kernel: InputGradKernel,
    dy: &Buffer,
    dy_stride: u32,
    w: &Weight,
    rows: Range<usize>,
    dx: &Buffer,
    tokens: u32,
    accumulate: bool,
    lora: Option<LoraDx<'_>>,
) -> Result<(), GpuError> {
    let (k, t) = (w.cols() as u64, tokens as u64);
    if tokens == 0 {
        return Ok(());
    }
    if k % LANE_COLS as u64 != 0 {
        return Err(GpuError::shape(NAME, format!("cols {k} must be a multiple of {LANE_COLS}")));
    }
    if rows.start > rows.end || rows.end > w.rows() {
        return Err(GpuError::shape(NAME, format!("rows {rows:?} outside the weight's {} rows", w.rows())));
    }
    if (dy_stride as usize) < rows.len() {
        return Err(GpuError::shape(NAME, format!("dy_stride {dy_stride} < {} rows", rows.len())));
    }
    let dy_needed = (t - 1) * dy_stride as u64 + rows.len() as u64;
    if dy_needed > u32::MAX as u64 || t * k > u32::MAX as u64 {
        return Err(GpuError::shape(NAME, format!("dy ({dy_needed} values) or dx ({t}×{k}) beyond u32 indexing")));
    }
    if !rows.is_empty() && dy.size() < 4 * dy_needed {
        return Err(GpuError::shape(NAME, format!("dy `{}` holds {} bytes, needs {}", dy.label(), dy.size(), 4 * dy_needed)));
    }
    if dx.size() < 4 * t * k {
        return Err(GpuError::shape(NAME, format!("dx `{}` holds {} bytes, needs {tokens}×{k} f32", dx.label(), dx.size())));
    }
    if kernel == InputGradKernel::Uniform && !uniform_windows(batch) {
        return Err(GpuError::shape(NAME, "the uniform kernel needs 64 KiB uniform bindings at 256-byte offsets"));
    }
    if kernel == InputGradKernel::Subgroup && !subgroup_lanes(batch) {
        return Err(GpuError::shape(NAME, "the subgroup kernel needs subgroups of at least 8 lanes"));
    }
    if kernel == InputGradKernel::Subgroup && !rows.is_empty() && !vec4_rows(dy, dy_stride, w, &rows, tokens) {
        return Err(GpuError::shape(NAME, format!("the subgroup kernel needs dy_stride {dy_stride} and the rows' start columns in multiples of 4, and dy `{}` holding whole vec4s", dy.label())));
    }
    crate::kernels::ensure_distinct(NAME, &[("dy", dy), ("dx", dx)])?;
    if let Some(lora) = &lora {
        check_lora_dx(lora, tokens, dx)?;
    }
    let Some(first_chunk) = w.chunks.first() else {
        return Err(GpuError::shape(NAME, "the weight has no row chunks"));
    };
    let token_tiles = tokens.div_ceil(TILE_TOKENS);
    let base = Params {
        tokens,
        cols: k as u32,
        row_words: w.row_words() as u32,
        dy_stride,
        tiles: token_tiles,
        epilogue: accumulate as u32,
        dx_ts: k as u32,
        dx_ks: 1,
        dx_scale: 1.0,
        ..Params::default()
    };
    if rows.is_empty() {
        if !accumulate {
            // Σ over no rows: every tile walks none and writes zeros.
            let lanes = lanes(InputGradKernel::Storage, k as u32);
            let pipeline = batch.gpu().pipeline(&InputGradKernel::Storage.kernel(w.ty(), lanes, NAME)).await?;
            let groups = grid(token_tiles * (k as u32 / LANE_COLS).div_ceil(lanes));
            batch.dispatch(&pipeline, &base, &[dy.into(), dx.into(), (&first_chunk.buffer).into()], groups)?;
        }
        return Ok(());
    }
    let lanes = lanes(kernel, k as u32);
    let col_groups = (k as u32 / LANE_COLS).div_ceil(lanes);
    // The subgroup module's entry point reads the lane within the subgroup.
    let entry = if kernel == InputGradKernel::Subgroup { SUBGROUP_ENTRY } else { NAME };
    let tg = if kernel == InputGradKernel::Subgroup { tiles_per_lane(tokens) } else { 1 };
    let pipeline = batch.gpu().pipeline(&kernel.kernel_rows(w.ty(), lanes, entry, false, tg)).await?;
    // The first dispatch of each token tile overwrites dx unless accumulating; each
    // kernel below gives every tile its first dispatch in its first window or piece.
    let mut first = !accumulate;
    if kernel == InputGradKernel::Split {
        let slice = 4 * t * k;
        let total_lanes = token_tiles * col_groups * lanes;
        let reduce = batch.gpu().pipeline(&kernel.kernel(w.ty(), lanes, "matmul_input_grad_reduce")).await?;
        for chunk in &w.chunks {
            let (lo, hi) = (rows.start.max(chunk.row0), rows.end.min(chunk.row0 + chunk.rows));
            if lo >= hi {
                continue;
            }
            let segments = segments(hi - lo, total_lanes, slice);
            let seg_rows = (hi - lo).div_ceil(segments as usize).next_multiple_of(4) as u32;
            let segments = (hi - lo).div_ceil(seg_rows as usize) as u32;
            let part = batch.gpu().scratch("matmul_input_grad.partial", segments as u64 * slice)?;
            let params = Params {
                rows: (hi - lo) as u32,
                row0: (lo - chunk.row0) as u32,
                dy_col: (lo - rows.start) as u32,
                seg_rows,
                epilogue: 0,
                ..base
            };
            let groups = grid(segments * token_tiles * col_groups);
            batch.dispatch(&pipeline, &params, &[dy.into(), (&part).into(), (&chunk.buffer).into()], groups)?;
            let params = Params { segments, epilogue: !first as u32, ..base };
            first = false;
            let groups = grid((t * k).div_ceil(64) as u32);
            batch.dispatch(&reduce, &params, &[(&part).into(), dx.into()], groups)?;
            batch.retain([part]);
        }
        return Ok(());
    }
    if matches!(kernel, InputGradKernel::Storage | InputGradKernel::Subgroup) {
        // The subgroup module also binds the adapter's du and A (dy again without one,
        // never read); the first dispatch adds the adapter's rows.
        let (du, a) = lora.map_or((dy, dy), |l| (l.du, l.a.buffer));
        let mut adapter = lora.map(|l| (l.shape.rank, l.a.offset));
        for chunk in &w.chunks {
            let (lo, hi) = (rows.start.max(chunk.row0), rows.end.min(chunk.row0 + chunk.rows));
            for start in (lo..hi).step_by(DISPATCH_ROWS) {
                let (lora_rank, lora_a) = adapter.take().unwrap_or((0, 0));
                let params = Params {
                    rows: DISPATCH_ROWS.min(hi - start) as u32,
                    row0: (start - chunk.row0) as u32,
                    dy_col: (start - rows.start) as u32,
                    epilogue: !first as u32,
                    lora_rank,
                    lora_a,
                    ..base
                };
                first = false;
                let params = Params { tiles: token_tiles.div_ceil(tg), ..params };
                let groups = grid(params.tiles * col_groups);
                let mut bindings = vec![dy.into(), dx.into(), (&chunk.buffer).into()];
                if kernel == InputGradKernel::Subgroup {
                    bindings.extend::<[Binding<'_>; 3]>([du.into(), a.into(), (&chunk.buffer).into()]);
                }
                batch.dispatch(&pipeline, &params, &bindings, groups)?;
            }
        }
        return Ok(());
    }
    // Uniform: pack a piece of rows (PACK_BYTES, at least 4 rows, at most one binding),
    // walk it window by window, and reuse the buffer for the next piece.
    let tile_bytes = token_tiles as u64 * PACKED_ROW_BYTES;
    let limit = batch.gpu().limits().max_storage_buffer_binding_size.saturating_sub(WINDOW_BYTES);
    let pack_rows = (PACK_BYTES.max(4 * tile_bytes).min(limit) / tile_bytes) as usize & !3;
    if pack_rows == 0 {
        return Err(GpuError::shape(NAME, format!("{tokens} tokens do not fit a packed row in one binding")));
    }
    let padded = rows.len().min(pack_rows).next_multiple_of(4);
    let packed = batch.gpu().scratch("matmul_input_grad.dy", padded as u64 * tile_bytes + WINDOW_BYTES)?;
    // The pack entry point lives in the storage module (its WG is unused there).
    let pack = batch.gpu().pipeline(&InputGradKernel::Storage.kernel(w.ty(), lanes, "matmul_input_grad_pack")).await?;
    for s in (rows.start..rows.end).step_by(pack_rows) {
        let e = rows.end.min(s + pack_rows);
        let tile_rows = (e - s).next_multiple_of(4);
        let params = Params { rows: (e - s) as u32, dy_col: (s - rows.start) as u32, tile_rows: tile_rows as u32, ..base };
        let groups = grid((token_tiles * tile_rows as u32 * TILE_TOKENS).div_ceil(64));
        batch.dispatch(&pack, &params, &[dy.into(), (&packed).into()], groups)?;
        for chunk in &w.chunks {
            let (lo, hi) = (s.max(chunk.row0), e.min(chunk.row0 + chunk.rows));
            if lo >= hi {
                continue;
            }
            // Several whole tiles per window when they fit and this chunk holds them all.
            let tiles_per = if lo == s && hi == e { (WINDOW_ROWS / tile_rows).max(1) as u32 } else { 1 };
            let mut at = lo;
            while at < hi {
                // Windows start on 4 rows (256 bytes); the first row may sit 1–3 rows in.
                let aligned = (at - s) & !3;
                let inset = at - s - aligned;
                let count = (WINDOW_ROWS - inset).min(hi - at);
                for tile0 in (0..token_tiles).step_by(tiles_per as usize) {
                    let tiles = tiles_per.min(token_tiles - tile0);
                    let params = Params {
                        rows: count as u32,
                        row0: (at - chunk.row0) as u32,
                        dy_col: inset as u32,
                        tile0,
                        tiles,
                        tile_rows: tile_rows as u32,
                        epilogue: !first as u32,
                        ..base
                    };
                    let offset = (tile0 as u64 * tile_rows as u64 + aligned as u64) * PACKED_ROW_BYTES;
                    let window = packed.range(offset, WINDOW_BYTES);
                    batch.dispatch(&pipeline, &params, &[window, dx.into(), (&chunk.buffer).into()], grid(tiles * col_groups))?;
                }
                first = false;
                at += count;
            }
        }
    }
    batch.retain([packed]);
    Ok(())
}

/// Whether [`outer_sum`] runs on this device for `s_cols` columns of S and `cols` of X:
/// CPU devices with 8-lane subgroups (GPUs take the LoRA kernels' shared tiles), S in
/// whole vec4s and X in the kernel's 8-column lanes.
pub fn outer_sum_fits(batch: &Batch<'_>, s_cols: u32, cols: u32) -> bool {
    batch.gpu().is_software() && subgroup_lanes(batch) && s_cols > 0 && s_cols.is_multiple_of(4) && cols > 0 && cols.is_multiple_of(LANE_COLS)
}

/// `out (+)= scale · Sᵀ · X` summed over `rows` rows of S [rows, s_cols] and X [rows,
/// cols] (f32, row-major, from the buffers' start): `out[j, c] = scale · Σ_n S[n, j] ·
/// X[n, c]` at `out.offset + j · cols + c`, or with `transposed` at `out.offset + c ·
/// s_cols + j`. `accumulate` adds onto out, else overwrites it.
///
/// The LoRA weight gradients on CPU devices: dA = duᵀ · x, and dB = scale · (uᵀ · dy)ᵀ
/// written transposed. The subgroup input-gradient kernel computes it, X's rows walked
/// as W's (F32) and S shared as its dy, read rows-major (DY_T): S's columns are its
/// tokens. The LoRA register kernel loaded both operands per lane for every product;
/// this loads X once per 16 columns of S and shares S by broadcasts. Needs
/// [`outer_sum_fits`].
#[allow(clippy::too_many_arguments)]
pub async fn outer_sum(
    batch: &mut Batch<'_>,
    s: &Buffer,
    x: &Buffer,
    [rows, s_cols, cols]: [u32; 3],
    out: View<'_>,
    transposed: bool,
    scale: f32,
    accumulate: bool,
) -> Result<(), GpuError> {
    if !outer_sum_fits(batch, s_cols, cols) {
        return Err(GpuError::shape(OUTER, format!("S's {s_cols} columns (whole vec4s) and X's {cols} (multiples of {LANE_COLS}) on a CPU device with 8-lane subgroups")));
    }
    let (n, sc, c) = (rows as u64, s_cols as u64, cols as u64);
    crate::kernels::add::ensure_len(OUTER, "s", s, n * sc)?;
    crate::kernels::add::ensure_len(OUTER, "x", x, n * c)?;
    crate::kernels::add::ensure_len(OUTER, "out", out.buffer, out.offset as u64 + sc * c)?;
    crate::kernels::ensure_distinct(OUTER, &[("out", out.buffer), ("s", s), ("x", x)])?;
    if n * c > u32::MAX as u64 {
        return Err(GpuError::shape(OUTER, format!("X ({rows}×{cols}) beyond u32 indexing")));
    }
    let lanes = lanes(InputGradKernel::Subgroup, cols);
    let tg = tiles_per_lane(s_cols);
    let pipeline = batch.gpu().pipeline(&InputGradKernel::Subgroup.kernel_rows(GgmlType::F32, lanes, SUBGROUP_ENTRY, true, tg)).await?;
    let tiles = s_cols.div_ceil(TILE_TOKENS * tg);
    let (dx_ts, dx_ks) = if transposed { (1, s_cols) } else { (cols, 1) };
    let base = Params { tokens: s_cols, cols, row_words: cols, dy_stride: s_cols, tiles, dx_off: out.offset, dx_ts, dx_ks, dx_scale: scale, ..Params::default() };
    // Dispatches of DISPATCH_ROWS rows (llvmpipe's loop budget), the first writing
    // unless accumulating; at least one, so no rows still writes zeros.
    let groups = grid(tiles * (cols / LANE_COLS).div_ceil(lanes));
    let mut start = 0;
    loop {
        let params = Params { rows: DISPATCH_ROWS.min((rows - start) as usize) as u32, row0: start, dy_col: start, epilogue: (accumulate || start > 0) as u32, ..base };
        batch.dispatch(&pipeline, &params, &[s.into(), out.buffer.into(), x.into(), s.into(), s.into(), x.into()], groups)?;
        start += params.rows;
        if start >= rows {
            return Ok(());
        }
    }
}

/// The fused adapter rows' buffers: the subgroup kernel reads du [tokens, r] and A [r, K]
/// from `a.offset` ([`matmul_input_grad_lora`] checked the shape and the vec4s).
fn check_lora_dx(lora: &LoraDx<'_>, tokens: u32, dx: &Buffer) -> Result<(), GpuError> {
    let LoraShape { rank, d_in, .. } = lora.shape;
    crate::kernels::add::ensure_len(LORA, "du", lora.du, tokens as u64 * rank as u64)?;
    crate::kernels::add::ensure_len(LORA, "a", lora.a.buffer, lora.a.offset as u64 + rank as u64 * d_in as u64)?;
    crate::kernels::ensure_distinct(LORA, &[("dx", dx), ("du", lora.du), ("a", lora.a.buffer)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(super::super::super::wgsl_struct_bytes(super::GRAD_SOURCE, "Params"), Some(std::mem::size_of::<super::Params>()));
    }
}
