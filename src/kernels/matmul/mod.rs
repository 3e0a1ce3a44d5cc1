//! Matmul against frozen GGUF weights, dequantized inside the shader, and the embedding
//! gather from the same weights.
//!
//! Forward: y[t, n] = Σ_k x[t, k] · W[n, k] (+ bias[n]), x f32 [tokens, K] row-major,
//! W [N, K] in its GGML type ([`Weight`]); [`matmul_add`] accumulates instead,
//! y[t, n] += …, so a residual add needs no dispatch of its own.
//! Embedding: out[t, :] = W[ids[t], :].
//! Backward: only for the input, dx (+)= dy · W ([`matmul_input_grad`]: input_grad.rs,
//! shaders/matmul_grad.wgsl); the base weights are frozen, so there is no dW.

mod cpu;
mod input_grad;
mod weight;

use std::ops::Range;
use std::sync::OnceLock;

pub use cpu::{embedding_cpu, matmul_cpu, matmul_input_grad_cpu};
pub use input_grad::{matmul_input_grad, matmul_input_grad_lora, matmul_input_grad_with, outer_sum, outer_sum_fits, InputGradKernel, LoraDx};
pub use weight::{gpu_block_bytes, gpu_row_bytes, Weight};

use super::lora::{lora_forward_up, LoraShape, View};
use crate::gguf::GgmlType;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

const SOURCE: &str = include_str!("../../../shaders/matmul.wgsl");
const MATVEC_SOURCE: &str = include_str!("../../../shaders/matvec.wgsl");

/// shaders/matmul.wgsl and matvec.wgsl each hold two modules that share the middle of
/// the file: the subgroup one (the file up to the portable section) and the portable one
/// (from the shared part on). Naga rejects subgroup builtins on devices without the
/// feature, even unused.
fn module(source: &'static str, subgroups: bool) -> &'static str {
    if subgroups {
        let end = source.find("// ---- portable").unwrap_or(source.len());
        &source[..end]
    } else {
        &source[source.find("// ---- shared: both modules").unwrap_or(0)..]
    }
}

/// The matrix-vector module (subgroup or portable) with its x binding declared: a
/// uniform array of `XN` vec4 (llvmpipe gathers uniform loads instead of looping over
/// lanes and components, as it does for storage loads) or, when tokens × cols is too
/// large for a uniform binding, a storage array.
fn matvec_module(subgroups: bool, uniform_x: bool) -> &'static str {
    static MODULES: OnceLock<Vec<String>> = OnceLock::new();
    const UNIFORM: &str = "@group(0) @binding(1) var<uniform> x: array<vec4<f32>, XN>;\n";
    const STORAGE: &str = "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\n";
    let modules = MODULES.get_or_init(|| {
        (0..4)
            .map(|i| {
                let (sg, uni) = (i & 2 != 0, i & 1 != 0);
                let x = if uni { UNIFORM } else { STORAGE };
                format!("{x}{}", module(MATVEC_SOURCE, sg))
            })
            .collect()
    });
    &modules[subgroups as usize * 2 + uniform_x as usize]
}

/// Largest x, in bytes, the matrix-vector kernel reads through a uniform binding: the
/// WebGPU default limit, so native and browser agree.
const MATVEC_UNIFORM_BYTES: u64 = 64 << 10;

/// Lanes per workgroup of the matrix-vector kernel.
const MATVEC_WG: u32 = 64;
/// Rows each lane group of the matrix-vector kernel owns (`R` in matvec.wgsl).
const MATVEC_ROWS: u32 = 4;
/// Lanes per workgroup of the lane-per-row matrix-vector kernel: 128 rows a group, so
/// even a 192-row projection spreads over two CPU threads.
const MATVEC_LANE_WG: u32 = 32;
/// Lanes per group in the portable matrix-vector module.
const MATVEC_PORTABLE_LANES: u32 = 8;

/// Mirrors `Params` in shaders/matmul.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub rows: u32,
    pub cols: u32,
    pub row0: u32,
    pub row_words: u32,
    pub y_stride: u32,
    pub y_col: u32,
    pub bias_row: u32,
    pub token_tiles: u32,
    /// The block tile's adapter term ([`matmul_lora`]): rank (0: none), scale, and the
    /// f32 offset of B's row for the first computed row.
    pub lora_rank: u32,
    pub lora_scale: f32,
    pub lora_b: u32,
    pub _pad: [u32; 4],
}

