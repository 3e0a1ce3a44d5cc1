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
// Both subgroup passes mirror the forward's subgroup path: each lane owns one key (key
// pass) or one (query, head) row (query pass), and the lanes load the rows they stream
// together, lane i the vec4 columns c + i, handing them round with subgroupBroadcast:
// llvmpipe turns every lane's storage load into a scalar access, so sharing cuts the
// loads per streamed row from HD4 to HD4 / SG per lane.
//
// One key-pass + query-pass pair covers queries p.lo .. p.hi (a multiple of 4 apart,
// but for the last); the Rust side splits long sequences into such chunks to bound the
// dS scratch and the key pass's loop count, the key pass adding to the dk, dv of the
// chunks before (p.accumulate). dS of a chunk: [n_head, round4(hi - lo), KS] with
// KS = past_len + hi rounded up to SG, row (h, t - lo), column key j; entries of keys a
// row does not see are left unwritten and masked by the query pass.

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
            let b = (t * p.n_head + h) * HD4;
            var acc = vec4<f32>(0.0);
            for (var c = 0u; c < HD4; c++) {
                acc += st_dout[b + c] * st_out[b + c];
            }
            l[k] = st_lse[h * p.n_query + t];
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

// Per-lane rows of the key pass, split into CHUNKS = HD4 / SG pieces of SG vec4s: piece c
// holds the columns the lanes load together in one go (lane i: vec4 column c SG + i).
// The passes walk the pieces by calling a function per piece with a constant index
// (`if (CHUNKS > n)` steps, up to 8 pieces), not in a loop: llvmpipe leaves such a loop
// rolled, spills the arrays and indexes them lane by lane, which made the key pass 3x
// slower; with constant indices the arrays are plain registers.
const CHUNKS = HD4 / SG;
var<private> kv: array<array<vec4<f32>, SG>, CHUNKS>;   // the lane's key row
var<private> vv: array<array<vec4<f32>, SG>, CHUNKS>;   // its value row
var<private> dka: array<array<vec4<f32>, SG>, CHUNKS>;  // dk / scale
var<private> dva: array<array<vec4<f32>, SG>, CHUNKS>;  // dv
// This lane's columns of the four streamed queries' q and dout, loaded by kv_scores for
// kv_update.
var<private> qs: array<array<vec4<f32>, 4>, CHUNKS>;
var<private> os: array<array<vec4<f32>, 4>, CHUNKS>;

fn kv_load(c: u32, kb: u32) {
    for (var i = 0u; i < SG; i++) {
        kv[c][i] = k_cache[kb + c * SG + i];
        vv[c][i] = v_cache[kb + c * SG + i];
        dka[c][i] = vec4<f32>(0.0);
        dva[c][i] = vec4<f32>(0.0);
    }
}

fn kv_store(c: u32, kb: u32) {
    let add = p.accumulate != 0u;
    for (var i = 0u; i < SG; i++) {
        let d = kb + c * SG + i;
        bw_dk[d] = select(vec4<f32>(0.0), bw_dk[d], add) + dka[c][i] * p.scale;
        bw_dv[d] = select(vec4<f32>(0.0), bw_dv[d], add) + dva[c][i];
    }
}

