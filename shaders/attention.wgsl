// Causal grouped-query attention over a KV cache (llama, qwen2).
//
//   forward:  query t (absolute position past_len + t) of head h, with kv head
//             hk = h / (n_head / n_kv_head) and keys j = 0 ..= past_len + t:
//               s[j]   = scale * q[t,h,:] . k[j,hk,:]          (scale = 1/sqrt(head_dim))
//               lse    = log(sum_j exp(s[j]))                  stored as lse[h, t]
//               out[t,h,:] = sum_j exp(s[j] - lse) * v[j,hk,:]
//   backward (FlashAttention-2 style), with P[j] = exp(s[j] - lse) recomputed from lse:
//               D = dout[t,h,:] . out[t,h,:];  dS[j] = P[j] * (dout[t,h,:] . v[j,hk,:] - D)
//               dq[t,h,:]  = scale * sum_j dS[j] k[j,hk,:]
//               dk[j,hk,:] = scale * sum_(t,h) dS[j] q[t,h,:]  (h over the group of hk)
//               dv[j,hk,:] = sum_(t,h) P[j] dout[t,h,:]
//             (softmax backward: dS = P * (dP - rowsum(P * dP)), and rowsum(P * dP) = D
//             since out = P v.)
// The forward entry points use the online softmax: a running max m and sum l, the output
// accumulator rescaled by exp(m_old - m_new) whenever the max grows.
//
// Constants from the loader: HEAD_DIM (a multiple of 4, <= 256) and BK, keys (or query
// rows) per shared tile of the tiled path and the backward, a multiple of 4
// (2 * BK * HEAD_DIM floats <= 16 KiB, the WebGPU default); the
// subgroup entry (last section, its own module) takes SG, its subgroup size, instead.
// Rows are read as vec4 and dot products unrolled by four vec4: besides speed, this
// keeps the loop iterations of one invocation low, which llvmpipe/lavapipe caps at
// 65535 per invocation (all loops together; past it loops silently exit). The Rust
// side estimates the count and refuses or reroutes shapes that would exceed it.

struct Params {
    n_query: u32,
    past_len: u32,
    n_head: u32,
    n_kv_head: u32,
    scale: f32,
    // Backward only, 0 in the forward: this dispatch covers keys (dq) or queries (dk, dv)
    // lo .. hi, and adds to the gradients already there when accumulate is 1.
    lo: u32,
    hi: u32,
    accumulate: u32,
    // Packed sequences: this call's query t is row offset + t of q, out, dout and dq, its
    // key j row offset + j of the caches, dk and dv; lse is [n_head, rows] with this
    // call's queries at columns offset + t. A lone sequence: offset 0, rows n_query.
    offset: u32,
    rows: u32,
    // Equal-length sequences in one dispatch (past_len 0): sequence s of the call starts
    // at row offset + s * n_query, and the backward's row stats of each are its own.
    seqs: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;          // [n_query, n_head, HEAD_DIM]
@group(0) @binding(2) var<storage, read> k_cache: array<vec4<f32>>;    // [S_cap, n_kv_head, HEAD_DIM], rows < past_len + n_query used
@group(0) @binding(3) var<storage, read> v_cache: array<vec4<f32>>;    // [S_cap, n_kv_head, HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;  // [n_query, n_head, HEAD_DIM]
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;        // [n_head, n_query]

const HD4 = HEAD_DIM / 4u;
// Loops over vec4 columns go four at a time up to HD4_MAIN; the rest, if any, one by one
// (behind a constant condition, since even an empty loop costs llvmpipe an iteration).
const HD4_MAIN = HD4 / 4u * 4u;
// Start value of running maxima: exp(NEG - finite) is 0 without inf - inf = NaN.
const NEG = -1.0e30;

// Workgroup `wg` of a dispatch of p.seqs sequences of `per_seq` workgroups each:
// (the sequence's first row, the workgroup within the sequence, the sequence).
fn seq_split(wg: u32, per_seq: u32) -> vec3<u32> {
    let s = wg / per_seq;
    return vec3<u32>(p.offset + s * p.n_query, wg % per_seq, s);
}

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

// Weighted sum of four rows.
fn pv4(w: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
    return w.x * a + w.y * b + w.z * c + w.w * d;
}

// Four dot products with one row.
fn dot4(x: vec4<f32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(x, a), dot(x, b), dot(x, c), dot(x, d));
}