/// What the kernels do with each result v (plus bias) at y[i]; the shaders' EPILOGUE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// y = v
    Write = 0,
    /// y += v: a residual add.
    Add = 1,
    /// y = silu(gate[i]) · v, the gate [tokens, y_stride] bound in the bias slot:
    /// the up projection fused with SwiGLU (as `swiglu_forward`).
    Swiglu = 2,
}

/// The kernel shapes. Each is one pipeline per weight type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// Register tiles of rows × tokens per lane, activations through uniform loads;
    /// runs everywhere, the browser included.
    Tiled,
    /// Tiled, but each lane loads a different activation and the subgroup shares them
    /// with `subgroupBroadcast`; only where the device has subgroups.
    SubgroupTiled,
    /// Matrix-vector for decoding (memory-bound), one token per workgroup: groups of
    /// lanes (a subgroup, or 8 lanes without subgroups) share rows, each lane reading
    /// its own blocks of the row as vec4 loads; shaders/matvec.wgsl.
    Vector,
    /// Matrix-vector with each lane owning whole rows: every lane of a SIMD group reads
    /// the same x at the same time, which a CPU device (llvmpipe) loads once for the
    /// group; on a real GPU the lanes' weight reads would not coalesce. No subgroups.
    LaneVector,
}

impl MatmulKernel {
    /// The fastest kernel this device offers for `tokens` rows of activations.
    pub fn choose(batch: &Batch<'_>, tokens: u32) -> MatmulKernel {
        // The matrix-vector kernel reads the weights once per token; up to 4 tokens that
        // still beats a 16-token tile that is mostly empty.
        if tokens <= 4 && batch.gpu().info().device_type == wgpu::DeviceType::Cpu {
            MatmulKernel::LaneVector
        } else if tokens <= 4 {
            MatmulKernel::Vector
        } else if batch.gpu().has_subgroups() {
            MatmulKernel::SubgroupTiled
        } else {
            MatmulKernel::Tiled
        }
    }

    /// (lanes per workgroup, tokens per tile, rows per lane); the tiled kernels are
    /// written out for 16 tokens × 4 rows, the block tile (`blocks`: CPU devices, see
    /// [`block_tile`]) for 8 rows × 16 or 32 tokens ([`MatmulKernel::tile_tokens`]). On
    /// CPU devices (`software`) a tiled workgroup takes 64 rows instead of 256, which
    /// divides the model's 192, 576 and 1536 rows: with 256 a quarter of the rows
    /// computed for q, k, v, o and down were past the end and thrown away (measured:
    /// down 17.9–19.9 → 13.2–13.3 ms at 256 tokens, llvmpipe). GPUs keep the 64-lane
    /// workgroups measured on the H100.
    fn tile(self, blocks: bool, software: bool) -> (u32, u32, u32) {
        match self {
            MatmulKernel::SubgroupTiled if blocks => (8, 16, 8),
            MatmulKernel::Tiled | MatmulKernel::SubgroupTiled => (if software { 16 } else { 64 }, 16, 4),
            MatmulKernel::Vector => (MATVEC_WG, 1, MATVEC_ROWS),
            MatmulKernel::LaneVector => (MATVEC_LANE_WG, 1, MATVEC_ROWS),
        }
    }

    /// Whether this kernel runs as the block tile for `ty` on this device.
    fn blocks(self, ty: GgmlType, subgroup_min: u32, software: bool) -> bool {
        self == MatmulKernel::SubgroupTiled && block_tile(ty, subgroup_min, software)
    }

    /// Tokens per tile for `tokens` rows of activations: the block tile takes 32 where
    /// that computes at most an eighth more tokens than 16-token tiles would (at 256
    /// tokens 1.1–1.2× the rate on llvmpipe, docs/benchmarks.md).
    fn tile_tokens(self, blocks: bool, software: bool, tokens: u32) -> u32 {
        let (_, tt, _) = self.tile(blocks, software);
        if blocks && wide_tiles_fit(tokens, tt, 32) {
            32
        } else {
            tt
        }
    }

