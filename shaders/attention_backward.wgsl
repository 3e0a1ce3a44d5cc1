// Subgroup backward of causal GQA attention (formulas at the top of attention.wgsl), for
// devices with a fixed subgroup of SG = 4 or 8 lanes dividing HEAD_DIM / 4 (natively,
// lavapipe). A file of its own because attention.wgsl is long already; the loader
// compiles it after attention.wgsl's shared declarations (Params, the forward's
// bindings 1-5, HD4, hsum), as one module with subgroups enabled.
//
// Three passes. The portable backward recomputes S and dP = dout vᵀ in both of its
// passes (7 matrix products); here the key pass stores dS, so 5 remain:
//   attention_backward_stats:          (lse, D = dout . out) of every row, four queries
//                                      of one head per vec4 pair;
//   attention_backward_kv_subgroup:    per key, S, P, dP, dS = P (dP - D) over the rows
//                                      that see it; dk = scale Σ dS q, dv = Σ P dout,
//                                      and dS into a scratch matrix;
//   attention_backward_query_subgroup: dq = scale Σ_j dS[j] k[j].
// Both subgroup passes mirror the forward's subgroup path: one workgroup is one
// subgroup, each lane owns two keys (key pass) or two (query, head) rows (query pass),
// and the lanes load the rows they stream together, lane i the vec4 columns c SG + i,
// handing them round with subgroupBroadcast: llvmpipe turns every lane's storage load
// into a scalar access, so sharing cuts the loads per streamed row from HD4 to HD4 / SG
// per lane. Two keys or rows per lane let each shared value serve both (on lavapipe,
// the whole backward took 11.3 ms of CPU at 256 queries, 9/3 heads, head_dim 64;
// 14.3 ms with one per lane).
//
// One key-pass + query-pass pair covers queries p.lo .. p.hi (a multiple of 4 apart,
// but for the last); the Rust side splits long sequences into such chunks to bound the
// dS scratch and the key pass's loop count, the key pass adding to the dk, dv of the
// chunks before (p.accumulate). dS of a chunk: [n_head, round4(hi - lo), KS] with
// KS = past_len + hi rounded up to KB (keys per key-pass workgroup), row (h, t - lo),
// column key j; entries of keys a row does not see are left unwritten or zero, and the
// query pass masks them.

// (lse, D) of queries 4i .. 4i + 3 of head h, i < round4(n_query) / 4, at vec4s
// 2 (h round4(n_query) / 4 + i) and the one after; zero past the last query.
@group(0) @binding(1) var<storage, read> st_out: array<vec4<f32>>;       // [n_query, n_head, HEAD_DIM]
@group(0) @binding(2) var<storage, read> st_lse: array<f32>;             // [n_head, n_query]
@group(0) @binding(3) var<storage, read> st_dout: array<vec4<f32>>;      // [n_query, n_head, HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> st_stats: array<vec4<f32>>; // [n_head, round4(n_query) / 4, 2]

@compute @workgroup_size(64)
fn attention_backward_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let quads = (p.n_query + 3u) / 4u;
    let i = group_index(wid, nwg) * 64u + lid;
    if (i >= p.n_head * quads) {
        return;
    }
    let h = i / quads;
    let t0 = (i % quads) * 4u;
    var l = vec4<f32>(0.0);
    var d = vec4<f32>(0.0);
    for (var k = 0u; k < 4u; k++) {
        let t = t0 + k;
        if (t < p.n_query) {
            let b = ((p.offset + t) * p.n_head + h) * HD4;
            var acc = vec4<f32>(0.0);
            for (var c = 0u; c < HD4; c++) {
                acc += st_dout[b + c] * st_out[b + c];
            }
            l[k] = st_lse[h * p.rows + p.offset + t];
            d[k] = hsum(acc);
        }
    }
    st_stats[2u * i] = l;
    st_stats[2u * i + 1u] = d;
}

