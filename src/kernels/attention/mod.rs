//! Causal grouped-query attention over a KV cache (shaders/attention.wgsl), with the
//! log-sum-exp of every row stored for the backward; the backward is in backward.rs.

mod backward;

use super::add::ensure_len;
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};

pub use backward::{
    attention_backward, attention_backward_cpu, attention_backward_path, backward_loop_estimate, AttentionBackwardPath,
    BackwardBuffers,
};

const SOURCE: &str = include_str!("../../../shaders/attention.wgsl");
/// The subgroup backward, compiled after attention.wgsl's shared declarations.
const BACKWARD_SOURCE: &str = include_str!("../../../shaders/attention_backward.wgsl");

/// Marks where attention.wgsl's declarations shared by both modules end.
const PORTABLE_MARK: &str = "// ---- Tiled path";
/// Marks the start of the subgroup module's own entry point.
const SUBGROUP_MARK: &str = "// ---- subgroup module";

/// attention.wgsl holds two modules: the portable one (everything before the subgroup
/// section) and the subgroup one (the shared declarations plus the subgroup section).
/// Naga rejects subgroup builtins on devices without the feature, even unused.
fn module(subgroups: bool) -> &'static str {
    static SUBGROUP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let end = SOURCE.find(SUBGROUP_MARK).unwrap_or(SOURCE.len());
    if subgroups {
        SUBGROUP.get_or_init(|| {
            let shared = SOURCE.find(PORTABLE_MARK).unwrap_or(0);
            format!("{}{}", &SOURCE[..shared], &SOURCE[end..])
        })
    } else {
        &SOURCE[..end]
    }
}

/// attention_backward.wgsl's module: attention.wgsl's shared declarations, then it.
fn backward_module() -> &'static str {
    static MODULE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MODULE.get_or_init(|| {
        let shared = SOURCE.find(PORTABLE_MARK).unwrap_or(0);
        format!("{}{}", &SOURCE[..shared], BACKWARD_SOURCE)
    })
}

/// Largest head dimension the kernels take (the decode path's 256 threads span it).
pub const MAX_HEAD_DIM: u32 = 256;

/// Query rows per workgroup of the tiled path (`ROWS` in attention.wgsl).
const TILE_ROWS: u32 = 64;

/// Shape of one attention call. Query `t` sits at absolute position `past_len + t`
/// and attends to keys `0 ..= past_len + t`; the caller has written K/V rows
/// `past_len .. past_len + n_query` into the caches before the call.
///
/// Sequences packed one after another into the same buffers (training packs them, each
/// attending to itself alone) are given by `offset` and `seqs`: the call covers `seqs`
/// sequences of `n_query` queries each, sequence `s` from row `b = offset + s · n_query`:
/// its query `t` is row `b + t` of q, out, dout and dq, its key `j` row `b + j` of the
/// caches, dk and dv, and lse is `[n_head, rows]` with its queries at columns `b + t`.
/// More than one sequence needs `past_len` 0. Sequences of different lengths take a call
/// each. A lone sequence has `offset` 0, `seqs` 1 and `rows == n_query`
/// ([`AttentionShape::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub n_query: u32,
    pub past_len: u32,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub offset: u32,
    pub seqs: u32,
    pub rows: u32,
}

impl AttentionShape {
    /// One sequence alone in its buffers.
    pub fn new(n_query: u32, past_len: u32, n_head: u32, n_kv_head: u32, head_dim: u32) -> AttentionShape {
        AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, offset: 0, seqs: 1, rows: n_query }
    }

    /// `seqs` sequences of this shape's length packed from row `offset` of buffers of
    /// `rows` rows.
    pub fn packed(self, offset: u32, seqs: u32, rows: u32) -> AttentionShape {
        AttentionShape { offset, seqs, rows, ..self }
    }

    /// Rows the buffers must hold up to this call's last query and key.
    fn rows_used(&self) -> (u64, u64) {
        let queries = self.offset as u64 + self.seqs as u64 * self.n_query as u64;
        (queries, queries + self.past_len as u64)
    }
}

