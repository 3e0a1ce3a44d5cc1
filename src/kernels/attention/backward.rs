//! Backward of causal grouped-query attention: the portable two-pass kernel in
//! attention.wgsl and the subgroup one in shaders/attention_backward.wgsl.

use super::{
    backward_module, check_heads, check_rows, keys_per_tile, module, subgroup_lanes, AttentionShape, Params, LOOP_BUDGET, TILE_ROWS,
};
use crate::gpu::{batch::grid, Batch, Buffer, GpuError, Kernel};
use crate::kernels::add::ensure_len;
use crate::kernels::ensure_distinct;

/// Keys per workgroup of the backward's key pass (`KEYS` in attention.wgsl).
const KEY_BLOCK: u32 = 64;

/// Which backward kernels run; both compute the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionBackwardPath {
    /// `Subgroup` where [`subgroup_lanes`] allows it, a row is at most 8 pieces of that
    /// many vec4s, and its query pass stays within [`LOOP_BUDGET`]; else `Tiled`.
    #[default]
    Auto,
    /// Portable, FlashAttention-2 style: a query pass (dq) and a key pass (dk, dv), each
    /// recomputing P and dout · v, rows streamed through workgroup-memory tiles.
    Tiled,
    /// attention_backward.wgsl: a stats pass, a key pass (dk, dv) that also stores dS,
    /// a query pass dq = dS k: five matrix products instead of seven. One subgroup per
    /// workgroup, two keys or rows per lane; the lanes share the rows they stream with
    /// `subgroupBroadcast`, as the forward's `Subgroup` path. Queries are split into chunks that bound the dS
    /// scratch at 32 MiB. About 18× faster than `Tiled` on lavapipe.
    Subgroup,
}

/// Loop iterations per thread of one portable (`Tiled`) backward dispatch whose span is
/// `span` keys (the query pass: the keys of one dispatch) or `span` query rows, queries
/// × group (the key pass). Both walk their span in tiles of `BK` with the same loops
/// (attention.wgsl, backward section), counted as in [`loop_estimate`].
pub fn backward_loop_estimate(head_dim: u32, span: u64) -> u64 {
    let hd4 = (head_dim / 4).max(1) as u64;
    let rest = hd4 % 4;
    let cols = hd4 / 4 + 1 + if rest > 0 { rest + 1 } else { 0 };
    let bk = keys_per_tile(head_dim) as u64;
    let steps = bk / 4;
    // per tile: the tile loop, the cooperative load, the steps of four keys or rows and
    // two column loops in each
    let tile = 1 + (bk * hd4).div_ceil(64) + 1 + steps + 1 + steps * 2 * cols;
    // the row loads and the stores, and the tile loop's exit
    2 * (hd4 + 1) + 1 + span.div_ceil(bk) * tile
}

/// Largest span (see [`backward_loop_estimate`]) one portable backward dispatch may take.
fn backward_span(head_dim: u32) -> u64 {
    let fixed = backward_loop_estimate(head_dim, 0);
    let bk = keys_per_tile(head_dim) as u64;
    let per_tile = backward_loop_estimate(head_dim, bk) - fixed;
    LOOP_BUDGET.saturating_sub(fixed) / per_tile * bk
}

/// Keys per lane of the subgroup backward's key pass, and (query, head) rows per lane of
/// its query pass (`KB / SG`, `QB / SG` in attention_backward.wgsl).
const KEYS_PER_LANE: u32 = 2;

/// Most pieces of `lanes` vec4 columns a row may have on the subgroup backward (its
/// `CHUNKS`, walked by hand in attention_backward.wgsl).
const MAX_CHUNKS: u32 = 8;

/// Loop iterations per thread of the subgroup backward's two main passes on `lanes`
/// lanes, after attention_backward.wgsl, counted as in [`loop_estimate`]: `(key pass,
/// query pass)` for a chunk of `queries` queries whose rows see `keys` keys. The passes
/// walk a row's pieces without loops; only their loads and stores loop over the lanes.
fn subgroup_backward_loop_estimate(head_dim: u32, lanes: u32, group: u32, queries: u64, keys: u64) -> (u64, u64) {
    let lanes = lanes.max(1) as u64;
    let rows = (head_dim as u64 / 4).div_ceil(lanes) * (lanes + 1);
    let group = group as u64;
    // key pass: the row loads and stores; per head of the group the steps of four queries
    let key_pass = 2 * rows + group + 1 + group * (queries.div_ceil(4) + 1);
    // query pass: the steps of four keys and the store
    let query_pass = keys.div_ceil(4) + 1 + rows;
    (key_pass, query_pass)
}