    /// Rows of W one workgroup computes.
    fn rows_per_group(self, subgroups: bool, subgroup_min: u32, blocks: bool, software: bool) -> u32 {
        let (wg, _, rn) = self.tile(blocks, software);
        match self {
            MatmulKernel::Vector if subgroups => (wg / subgroup_min.clamp(1, wg)) * MATVEC_ROWS,
            MatmulKernel::Vector => (wg / MATVEC_PORTABLE_LANES) * MATVEC_ROWS,
            MatmulKernel::LaneVector => wg * MATVEC_ROWS,
            _ => wg * rn,
        }
    }

    /// `x_vec4`: for the matrix-vector kernel, the vec4 count of a uniform x binding
    /// (None: x is a storage binding); ignored by the others. The epilogue and whether a
    /// bias is added are constants of the pipeline (see matmul.wgsl).
    #[allow(clippy::too_many_arguments)]
    fn kernel(
        self,
        ty: GgmlType,
        subgroups: bool,
        subgroup_min: u32,
        x_vec4: Option<u32>,
        software: bool,
        tt: u32,
        epilogue: Epilogue,
        bias: bool,
    ) -> Kernel {
        let kernel = self.kernel_shape(ty, subgroups, subgroup_min, x_vec4, software, tt);
        kernel.with("EPILOGUE", format!("{}u", epilogue as u32)).with("BIAS", bias)
    }

    /// The kernel's module, entry point and tile constants, without the epilogue's.
    fn kernel_shape(self, ty: GgmlType, subgroups: bool, subgroup_min: u32, x_vec4: Option<u32>, software: bool, tt: u32) -> Kernel {
        let blocks = self.blocks(ty, subgroup_min, software);
        let (wg, _, _) = self.tile(blocks, software);
        if matches!(self, MatmulKernel::Vector | MatmulKernel::LaneVector) {
            let subgroups = subgroups && self == MatmulKernel::Vector;
            let entry = if self == MatmulKernel::Vector { "matvec_forward" } else { "matvec_lanes_forward" };
            let unit = if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) { 8 } else { 32 };
            let source = matvec_module(subgroups, x_vec4.is_some());
            let kernel = Kernel::new("matvec", source, entry)
                .with("FMT", format!("{}u", format_id(ty)))
                .with("WG", format!("{wg}u"))
                .with("UNIT", format!("{unit}u"))
                .with("ROWS_WG", format!("{}u", self.rows_per_group(subgroups, subgroup_min, false, software)));
            let kernel = match x_vec4 {
                Some(n) => kernel.with("XN", format!("{n}u")),
                None => kernel,
            };
            return if subgroups { kernel.with_subgroups() } else { kernel };
        }
        let subgroups = self == MatmulKernel::SubgroupTiled;
        let kernel = Kernel::new("matmul", module(SOURCE, subgroups), "matmul_forward")
            .with("FMT", format!("{}u", format_id(ty)))
            .with("WG", format!("{wg}u"))
            .with("TT", format!("{tt}u"));
        if subgroups {
            // Lanes whose loads one broadcast run spans: at most 8 (one run of dequant8),
            // and it divides every subgroup size the device may pick.
            kernel.with("SG", format!("{}u", subgroup_min.clamp(4, 8))).with("BLOCKS", format!("{}u", blocks as u32)).with_subgroups()
        } else {
            kernel
        }
    }
}

/// Whether tiles of `wide` tokens compute at most an eighth more tokens than tiles of
/// `narrow` would for `tokens`: where a kernel's wider tile (more reuse of each load,
/// the same loads past the end) is the better choice on CPU devices.
fn wide_tiles_fit(tokens: u32, narrow: u32, wide: u32) -> bool {
    8 * wide * tokens.div_ceil(wide) <= 9 * narrow * tokens.div_ceil(narrow)
}