/// Which kernel runs; both compute the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// `Subgroup` where the device allows it and it stays within [`LOOP_BUDGET`];
    /// otherwise `Decode` for at most [`DECODE_MAX_QUERIES`] queries or when the tiled
    /// path would exceed the budget, else `Tiled`.
    #[default]
    Auto,
    /// Flash-attention style: K/V tiles in workgroup memory, one thread per (query,
    /// head) row, all heads of a KV group in one workgroup. For prefill.
    Tiled,
    /// One workgroup per (query, head) row, parallel over keys. For decode (T = 1),
    /// where the tiled path would leave most of a workgroup idle.
    Decode,
    /// One subgroup per workgroup, a (query, head) row per lane; the lanes load K/V
    /// rows together and share them with `subgroupBroadcast`. Only where
    /// [`subgroup_lanes`] finds a fixed subgroup size dividing `head_dim / 4`.
    Subgroup,
}

/// Lanes of the subgroup path on this device for `head_dim`, if it can run: the
/// subgroup size must be fixed (the kernel's workgroup is one subgroup) at 4 or 8, and
/// divide the vec4 columns of a row.
pub fn subgroup_lanes(gpu: &crate::gpu::Gpu, head_dim: u32) -> Option<u32> {
    let info = gpu.info();
    let lanes = info.subgroup_min_size;
    let fits = gpu.has_subgroups()
        && lanes == info.subgroup_max_size
        && (lanes == 4 || lanes == 8)
        && (head_dim / 4).is_multiple_of(lanes);
    fits.then_some(lanes)
}

/// Up to this many queries `Auto` takes the decode path.
pub const DECODE_MAX_QUERIES: u32 = 4;

/// Mirrors `Params` in attention.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_query: u32,
    past_len: u32,
    n_head: u32,
    n_kv_head: u32,
    scale: f32,
    /// Backward only: the keys (query pass) or queries (key pass) of one dispatch.
    lo: u32,
    hi: u32,
    /// Backward only: 1 adds to the gradients an earlier dispatch wrote.
    accumulate: u32,
    /// Packed sequences, as in [`AttentionShape`].
    offset: u32,
    rows: u32,
    seqs: u32,
}

/// Most loop iterations one invocation may run. llvmpipe (lavapipe, our CI device)
/// counts the iterations of all loops of an invocation together and silently leaves
/// every loop after 65535; a little is kept back for the loops the estimate ignores.
pub const LOOP_BUDGET: u64 = 60_000;

/// Loop iterations per thread of one path, after attention.wgsl's loop structure. A
/// loop of n iterations costs llvmpipe n + 1: the pass that leaves it counts too. Loops
/// the compiler may unroll are counted anyway, so this is an upper bound.
pub fn loop_estimate(path: AttentionPath, shape: &AttentionShape) -> u64 {
    let hd4 = (shape.head_dim / 4).max(1) as u64;
    let keys = shape.past_len as u64 + shape.n_query as u64;
    match path {
        AttentionPath::Decode => {
            let rest = hd4 % 4;
            let dot = hd4 / 4 + 1 + if rest > 0 { rest + 1 } else { 0 };
            let lanes = 256 / hd4;
            let chunks = keys.div_ceil(256);
            // per chunk: a score, 8 reduction steps + 1, the lane's share of the values
            3 + chunks * (1 + dot + 9 + 256u64.div_ceil(lanes) + 1) + 9 + lanes + 1
        }
        AttentionPath::Subgroup => {
            // per four keys: the chunk loop and two loops over the row in steps of the
            // lanes (4 at least); the q load and the store
            let steps = hd4.div_ceil(4) + 1;
            2 * (hd4 + 1) + keys.div_ceil(4) * (1 + 2 * steps) + 1
        }
        AttentionPath::Auto | AttentionPath::Tiled => {
            let rest = hd4 % 4;
            let dot = hd4 / 4 + 1 + if rest > 0 { rest + 1 } else { 0 };
            let bk = keys_per_tile(shape.head_dim) as u64;
            let tiles = keys.div_ceil(bk);
            // per tile: the loop itself, loads, the rescale, two key loops; per key: a
            // score and a value update
            3 * (hd4 + 1) + 1 + tiles * (1 + (bk * hd4).div_ceil(64) + 1 + hd4 + 1 + 2) + keys * 2 * dot
        }
    }
}