// Key pass bindings (1-3 the forward's q, k_cache, v_cache).
@group(0) @binding(4) var<storage, read> bw_dout: array<vec4<f32>>;      // [n_query, n_head, HEAD_DIM]
@group(0) @binding(5) var<storage, read> bw_stats: array<vec4<f32>>;     // as st_stats
@group(0) @binding(6) var<storage, read_write> bw_dk: array<vec4<f32>>;  // [S_cap, n_kv_head, HEAD_DIM], rows < past_len + n_query written
@group(0) @binding(7) var<storage, read_write> bw_dv: array<vec4<f32>>;  // [S_cap, n_kv_head, HEAD_DIM]
@group(0) @binding(8) var<storage, read_write> bw_ds: array<f32>;        // the chunk's dS, see above

// The vec4s a, b, c, d held by lane L, handed to every lane as the columns of a matrix:
// x * m is then four dot products with x, and m * w the w-weighted sum of the four.
fn lane0(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 0u), subgroupBroadcast(b, 0u), subgroupBroadcast(c, 0u), subgroupBroadcast(d, 0u));
}
fn lane1(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 1u), subgroupBroadcast(b, 1u), subgroupBroadcast(c, 1u), subgroupBroadcast(d, 1u));
}
fn lane2(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 2u), subgroupBroadcast(b, 2u), subgroupBroadcast(c, 2u), subgroupBroadcast(d, 2u));
}
fn lane3(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 3u), subgroupBroadcast(b, 3u), subgroupBroadcast(c, 3u), subgroupBroadcast(d, 3u));
}
fn lane4(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 4u), subgroupBroadcast(b, 4u), subgroupBroadcast(c, 4u), subgroupBroadcast(d, 4u));
}
fn lane5(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 5u), subgroupBroadcast(b, 5u), subgroupBroadcast(c, 5u), subgroupBroadcast(d, 5u));
}
fn lane6(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 6u), subgroupBroadcast(b, 6u), subgroupBroadcast(c, 6u), subgroupBroadcast(d, 6u));
}
fn lane7(a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(subgroupBroadcast(a, 7u), subgroupBroadcast(b, 7u), subgroupBroadcast(c, 7u), subgroupBroadcast(d, 7u));
}

// A lane's rows are split into CHUNKS = HD4 / SG pieces of SG vec4s: piece c holds the
// columns the lanes load together in one go (lane i: vec4 column c SG + i). The passes
// walk the pieces by calling a function per piece with a constant index (the
// `if (CHUNKS > n)` steps, up to 8 pieces; the Rust side refuses more), not in a loop:
// llvmpipe leaves such a loop rolled, keeps the arrays in memory and indexes them lane
// by lane, which made the key pass 3x slower; with constant indices they are registers.
const CHUNKS = HD4 / SG;
// Keys per key-pass workgroup: lane i owns keys j0 + i ("a") and j0 + SG + i ("b").
const KB = 2u * SG;
var<private> k_a: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> v_a: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> dk_a: array<array<vec4<f32>, SG>, CHUNKS>; // dk / scale
var<private> dv_a: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> k_b: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> v_b: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> dk_b: array<array<vec4<f32>, SG>, CHUNKS>;
var<private> dv_b: array<array<vec4<f32>, SG>, CHUNKS>;
// This lane's columns of the four streamed queries' q and dout: kv_scores loads them,
// kv_update uses them again.
var<private> q_own: array<array<vec4<f32>, 4>, CHUNKS>;
var<private> o_own: array<array<vec4<f32>, 4>, CHUNKS>;