// ---- Tiled path (prefill): a workgroup takes ROWS (query, head) rows of one kv head and
// streams K/V through workgroup memory in tiles of BK keys; one thread per row.

const ROWS = 64u;
var<workgroup> k_tile: array<vec4<f32>, BK * HD4>;
var<workgroup> v_tile: array<vec4<f32>, BK * HD4>;

@compute @workgroup_size(64)
fn attention_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    // Rows of one kv head are (t, g) pairs, t-major: a tile holds consecutive queries,
    // so its causal key ranges are close and each K/V tile serves all `group` heads.
    let rows = p.n_query * group;
    let tiles = (rows + ROWS - 1u) / ROWS;
    let split = seq_split(group_index(wid, nwg), tiles * p.n_kv_head);
    if (split.z >= p.seqs) {
        return;
    }
    let base = split.x;
    let wg = split.y;
    let hk = wg / tiles;
    let first = (wg % tiles) * ROWS;
    // Keys any row of this tile may see; uniform, so the tile loop may hold barriers.
    let n_keys = p.past_len + min(first + ROWS - 1u, rows - 1u) / group + 1u;
    let r = first + lid;
    let valid = r < rows;
    let t = r / group;
    let h = hk * group + r % group;
    let limit = p.past_len + t; // this row sees keys 0 ..= limit
    let kv_stride = p.n_kv_head * HD4;

    var qv: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    let qb = ((base + t) * p.n_head + h) * HD4;
    for (var d = 0u; d < HD4; d++) {
        acc[d] = vec4<f32>(0.0);
        qv[d] = vec4<f32>(0.0);
    }
    if (valid) {
        for (var d = 0u; d < HD4; d++) {
            qv[d] = q[qb + d] * p.scale;
        }
    }
    var m = NEG;
    var l = 0.0;
    for (var k0 = 0u; k0 < n_keys; k0 += BK) {
        workgroupBarrier(); // the previous tile is consumed by every thread
        for (var e = lid; e < BK * HD4; e += ROWS) {
            let j = k0 + e / HD4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < n_keys) {
                let idx = (base + j) * kv_stride + hk * HD4 + e % HD4;
                kv = k_cache[idx];
                vv = v_cache[idx];
            }
            k_tile[e] = kv;
            v_tile[e] = vv;
        }
        workgroupBarrier();
        if (valid && k0 <= limit) {
            let count = min(BK, limit + 1u - k0);
            var s: array<f32, BK>;
            var tile_max = NEG;
            for (var jj = 0u; jj < count; jj++) {
                let kb = jj * HD4;
                var a = vec4<f32>(0.0);
                var d = 0u;
                for (; d < HD4_MAIN; d += 4u) {
                    a += qv[d] * k_tile[kb + d] + qv[d + 1u] * k_tile[kb + d + 1u]
                       + qv[d + 2u] * k_tile[kb + d + 2u] + qv[d + 3u] * k_tile[kb + d + 3u];
                }
                if (HD4_MAIN < HD4) {
                    for (; d < HD4; d++) {
                        a += qv[d] * k_tile[kb + d];
                    }
                }
                s[jj] = hsum(a);
                tile_max = max(tile_max, s[jj]);
            }
            // One rescale per tile rather than per key.
            let m_new = max(m, tile_max);
            let corr = exp(m - m_new);
            l *= corr;
            for (var d = 0u; d < HD4; d++) {
                acc[d] *= corr;
            }
            for (var jj = 0u; jj < count; jj++) {
                let pj = exp(s[jj] - m_new);
                l += pj;
                let vb = jj * HD4;
                var d = 0u;
                for (; d < HD4_MAIN; d += 4u) {
                    acc[d] += pj * v_tile[vb + d];
                    acc[d + 1u] += pj * v_tile[vb + d + 1u];
                    acc[d + 2u] += pj * v_tile[vb + d + 2u];
                    acc[d + 3u] += pj * v_tile[vb + d + 3u];
                }
                if (HD4_MAIN < HD4) {
                    for (; d < HD4; d++) {
                        acc[d] += pj * v_tile[vb + d];
                    }
                }
            }
            m = m_new;
        }
    }
    if (valid) {
        for (var d = 0u; d < HD4; d++) {
            out[qb + d] = acc[d] / l;
        }
        lse[h * p.rows + base + t] = m + log(l);
    }
}