/// Keys per shared-memory tile: two tiles of `BK * head_dim` f32 stay within 16 KiB,
/// the WebGPU default workgroup storage. A multiple of four: the backward steps through
/// a tile four keys or query rows at a time (`head_dim <= 256` leaves at least 8).
fn keys_per_tile(head_dim: u32) -> u32 {
    (2048 / head_dim.max(1) / 4 * 4).clamp(4, 32)
}

/// A packed call's queries must lie inside its lse rows; several sequences in one call
/// must have no cached keys (their keys would overlap).
fn check_rows(name: &'static str, shape: &AttentionShape) -> Result<(), GpuError> {
    let (end, _) = shape.rows_used();
    if end > shape.rows as u64 {
        return Err(GpuError::shape(name, format!("queries {} .. {end} lie past the {} rows of lse", shape.offset, shape.rows)));
    }
    if shape.seqs == 0 || (shape.seqs > 1 && shape.past_len > 0) {
        return Err(GpuError::shape(
            name,
            format!("{} sequences in one call with {} cached keys; one or more, and none cached for several", shape.seqs, shape.past_len),
        ));
    }
    Ok(())
}

/// The head counts and `head_dim` every kernel of this module takes.
fn check_heads(name: &'static str, shape: &AttentionShape) -> Result<(), GpuError> {
    let AttentionShape { n_head, n_kv_head, head_dim, .. } = *shape;
    if head_dim == 0 || head_dim > MAX_HEAD_DIM || !head_dim.is_multiple_of(4) {
        return Err(GpuError::shape(name, format!("head_dim {head_dim} must be a multiple of 4 up to {MAX_HEAD_DIM}")));
    }
    if n_kv_head == 0 || !n_head.is_multiple_of(n_kv_head) {
        return Err(GpuError::shape(name, format!("n_head {n_head} is not a multiple of n_kv_head {n_kv_head}")));
    }
    Ok(())
}

/// `out` [n_query, n_head, head_dim] = causal softmax(q kᵀ / sqrt(head_dim)) v, and
/// `lse` [n_head, n_query] = the log-sum-exp of each row's scaled scores.
/// `q` [n_query, n_head, head_dim]; `k_cache`, `v_cache` [S_cap, n_kv_head, head_dim]
/// with `S_cap >= past_len + n_query`.
#[allow(clippy::too_many_arguments)]
pub async fn attention_forward(
    batch: &mut Batch<'_>,
    q: &Buffer,
    k_cache: &Buffer,
    v_cache: &Buffer,
    out: &Buffer,
    lse: &Buffer,
    shape: AttentionShape,
) -> Result<(), GpuError> {
    attention_forward_path(batch, q, k_cache, v_cache, out, lse, shape, AttentionPath::Auto).await
}