// Piece c of (q . k, dout . v) for the four queries whose rows start at b (plus the
// lane's column); keeps the loaded columns in qs, os.
fn kv_scores(c: u32, b: vec4<u32>) -> mat2x4<f32> {
    let o = c * SG;
    let q0 = q[b.x + o];
    let q1 = q[b.y + o];
    let q2 = q[b.z + o];
    let q3 = q[b.w + o];
    let o0 = bw_dout[b.x + o];
    let o1 = bw_dout[b.y + o];
    let o2 = bw_dout[b.z + o];
    let o3 = bw_dout[b.w + o];
    qs[c] = array<vec4<f32>, 4>(q0, q1, q2, q3);
    os[c] = array<vec4<f32>, 4>(o0, o1, o2, o3);
    var s = kv[c][0] * lane0(q0, q1, q2, q3) + kv[c][1] * lane1(q0, q1, q2, q3)
          + kv[c][2] * lane2(q0, q1, q2, q3) + kv[c][3] * lane3(q0, q1, q2, q3);
    var dp = vv[c][0] * lane0(o0, o1, o2, o3) + vv[c][1] * lane1(o0, o1, o2, o3)
           + vv[c][2] * lane2(o0, o1, o2, o3) + vv[c][3] * lane3(o0, o1, o2, o3);
    if (SG == 8u) {
        s += kv[c][4] * lane4(q0, q1, q2, q3) + kv[c][5] * lane5(q0, q1, q2, q3)
           + kv[c][6] * lane6(q0, q1, q2, q3) + kv[c][7] * lane7(q0, q1, q2, q3);
        dp += vv[c][4] * lane4(o0, o1, o2, o3) + vv[c][5] * lane5(o0, o1, o2, o3)
            + vv[c][6] * lane6(o0, o1, o2, o3) + vv[c][7] * lane7(o0, o1, o2, o3);
    }
    return mat2x4<f32>(s, dp);
}

// Piece c of dk += dS q and dv += P dout over the four queries.
fn kv_update(c: u32, pr: vec4<f32>, ds: vec4<f32>) {
    let q0 = qs[c][0];
    let q1 = qs[c][1];
    let q2 = qs[c][2];
    let q3 = qs[c][3];
    let o0 = os[c][0];
    let o1 = os[c][1];
    let o2 = os[c][2];
    let o3 = os[c][3];
    dka[c][0] += lane0(q0, q1, q2, q3) * ds;
    dka[c][1] += lane1(q0, q1, q2, q3) * ds;
    dka[c][2] += lane2(q0, q1, q2, q3) * ds;
    dka[c][3] += lane3(q0, q1, q2, q3) * ds;
    dva[c][0] += lane0(o0, o1, o2, o3) * pr;
    dva[c][1] += lane1(o0, o1, o2, o3) * pr;
    dva[c][2] += lane2(o0, o1, o2, o3) * pr;
    dva[c][3] += lane3(o0, o1, o2, o3) * pr;
    if (SG == 8u) {
        dka[c][4] += lane4(q0, q1, q2, q3) * ds;
        dka[c][5] += lane5(q0, q1, q2, q3) * ds;
        dka[c][6] += lane6(q0, q1, q2, q3) * ds;
        dka[c][7] += lane7(q0, q1, q2, q3) * ds;
        dva[c][4] += lane4(o0, o1, o2, o3) * pr;
        dva[c][5] += lane5(o0, o1, o2, o3) * pr;
        dva[c][6] += lane6(o0, o1, o2, o3) * pr;
        dva[c][7] += lane7(o0, o1, o2, o3) * pr;
    }
}