// ---- Row path (decode): one workgroup of DWG threads per (query, head) row, parallel
// over keys. Per chunk of DWG keys each thread scores one key, the chunk max is
// reduced, and for the value sum the threads split into KS key lanes x HD4 vec4
// columns, so reads of v rows are contiguous. Lanes are summed at the end.

const DWG = 256u;
const KS = DWG / HD4;
var<workgroup> q_row: array<vec4<f32>, HD4>;
var<workgroup> probs: array<f32, DWG>;
var<workgroup> red: array<f32, DWG>;
var<workgroup> acc_lanes: array<vec4<f32>, DWG>;

@compute @workgroup_size(256)
fn attention_forward_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let split = seq_split(group_index(wid, nwg), p.n_query * p.n_head);
    if (split.z >= p.seqs) {
        return;
    }
    let base = split.x;
    let row = split.y;
    let t = row / p.n_head;
    let h = row % p.n_head;
    let hk = h / (p.n_head / p.n_kv_head);
    let n_keys = p.past_len + t + 1u;
    let kv_stride = p.n_kv_head * HD4;
    let kv_off = base * kv_stride + hk * HD4;
    for (var d = lid; d < HD4; d += DWG) {
        q_row[d] = q[(base * p.n_head + row) * HD4 + d] * p.scale;
    }
    workgroupBarrier();

    let col = lid % HD4;
    let lane = lid / HD4;
    var m = NEG;                  // the same in every thread: it comes from the reductions
    var l = 0.0;                  // this thread's share of the softmax sum
    var acc = vec4<f32>(0.0);     // out[col] over this lane's keys, scaled like l
    for (var c0 = 0u; c0 < n_keys; c0 += DWG) {
        let j = c0 + lid;
        var s = NEG;
        if (j < n_keys) {
            let kb = j * kv_stride + kv_off;
            var a = vec4<f32>(0.0);
            var d = 0u;
            for (; d < HD4_MAIN; d += 4u) {
                a += q_row[d] * k_cache[kb + d] + q_row[d + 1u] * k_cache[kb + d + 1u]
                   + q_row[d + 2u] * k_cache[kb + d + 2u] + q_row[d + 3u] * k_cache[kb + d + 3u];
            }
            if (HD4_MAIN < HD4) {
                for (; d < HD4; d++) {
                    a += q_row[d] * k_cache[kb + d];
                }
            }
            s = hsum(a);
        }
        red[lid] = s;
        workgroupBarrier();
        for (var stride = DWG / 2u; stride > 0u; stride >>= 1u) {
            if (lid < stride) {
                red[lid] = max(red[lid], red[lid + stride]);
            }
            workgroupBarrier();
        }
        let m_new = max(m, red[0]);
        let corr = exp(m - m_new);
        var pj = 0.0;
        if (j < n_keys) {
            pj = exp(s - m_new);
        }
        l = l * corr + pj;
        acc *= corr;
        m = m_new;
        probs[lid] = pj;
        workgroupBarrier();
        if (lane < KS) {
            let count = min(DWG, n_keys - c0);
            for (var jj = lane; jj < count; jj += KS) {
                acc += probs[jj] * v_cache[(c0 + jj) * kv_stride + kv_off + col];
            }
        }
        workgroupBarrier(); // probs and red are rewritten by the next chunk
    }
    red[lid] = l;
    workgroupBarrier();
    for (var stride = DWG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red[lid] += red[lid + stride];
        }
        workgroupBarrier();
    }
    let total = red[0];
    acc_lanes[lid] = select(vec4<f32>(0.0), acc, lane < KS);
    workgroupBarrier();
    if (lid < HD4) {
        var o = vec4<f32>(0.0);
        for (var k = 0u; k < KS; k++) {
            o += acc_lanes[k * HD4 + lid];
        }
        out[(base * p.n_head + row) * HD4 + lid] = o / total;
    }
    if (lid == 0u) {
        lse[h * p.rows + base + t] = m + log(total);
    }
}

