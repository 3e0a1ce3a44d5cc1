//! LoRA adapter kernels (shaders/lora.wgsl): for x [T, in], A [r, in], B [out, r] in f32
//! and `scale = alpha / r` (rsLoRA: `alpha / sqrt(r)`):
//!
//! - forward: `u = x · Aᵀ` [T, r] (kept for the backward), `y += scale · u · Bᵀ`;
//! - backward: `du = scale · dy · B` [T, r], `dB = scale · dyᵀ · u` [out, r],
//!   `dA = duᵀ · x` [r, in], `dx += du · A` [T, in].
//!
//! Order in a backward step: [`lora_backward_u`] first (the others read `du`), then
//! [`lora_backward_b`], [`lora_backward_a`] and [`lora_backward_input`] in any order.
//! A, B, dA and dB are [`View`]s, so they can live at offsets of one flat parameter
//! buffer and one flat gradient buffer (what AdamW steps over). Derivation in
//! docs/training-math.md. On CPU devices with 8-lane subgroups, dA and dB go through
//! [`matmul::outer_sum`] where the rank and widths line up.

use super::matmul;
use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, Gpu, GpuError, Kernel};

const SOURCE: &str = include_str!("../../shaders/lora.wgsl");

/// Largest rank the kernels are tested for.
pub const MAX_RANK: u32 = 64;

/// Loop iterations one invocation may run (lavapipe leaves every loop after 65,535
/// iterations in all per invocation, silently); a little is kept back.
const LOOP_BUDGET: u64 = 60_000;

/// Side of the square output tile of [`LoraKernel::Tiled`] (`TILE` in lora.wgsl).
const TILE: u32 = 16;

/// Side of the square block of outputs one lane of [`LoraKernel::Registers`] owns
/// (`BLOCK` in lora.wgsl).
const BLOCK: u32 = 8;

/// Lanes per workgroup of [`LoraKernel::Registers`]: 32 rather than 64 measured
/// 1.3× faster on llvmpipe, since the rank-wide products (`u`, `du`: T × r) then
/// spread over more than one workgroup, so over both CPU threads.
const REGISTER_WG: u32 = 32;

/// A [`LoraKernel::Tiled`] product with fewer output tiles than this splits its
/// contraction so that about this many workgroups run (lora.wgsl, `lora_reduce`).
const SPLIT_BELOW: u32 = 256;

/// Shortest K range of one split workgroup: shorter ones spend more on the second pass
/// than they save.
const SPLIT_MIN_K: u32 = 128;

/// How the GPU computes the adapter's matmuls (lora.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraKernel {
    /// 16 × 16 output tiles shared through workgroup memory, one output per lane.
    Tiled,
    /// An 8 × 8 block of outputs per lane in registers, no workgroup memory or barrier:
    /// CPU devices, where a barrier switches between the workgroup's lanes.
    Registers,
}

impl LoraKernel {
    /// The faster kernel on this device.
    pub fn choose(gpu: &Gpu) -> LoraKernel {
        if gpu.is_software() {
            LoraKernel::Registers
        } else {
            LoraKernel::Tiled
        }
    }
}

/// Mirrors `Params` in lora.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32,
    lhs_off: u32,
    lhs_rs: u32,
    lhs_cs: u32,
    rhs_off: u32,
    rhs_rs: u32,
    rhs_cs: u32,
    out_off: u32,
    out_rs: u32,
    alpha: f32,
    k_split: u32,
}

/// Whether lora.wgsl's `lhs8`/`rhs8` may load an operand's 8 values at one k as two
/// vec4s: they lie side by side (`block_stride` 1) in whole vec4s (`block_len`, the
/// offset and the stride along k multiples of 4).
fn vec4_block(offset: u32, k_stride: u32, block_stride: u32, block_len: u32) -> bool {
    block_stride == 1 && offset.is_multiple_of(4) && k_stride.is_multiple_of(4) && block_len.is_multiple_of(4)
}

/// f32 values of a buffer from `offset` (in elements) on: one tensor of a flat buffer.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub buffer: &'a Buffer,
    pub offset: u32,
}