// Piece c of the lane's two keys' k, v rows (starting at vec4 ra, rb); zero gradients.
fn kv_load(c: u32, ra: u32, rb: u32) {
    for (var i = 0u; i < SG; i++) {
        let o = c * SG + i;
        k_a[c][i] = k_cache[ra + o];
        v_a[c][i] = v_cache[ra + o];
        k_b[c][i] = k_cache[rb + o];
        v_b[c][i] = v_cache[rb + o];
        dk_a[c][i] = vec4<f32>(0.0);
        dv_a[c][i] = vec4<f32>(0.0);
        dk_b[c][i] = vec4<f32>(0.0);
        dv_b[c][i] = vec4<f32>(0.0);
    }
}

// Writes (or adds) piece c of the gradients of key a if `a`, of key b if `b`.
fn kv_store(c: u32, ra: u32, rb: u32, a: bool, b: bool) {
    let add = p.accumulate != 0u;
    for (var i = 0u; i < SG; i++) {
        let o = c * SG + i;
        if (a) {
            bw_dk[ra + o] = select(vec4<f32>(0.0), bw_dk[ra + o], add) + dk_a[c][i] * p.scale;
            bw_dv[ra + o] = select(vec4<f32>(0.0), bw_dv[ra + o], add) + dv_a[c][i];
        }
        if (b) {
            bw_dk[rb + o] = select(vec4<f32>(0.0), bw_dk[rb + o], add) + dk_b[c][i] * p.scale;
            bw_dv[rb + o] = select(vec4<f32>(0.0), bw_dv[rb + o], add) + dv_b[c][i];
        }
    }
}

// Piece c of q . k and dout . v for the four queries whose rows start at vec4 r (plus
// the lane's column), columns: (s_a, dp_a, s_b, dp_b). Keeps the loaded columns.
fn kv_scores(c: u32, r: vec4<u32>) -> mat4x4<f32> {
    let o = c * SG;
    let q0 = q[r.x + o];
    let q1 = q[r.y + o];
    let q2 = q[r.z + o];
    let q3 = q[r.w + o];
    let o0 = bw_dout[r.x + o];
    let o1 = bw_dout[r.y + o];
    let o2 = bw_dout[r.z + o];
    let o3 = bw_dout[r.w + o];
    q_own[c] = array<vec4<f32>, 4>(q0, q1, q2, q3);
    o_own[c] = array<vec4<f32>, 4>(o0, o1, o2, o3);
    // m, n: column c SG + i of the four q, dout rows, from lane i
    var m = lane0(q0, q1, q2, q3);
    var n = lane0(o0, o1, o2, o3);
    var sa = k_a[c][0] * m;
    var sb = k_b[c][0] * m;
    var pa = v_a[c][0] * n;
    var pb = v_b[c][0] * n;
    m = lane1(q0, q1, q2, q3); n = lane1(o0, o1, o2, o3);
    sa += k_a[c][1] * m; sb += k_b[c][1] * m; pa += v_a[c][1] * n; pb += v_b[c][1] * n;
    m = lane2(q0, q1, q2, q3); n = lane2(o0, o1, o2, o3);
    sa += k_a[c][2] * m; sb += k_b[c][2] * m; pa += v_a[c][2] * n; pb += v_b[c][2] * n;
    m = lane3(q0, q1, q2, q3); n = lane3(o0, o1, o2, o3);
    sa += k_a[c][3] * m; sb += k_b[c][3] * m; pa += v_a[c][3] * n; pb += v_b[c][3] * n;
    if (SG == 8u) {
        m = lane4(q0, q1, q2, q3); n = lane4(o0, o1, o2, o3);
        sa += k_a[c][4] * m; sb += k_b[c][4] * m; pa += v_a[c][4] * n; pb += v_b[c][4] * n;
        m = lane5(q0, q1, q2, q3); n = lane5(o0, o1, o2, o3);
        sa += k_a[c][5] * m; sb += k_b[c][5] * m; pa += v_a[c][5] * n; pb += v_b[c][5] * n;
        m = lane6(q0, q1, q2, q3); n = lane6(o0, o1, o2, o3);
        sa += k_a[c][6] * m; sb += k_b[c][6] * m; pa += v_a[c][6] * n; pb += v_b[c][6] * n;
        m = lane7(q0, q1, q2, q3); n = lane7(o0, o1, o2, o3);
        sa += k_a[c][7] * m; sb += k_b[c][7] * m; pa += v_a[c][7] * n; pb += v_b[c][7] * n;
    }
    return mat4x4<f32>(sa, pa, sb, pb);
}