// ---- Backward (portable; the subgroup backward is in attention_backward.wgsl), two
// passes that recompute P from lse rather than store it:
// attention_backward_query, parallel over query rows, writes dq and each row's (lse, D)
// to `stats`; attention_backward_kv, parallel over keys, reads them and writes dk and dv.
// Every thread owns the gradient rows it writes (a kv head's dk, dv row sums over its
// whole group inside one thread), so nothing needs float atomics, which WebGPU lacks.
// Both walk their tiles four keys or rows at a time with uniform bounds and mask per
// thread instead of bounding per thread: all lanes then read the same tile row, and only
// tiles on the causal diagonal do some masked work. One dispatch covers keys (query pass)
// or queries (key pass) p.lo .. p.hi; the Rust side splits longer spans into several
// dispatches, the later ones adding to the earlier (p.accumulate), to stay within
// llvmpipe's loop cap. Bindings 1-5 are the forward's: q, k_cache, v_cache, out, lse.

@group(0) @binding(6) var<storage, read> dout: array<vec4<f32>>;        // [n_query, n_head, HEAD_DIM]
@group(0) @binding(7) var<storage, read_write> dq: array<vec4<f32>>;    // [n_query, n_head, HEAD_DIM]
@group(0) @binding(8) var<storage, read_write> stats: array<vec2<f32>>; // [n_kv_head, n_query * group]: (lse, D) of row (t, g)
// attention_backward_kv (a binding number may name different variables in different entry points)
@group(0) @binding(4) var<storage, read> kv_dout: array<vec4<f32>>;     // [n_query, n_head, HEAD_DIM]
@group(0) @binding(5) var<storage, read> kv_stats: array<vec2<f32>>;    // as stats
@group(0) @binding(6) var<storage, read_write> dk: array<vec4<f32>>;    // [S_cap, n_kv_head, HEAD_DIM], rows < past_len + n_query written
@group(0) @binding(7) var<storage, read_write> dv: array<vec4<f32>>;    // [S_cap, n_kv_head, HEAD_DIM]

const KEYS = 64u;
// BK query rows (t, g) of one kv head: q * scale, and dout.
var<workgroup> q_tile: array<vec4<f32>, BK * HD4>;
var<workgroup> do_tile: array<vec4<f32>, BK * HD4>;

// Vec4 column c of the four tile rows starting at b, as the columns of a matrix:
// x * m is then four dot products with x, and m * w the w-weighted sum of the rows.
fn k_cols(b: vec4<u32>, c: u32) -> mat4x4<f32> {
    return mat4x4<f32>(k_tile[b.x + c], k_tile[b.y + c], k_tile[b.z + c], k_tile[b.w + c]);
}
fn v_cols(b: vec4<u32>, c: u32) -> mat4x4<f32> {
    return mat4x4<f32>(v_tile[b.x + c], v_tile[b.y + c], v_tile[b.z + c], v_tile[b.w + c]);
}
fn q_cols(b: vec4<u32>, c: u32) -> mat4x4<f32> {
    return mat4x4<f32>(q_tile[b.x + c], q_tile[b.y + c], q_tile[b.z + c], q_tile[b.w + c]);
}
fn do_cols(b: vec4<u32>, c: u32) -> mat4x4<f32> {
    return mat4x4<f32>(do_tile[b.x + c], do_tile[b.y + c], do_tile[b.z + c], do_tile[b.w + c]);
}