impl<'a> View<'a> {
    pub fn at(buffer: &'a Buffer, offset: u32) -> View<'a> {
        View { buffer, offset }
    }
}

impl<'a> From<&'a Buffer> for View<'a> {
    fn from(buffer: &'a Buffer) -> Self {
        View { buffer, offset: 0 }
    }
}

/// The dimensions of one adapted projection and its scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraShape {
    pub tokens: u32,
    pub d_in: u32,
    pub d_out: u32,
    pub rank: u32,
    /// `alpha / rank` (PEFT), or `alpha / sqrt(rank)` with rsLoRA.
    pub scale: f32,
    pub kernel: LoraKernel,
}

impl LoraShape {
    pub(crate) fn check(&self, name: &'static str) -> Result<(), GpuError> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(GpuError::shape(name, format!("rank {} must be in 1..={MAX_RANK}", self.rank)));
        }
        if self.rank > self.d_in.min(self.d_out) {
            return Err(GpuError::shape(
                name,
                format!("rank {} exceeds a dimension of the {}→{} projection", self.rank, self.d_in, self.d_out),
            ));
        }
        if !self.scale.is_finite() {
            return Err(GpuError::shape(name, format!("scale {} must be finite", self.scale)));
        }
        Ok(())
    }
}

/// One operand of the generic matmul: element (i, j) at `offset + i·rs + j·cs`.
struct Operand<'a> {
    name: &'static str,
    view: View<'a>,
    rs: u32,
    cs: u32,
}