/// Whether the subgroup tile walks F32/Q4_0/Q4_1/Q8_0 rows 32 values at a time with
/// vec4 loads (the shader's BLOCKS): on CPU devices, where it measured 1.2–1.5× the
/// 8-value steps (docs/benchmarks.md); GPUs keep the kernel measured there.
fn block_tile(ty: GgmlType, subgroup_min: u32, software: bool) -> bool {
    software && subgroup_min >= 8 && matches!(ty, GgmlType::F32 | GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// The FMT constant of shaders/matmul.wgsl.
fn format_id(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::BF16 => 2,
        GgmlType::Q4_0 => 3,
        GgmlType::Q4_1 => 4,
        GgmlType::Q8_0 => 5,
        GgmlType::Q4_K => 6,
        GgmlType::Q6_K => 7,
    }
}

/// y[t, n] = Σ_k x[t, k] · W[n, k] (+ bias[n]) for all rows of `w`; y is [tokens, N].
pub async fn matmul(
    batch: &mut Batch<'_>,
    x: &Buffer,
    w: &Weight,
    bias: Option<&Buffer>,
    y: &Buffer,
    tokens: u32,
) -> Result<(), GpuError> {
    let kernel = MatmulKernel::choose(batch, tokens);
    matmul_with(batch, kernel, x, w, bias, 0..w.rows(), y, w.rows() as u32, tokens, false).await
}

/// y[t, n] += Σ_k x[t, k] · W[n, k] (+ bias[n]): [`matmul`] fused with a residual add.
pub async fn matmul_add(
    batch: &mut Batch<'_>,
    x: &Buffer,
    w: &Weight,
    bias: Option<&Buffer>,
    y: &Buffer,
    tokens: u32,
) -> Result<(), GpuError> {
    let kernel = MatmulKernel::choose(batch, tokens);
    matmul_with(batch, kernel, x, w, bias, 0..w.rows(), y, w.rows() as u32, tokens, true).await
}

/// Rows `row_start..row_start + row_count` of the product, without bias, written to
/// y[t · y_stride + (n − row_start)]: a vocabulary chunk of the lm_head.
#[allow(clippy::too_many_arguments)] // the row range and output stride are the point of it
pub async fn matmul_rows(
    batch: &mut Batch<'_>,
    x: &Buffer,
    w: &Weight,
    row_start: usize,
    row_count: usize,
    y: &Buffer,
    y_stride: u32,
    tokens: u32,
) -> Result<(), GpuError> {
    let kernel = MatmulKernel::choose(batch, tokens);
    matmul_with(batch, kernel, x, w, None, row_start..row_start + row_count, y, y_stride, tokens, false).await
}

/// y[y_row + t, n] = Σ_k x[t, k] · W[n, k] (+ bias[n]): [`matmul`] into rows
/// `y_row..y_row + tokens` of a [_, N] buffer, e.g. keys and values straight into their
/// KV-cache rows.
pub async fn matmul_at(
    batch: &mut Batch<'_>,
    x: &Buffer,
    w: &Weight,
    bias: Option<&Buffer>,
    y: &Buffer,
    y_row: u32,
    tokens: u32,
) -> Result<(), GpuError> {
    let kernel = MatmulKernel::choose(batch, tokens);
    let n = w.rows();
    let offset = y_row as u64 * n as u64;
    matmul_impl(batch, kernel, x, w, bias.map(Slot::Bias), 0..n, y, offset, n as u32, tokens, Epilogue::Write, None).await
}

/// The general form: rows `rows` of W with an explicit kernel choice (tests force each);
/// `accumulate` adds to y instead of overwriting it.
// The arguments are the problem's independent dimensions; bundling them would only
// move the list into a struct literal at every call.
#[allow(clippy::too_many_arguments)]
pub async fn matmul_with(
    batch: &mut Batch<'_>,
    kernel: MatmulKernel,
    x: &Buffer,
    w: &Weight,
    bias: Option<&Buffer>,
    rows: Range<usize>,
    y: &Buffer,
    y_stride: u32,
    tokens: u32,
    accumulate: bool,
) -> Result<(), GpuError> {
    let epilogue = if accumulate { Epilogue::Add } else { Epilogue::Write };
    matmul_impl(batch, kernel, x, w, bias.map(Slot::Bias), rows, y, 0, y_stride, tokens, epilogue, None).await
}

/// y[t, n] = silu(gate[t, n]) · Σ_k x[t, k] · W[n, k]: the up projection of a SwiGLU
/// MLP with the gating in its epilogue (one dispatch instead of two); gate and y are
/// [tokens, N]. Same values as `matmul` then `swiglu::swiglu_forward`.
pub async fn matmul_swiglu(batch: &mut Batch<'_>, x: &Buffer, w: &Weight, gate: &Buffer, y: &Buffer, tokens: u32) -> Result<(), GpuError> {
    const NAME: &str = "matmul_swiglu";
    let n = w.rows();
    if gate.size() < 4 * tokens as u64 * n as u64 {
        return Err(GpuError::shape(NAME, format!("gate `{}` is shorter than {tokens}×{n}", gate.label())));
    }
    crate::kernels::ensure_distinct(NAME, &[("gate", gate), ("y", y), ("x", x)])?;
    let kernel = MatmulKernel::choose(batch, tokens);
    matmul_impl(batch, kernel, x, w, Some(Slot::Gate(gate)), 0..n, y, 0, n as u32, tokens, Epilogue::Swiglu, None).await
}

/// The adapter term `scale · u · Bᵀ` of a LoRA projection, with `u = x · Aᵀ` already
/// computed ([`super::lora::lora_forward_down`]); `shape` as for the adapter kernels.
#[derive(Clone, Copy)]
pub struct LoraUp<'a> {
    pub u: &'a Buffer,
    pub b: View<'a>,
    pub shape: LoraShape,
}