// Piece c of dk += dS q and dv += P dout over the four queries, for both keys.
fn kv_update(c: u32, pr_a: vec4<f32>, ds_a: vec4<f32>, pr_b: vec4<f32>, ds_b: vec4<f32>) {
    let q0 = q_own[c][0];
    let q1 = q_own[c][1];
    let q2 = q_own[c][2];
    let q3 = q_own[c][3];
    let o0 = o_own[c][0];
    let o1 = o_own[c][1];
    let o2 = o_own[c][2];
    let o3 = o_own[c][3];
    var m = lane0(q0, q1, q2, q3);
    var n = lane0(o0, o1, o2, o3);
    dk_a[c][0] += m * ds_a; dk_b[c][0] += m * ds_b; dv_a[c][0] += n * pr_a; dv_b[c][0] += n * pr_b;
    m = lane1(q0, q1, q2, q3); n = lane1(o0, o1, o2, o3);
    dk_a[c][1] += m * ds_a; dk_b[c][1] += m * ds_b; dv_a[c][1] += n * pr_a; dv_b[c][1] += n * pr_b;
    m = lane2(q0, q1, q2, q3); n = lane2(o0, o1, o2, o3);
    dk_a[c][2] += m * ds_a; dk_b[c][2] += m * ds_b; dv_a[c][2] += n * pr_a; dv_b[c][2] += n * pr_b;
    m = lane3(q0, q1, q2, q3); n = lane3(o0, o1, o2, o3);
    dk_a[c][3] += m * ds_a; dk_b[c][3] += m * ds_b; dv_a[c][3] += n * pr_a; dv_b[c][3] += n * pr_b;
    if (SG == 8u) {
        m = lane4(q0, q1, q2, q3); n = lane4(o0, o1, o2, o3);
        dk_a[c][4] += m * ds_a; dk_b[c][4] += m * ds_b; dv_a[c][4] += n * pr_a; dv_b[c][4] += n * pr_b;
        m = lane5(q0, q1, q2, q3); n = lane5(o0, o1, o2, o3);
        dk_a[c][5] += m * ds_a; dk_b[c][5] += m * ds_b; dv_a[c][5] += n * pr_a; dv_b[c][5] += n * pr_b;
        m = lane6(q0, q1, q2, q3); n = lane6(o0, o1, o2, o3);
        dk_a[c][6] += m * ds_a; dk_b[c][6] += m * ds_b; dv_a[c][6] += n * pr_a; dv_b[c][6] += n * pr_b;
        m = lane7(q0, q1, q2, q3); n = lane7(o0, o1, o2, o3);
        dk_a[c][7] += m * ds_a; dk_b[c][7] += m * ds_b; dv_a[c][7] += n * pr_a; dv_b[c][7] += n * pr_b;
    }
}