// Key pass: one workgroup = one subgroup = SG keys j0 + lane of one kv head, each
// lane's k and v rows in registers. The rows that see the block stream past four
// queries of one head at a time (heads of the group in turn), so the four rows' stats
// are one vec4 pair and no index needs a division.
@compute @workgroup_size(SG)
fn attention_backward_kv_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                  @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let n_keys = p.past_len + p.n_query;
    let blocks = (n_keys + SG - 1u) / SG;
    let wg = group_index(wid, nwg);
    if (wg >= blocks * p.n_kv_head) {
        return;
    }
    let hk = wg / blocks;
    let j0 = (wg % blocks) * SG;
    // Lanes past the last key compute on it, store dS to padding and nothing else.
    let lane_key = j0 + lid;
    let j = min(lane_key, n_keys - 1u);
    // Queries from t_lo see the block's first key; this lane's key from t_min.
    let t_lo = max(p.lo, (max(j0, p.past_len) - p.past_len) / 4u * 4u);
    let t_min = max(j, p.past_len) - p.past_len;
    // No query of the chunk sees a block past its last key (t_lo may still be below hi).
    let t_end = select(t_lo, p.hi, j0 < p.past_len + p.hi);
    let kb = j * p.n_kv_head * HD4 + hk * HD4;
    let quads = (p.n_query + 3u) / 4u;
    let ks = (p.past_len + p.hi + SG - 1u) / SG * SG;
    let chunk_rows = (p.hi - p.lo + 3u) / 4u * 4u;
    let last = p.hi - 1u;

    kv_load(0u, kb);
    if (CHUNKS > 1u) { kv_load(1u, kb); }
    if (CHUNKS > 2u) { kv_load(2u, kb); }
    if (CHUNKS > 3u) { kv_load(3u, kb); }
    if (CHUNKS > 4u) { kv_load(4u, kb); }
    if (CHUNKS > 5u) { kv_load(5u, kb); }
    if (CHUNKS > 6u) { kv_load(6u, kb); }
    if (CHUNKS > 7u) { kv_load(7u, kb); }
    for (var g = 0u; g < group; g++) {
        let h = hk * group + g;
        for (var t0 = t_lo; t0 < t_end; t0 += 4u) {
            // Queries past the chunk read its last one and are masked.
            let t = vec4<u32>(t0) + vec4<u32>(0u, 1u, 2u, 3u);
            let b = (min(t, vec4<u32>(last)) * p.n_head + h) * HD4 + lid;
            var sd = kv_scores(0u, b);
            if (CHUNKS > 1u) { sd += kv_scores(1u, b); }
            if (CHUNKS > 2u) { sd += kv_scores(2u, b); }
            if (CHUNKS > 3u) { sd += kv_scores(3u, b); }
            if (CHUNKS > 4u) { sd += kv_scores(4u, b); }
            if (CHUNKS > 5u) { sd += kv_scores(5u, b); }
            if (CHUNKS > 6u) { sd += kv_scores(6u, b); }
            if (CHUNKS > 7u) { sd += kv_scores(7u, b); }
            let si = 2u * (h * quads + t0 / 4u);
            let visible = (t >= vec4<u32>(t_min)) & (t < vec4<u32>(p.hi));
            // select, not a product: exp of a masked score may overflow.
            let pr = select(vec4<f32>(0.0), exp(sd[0] * p.scale - bw_stats[si]), visible);
            let ds = pr * (sd[1] - bw_stats[si + 1u]);
            // dS of this key for the four queries; the query pass masks what is not seen.
            let dsb = (h * chunk_rows + t0 - p.lo) * ks + lane_key;
            bw_ds[dsb] = ds.x;
            bw_ds[dsb + ks] = ds.y;
            bw_ds[dsb + 2u * ks] = ds.z;
            bw_ds[dsb + 3u * ks] = ds.w;
            kv_update(0u, pr, ds);
            if (CHUNKS > 1u) { kv_update(1u, pr, ds); }
            if (CHUNKS > 2u) { kv_update(2u, pr, ds); }
            if (CHUNKS > 3u) { kv_update(3u, pr, ds); }
            if (CHUNKS > 4u) { kv_update(4u, pr, ds); }
            if (CHUNKS > 5u) { kv_update(5u, pr, ds); }
            if (CHUNKS > 6u) { kv_update(6u, pr, ds); }
            if (CHUNKS > 7u) { kv_update(7u, pr, ds); }
        }
    }
    if (lane_key < n_keys) {
        kv_store(0u, kb);
        if (CHUNKS > 1u) { kv_store(1u, kb); }
        if (CHUNKS > 2u) { kv_store(2u, kb); }
        if (CHUNKS > 3u) { kv_store(3u, kb); }
        if (CHUNKS > 4u) { kv_store(4u, kb); }
        if (CHUNKS > 5u) { kv_store(5u, kb); }
        if (CHUNKS > 6u) { kv_store(6u, kb); }
        if (CHUNKS > 7u) { kv_store(7u, kb); }
    }
}

// Query pass bindings (2 the forward's k_cache).
@group(0) @binding(1) var<storage, read> qp_ds: array<vec4<f32>>;       // the chunk's dS, four keys per vec4
@group(0) @binding(3) var<storage, read_write> qp_dq: array<vec4<f32>>; // [n_query, n_head, HEAD_DIM]

var<private> acc: array<array<vec4<f32>, SG>, CHUNKS>; // query pass: dq / scale, as dka