// Query pass: rows and tiles as in attention_forward (ROWS (t, g) rows of one kv head
// per workgroup, K/V tiles of BK keys in k_tile / v_tile); per four keys the scores and
// dout . v, then dq += dS k.
@compute @workgroup_size(64)
fn attention_backward_query(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let rows = p.n_query * group;
    let tiles = (rows + ROWS - 1u) / ROWS;
    let split = seq_split(group_index(wid, nwg), tiles * p.n_kv_head);
    if (split.z >= p.seqs) {
        return;
    }
    let base = split.x;
    let wg = split.y;
    let hk = wg / tiles;
    let first = (wg % tiles) * ROWS;
    // Keys of this dispatch any row of the tile sees; uniform, so the loop may hold barriers.
    let k_end = min(p.hi, p.past_len + min(first + ROWS - 1u, rows - 1u) / group + 1u);
    // Threads past the last row redo it and do not write.
    let r = min(first + lid, rows - 1u);
    let t = r / group;
    let h = hk * group + r % group;
    let limit = p.past_len + t; // this row sees keys 0 ..= limit
    let kv_stride = p.n_kv_head * HD4;

    var qv: array<vec4<f32>, HD4>;  // q * scale
    var dov: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>; // dq / scale
    let qb = ((base + t) * p.n_head + h) * HD4;
    var dd = vec4<f32>(0.0);
    for (var d = 0u; d < HD4; d++) {
        qv[d] = q[qb + d] * p.scale;
        dov[d] = dout[qb + d];
        dd += dov[d] * out[qb + d];
        acc[d] = vec4<f32>(0.0);
    }
    let delta = hsum(dd);
    let row_lse = lse[h * p.rows + base + t];
    if (first + lid < rows) {
        stats[(split.z * p.n_kv_head + hk) * rows + r] = vec2<f32>(row_lse, delta);
    }
    for (var k0 = p.lo; k0 < k_end; k0 += BK) {
        workgroupBarrier(); // the previous tile is consumed by every thread
        for (var e = lid; e < BK * HD4; e += ROWS) {
            let j = k0 + e / HD4;
            var kv = vec4<f32>(0.0);
            var vv = vec4<f32>(0.0);
            if (j < k_end) {
                let idx = (base + j) * kv_stride + hk * HD4 + e % HD4;
                kv = k_cache[idx];
                vv = v_cache[idx];
            }
            k_tile[e] = kv;
            v_tile[e] = vv;
        }
        workgroupBarrier();
        let count = min(BK, k_end - k0);
        for (var jj = 0u; jj < count; jj += 4u) {
            let b = vec4<u32>(jj * HD4) + vec4<u32>(0u, HD4, 2u * HD4, 3u * HD4);
            var s = vec4<f32>(0.0);  // scores of keys k0 + jj + 0..3
            var dp = vec4<f32>(0.0); // dout . v of the same keys
            var d = 0u;
            for (; d < HD4_MAIN; d += 4u) {
                s += qv[d] * k_cols(b, d) + qv[d + 1u] * k_cols(b, d + 1u)
                   + qv[d + 2u] * k_cols(b, d + 2u) + qv[d + 3u] * k_cols(b, d + 3u);
                dp += dov[d] * v_cols(b, d) + dov[d + 1u] * v_cols(b, d + 1u)
                    + dov[d + 2u] * v_cols(b, d + 2u) + dov[d + 3u] * v_cols(b, d + 3u);
            }
            if (HD4_MAIN < HD4) {
                for (; d < HD4; d++) {
                    s += qv[d] * k_cols(b, d);
                    dp += dov[d] * v_cols(b, d);
                }
            }
            let key = vec4<u32>(k0 + jj) + vec4<u32>(0u, 1u, 2u, 3u);
            let visible = (key <= vec4<u32>(limit)) & (key < vec4<u32>(k_end));
            // select, not a product: exp of a masked key's score may overflow.
            let ds = select(vec4<f32>(0.0), exp(s - row_lse), visible) * (dp - delta);
            d = 0u;
            for (; d < HD4_MAIN; d += 4u) {
                acc[d] += k_cols(b, d) * ds;
                acc[d + 1u] += k_cols(b, d + 1u) * ds;
                acc[d + 2u] += k_cols(b, d + 2u) * ds;
                acc[d + 3u] += k_cols(b, d + 3u) * ds;
            }
            if (HD4_MAIN < HD4) {
                for (; d < HD4; d++) {
                    acc[d] += k_cols(b, d) * ds;
                }
            }
        }
    }
    if (first + lid < rows) {
        for (var d = 0u; d < HD4; d++) {
            // select: with accumulate off dq may hold anything, NaN included.
            dq[qb + d] = select(vec4<f32>(0.0), dq[qb + d], p.accumulate != 0u) + acc[d] * p.scale;
        }
    }
}