// Key pass: one workgroup = one subgroup = KB keys of one kv head, each lane's two keys'
// k and v rows in registers. The rows that see the block stream past four queries of
// one head at a time (heads of the group in turn), so the four rows' stats are one
// vec4 pair and no index needs a division.
@compute @workgroup_size(SG)
fn attention_backward_kv_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let n_keys = p.past_len + p.n_query;
    let blocks = (n_keys + KB - 1u) / KB;
    let wg = group_index(wid, nwg);
    if (wg >= blocks * p.n_kv_head) {
        return;
    }
    let hk = wg / blocks;
    let j0 = (wg % blocks) * KB;
    // Keys past the last compute on it, store dS to padding and nothing else.
    let key_a = j0 + lid;
    let key_b = key_a + SG;
    let ja = min(key_a, n_keys - 1u);
    let jb = min(key_b, n_keys - 1u);
    // Queries from t_lo see the block's first key; key a from t_a, key b from t_b.
    let t_lo = max(p.lo, (max(j0, p.past_len) - p.past_len) / 4u * 4u);
    let t_a = max(ja, p.past_len) - p.past_len;
    let t_b = max(jb, p.past_len) - p.past_len;
    // No query of the chunk sees a block past its last key (t_lo may still be below hi).
    let t_end = select(t_lo, p.hi, j0 < p.past_len + p.hi);
    let ra = ((p.offset + ja) * p.n_kv_head + hk) * HD4;
    let rb = ((p.offset + jb) * p.n_kv_head + hk) * HD4;
    let quads = (p.n_query + 3u) / 4u;
    let ks = (p.past_len + p.hi + KB - 1u) / KB * KB;
    let chunk_rows = (p.hi - p.lo + 3u) / 4u * 4u;
    let last = p.hi - 1u;

    kv_load(0u, ra, rb);
    if (CHUNKS > 1u) { kv_load(1u, ra, rb); }
    if (CHUNKS > 2u) { kv_load(2u, ra, rb); }
    if (CHUNKS > 3u) { kv_load(3u, ra, rb); }
    if (CHUNKS > 4u) { kv_load(4u, ra, rb); }
    if (CHUNKS > 5u) { kv_load(5u, ra, rb); }
    if (CHUNKS > 6u) { kv_load(6u, ra, rb); }
    if (CHUNKS > 7u) { kv_load(7u, ra, rb); }
    for (var g = 0u; g < group; g++) {
        let h = hk * group + g;
        for (var t0 = t_lo; t0 < t_end; t0 += 4u) {
            // Queries past the chunk read its last one and are masked.
            let t = vec4<u32>(t0) + vec4<u32>(0u, 1u, 2u, 3u);
            let r = ((p.offset + min(t, vec4<u32>(last))) * p.n_head + h) * HD4 + lid;
            var sd = kv_scores(0u, r);
            if (CHUNKS > 1u) { sd += kv_scores(1u, r); }
            if (CHUNKS > 2u) { sd += kv_scores(2u, r); }
            if (CHUNKS > 3u) { sd += kv_scores(3u, r); }
            if (CHUNKS > 4u) { sd += kv_scores(4u, r); }
            if (CHUNKS > 5u) { sd += kv_scores(5u, r); }
            if (CHUNKS > 6u) { sd += kv_scores(6u, r); }
            if (CHUNKS > 7u) { sd += kv_scores(7u, r); }
            let si = 2u * (h * quads + t0 / 4u);
            let lse4 = bw_stats[si];
            let delta = bw_stats[si + 1u];
            let in_chunk = t < vec4<u32>(p.hi);
            // select, not a product: exp of a masked score may overflow.
            let pr_a = select(vec4<f32>(0.0), exp(sd[0] * p.scale - lse4), in_chunk & (t >= vec4<u32>(t_a)));
            let pr_b = select(vec4<f32>(0.0), exp(sd[2] * p.scale - lse4), in_chunk & (t >= vec4<u32>(t_b)));
            let ds_a = pr_a * (sd[1] - delta);
            let ds_b = pr_b * (sd[3] - delta);
            // dS of both keys for the four queries.
            let dsb = (h * chunk_rows + t0 - p.lo) * ks + key_a;
            bw_ds[dsb] = ds_a.x;
            bw_ds[dsb + ks] = ds_a.y;
            bw_ds[dsb + 2u * ks] = ds_a.z;
            bw_ds[dsb + 3u * ks] = ds_a.w;
            bw_ds[dsb + SG] = ds_b.x;
            bw_ds[dsb + SG + ks] = ds_b.y;
            bw_ds[dsb + SG + 2u * ks] = ds_b.z;
            bw_ds[dsb + SG + 3u * ks] = ds_b.w;
            kv_update(0u, pr_a, ds_a, pr_b, ds_b);
            if (CHUNKS > 1u) { kv_update(1u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 2u) { kv_update(2u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 3u) { kv_update(3u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 4u) { kv_update(4u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 5u) { kv_update(5u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 6u) { kv_update(6u, pr_a, ds_a, pr_b, ds_b); }
            if (CHUNKS > 7u) { kv_update(7u, pr_a, ds_a, pr_b, ds_b); }
        }
    }
    let a = key_a < n_keys;
    let b = key_b < n_keys;
    kv_store(0u, ra, rb, a, b);
    if (CHUNKS > 1u) { kv_store(1u, ra, rb, a, b); }
    if (CHUNKS > 2u) { kv_store(2u, ra, rb, a, b); }
    if (CHUNKS > 3u) { kv_store(3u, ra, rb, a, b); }
    if (CHUNKS > 4u) { kv_store(4u, ra, rb, a, b); }
    if (CHUNKS > 5u) { kv_store(5u, ra, rb, a, b); }
    if (CHUNKS > 6u) { kv_store(6u, ra, rb, a, b); }
    if (CHUNKS > 7u) { kv_store(7u, ra, rb, a, b); }
}

// Query pass bindings (2 the forward's k_cache).
@group(0) @binding(1) var<storage, read> qp_ds: array<vec4<f32>>;       // the chunk's dS, four keys per vec4
@group(0) @binding(3) var<storage, read_write> qp_dq: array<vec4<f32>>; // [n_query, n_head, HEAD_DIM]

// Rows per query-pass workgroup: lane i owns rows first + i ("a") and first + SG + i ("b").
const QB = 2u * SG;
var<private> dq_a: array<array<vec4<f32>, SG>, CHUNKS>; // dq / scale, split as k_a
var<private> dq_b: array<array<vec4<f32>, SG>, CHUNKS>;

// Piece c of dq += Σ dS k over the four keys whose rows start at vec4 r (plus the
// lane's column), for both rows.
fn q_update(c: u32, r: vec4<u32>, ds_a: vec4<f32>, ds_b: vec4<f32>) {
    let o = c * SG;
    let k0 = k_cache[r.x + o];
    let k1 = k_cache[r.y + o];
    let k2 = k_cache[r.z + o];
    let k3 = k_cache[r.w + o];
    var m = lane0(k0, k1, k2, k3);
    dq_a[c][0] += m * ds_a; dq_b[c][0] += m * ds_b;
    m = lane1(k0, k1, k2, k3);
    dq_a[c][1] += m * ds_a; dq_b[c][1] += m * ds_b;
    m = lane2(k0, k1, k2, k3);
    dq_a[c][2] += m * ds_a; dq_b[c][2] += m * ds_b;
    m = lane3(k0, k1, k2, k3);
    dq_a[c][3] += m * ds_a; dq_b[c][3] += m * ds_b;
    if (SG == 8u) {
        m = lane4(k0, k1, k2, k3);
        dq_a[c][4] += m * ds_a; dq_b[c][4] += m * ds_b;
        m = lane5(k0, k1, k2, k3);
        dq_a[c][5] += m * ds_a; dq_b[c][5] += m * ds_b;
        m = lane6(k0, k1, k2, k3);
        dq_a[c][6] += m * ds_a; dq_b[c][6] += m * ds_b;
        m = lane7(k0, k1, k2, k3);
        dq_a[c][7] += m * ds_a; dq_b[c][7] += m * ds_b;
    }
}

// Writes piece c of row a's dq (from vec4 qa) if `a`, of row b's (qb) if `b`.
fn q_store(c: u32, qa: u32, qb: u32, a: bool, b: bool) {
    for (var i = 0u; i < SG; i++) {
        let o = c * SG + i;
        if (a) {
            qp_dq[qa + o] = dq_a[c][i] * p.scale;
        }
        if (b) {
            qp_dq[qb + o] = dq_b[c][i] * p.scale;
        }
    }
}

// Query pass: one workgroup = one subgroup = QB (query, head) rows of one kv head of
// the chunk, t-major as in the forward; per four keys the lanes share the K rows as
// there and each adds dS k to its two rows.
@compute @workgroup_size(SG)
fn attention_backward_query_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                     @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let rows = (p.hi - p.lo) * group;
    let tiles = (rows + QB - 1u) / QB;
    let wg = group_index(wid, nwg);
    if (wg >= tiles * p.n_kv_head) {
        return;
    }
    let hk = wg / tiles;
    let first = (wg % tiles) * QB;
    // Keys any row of the workgroup sees; uniform. Rows past the last redo it.
    let n_keys = p.past_len + p.lo + min(first + QB - 1u, rows - 1u) / group + 1u;
    let row_a = first + lid;
    let row_b = row_a + SG;
    let ra = min(row_a, rows - 1u);
    let rb = min(row_b, rows - 1u);
    let t_a = p.lo + ra / group;
    let t_b = p.lo + rb / group;
    let h_a = hk * group + ra % group;
    let h_b = hk * group + rb % group;
    let ks = (p.past_len + p.hi + KB - 1u) / KB * KB;
    let chunk_rows = (p.hi - p.lo + 3u) / 4u * 4u;
    let ds_row_a = (h_a * chunk_rows + t_a - p.lo) * (ks / 4u);
    let ds_row_b = (h_b * chunk_rows + t_b - p.lo) * (ks / 4u);
    let last = n_keys - 1u;
    for (var j0 = 0u; j0 < n_keys; j0 += 4u) {
        // Keys past the end are clamped to the last (never read past it) and masked.
        let j = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
        let r = ((p.offset + min(j, vec4<u32>(last))) * p.n_kv_head + hk) * HD4 + lid;
        // Row (t, g) sees keys up to past_len + t.
        let sa = select(vec4<f32>(0.0), qp_ds[ds_row_a + j0 / 4u], j <= vec4<u32>(p.past_len + t_a));
        let sb = select(vec4<f32>(0.0), qp_ds[ds_row_b + j0 / 4u], j <= vec4<u32>(p.past_len + t_b));
        q_update(0u, r, sa, sb);
        if (CHUNKS > 1u) { q_update(1u, r, sa, sb); }
        if (CHUNKS > 2u) { q_update(2u, r, sa, sb); }
        if (CHUNKS > 3u) { q_update(3u, r, sa, sb); }
        if (CHUNKS > 4u) { q_update(4u, r, sa, sb); }
        if (CHUNKS > 5u) { q_update(5u, r, sa, sb); }
        if (CHUNKS > 6u) { q_update(6u, r, sa, sb); }
        if (CHUNKS > 7u) { q_update(7u, r, sa, sb); }
    }
    let qa = ((p.offset + t_a) * p.n_head + h_a) * HD4;
    let qb = ((p.offset + t_b) * p.n_head + h_b) * HD4;
    let a = row_a < rows;
    let b = row_b < rows;
    q_store(0u, qa, qb, a, b);
    if (CHUNKS > 1u) { q_store(1u, qa, qb, a, b); }
    if (CHUNKS > 2u) { q_store(2u, qa, qb, a, b); }
    if (CHUNKS > 3u) { q_store(3u, qa, qb, a, b); }
    if (CHUNKS > 4u) { q_store(4u, qa, qb, a, b); }
    if (CHUNKS > 5u) { q_store(5u, qa, qb, a, b); }
    if (CHUNKS > 6u) { q_store(6u, qa, qb, a, b); }
    if (CHUNKS > 7u) { q_store(7u, qa, qb, a, b); }
}