/// Bytes the subgroup backward's dS scratch of one chunk may take (more queries are
/// split into chunks): 2 chunks at 1024 queries with SmolLM2's 9 heads.
const DS_BYTES: u64 = 32 << 20;

/// Queries per chunk of the subgroup backward (a multiple of 4), or None where it cannot
/// run: rows of more than [`MAX_CHUNKS`] pieces, four queries past the loop budget or
/// the dS scratch, or a query pass over all keys past the loop budget.
fn subgroup_chunk(shape: &AttentionShape, lanes: u32, binding_limit: u64) -> Option<u32> {
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, .. } = *shape;
    if head_dim / 4 / lanes > MAX_CHUNKS {
        return None;
    }
    let group = n_head / n_kv_head;
    let keys = past_len as u64 + n_query as u64;
    let fits = |queries: u64| {
        let (key_pass, query_pass) = subgroup_backward_loop_estimate(head_dim, lanes, group, queries, keys);
        key_pass <= LOOP_BUDGET && query_pass <= LOOP_BUDGET
    };
    // dS row stride, at its largest (the last chunk)
    let stride = keys.next_multiple_of((KEYS_PER_LANE * lanes) as u64);
    let by_memory = DS_BYTES.min(binding_limit) / (4 * n_head as u64 * stride).max(1);
    let mut most = (n_query as u64).next_multiple_of(4).min(by_memory) / 4 * 4;
    while most >= 4 && !fits(most) {
        most = (most / 2).next_multiple_of(4).min(most - 4);
    }
    if most < 4 {
        return None;
    }
    // Even chunks: the same work in fewer, fuller dispatches.
    let chunks = (n_query as u64).div_ceil(most);
    Some((n_query as u64).div_ceil(chunks).next_multiple_of(4) as u32)
}

/// Backward of [`attention_forward`]: from `dout` = dL/d`out`, overwrites `dq`
/// [n_query, n_head, head_dim] and rows `0 .. past_len + n_query` of `dk`, `dv`
/// [S_cap, n_kv_head, head_dim] (a kv head's rows sum over the query heads of its
/// group; rows past them are left alone). `q`, `k_cache`, `v_cache`, `out` and `lse` as
/// the forward took and wrote them. All nine buffers must be distinct.
///
/// Runs the fastest path this device has ([`AttentionBackwardPath`]).
#[allow(clippy::too_many_arguments)]
pub async fn attention_backward(
    batch: &mut Batch<'_>,
    q: &Buffer,
    k_cache: &Buffer,
    v_cache: &Buffer,
    out: &Buffer,
    dout: &Buffer,
    lse: &Buffer,
    dq: &Buffer,
    dk: &Buffer,
    dv: &Buffer,
    shape: AttentionShape,
) -> Result<(), GpuError> {
    let buffers = BackwardBuffers { q, k_cache, v_cache, out, dout, lse, dq, dk, dv };
    attention_backward_path(batch, buffers, shape, AttentionBackwardPath::Auto).await
}

/// The buffers of [`attention_backward`], in its order.
#[derive(Clone, Copy)]
pub struct BackwardBuffers<'a> {
    pub q: &'a Buffer,
    pub k_cache: &'a Buffer,
    pub v_cache: &'a Buffer,
    pub out: &'a Buffer,
    pub dout: &'a Buffer,
    pub lse: &'a Buffer,
    pub dq: &'a Buffer,
    pub dk: &'a Buffer,
    pub dv: &'a Buffer,
}