// Key pass: a workgroup takes KEYS keys of one kv head, a thread one key with its k and v
// rows in registers; the query rows (t, g) of the head's group that see the block stream
// through q_tile / do_tile in tiles of BK, t-major, and each thread sums P dout and dS q
// over them.
@compute @workgroup_size(64)
fn attention_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let n_keys = p.past_len + p.n_query;
    let blocks = (n_keys + KEYS - 1u) / KEYS;
    let split = seq_split(group_index(wid, nwg), blocks * p.n_kv_head);
    if (split.z >= p.seqs) {
        return;
    }
    let base = split.x;
    let wg = split.y;
    let hk = wg / blocks;
    let j0 = (wg % blocks) * KEYS;
    // Threads past the last key redo it and do not write.
    let j = min(j0 + lid, n_keys - 1u);
    let rows = p.n_query * group;
    // Rows of this dispatch the block's first key sees (t >= j0 - past_len); uniform.
    let r_lo = max(p.lo, max(j0, p.past_len) - p.past_len) * group;
    let r_hi = p.hi * group;
    let kb = (base + j) * p.n_kv_head * HD4 + hk * HD4;

    var kv: array<vec4<f32>, HD4>;
    var vv: array<vec4<f32>, HD4>;
    var dka: array<vec4<f32>, HD4>;
    var dva: array<vec4<f32>, HD4>;
    for (var d = 0u; d < HD4; d++) {
        kv[d] = k_cache[kb + d];
        vv[d] = v_cache[kb + d];
        dka[d] = vec4<f32>(0.0);
        dva[d] = vec4<f32>(0.0);
    }
    for (var r0 = r_lo; r0 < r_hi; r0 += BK) {
        workgroupBarrier(); // the previous tile is consumed by every thread
        for (var e = lid; e < BK * HD4; e += KEYS) {
            let r = r0 + e / HD4;
            var qq = vec4<f32>(0.0);
            var oo = vec4<f32>(0.0);
            if (r < r_hi) {
                let idx = ((base + r / group) * p.n_head + hk * group + r % group) * HD4 + e % HD4;
                qq = q[idx] * p.scale;
                oo = kv_dout[idx];
            }
            q_tile[e] = qq;
            do_tile[e] = oo;
        }
        workgroupBarrier();
        let count = min(BK, r_hi - r0);
        for (var i = 0u; i < count; i += 4u) {
            let b = vec4<u32>(i * HD4) + vec4<u32>(0u, HD4, 2u * HD4, 3u * HD4);
            var s = vec4<f32>(0.0);  // scores of rows r0 + i + 0..3 for this key
            var dp = vec4<f32>(0.0); // their dout . v
            var d = 0u;
            for (; d < HD4_MAIN; d += 4u) {
                s += kv[d] * q_cols(b, d) + kv[d + 1u] * q_cols(b, d + 1u)
                   + kv[d + 2u] * q_cols(b, d + 2u) + kv[d + 3u] * q_cols(b, d + 3u);
                dp += vv[d] * do_cols(b, d) + vv[d + 1u] * do_cols(b, d + 1u)
                    + vv[d + 2u] * do_cols(b, d + 2u) + vv[d + 3u] * do_cols(b, d + 3u);
            }
            if (HD4_MAIN < HD4) {
                for (; d < HD4; d++) {
                    s += kv[d] * q_cols(b, d);
                    dp += vv[d] * do_cols(b, d);
                }
            }
            // Rows past the span read the last row's stats and are masked.
            let row = vec4<u32>(r0 + i) + vec4<u32>(0u, 1u, 2u, 3u);
            let sb = (split.z * p.n_kv_head + hk) * rows;
            let st0 = kv_stats[sb + min(row.x, r_hi - 1u)];
            let st1 = kv_stats[sb + min(row.y, r_hi - 1u)];
            let st2 = kv_stats[sb + min(row.z, r_hi - 1u)];
            let st3 = kv_stats[sb + min(row.w, r_hi - 1u)];
            // Row (t, g) sees key j when past_len + t >= j.
            let visible = (row < vec4<u32>(r_hi)) & (vec4<u32>(p.past_len) + row / vec4<u32>(group) >= vec4<u32>(j));
            let pr = select(vec4<f32>(0.0), exp(s - vec4<f32>(st0.x, st1.x, st2.x, st3.x)), visible);
            let ds = pr * (dp - vec4<f32>(st0.y, st1.y, st2.y, st3.y));
            d = 0u;
            for (; d < HD4_MAIN; d += 4u) {
                dva[d] += do_cols(b, d) * pr;
                dva[d + 1u] += do_cols(b, d + 1u) * pr;
                dva[d + 2u] += do_cols(b, d + 2u) * pr;
                dva[d + 3u] += do_cols(b, d + 3u) * pr;
                dka[d] += q_cols(b, d) * ds;
                dka[d + 1u] += q_cols(b, d + 1u) * ds;
                dka[d + 2u] += q_cols(b, d + 2u) * ds;
                dka[d + 3u] += q_cols(b, d + 3u) * ds;
            }
            if (HD4_MAIN < HD4) {
                for (; d < HD4; d++) {
                    dva[d] += do_cols(b, d) * pr;
                    dka[d] += q_cols(b, d) * ds;
                }
            }
        }
    }
    if (j0 + lid < n_keys) {
        let add = p.accumulate != 0u;
        for (var d = 0u; d < HD4; d++) {
            dk[kb + d] = select(vec4<f32>(0.0), dk[kb + d], add) + dka[d];
            dv[kb + d] = select(vec4<f32>(0.0), dv[kb + d], add) + dva[d];
        }
    }
}