/// y (+)= x · Wᵀ (+ bias) + scale · u · Bᵀ: a LoRA projection's output. The block tile
/// (CPU devices) adds the adapter term inside the tile, as r more columns; other kernels,
/// and ranks or offsets off whole vec4s, run the base product then
/// [`lora_forward_up`]. Same values either way.
#[allow(clippy::too_many_arguments)]
pub async fn matmul_lora(
    batch: &mut Batch<'_>,
    x: &Buffer,
    w: &Weight,
    bias: Option<&Buffer>,
    y: &Buffer,
    tokens: u32,
    accumulate: bool,
    up: LoraUp<'_>,
) -> Result<(), GpuError> {
    check_adapter("matmul_lora", &up.shape, w)?;
    let kernel = MatmulKernel::choose(batch, tokens);
    let epilogue = if accumulate { Epilogue::Add } else { Epilogue::Write };
    let fused = kernel == MatmulKernel::SubgroupTiled
        && block_tile(w.ty(), batch.gpu().info().subgroup_min_size, batch.gpu().is_software())
        && adapter_vec4(&up.shape, up.b.offset);
    let n = w.rows();
    let lora = fused.then_some(up);
    matmul_impl(batch, kernel, x, w, bias.map(Slot::Bias), 0..n, y, 0, n as u32, tokens, epilogue, lora).await?;
    if !fused {
        lora_forward_up(batch, up.u, up.b, y.into(), up.shape).await?;
    }
    Ok(())
}

fn uniform_bytes(batch: &Batch<'_>) -> u64 {
    batch.gpu().limits().max_uniform_buffer_binding_size.min(MATVEC_UNIFORM_BYTES)
}