/// out[m, n] (+)= alpha · Σ_k L[m, k] · R[k, n] through entry point `name`.
#[allow(clippy::too_many_arguments)]
async fn lora_matmul(
    batch: &mut Batch<'_>,
    name: &'static str,
    [m, n, k]: [u32; 3],
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    out: (&'static str, View<'_>),
    alpha: f32,
    accumulate: bool,
    kernel: LoraKernel,
) -> Result<(), GpuError> {
    let (out_name, out_view) = out;
    // Largest element index read or written, per operand: checks the buffer is long enough.
    let last = |v: &View<'_>, rows: u32, cols: u32, rs: u32, cs: u32| {
        v.offset as u64 + (rows.max(1) as u64 - 1) * rs as u64 + (cols.max(1) as u64 - 1) * cs as u64
    };
    ensure_len(name, lhs.name, lhs.view.buffer, last(&lhs.view, m, k, lhs.rs, lhs.cs) + 1)?;
    ensure_len(name, rhs.name, rhs.view.buffer, last(&rhs.view, k, n, rhs.rs, rhs.cs) + 1)?;
    ensure_len(name, out_name, out_view.buffer, last(&out_view, m, n, n, 1) + 1)?;
    for (operand, buffer) in [(lhs.name, lhs.view.buffer), (rhs.name, rhs.view.buffer)] {
        if buffer.raw() == out_view.buffer.raw() {
            return Err(GpuError::shape(name, format!("`{operand}` and `{out_name}` are the same buffer `{}`", buffer.label())));
        }
    }
    let registers = kernel == LoraKernel::Registers;
    let loops = if registers { k as u64 } else { (k as u64).div_ceil(TILE as u64) * (TILE as u64 + 1) };
    if loops > LOOP_BUDGET {
        return Err(GpuError::shape(
            name,
            format!("a contraction over {k} would run {loops} loop iterations per thread (at most {LOOP_BUDGET}); split it"),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    // Whether each operand loads as vec4s is a pipeline constant, not a parameter: llvmpipe
    // runs both sides of a branch, masked, so a branch in the loop cost the other side's
    // loads too (the four register products 3.6 → 2.5 s a step, docs/benchmarks.md).
    let (lhs_vec, rhs_vec) = match registers {
        true => (vec4_block(lhs.view.offset, lhs.cs, lhs.rs, m), vec4_block(rhs.view.offset, rhs.rs, rhs.cs, n)),
        false => (false, false),
    };
    let (wx, wy) = if registers { (REGISTER_WG, 1) } else { (TILE, TILE) };
    let kernel = |entry| {
        Kernel::new("lora", SOURCE, entry)
            .with("REGISTERS", registers)
            .with("LHS_VEC", lhs_vec)
            .with("RHS_VEC", rhs_vec)
            .with("WX", format!("{wx}u"))
            .with("WY", format!("{wy}u"))
    };
    let pipeline = batch.gpu().pipeline(&kernel(name)).await?;
    let params = Params {
        m,
        n,
        k,
        accumulate: accumulate as u32,
        lhs_off: lhs.view.offset,
        lhs_rs: lhs.rs,
        lhs_cs: lhs.cs,
        rhs_off: rhs.view.offset,
        rhs_rs: rhs.rs,
        rhs_cs: rhs.cs,
        out_off: out_view.offset,
        out_rs: n,
        alpha,
        k_split: k,
    };
    let operands = [lhs.view.buffer.into(), rhs.view.buffer.into()];
    // The vec4 views bind at least one vec4; an operand under 16 bytes holds fewer than
    // 4 values, so no whole vec4 block, and its view binds a spare buffer never read.
    let spare = match lhs.view.buffer.size().min(rhs.view.buffer.size()) < 16 {
        true => Some(batch.gpu().scratch("lora_vec4_spare", 16)?),
        false => None,
    };
    let view4 = |b| match &spare {
        Some(spare) if Buffer::size(b) < 16 => spare,
        _ => b,
    };
    let (lhs4, rhs4) = (view4(lhs.view.buffer), view4(rhs.view.buffer));
    // The five bindings of a product written to `out`.
    let bindings = |out| [operands[0], operands[1], out, lhs4.into(), rhs4.into()];
    if registers {
        let groups = (m.div_ceil(BLOCK) * n.div_ceil(BLOCK)).div_ceil(REGISTER_WG);
        batch.dispatch(&pipeline, &params, &bindings(out_view.buffer.into()), grid(groups))?;
        batch.retain(spare);
        return Ok(());
    }
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    let splits = match tiles < SPLIT_BELOW {
        true => (SPLIT_BELOW / tiles).min(k / SPLIT_MIN_K).max(1),
        false => 1,
    };
    // At least a tile: an empty contraction (no tokens) is one range that writes zeros.
    let k_split = k.div_ceil(splits).next_multiple_of(TILE).max(TILE);
    let splits = k.div_ceil(k_split).max(1);
    if splits == 1 {
        batch.dispatch(&pipeline, &params, &bindings(out_view.buffer.into()), grid(tiles))?;
        batch.retain(spare);
        return Ok(());
    }
    // Each K range's partial sums into its slice of a scratch buffer, then their sum
    // into `out`.
    let gpu = batch.gpu();
    let partial = gpu.scratch("lora_partial", 4 * splits as u64 * m as u64 * n as u64)?;
    let first = Params { accumulate: 0, out_off: 0, alpha: 1.0, k_split, ..params };
    batch.dispatch(&pipeline, &first, &bindings((&partial).into()), grid(tiles * splits))?;
    let reduce = gpu.pipeline(&kernel("lora_reduce")).await?;
    let second = Params { k: splits, lhs_off: 0, ..params };
    batch.dispatch(&reduce, &second, &[(&partial).into(), out_view.buffer.into()], grid((m * n).div_ceil(TILE * TILE)))?;
    batch.retain([partial].into_iter().chain(spare));
    Ok(())
}

/// Forward: `u = x · Aᵀ` into `u` [T, r] (kept for the backward), then
/// `y += scale · u · Bᵀ` onto `y` [T, out] (which holds the base projection's output;
/// a view, so keys and values can go straight into their KV-cache rows).
/// `matmul::matmul_lora` instead adds the second half inside the base projection.
pub async fn lora_forward(
    batch: &mut Batch<'_>,
    x: &Buffer,
    a: View<'_>,
    b: View<'_>,
    u: &Buffer,
    y: View<'_>,
    shape: LoraShape,
) -> Result<(), GpuError> {
    lora_forward_down(batch, x, a, u, shape).await?;
    lora_forward_up(batch, u, b, y, shape).await
}

/// `u = x · Aᵀ` into `u` [T, r], the first half of [`lora_forward`].
pub async fn lora_forward_down(batch: &mut Batch<'_>, x: &Buffer, a: View<'_>, u: &Buffer, shape: LoraShape) -> Result<(), GpuError> {
    let LoraShape { tokens, d_in, rank, .. } = shape;
    shape.check("lora_forward_down")?;
    let x_op = Operand { name: "x", view: x.into(), rs: d_in, cs: 1 };
    let a_op = Operand { name: "a", view: a, rs: 1, cs: d_in }; // Aᵀ[k, n] = A[n, k]
    lora_matmul(batch, "lora_forward_down", [tokens, rank, d_in], x_op, a_op, ("u", u.into()), 1.0, false, shape.kernel).await
}

/// `y += scale · u · Bᵀ` onto `y` [T, out], the second half of [`lora_forward`].
pub async fn lora_forward_up(batch: &mut Batch<'_>, u: &Buffer, b: View<'_>, y: View<'_>, shape: LoraShape) -> Result<(), GpuError> {
    let LoraShape { tokens, d_out, rank, scale, .. } = shape;
    shape.check("lora_forward_up")?;
    let u_op = Operand { name: "u", view: u.into(), rs: rank, cs: 1 };
    let b_op = Operand { name: "b", view: b, rs: 1, cs: rank }; // Bᵀ[k, n] = B[n, k]
    lora_matmul(batch, "lora_forward_up", [tokens, d_out, rank], u_op, b_op, ("y", y), scale, true, shape.kernel).await
}

/// `du = scale · dy · B` [T, r] from `dy` [T, out]; the gradient with respect to `u`.
pub async fn lora_backward_u(
    batch: &mut Batch<'_>,
    dy: &Buffer,
    b: View<'_>,
    du: &Buffer,
    shape: LoraShape,
) -> Result<(), GpuError> {
    let LoraShape { tokens, d_out, rank, scale, .. } = shape;
    shape.check("lora_backward_u")?;
    let dy_op = Operand { name: "dy", view: dy.into(), rs: d_out, cs: 1 };
    let b_op = Operand { name: "b", view: b, rs: rank, cs: 1 };
    lora_matmul(batch, "lora_backward_u", [tokens, rank, d_out], dy_op, b_op, ("du", du.into()), scale, false, shape.kernel).await
}

/// `dB = scale · dyᵀ · u` [out, r], added onto `db` with `accumulate` (gradient
/// accumulation over micro-batches), else written.
pub async fn lora_backward_b(
    batch: &mut Batch<'_>,
    dy: &Buffer,
    u: &Buffer,
    db: View<'_>,
    shape: LoraShape,
    accumulate: bool,
) -> Result<(), GpuError> {
    let LoraShape { tokens, d_out, rank, scale, .. } = shape;
    shape.check("lora_backward_b")?;
    if outer_sum_here(batch, &shape, d_out) {
        // dB = scale · (uᵀ · dy)ᵀ: u's r columns shared, dy's rows walked.
        return matmul::outer_sum(batch, u, dy, [tokens, rank, d_out], db, true, scale, accumulate).await;
    }
    let dyt = Operand { name: "dy", view: dy.into(), rs: 1, cs: d_out }; // dyᵀ[m, k] = dy[k, m]
    let u_op = Operand { name: "u", view: u.into(), rs: rank, cs: 1 };
    lora_matmul(batch, "lora_backward_b", [d_out, rank, tokens], dyt, u_op, ("db", db), scale, accumulate, shape.kernel).await
}

/// `dA = duᵀ · x` [r, in] (the scale is already in `du`), added onto `da` with
/// `accumulate`, else written.
pub async fn lora_backward_a(
    batch: &mut Batch<'_>,
    du: &Buffer,
    x: &Buffer,
    da: View<'_>,
    shape: LoraShape,
    accumulate: bool,
) -> Result<(), GpuError> {
    let LoraShape { tokens, d_in, rank, .. } = shape;
    shape.check("lora_backward_a")?;
    if outer_sum_here(batch, &shape, d_in) {
        return matmul::outer_sum(batch, du, x, [tokens, rank, d_in], da, false, 1.0, accumulate).await;
    }
    let dut = Operand { name: "du", view: du.into(), rs: 1, cs: rank }; // duᵀ[m, k] = du[k, m]
    let x_op = Operand { name: "x", view: x.into(), rs: d_in, cs: 1 };
    lora_matmul(batch, "lora_backward_a", [rank, d_in, tokens], dut, x_op, ("da", da), 1.0, accumulate, shape.kernel).await
}

/// `dx += du · A` [T, in]: the adapter's share of the input gradient, added onto `dx`
/// (which holds the frozen base weight's `dy · W`); without `accumulate` it overwrites
/// `dx` (LoRA dropout masks this share before adding it).
pub async fn lora_backward_input(
    batch: &mut Batch<'_>,
    du: &Buffer,
    a: View<'_>,
    dx: &Buffer,
    shape: LoraShape,
    accumulate: bool,
) -> Result<(), GpuError> {
    let LoraShape { tokens, d_in, rank, .. } = shape;
    shape.check("lora_backward_input")?;
    let du_op = Operand { name: "du", view: du.into(), rs: rank, cs: 1 };
    let a_op = Operand { name: "a", view: a, rs: d_in, cs: 1 };
    lora_matmul(batch, "lora_backward_input", [tokens, d_in, rank], du_op, a_op, ("dx", dx.into()), 1.0, accumulate, shape.kernel).await
}

/// Whether dA and dB (sums over the tokens, `cols` = d_in or d_out) go through
/// [`matmul::outer_sum`]: with the register kernel (CPU devices) where it runs, 1.7×
/// the register kernel's speed there in a profiled step (docs/benchmarks.md).
fn outer_sum_here(batch: &Batch<'_>, shape: &LoraShape, cols: u32) -> bool {
    shape.kernel == LoraKernel::Registers && shape.tokens > 0 && matmul::outer_sum_fits(batch, shape.rank, cols)
}

/// CPU reference of [`lora_forward`] in f64: returns `(u, y + scale · u · Bᵀ)`.
pub fn lora_forward_cpu(x: &[f32], a: &[f32], b: &[f32], y: &[f32], shape: LoraShape) -> (Vec<f64>, Vec<f64>) {
    let (t, din, dout, r) = (shape.tokens as usize, shape.d_in as usize, shape.d_out as usize, shape.rank as usize);
    let mut u = vec![0.0f64; t * r];
    for i in 0..t {
        for j in 0..r {
            u[i * r + j] = (0..din).map(|k| x[i * din + k] as f64 * a[j * din + k] as f64).sum();
        }
    }
    let mut out: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    for i in 0..t {
        for o in 0..dout {
            let s: f64 = (0..r).map(|j| u[i * r + j] * b[o * r + j] as f64).sum();
            out[i * dout + o] += shape.scale as f64 * s;
        }
    }
    (u, out)
}

/// The LoRA gradients of a CPU reference backward, in f64.
pub struct LoraGradsCpu {
    pub du: Vec<f64>,
    pub da: Vec<f64>,
    pub db: Vec<f64>,
    /// The adapter's share of dx (without the base weight's).
    pub dx: Vec<f64>,
}

/// CPU reference of the backward kernels, plain loops in f64.
pub fn lora_backward_cpu(x: &[f32], a: &[f32], b: &[f32], dy: &[f32], shape: LoraShape) -> LoraGradsCpu {
    let (t, din, dout, r) = (shape.tokens as usize, shape.d_in as usize, shape.d_out as usize, shape.rank as usize);
    let s = shape.scale as f64;
    let (u, _) = lora_forward_cpu(x, a, b, &vec![0.0; t * dout], shape);
    let mut g = LoraGradsCpu { du: vec![0.0; t * r], da: vec![0.0; r * din], db: vec![0.0; dout * r], dx: vec![0.0; t * din] };
    for i in 0..t {
        for j in 0..r {
            g.du[i * r + j] = s * (0..dout).map(|o| dy[i * dout + o] as f64 * b[o * r + j] as f64).sum::<f64>();
        }
    }
    for o in 0..dout {
        for j in 0..r {
            g.db[o * r + j] = s * (0..t).map(|i| dy[i * dout + o] as f64 * u[i * r + j]).sum::<f64>();
        }
    }
    for j in 0..r {
        for k in 0..din {
            g.da[j * din + k] = (0..t).map(|i| g.du[i * r + j] * x[i * din + k] as f64).sum();
        }
    }
    for i in 0..t {
        for k in 0..din {
            g.dx[i * din + k] = (0..r).map(|j| g.du[i * r + j] * a[j * din + k] as f64).sum();
        }
    }
    g
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(super::super::wgsl_struct_bytes(super::SOURCE, "Params"), Some(std::mem::size_of::<super::Params>()));
    }
}