/// [`attention_backward`] on a chosen path (tests run every path on every shape).
pub async fn attention_backward_path(
    batch: &mut Batch<'_>,
    buffers: BackwardBuffers<'_>,
    shape: AttentionShape,
    path: AttentionBackwardPath,
) -> Result<(), GpuError> {
    const NAME: &str = "attention_backward";
    check_heads(NAME, &shape)?;
    check_rows(NAME, &shape)?;
    let BackwardBuffers { q, k_cache, v_cache, out, dout, lse, dq, dk, dv } = buffers;
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, rows, .. } = shape;
    let ((t, keys), hd) = (shape.rows_used(), head_dim as u64);
    for (name, buffer) in [("q", q), ("out", out), ("dout", dout), ("dq", dq)] {
        ensure_len(NAME, name, buffer, t * n_head as u64 * hd)?;
    }
    ensure_len(NAME, "lse", lse, n_head as u64 * rows as u64)?;
    for (name, buffer) in [("k_cache", k_cache), ("v_cache", v_cache), ("dk", dk), ("dv", dv)] {
        ensure_len(NAME, name, buffer, keys * n_kv_head as u64 * hd)?;
    }
    ensure_distinct(
        NAME,
        &[
            ("q", q),
            ("k_cache", k_cache),
            ("v_cache", v_cache),
            ("out", out),
            ("dout", dout),
            ("lse", lse),
            ("dq", dq),
            ("dk", dk),
            ("dv", dv),
        ],
    )?;
    if n_head == 0 || past_len as u64 + n_query as u64 == 0 {
        return Ok(());
    }
    let gpu = batch.gpu();
    let lanes = subgroup_lanes(gpu, head_dim);
    let limit = gpu.limits().max_storage_buffer_binding_size;
    let chunk = lanes.and_then(|sg| Some((sg, subgroup_chunk(&shape, sg, limit)?)));
    match (path, chunk) {
        // Without queries the subgroup passes have nothing to walk: the tiled key pass
        // writes the zero gradient of the cached keys.
        (AttentionBackwardPath::Auto | AttentionBackwardPath::Subgroup, Some((sg, chunk))) if n_query > 0 => {
            backward_subgroup(batch, buffers, shape, sg, chunk).await
        }
        (AttentionBackwardPath::Subgroup, _) if n_query > 0 => Err(GpuError::shape(
            NAME,
            format!(
                "{shape:?}: the subgroup backward needs a fixed subgroup of 4 or 8 lanes dividing head_dim / 4 into at \
                 most {MAX_CHUNKS} pieces, and its passes within llvmpipe's loop budget; {}",
                gpu.describe()
            ),
        )),
        _ => backward_tiled(batch, buffers, shape).await,
    }
}

/// The portable backward, two passes, FlashAttention-2 style, with P recomputed from
/// `lse`: one parallel over query rows writes `dq` and each row's `(lse, D = dout ·
/// out)` to a scratch buffer, one parallel over keys writes `dk` and `dv`. Spans that
/// would exceed llvmpipe's loop budget ([`backward_loop_estimate`]) are split over
/// several dispatches that add up.
async fn backward_tiled(batch: &mut Batch<'_>, b: BackwardBuffers<'_>, shape: AttentionShape) -> Result<(), GpuError> {
    const NAME: &str = "attention_backward";
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, offset, seqs, rows } = shape;
    let group = n_head / n_kv_head;
    let span = backward_span(head_dim);
    // One key dispatch covers this many queries, one query dispatch this many keys.
    let queries_per = (span / group as u64).min(u32::MAX as u64) as u32;
    let keys_per = span.min(u32::MAX as u64) as u32;
    if queries_per == 0 {
        return Err(GpuError::shape(
            NAME,
            format!("{shape:?}: one query's {group} rows exceed the loop budget; llvmpipe stops loops past 65535"),
        ));
    }
    let gpu = batch.gpu();
    let kernel = |entry| {
        Kernel::new("attention", module(false), entry)
            .with("HEAD_DIM", format!("{head_dim}u"))
            .with("BK", format!("{}u", keys_per_tile(head_dim)))
    };
    let query_pass = gpu.pipeline(&kernel("attention_backward_query")).await?;
    let key_pass = gpu.pipeline(&kernel("attention_backward_kv")).await?;
    // (lse, D) per row of every sequence; fewer than 2^25 since q fits one binding.
    let stats = gpu.scratch("attention_stats", 8 * (seqs as u64 * n_query as u64 * n_head as u64).max(1))?;
    let keys = past_len + n_query;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let base = Params { n_query, past_len, n_head, n_kv_head, scale, lo: 0, hi: 0, accumulate: 0, offset, rows, seqs };
    if n_query > 0 {
        let groups = (n_query * group).div_ceil(TILE_ROWS) * n_kv_head * seqs;
        let bindings = [
            b.q.into(),
            b.k_cache.into(),
            b.v_cache.into(),
            b.out.into(),
            b.lse.into(),
            b.dout.into(),
            b.dq.into(),
            (&stats).into(),
        ];
        for lo in (0..keys).step_by(keys_per as usize) {
            let params = Params { lo, hi: lo.saturating_add(keys_per).min(keys), accumulate: (lo > 0) as u32, ..base };
            batch.dispatch(&query_pass, &params, &bindings, grid(groups))?;
        }
    }
    // At least one key dispatch: with no queries it writes the zero gradient of the
    // cached keys.
    let groups = keys.div_ceil(KEY_BLOCK) * n_kv_head * seqs;
    let bindings =
        [b.q.into(), b.k_cache.into(), b.v_cache.into(), b.dout.into(), (&stats).into(), b.dk.into(), b.dv.into()];
    let mut lo = 0u32;
    loop {
        let hi = lo.saturating_add(queries_per).min(n_query);
        let params = Params { lo, hi, accumulate: (lo > 0) as u32, ..base };
        batch.dispatch(&key_pass, &params, &bindings, grid(groups))?;
        if hi >= n_query {
            break;
        }
        lo = hi;
    }
    batch.retain([stats]);
    Ok(())
}