/// What the bias binding holds.
#[derive(Clone, Copy)]
enum Slot<'a> {
    Bias(&'a Buffer),
    Gate(&'a Buffer),
}

/// [`matmul_with`] writing from element `y_offset` of y on.
#[allow(clippy::too_many_arguments)]
async fn matmul_impl(
    batch: &mut Batch<'_>,
    kernel: MatmulKernel,
    x: &Buffer,
    w: &Weight,
    slot: Option<Slot<'_>>,
    rows: Range<usize>,
    y: &Buffer,
    y_offset: u64,
    y_stride: u32,
    tokens: u32,
    epilogue: Epilogue,
    lora: Option<LoraUp<'_>>,
) -> Result<(), GpuError> {
    let (bias, gate) = match slot {
        Some(Slot::Bias(b)) => (Some(b), None),
        Some(Slot::Gate(g)) => (None, Some(g)),
        None => (None, None),
    };
    const NAME: &str = "matmul";
    let (k, t) = (w.cols() as u64, tokens as u64);
    if tokens == 0 || rows.is_empty() {
        return Ok(());
    }
    if k % 8 != 0 {
        return Err(GpuError::shape(NAME, format!("cols {k} must be a multiple of 8")));
    }
    if rows.end > w.rows() {
        return Err(GpuError::shape(NAME, format!("rows {rows:?} outside the weight's {} rows", w.rows())));
    }
    if (y_stride as usize) < rows.len() {
        return Err(GpuError::shape(NAME, format!("y_stride {y_stride} < {} rows", rows.len())));
    }
    if x.size() < 4 * t * k {
        return Err(GpuError::shape(NAME, format!("x `{}` holds {} bytes, needs {tokens}×{k} f32", x.label(), x.size())));
    }
    let y_needed = 4 * (y_offset + (t - 1) * y_stride as u64 + rows.len() as u64);
    if y_needed / 4 > u32::MAX as u64 {
        return Err(GpuError::shape(NAME, format!("y offset {y_offset} beyond u32 indexing")));
    }
    if y.size() < y_needed {
        return Err(GpuError::shape(NAME, format!("y `{}` holds {} bytes, needs {y_needed}", y.label(), y.size())));
    }
    if let Some(b) = bias {
        if b.size() < 4 * rows.end as u64 {
            return Err(GpuError::shape(NAME, format!("bias `{}` is shorter than {} rows", b.label(), rows.end)));
        }
    }
    if let Some(up) = &lora {
        check_lora_up(up, tokens, y)?;
    }
    let has_subgroups = batch.gpu().has_subgroups();
    if kernel == MatmulKernel::SubgroupTiled && !has_subgroups {
        return Err(GpuError::shape(NAME, "SubgroupTiled needs a device with subgroups"));
    }
    let subgroup_min = batch.gpu().info().subgroup_min_size;
    let subgroups = match kernel {
        MatmulKernel::Tiled => false,
        MatmulKernel::SubgroupTiled => true,
        MatmulKernel::Vector => has_subgroups,
        MatmulKernel::LaneVector => false,
    };
    let x_bytes = 4 * t * k;
    let vector = matches!(kernel, MatmulKernel::Vector | MatmulKernel::LaneVector);
    let x_vec4 = (vector && x_bytes <= uniform_bytes(batch)).then_some((t * k / 4) as u32);
    let software = batch.gpu().is_software();
    let blocks = kernel.blocks(w.ty(), subgroup_min, software);
    let tt = kernel.tile_tokens(blocks, software, tokens);
    let shader = kernel.kernel(w.ty(), subgroups, subgroup_min, x_vec4, software, tt, epilogue, bias.is_some());
    let pipeline = batch.gpu().pipeline(&shader).await?;
    let per_group = kernel.rows_per_group(subgroups, subgroup_min, blocks, software);
    let token_tiles = tokens.div_ceil(tt);
    for chunk in &w.chunks {
        let lo = rows.start.max(chunk.row0);
        let hi = rows.end.min(chunk.row0 + chunk.rows);
        if lo >= hi {
            continue;
        }
        let count = (hi - lo) as u32;
        let params = Params {
            tokens,
            rows: count,
            cols: k as u32,
            row0: (lo - chunk.row0) as u32,
            row_words: w.row_words() as u32,
            y_stride,
            // y_col is a plain offset added to every index of y.
            y_col: (y_offset + (lo - rows.start) as u64) as u32,
            bias_row: lo as u32,
            token_tiles,
            lora_rank: lora.map_or(0, |up| up.shape.rank),
            lora_scale: lora.map_or(0.0, |up| up.shape.scale),
            lora_b: lora.map_or(0, |up| up.b.offset + lo as u32 * up.shape.rank),
            _pad: [0; 4],
        };
        let groups = token_tiles * count.div_ceil(per_group);
        // Unbound bias still needs a buffer in its slot; the shader never reads it.
        let bias = bias.or(gate).unwrap_or(x);
        let weights = (&chunk.buffer).into();
        if vector {
            // matvec.wgsl binds the chunk twice: as vec4 words and as single words.
            let xb = if x_vec4.is_some() { x.range(0, x_bytes) } else { x.into() };
            batch.dispatch(&pipeline, &params, &[xb, weights, y.into(), bias.into(), weights], grid(groups))?;
        } else {
            // The subgroup module also binds the chunk and x as vec4s, and the adapter's u
            // and B (x again without an adapter, never read).
            let mut bindings = vec![x.into(), weights, y.into(), bias.into()];
            if subgroups {
                let (u, b) = lora.map_or((x, x), |up| (up.u, up.b.buffer));
                bindings.extend([weights, x.into(), u.into(), b.into()]);
            }
            batch.dispatch(&pipeline, &params, &bindings, grid(groups))?;
        }
    }
    Ok(())
}

/// An adapter for this projection (x [T, K] → y [T, N]): a valid shape mapping K → N.
fn check_adapter(name: &'static str, shape: &LoraShape, w: &Weight) -> Result<(), GpuError> {
    shape.check(name)?;
    let LoraShape { d_in, d_out, .. } = *shape;
    if (d_in as usize, d_out as usize) != (w.cols(), w.rows()) {
        return Err(GpuError::shape(name, format!("the adapter maps {d_in}→{d_out}, the weight {}→{}", w.cols(), w.rows())));
    }
    Ok(())
}

/// Whether the fused kernels can read an adapter matrix ([r, ·] or [·, r]) that starts at
/// `offset`: its rows, and so the rank and the offset, in whole vec4s.
fn adapter_vec4(shape: &LoraShape, offset: u32) -> bool {
    shape.rank.is_multiple_of(4) && offset.is_multiple_of(4)
}

/// The fused adapter term's buffers: the block tile reads u [tokens, r] and B [N, r]
/// from `b.offset` ([`matmul_lora`] checked the shape and the vec4s).
fn check_lora_up(up: &LoraUp<'_>, tokens: u32, y: &Buffer) -> Result<(), GpuError> {
    const NAME: &str = "matmul_lora";
    let LoraShape { rank, d_out, .. } = up.shape;
    super::add::ensure_len(NAME, "u", up.u, tokens as u64 * rank as u64)?;
    super::add::ensure_len(NAME, "b", up.b.buffer, up.b.offset as u64 + d_out as u64 * rank as u64)?;
    crate::kernels::ensure_distinct(NAME, &[("y", y), ("u", up.u), ("b", up.b.buffer)])
}

/// out[t, :] = W[ids[t], :]: gathers and dequantizes rows; ids u32 [tokens], out f32
/// [tokens, cols]. Ids past the last row leave their output row untouched.
pub async fn embedding(batch: &mut Batch<'_>, w: &Weight, ids: &Buffer, out: &Buffer, tokens: u32) -> Result<(), GpuError> {
    const NAME: &str = "embedding";
    let (k, t) = (w.cols() as u64, tokens as u64);
    if tokens == 0 {
        return Ok(());
    }
    if k % 8 != 0 {
        return Err(GpuError::shape(NAME, format!("cols {k} must be a multiple of 8")));
    }
    if ids.size() < 4 * t || out.size() < 4 * t * k {
        return Err(GpuError::shape(
            NAME,
            format!("ids `{}` ({} B) or out `{}` ({} B) too small for {tokens} tokens × {k}", ids.label(), ids.size(), out.label(), out.size()),
        ));
    }
    // The module also holds matmul_forward, so it needs its constants; the portable one.
    let kernel = MatmulKernel::Tiled.kernel(w.ty(), false, 0, None, false, 16, Epilogue::Write, false);
    let kernel = Kernel { entry: "embedding_forward", ..kernel };
    let pipeline = batch.gpu().pipeline(&kernel).await?;
    let threads = tokens * (k / 8) as u32;
    for chunk in &w.chunks {
        let params = Params {
            tokens,
            rows: chunk.rows as u32,
            cols: k as u32,
            row0: chunk.row0 as u32,
            row_words: w.row_words() as u32,
            ..Params::default()
        };
        batch.dispatch(&pipeline, &params, &[ids.into(), (&chunk.buffer).into(), out.into()], grid(threads.div_ceil(64)))?;
    }
    Ok(())
}