/// [`attention_forward`] on a chosen kernel (tests run both on every shape).
#[allow(clippy::too_many_arguments)]
pub async fn attention_forward_path(
    batch: &mut Batch<'_>,
    q: &Buffer,
    k_cache: &Buffer,
    v_cache: &Buffer,
    out: &Buffer,
    lse: &Buffer,
    shape: AttentionShape,
    path: AttentionPath,
) -> Result<(), GpuError> {
    const NAME: &str = "attention_forward";
    check_heads(NAME, &shape)?;
    check_rows(NAME, &shape)?;
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, offset, seqs, rows } = shape;
    let ((t, keys), hd) = (shape.rows_used(), head_dim as u64);
    ensure_len(NAME, "q", q, t * n_head as u64 * hd)?;
    ensure_len(NAME, "out", out, t * n_head as u64 * hd)?;
    ensure_len(NAME, "lse", lse, n_head as u64 * rows as u64)?;
    ensure_len(NAME, "k_cache", k_cache, keys * n_kv_head as u64 * hd)?;
    ensure_len(NAME, "v_cache", v_cache, keys * n_kv_head as u64 * hd)?;
    if n_query == 0 || n_head == 0 {
        return Ok(());
    }
    let gpu = batch.gpu();
    let lanes = subgroup_lanes(gpu, head_dim);
    let fits = |path| loop_estimate(path, &shape) <= LOOP_BUDGET;
    let chosen = match path {
        AttentionPath::Auto => match lanes {
            Some(_) if fits(AttentionPath::Subgroup) => AttentionPath::Subgroup,
            _ if n_query > DECODE_MAX_QUERIES && fits(AttentionPath::Tiled) => AttentionPath::Tiled,
            _ => AttentionPath::Decode,
        },
        other => other,
    };
    let loops = loop_estimate(chosen, &shape);
    if loops > LOOP_BUDGET {
        return Err(GpuError::shape(
            NAME,
            format!("{shape:?} needs ~{loops} loop iterations per thread on the {chosen:?} path; llvmpipe stops loops past 65535"),
        ));
    }
    let group = n_head / n_kv_head;
    // Counts fit u32: q fits one binding, so n_query * n_head < 2^25.
    let (kernel, groups) = match (chosen, lanes) {
        (AttentionPath::Subgroup, Some(sg)) => (
            Kernel::new("attention", module(true), "attention_forward_subgroup")
                .with("SG", format!("{sg}u"))
                .with_subgroups(),
            (n_query * group).div_ceil(sg) * n_kv_head,
        ),
        (AttentionPath::Subgroup, None) => {
            return Err(GpuError::shape(
                NAME,
                format!(
                    "the subgroup path needs a fixed subgroup of 4 or 8 lanes dividing head_dim / 4 ({head_dim}); {}",
                    gpu.describe()
                ),
            ))
        }
        (AttentionPath::Decode, _) => {
            (Kernel::new("attention", module(false), "attention_forward_decode"), n_query * n_head)
        }
        _ => (
            Kernel::new("attention", module(false), "attention_forward"),
            (n_query * group).div_ceil(TILE_ROWS) * n_kv_head,
        ),
    };
    // Both constants are needed by every portable entry: the module declares both
    // paths' storage.
    let kernel = kernel.with("HEAD_DIM", format!("{head_dim}u")).with("BK", format!("{}u", keys_per_tile(head_dim)));
    let pipeline = gpu.pipeline(&kernel).await?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let params = Params { n_query, past_len, n_head, n_kv_head, scale, lo: 0, hi: 0, accumulate: 0, offset, rows, seqs };
    let bindings = [q.into(), k_cache.into(), v_cache.into(), out.into(), lse.into()];
    batch.dispatch(&pipeline, &params, &bindings, grid(groups * seqs))
}

/// CPU reference of [`attention_forward`] on one sequence's own buffers (`offset`, `seqs`
/// and `rows` are not read): returns `(out, lse)`; accumulates in f64.
pub fn attention_forward_cpu(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
) -> (Vec<f32>, Vec<f32>) {
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, .. } = shape;
    let (t_n, hq, hkv, hd) = (n_query as usize, n_head as usize, n_kv_head as usize, head_dim as usize);
    let group = hq / hkv;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0f32; t_n * hq * hd];
    let mut lse = vec![0.0f32; hq * t_n];
    for t in 0..t_n {
        for h in 0..hq {
            let hk = h / group;
            let qrow = &q[(t * hq + h) * hd..][..hd];
            let n_keys = past_len as usize + t + 1;
            let scores: Vec<f64> = (0..n_keys)
                .map(|j| {
                    let krow = &k_cache[(j * hkv + hk) * hd..][..hd];
                    qrow.iter().zip(krow).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for d in 0..hd {
                let mut o = 0.0;
                for (j, s) in scores.iter().enumerate() {
                    o += (s - m).exp() * v_cache[(j * hkv + hk) * hd + d] as f64;
                }
                out[(t * hq + h) * hd + d] = (o / z) as f32;
            }
            lse[h * t_n + t] = (m + z.ln()) as f32;
        }
    }
    (out, lse)
}

#[cfg(test)]
mod tests {
    #[test]
    fn params_mirror_the_shader() {
        assert_eq!(
            crate::kernels::wgsl_struct_bytes(super::SOURCE, "Params"),
            Some(std::mem::size_of::<super::Params>())
        );
    }
}