/// The subgroup backward (attention_backward.wgsl) on `lanes` lanes, `chunk` queries
/// per key-pass + query-pass pair ([`subgroup_chunk`]).
async fn backward_subgroup(
    batch: &mut Batch<'_>,
    b: BackwardBuffers<'_>,
    shape: AttentionShape,
    lanes: u32,
    chunk: u32,
) -> Result<(), GpuError> {
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, offset, seqs, rows } = shape;
    let group = n_head / n_kv_head;
    let gpu = batch.gpu();
    let kernel = |entry| {
        Kernel::new("attention_backward", backward_module(), entry)
            .with("HEAD_DIM", format!("{head_dim}u"))
            .with("SG", format!("{lanes}u"))
            .with_subgroups()
    };
    let stats_pass = gpu.pipeline(&kernel("attention_backward_stats")).await?;
    let key_pass = gpu.pipeline(&kernel("attention_backward_kv_subgroup")).await?;
    let query_pass = gpu.pipeline(&kernel("attention_backward_query_subgroup")).await?;
    let quads = n_query.div_ceil(4);
    // (lse, D) of four queries of one head per pair of vec4.
    let stats = gpu.scratch("attention_stats", 32 * n_head as u64 * quads as u64)?;
    let keys = past_len + n_query;
    // The largest chunk's dS, [n_head, chunk, keys rounded up to a key-pass workgroup].
    let block = KEYS_PER_LANE * lanes;
    let ds_len = n_head as u64 * chunk as u64 * keys.next_multiple_of(block) as u64;
    let ds = gpu.scratch("attention_ds", 4 * ds_len)?;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let key_groups = keys.div_ceil(block) * n_kv_head;
    // The scratch holds one sequence's stats and dS: a dispatch chain per sequence.
    for s in 0..seqs {
        let offset = offset + s * n_query;
        let base = Params { n_query, past_len, n_head, n_kv_head, scale, lo: 0, hi: n_query, accumulate: 0, offset, rows, seqs: 1 };
        let bindings = [b.out.into(), b.lse.into(), b.dout.into(), (&stats).into()];
        batch.dispatch(&stats_pass, &base, &bindings, grid((n_head * quads).div_ceil(64)))?;
        for lo in (0..n_query).step_by(chunk as usize) {
            let hi = (lo + chunk).min(n_query);
            let params = Params { lo, hi, accumulate: (lo > 0) as u32, ..base };
            let bindings = [
                b.q.into(),
                b.k_cache.into(),
                b.v_cache.into(),
                b.dout.into(),
                (&stats).into(),
                b.dk.into(),
                b.dv.into(),
                (&ds).into(),
            ];
            batch.dispatch(&key_pass, &params, &bindings, grid(key_groups))?;
            let bindings = [(&ds).into(), b.k_cache.into(), b.dq.into()];
            batch.dispatch(&query_pass, &params, &bindings, grid(((hi - lo) * group).div_ceil(block) * n_kv_head))?;
        }
    }
    batch.retain([stats, ds]);
    Ok(())
}