// Piece c of acc += Σ dS k over four keys whose rows start at b (plus the lane's column).
fn q_update(c: u32, b: vec4<u32>, ds: vec4<f32>) {
    let o = c * SG;
    let k0 = k_cache[b.x + o];
    let k1 = k_cache[b.y + o];
    let k2 = k_cache[b.z + o];
    let k3 = k_cache[b.w + o];
    acc[c][0] += lane0(k0, k1, k2, k3) * ds;
    acc[c][1] += lane1(k0, k1, k2, k3) * ds;
    acc[c][2] += lane2(k0, k1, k2, k3) * ds;
    acc[c][3] += lane3(k0, k1, k2, k3) * ds;
    if (SG == 8u) {
        acc[c][4] += lane4(k0, k1, k2, k3) * ds;
        acc[c][5] += lane5(k0, k1, k2, k3) * ds;
        acc[c][6] += lane6(k0, k1, k2, k3) * ds;
        acc[c][7] += lane7(k0, k1, k2, k3) * ds;
    }
}

fn q_store(c: u32, qb: u32) {
    for (var i = 0u; i < SG; i++) {
        qp_dq[qb + c * SG + i] = acc[c][i] * p.scale;
    }
}

// Query pass: one workgroup = one subgroup = SG (query, head) rows of one kv head of
// the chunk, t-major as in the forward; per four keys the lanes share the K rows as
// there and each adds dS k to its row.
@compute @workgroup_size(SG)
fn attention_backward_query_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                                     @builtin(local_invocation_index) lid: u32) {
    let group = p.n_head / p.n_kv_head;
    let rows = (p.hi - p.lo) * group;
    let tiles = (rows + SG - 1u) / SG;
    let wg = group_index(wid, nwg);
    if (wg >= tiles * p.n_kv_head) {
        return;
    }
    let hk = wg / tiles;
    let first = (wg % tiles) * SG;
    // Keys any row of the subgroup sees; uniform. Lanes past the last row redo it.
    let n_keys = p.past_len + p.lo + min(first + SG - 1u, rows - 1u) / group + 1u;
    let r = min(first + lid, rows - 1u);
    let t = p.lo + r / group;
    let h = hk * group + r % group;
    let limit = p.past_len + t;
    let ks = (p.past_len + p.hi + SG - 1u) / SG * SG;
    let chunk_rows = (p.hi - p.lo + 3u) / 4u * 4u;
    let dsb = (h * chunk_rows + t - p.lo) * (ks / 4u);
    let last = n_keys - 1u;
    for (var j0 = 0u; j0 < n_keys; j0 += 4u) {
        // Keys past the end are clamped to the last (never read past it) and masked.
        let j = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u);
        let b = min(j, vec4<u32>(last)) * (p.n_kv_head * HD4) + hk * HD4 + lid;
        let ds = select(vec4<f32>(0.0), qp_ds[dsb + j0 / 4u], j <= vec4<u32>(limit));
        q_update(0u, b, ds);
        if (CHUNKS > 1u) { q_update(1u, b, ds); }
        if (CHUNKS > 2u) { q_update(2u, b, ds); }
        if (CHUNKS > 3u) { q_update(3u, b, ds); }
        if (CHUNKS > 4u) { q_update(4u, b, ds); }
        if (CHUNKS > 5u) { q_update(5u, b, ds); }
        if (CHUNKS > 6u) { q_update(6u, b, ds); }
        if (CHUNKS > 7u) { q_update(7u, b, ds); }
    }
    if (first + lid < rows) {
        let qb = (t * p.n_head + h) * HD4;
        q_store(0u, qb);
        if (CHUNKS > 1u) { q_store(1u, qb); }
        if (CHUNKS > 2u) { q_store(2u, qb); }
        if (CHUNKS > 3u) { q_store(3u, qb); }
        if (CHUNKS > 4u) { q_store(4u, qb); }
        if (CHUNKS > 5u) { q_store(5u, qb); }
        if (CHUNKS > 6u) { q_store(6u, qb); }
        if (CHUNKS > 7u) { q_store(7u, qb); }
    }
}