// ---- subgroup module: the portable module ends above; naga rejects subgroup builtins
// on devices without the feature, so this entry is compiled only where it is offered.
//
// Subgroup path (native lavapipe): one workgroup = one subgroup of SG lanes = SG (query,
// head) rows of one kv head, no workgroup memory and no barriers. The lanes load a K or
// V row together, lane i its vec4 columns c + i, and hand them round with
// subgroupBroadcast: on llvmpipe every lane of a load is a scalar access, so sharing
// cuts the loads per key from HD4 to HD4 / SG per lane. Needs HD4 % SG == 0 and a
// subgroup of exactly SG lanes (the Rust side checks both).

@compute @workgroup_size(SG)
fn attention_forward_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let rows = p.n_query * group;
    let tiles = (rows + SG - 1u) / SG;
    let split = seq_split(group_index(wid, nwg), tiles * p.n_kv_head);
    if (split.z >= p.seqs) {
        return;
    }
    let base = split.x;
    let wg = split.y;
    let hk = wg / tiles;
    let first = (wg % tiles) * SG;
    let n_keys = p.past_len + min(first + SG - 1u, rows - 1u) / group + 1u;
    let r = min(first + lid, rows - 1u);
    let t = r / group;
    let h = hk * group + r % group;
    let limit = p.past_len + t;
    let kv_stride = p.n_kv_head * HD4;
    let kv_off = base * kv_stride + hk * HD4 + lid;

    var qv: array<vec4<f32>, HD4>;
    var acc: array<vec4<f32>, HD4>;
    let qb = ((base + t) * p.n_head + h) * HD4;
    for (var d = 0u; d < HD4; d++) {
        qv[d] = q[qb + d] * p.scale;
        acc[d] = vec4<f32>(0.0);
    }
    var m = NEG;
    var l = 0.0;
    let last = n_keys - 1u;
    for (var j0 = 0u; j0 < n_keys; j0 += 4u) {
        // Keys past the end are clamped to the last (never read past it) and masked.
        let b0 = min(j0, last) * kv_stride + kv_off;
        let b1 = min(j0 + 1u, last) * kv_stride + kv_off;
        let b2 = min(j0 + 2u, last) * kv_stride + kv_off;
        let b3 = min(j0 + 3u, last) * kv_stride + kv_off;
        var s = vec4<f32>(0.0);
        for (var c = 0u; c < HD4; c += SG) {
            let k0 = k_cache[b0 + c];
            let k1 = k_cache[b1 + c];
            let k2 = k_cache[b2 + c];
            let k3 = k_cache[b3 + c];
            s += dot4(qv[c], subgroupBroadcast(k0, 0u), subgroupBroadcast(k1, 0u), subgroupBroadcast(k2, 0u), subgroupBroadcast(k3, 0u));
            s += dot4(qv[c + 1u], subgroupBroadcast(k0, 1u), subgroupBroadcast(k1, 1u), subgroupBroadcast(k2, 1u), subgroupBroadcast(k3, 1u));
            s += dot4(qv[c + 2u], subgroupBroadcast(k0, 2u), subgroupBroadcast(k1, 2u), subgroupBroadcast(k2, 2u), subgroupBroadcast(k3, 2u));
            s += dot4(qv[c + 3u], subgroupBroadcast(k0, 3u), subgroupBroadcast(k1, 3u), subgroupBroadcast(k2, 3u), subgroupBroadcast(k3, 3u));
            if (SG == 8u) {
                s += dot4(qv[c + 4u], subgroupBroadcast(k0, 4u), subgroupBroadcast(k1, 4u), subgroupBroadcast(k2, 4u), subgroupBroadcast(k3, 4u));
                s += dot4(qv[c + 5u], subgroupBroadcast(k0, 5u), subgroupBroadcast(k1, 5u), subgroupBroadcast(k2, 5u), subgroupBroadcast(k3, 5u));
                s += dot4(qv[c + 6u], subgroupBroadcast(k0, 6u), subgroupBroadcast(k1, 6u), subgroupBroadcast(k2, 6u), subgroupBroadcast(k3, 6u));
                s += dot4(qv[c + 7u], subgroupBroadcast(k0, 7u), subgroupBroadcast(k1, 7u), subgroupBroadcast(k2, 7u), subgroupBroadcast(k3, 7u));
            }
        }
        let visible = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u) <= vec4<u32>(limit);
        s = select(vec4<f32>(NEG), s, visible);
        let m_new = max(m, max(max(s.x, s.y), max(s.z, s.w)));
        let corr = exp(m - m_new);
        let pr = select(vec4<f32>(0.0), exp(s - m_new), visible);
        l = l * corr + hsum(pr);
        m = m_new;
        for (var c = 0u; c < HD4; c += SG) {
            let v0 = v_cache[b0 + c];
            let v1 = v_cache[b1 + c];
            let v2 = v_cache[b2 + c];
            let v3 = v_cache[b3 + c];
            acc[c + 0u] = acc[c + 0u] * corr + pv4(pr, subgroupBroadcast(v0, 0u), subgroupBroadcast(v1, 0u), subgroupBroadcast(v2, 0u), subgroupBroadcast(v3, 0u));
            acc[c + 1u] = acc[c + 1u] * corr + pv4(pr, subgroupBroadcast(v0, 1u), subgroupBroadcast(v1, 1u), subgroupBroadcast(v2, 1u), subgroupBroadcast(v3, 1u));
            acc[c + 2u] = acc[c + 2u] * corr + pv4(pr, subgroupBroadcast(v0, 2u), subgroupBroadcast(v1, 2u), subgroupBroadcast(v2, 2u), subgroupBroadcast(v3, 2u));
            acc[c + 3u] = acc[c + 3u] * corr + pv4(pr, subgroupBroadcast(v0, 3u), subgroupBroadcast(v1, 3u), subgroupBroadcast(v2, 3u), subgroupBroadcast(v3, 3u));
            if (SG == 8u) {
                acc[c + 4u] = acc[c + 4u] * corr + pv4(pr, subgroupBroadcast(v0, 4u), subgroupBroadcast(v1, 4u), subgroupBroadcast(v2, 4u), subgroupBroadcast(v3, 4u));
                acc[c + 5u] = acc[c + 5u] * corr + pv4(pr, subgroupBroadcast(v0, 5u), subgroupBroadcast(v1, 5u), subgroupBroadcast(v2, 5u), subgroupBroadcast(v3, 5u));
                acc[c + 6u] = acc[c + 6u] * corr + pv4(pr, subgroupBroadcast(v0, 6u), subgroupBroadcast(v1, 6u), subgroupBroadcast(v2, 6u), subgroupBroadcast(v3, 6u));
                acc[c + 7u] = acc[c + 7u] * corr + pv4(pr, subgroupBroadcast(v0, 7u), subgroupBroadcast(v1, 7u), subgroupBroadcast(v2, 7u), subgroupBroadcast(v3, 7u));
            }
        }
    }
    if (first + lid < rows) {
        for (var d = 0u; d < HD4; d++) {
            out[qb + d] = acc[d] / l;
        }
        lse[h * p.rows + base + t] = m + log(l);
    }
}