/// CPU reference of [`attention_backward`] on one sequence's own buffers (`offset`, `seqs`
/// and `rows` are not read): `(dq, dk, dv)` from `dout`, with dk and dv over rows
/// `0 .. past_len + n_query`. Recomputes the forward in f64 (scores, softmax,
/// `out`) and accumulates in f64 with plain loops.
pub fn attention_backward_cpu(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    dout: &[f32],
    shape: AttentionShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let AttentionShape { n_query, past_len, n_head, n_kv_head, head_dim, .. } = shape;
    let (t_n, hq, hkv, hd) = (n_query as usize, n_head as usize, n_kv_head as usize, head_dim as usize);
    let keys = past_len as usize + t_n;
    let group = hq / hkv.max(1);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut dq = vec![0.0f64; t_n * hq * hd];
    let mut dk = vec![0.0f64; keys * hkv * hd];
    let mut dv = vec![0.0f64; keys * hkv * hd];
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    for t in 0..t_n {
        for h in 0..hq {
            let hk = h / group;
            let row = (t * hq + h) * hd;
            let (qrow, drow) = (&q[row..row + hd], &dout[row..row + hd]);
            let kv = |j: usize| (j * hkv + hk) * hd;
            let n_keys = past_len as usize + t + 1;
            let s: Vec<f64> = (0..n_keys).map(|j| dot(qrow, &k_cache[kv(j)..kv(j) + hd]) * scale).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
            // dP[j] = dout . v[j], D = dout . out = sum_j P[j] dP[j]
            let dp: Vec<f64> = (0..n_keys).map(|j| dot(drow, &v_cache[kv(j)..kv(j) + hd])).collect();
            let d: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
            for j in 0..n_keys {
                let ds = p[j] * (dp[j] - d);
                for c in 0..hd {
                    dq[row + c] += scale * ds * k_cache[kv(j) + c] as f64;
                    dk[kv(j) + c] += scale * ds * qrow[c] as f64;
                    dv[kv(j) + c] += p[j] * drow[c] as f64;
                }
            }
        }
    }
    let f32s = |x: Vec<f64>| x.into_iter().map(|v| v as f32).collect();
    (f32s(dq), f32s(dk), f32s(dv))
}

#[cfg(test)]
mod tests {
    /// Subgroup backward chunks: SmolLM2 at 1024 queries in two halves (dS of 9 heads ×
    /// 1024 × 1024 is past 32 MiB), at 256 in one; none for rows of more than eight
    /// pieces or a query pass past the loop budget.
    #[test]
    fn subgroup_backward_chunks() {
        let shape = super::AttentionShape::new;
        let limit = 128 << 20;
        assert_eq!(super::subgroup_chunk(&shape(1024, 0, 9, 3, 64), 8, limit), Some(512));
        assert_eq!(super::subgroup_chunk(&shape(256, 0, 9, 3, 64), 8, limit), Some(256));
        assert_eq!(super::subgroup_chunk(&shape(301, 150, 64, 4, 32), 8, limit), Some(152));
        assert_eq!(super::subgroup_chunk(&shape(301, 150, 64, 4, 32), 8, 1 << 20), Some(8));
        assert_eq!(super::subgroup_chunk(&shape(301, 150, 64, 4, 32), 8, 1 << 16), None);
        assert_eq!(super::subgroup_chunk(&shape(8, 0, 2, 1, 256), 4, limit), None);
        assert_eq!(super::subgroup_chunk(&shape(8, 0, 2, 1, 256), 8, limit), Some(8));
        assert_eq!(super::subgroup_chunk(&shape(4, 250_000, 1, 1, 64), 8, u64::MAX), None);
        assert_eq!(super::subgroup_chunk(&shape(4, 200_000, 1, 1, 64), 8, u64::MAX), Some(4));
    }

    /// The training shapes run as one dispatch per pass, with room to spare.
    #[test]
    fn backward_fits_the_loop_budget() {
        for (group, head_dim) in [(3u64, 64u32), (7, 64), (2, 16), (4, 64)] {
            assert!(super::backward_loop_estimate(head_dim, 1024 * group) <= super::LOOP_BUDGET / 2);
        }
        for head_dim in [4, 16, 64, 72, 80, 256] {
            let span = super::backward_span(head_dim);
            assert!(super::backward_loop_estimate(head_dim, span) <= super::LOOP_BUDGET, "{head_dim}");
            assert!(super::backward_loop_estimate(head_dim, span + 1) > super::LOOP_BUDGET, "{head_dim}");
        }
    }
}
