// Input gradient of matmul.wgsl's y = x · Wᵀ, for training through frozen weights:
//   dx[t, k] (+)= Σ_n dy[t, n] · W[n, k]
// W stays quantized (layout as matmul.wgsl) and is dequantized with matmul.wgsl's
// dequant8, which the loader appends (kernels/matmul/input_grad.rs); frozen, so no dW.
// A file of its own because the CPU path reads dy through a uniform binding in slot 1,
// where matmul.wgsl declares its storage x.
//
// Each lane owns 8 columns (one dequant8) × a tile of 16 tokens and walks the rows 4 at
// a time: each dequantized value serves 16 tokens from registers, each accumulator takes
// 4 products per update (with one, the 128 spilled accumulators made the kernel
// store-bound: half the speed), and all lanes read the same dy values.
//
// Three modules, three ways to read dy (the split of matmul.wgsl):
// - uniform, the file up to "storage dy", for CPU devices without 8-lane subgroups:
//   llvmpipe runs every storage load as a loop over the SIMD lanes, even when they share
//   the address, but a uniform load is one gather (2–3× faster here). dy is first packed
//   (matmul_input_grad_pack, storage module) into [token tile][row][16 tokens], and each
//   dispatch binds a 64 KiB window of it: up to 1024 rows of one tile, or whole tiles.
// - subgroup, "shared" up to "storage dy" plus the file from "subgroup dy" on (entry
//   matmul_input_grad_subgroup), for CPU devices with 8-lane subgroups: dy read in place
//   as vec4s (one lane loads a token's 4 rows) and shared by subgroupBroadcast; 2–2.5×
//   the uniform module's speed on llvmpipe with no packed copy, where dy's columns line
//   up on vec4s (the host checks).
// - storage, the file from "shared" up to "subgroup dy", for GPUs: dy read in place, one
//   dispatch per weight chunk, as uniform-address loads are broadcasts there. Where that
//   leaves most of a GPU idle (the lm_head: 576 columns × 256 tokens are only 1,152
//   lanes, each walking 16,384 rows), the rows are split into segments, a third dispatch
//   dimension folded into the workgroup index: each segment writes its partial sums to
//   its own slice of a scratch buffer (bound in the dx slot) and matmul_input_grad_reduce
//   adds the slices into dx.
//
// Constants set by the loader: FMT (as matmul.wgsl), WG (lanes per workgroup).

// ---- uniform dy: the uniform module is the file up to "storage dy" ----

// 4096 vec4 = 64 KiB (WebGPU's default uniform binding limit) of packed dy: row r of
// tile i at vec4 (i · tile_rows + r) · 4, tokens 0–3, 4–7, 8–11, 12–15.
@group(0) @binding(1) var<uniform> dyw: array<vec4<f32>, 4096>;

// The 16 tokens of tile `tile` (of this dispatch) at rows r (of this dispatch).
fn fetch_dy(tile: u32, r: vec4<u32>, n1: u32, sl: u32) -> Dy16 {
    let i = (vec4<u32>(tile * p.tile_rows + p.dy_col) + r) * 4u;
    return Dy16(transpose(mat4x4<f32>(dyw[i.x], dyw[i.y], dyw[i.z], dyw[i.w])),
                transpose(mat4x4<f32>(dyw[i.x + 1u], dyw[i.y + 1u], dyw[i.z + 1u], dyw[i.w + 1u])),
                transpose(mat4x4<f32>(dyw[i.x + 2u], dyw[i.y + 2u], dyw[i.z + 2u], dyw[i.w + 2u])),
                transpose(mat4x4<f32>(dyw[i.x + 3u], dyw[i.y + 3u], dyw[i.z + 3u], dyw[i.w + 3u])));
}

// ---- shared: all modules ----
struct Params {
    tokens: u32,     // rows of dy and dx
    rows: u32,       // weight rows this dispatch walks (pack: rows to pack)
    cols: u32,       // K, a multiple of 8
    row0: u32,       // first walked row, local to this weight chunk
    row_words: u32,  // u32 words per weight row in the chunk
    dy_stride: u32,  // storage dy and pack: f32 per token of dy
    dy_col: u32,     // storage dy and pack: column of dy holding the first row; uniform: window row of it
    tile0: u32,      // first token tile (16 tokens) of this dispatch
    tiles: u32,      // token tiles of this dispatch
    tile_rows: u32,  // uniform and pack: rows per tile in the packed dy
    epilogue: u32,   // 0: dx = result, 1: dx += result
    seg_rows: u32,   // rows per segment (a multiple of 4); 0: one segment of all rows
    segments: u32,   // reduce: partial slices to add
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;  // [tokens, cols]; the pack writes packed dy here
@group(0) @binding(3) var<storage, read> w: array<u32>;         // [rows, row_words] of one weight chunk

// dy of 16 tokens × 4 rows: column c of q_k holds token 4k + c at the 4 rows.
struct Dy16 {
    q0: mat4x4<f32>,
    q1: mat4x4<f32>,
    q2: mat4x4<f32>,
    q3: mat4x4<f32>,
}

// dx[t, k..k+8] (+)= (lo, hi), in the slice `base` of dx; unrolled, so no loop counts
// against llvmpipe's budget.
fn store_dx(base: u32, t: u32, k: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (k >= p.cols || t >= p.tokens) {
        return;
    }
    let i = base + t * p.cols + k;
    var a = lo;
    var b = hi;
    if (p.epilogue == 1u) {
        a += vec4<f32>(dx[i], dx[i + 1u], dx[i + 2u], dx[i + 3u]);
        b += vec4<f32>(dx[i + 4u], dx[i + 5u], dx[i + 6u], dx[i + 7u]);
    }
    dx[i] = a.x;
    dx[i + 1u] = a.y;
    dx[i + 2u] = a.z;
    dx[i + 3u] = a.w;
    dx[i + 4u] = b.x;
    dx[i + 5u] = b.y;
    dx[i + 6u] = b.z;
    dx[i + 7u] = b.w;
}

// Workgroups: groups of WG · 8 columns fastest, then token tiles, then row segments.
// Accumulators written out by hand, as in matmul.wgsl (llvmpipe keeps indexed private
// arrays in memory). The host keeps a segment's rows / 4 iterations within llvmpipe's
// 65,535 loop iterations.
@compute @workgroup_size(WG)
fn matmul_input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    input_grad(group_index(wid, nwg), lid, 0u);
}

// `sl`: the lane within its subgroup (matmul_input_grad_subgroup; 0 from the entry above).
fn input_grad(g: u32, lid: u32, sl: u32) {
    let col_groups = (p.cols / 8u + WG - 1u) / WG;
    let per_segment = col_groups * p.tiles;
    let segment = g / per_segment;
    let tile = (g % per_segment) / col_groups;
    let k = ((g % col_groups) * WG + lid) * 8u;
    let seg_rows = select(p.rows, p.seg_rows, p.seg_rows > 0u);
    let n0 = segment * seg_rows;
    let n1 = min(p.rows, n0 + seg_rows);
    // Only past the last segment (the grid's rounding): segment 0 of an empty range
    // still writes its zeros.
    if (segment > 0u && n0 >= n1) {
        return;
    }
    // Lanes past K compute on the last columns and store nothing.
    let kc = min(k, p.cols - 8u);
    var l0 = vec4<f32>(0.0); var h0 = vec4<f32>(0.0);
    var l1 = vec4<f32>(0.0); var h1 = vec4<f32>(0.0);
    var l2 = vec4<f32>(0.0); var h2 = vec4<f32>(0.0);
    var l3 = vec4<f32>(0.0); var h3 = vec4<f32>(0.0);
    var l4 = vec4<f32>(0.0); var h4 = vec4<f32>(0.0);
    var l5 = vec4<f32>(0.0); var h5 = vec4<f32>(0.0);
    var l6 = vec4<f32>(0.0); var h6 = vec4<f32>(0.0);
    var l7 = vec4<f32>(0.0); var h7 = vec4<f32>(0.0);
    var l8 = vec4<f32>(0.0); var h8 = vec4<f32>(0.0);
    var l9 = vec4<f32>(0.0); var h9 = vec4<f32>(0.0);
    var l10 = vec4<f32>(0.0); var h10 = vec4<f32>(0.0);
    var l11 = vec4<f32>(0.0); var h11 = vec4<f32>(0.0);
    var l12 = vec4<f32>(0.0); var h12 = vec4<f32>(0.0);
    var l13 = vec4<f32>(0.0); var h13 = vec4<f32>(0.0);
    var l14 = vec4<f32>(0.0); var h14 = vec4<f32>(0.0);
    var l15 = vec4<f32>(0.0); var h15 = vec4<f32>(0.0);
    for (var n = n0; n < n1; n += 4u) {
        // Rows past the end repeat the last row (valid loads) with zero weight.
        let rn = vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u);
        let r = min(rn, vec4<u32>(n1 - 1u));
        let b = (r + p.row0) * p.row_words;
        let live = vec4<f32>(rn < vec4<u32>(n1));
        let v0 = dequant8(b.x, kc);
        let v1 = dequant8(b.y, kc);
        let v2 = dequant8(b.z, kc);
        let v3 = dequant8(b.w, kc);
        // Column j is row j's values: lo · d = Σ_j d[j] · W[r_j, k..k+4].
        let lo = mat4x4<f32>(v0.lo, v1.lo * live.y, v2.lo * live.z, v3.lo * live.w);
        let hi = mat4x4<f32>(v0.hi, v1.hi * live.y, v2.hi * live.z, v3.hi * live.w);
        let d = fetch_dy(tile, r, n1, sl);
        l0 += lo * d.q0[0]; h0 += hi * d.q0[0];
        l1 += lo * d.q0[1]; h1 += hi * d.q0[1];
        l2 += lo * d.q0[2]; h2 += hi * d.q0[2];
        l3 += lo * d.q0[3]; h3 += hi * d.q0[3];
        l4 += lo * d.q1[0]; h4 += hi * d.q1[0];
        l5 += lo * d.q1[1]; h5 += hi * d.q1[1];
        l6 += lo * d.q1[2]; h6 += hi * d.q1[2];
        l7 += lo * d.q1[3]; h7 += hi * d.q1[3];
        l8 += lo * d.q2[0]; h8 += hi * d.q2[0];
        l9 += lo * d.q2[1]; h9 += hi * d.q2[1];
        l10 += lo * d.q2[2]; h10 += hi * d.q2[2];
        l11 += lo * d.q2[3]; h11 += hi * d.q2[3];
        l12 += lo * d.q3[0]; h12 += hi * d.q3[0];
        l13 += lo * d.q3[1]; h13 += hi * d.q3[1];
        l14 += lo * d.q3[2]; h14 += hi * d.q3[2];
        l15 += lo * d.q3[3]; h15 += hi * d.q3[3];
    }
    let t0 = (p.tile0 + tile) * 16u;
    let base = select(0u, segment * p.tokens * p.cols, p.seg_rows > 0u);
    store_dx(base, t0, k, l0, h0);
    store_dx(base, t0 + 1u, k, l1, h1);
    store_dx(base, t0 + 2u, k, l2, h2);
    store_dx(base, t0 + 3u, k, l3, h3);
    store_dx(base, t0 + 4u, k, l4, h4);
    store_dx(base, t0 + 5u, k, l5, h5);
    store_dx(base, t0 + 6u, k, l6, h6);
    store_dx(base, t0 + 7u, k, l7, h7);
    store_dx(base, t0 + 8u, k, l8, h8);
    store_dx(base, t0 + 9u, k, l9, h9);
    store_dx(base, t0 + 10u, k, l10, h10);
    store_dx(base, t0 + 11u, k, l11, h11);
    store_dx(base, t0 + 12u, k, l12, h12);
    store_dx(base, t0 + 13u, k, l13, h13);
    store_dx(base, t0 + 14u, k, l14, h14);
    store_dx(base, t0 + 15u, k, l15, h15);
}

// ---- storage dy: the storage module is the file from "shared" on ----

@group(0) @binding(1) var<storage, read> dy: array<f32>;  // [tokens, dy_stride]

// dy[t, dy_col + r], tokens past the end clamped to the last one.
fn dy_rows(t: u32, r: vec4<u32>) -> vec4<f32> {
    let o = min(t, p.tokens - 1u) * p.dy_stride + p.dy_col;
    return vec4<f32>(dy[o + r.x], dy[o + r.y], dy[o + r.z], dy[o + r.w]);
}

fn fetch_dy(tile: u32, r: vec4<u32>, n1: u32, sl: u32) -> Dy16 {
    let t = (p.tile0 + tile) * 16u;
    return Dy16(mat4x4<f32>(dy_rows(t, r), dy_rows(t + 1u, r), dy_rows(t + 2u, r), dy_rows(t + 3u, r)),
                mat4x4<f32>(dy_rows(t + 4u, r), dy_rows(t + 5u, r), dy_rows(t + 6u, r), dy_rows(t + 7u, r)),
                mat4x4<f32>(dy_rows(t + 8u, r), dy_rows(t + 9u, r), dy_rows(t + 10u, r), dy_rows(t + 11u, r)),
                mat4x4<f32>(dy_rows(t + 12u, r), dy_rows(t + 13u, r), dy_rows(t + 14u, r), dy_rows(t + 15u, r)));
}

// Packs rows dy_col.. (p.rows of them) of dy for the uniform module: out[(i · tile_rows
// + r) · 16 + j] = dy[16i + j, dy_col + r] for p.tiles tiles of tile_rows rows, zero past
// the last token or row. One value per lane; out is bound in the dx slot.
@compute @workgroup_size(64)
fn matmul_input_grad_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    let per_tile = p.tile_rows * 16u;
    if (i >= p.tiles * per_tile) {
        return;
    }
    let t = (i / per_tile) * 16u + i % 16u;
    let r = (i % per_tile) / 16u;
    var v = 0.0;
    if (t < p.tokens && r < p.rows) {
        v = dy[t * p.dy_stride + p.dy_col + r];
    }
    dx[i] = v;
}

// dx[i] (+)= Σ_s part[s · tokens · cols + i]: the segments' partial sums, part bound in
// the dy slot. One value per lane.
@compute @workgroup_size(64)
fn matmul_input_grad_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    let n = p.tokens * p.cols;
    if (i >= n) {
        return;
    }
    var sum = 0.0;
    for (var s = 0u; s < p.segments; s++) {
        sum += dy[s * n + i];
    }
    if (p.epilogue == 1u) {
        sum += dx[i];
    }
    dx[i] = sum;
}

// ---- subgroup dy: the subgroup module is "shared" up to "storage dy", then this ----
// For CPU devices with 8-lane subgroups: llvmpipe runs a storage load as a loop over the
// lanes (about 12 instructions a value for a vec4), so each lane loads the 4 rows of one
// token as a vec4 and the subgroup shares them: 2 loads a lane for 16 tokens × 4 rows.
// The host keeps dy_stride, dy_col and the rows' start multiples of 4.

@group(0) @binding(1) var<storage, read> dy4: array<vec4<f32>>;  // [tokens, dy_stride / 4]

@compute @workgroup_size(WG)
fn matmul_input_grad_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    input_grad(group_index(wid, nwg), lid, sid % 8u);
}

// dy[t, dy_col + r.x .. + 4] of token t (clamped to the last), rows from n1 on zero:
// the vec4 reaches past the walked rows where they end inside it.
fn dy_row4(t: u32, r: vec4<u32>, n1: u32) -> vec4<f32> {
    let v = dy4[(min(t, p.tokens - 1u) * p.dy_stride + p.dy_col + r.x) / 4u];
    return select(vec4<f32>(0.0), v, r.x + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n1));
}

fn fetch_dy(tile: u32, r: vec4<u32>, n1: u32, sl: u32) -> Dy16 {
    let t = (p.tile0 + tile) * 16u;
    let a = dy_row4(t + sl, r, n1);
    let b = dy_row4(t + 8u + sl, r, n1);
    return Dy16(mat4x4<f32>(subgroupBroadcast(a, 0u), subgroupBroadcast(a, 1u), subgroupBroadcast(a, 2u), subgroupBroadcast(a, 3u)),
                mat4x4<f32>(subgroupBroadcast(a, 4u), subgroupBroadcast(a, 5u), subgroupBroadcast(a, 6u), subgroupBroadcast(a, 7u)),
                mat4x4<f32>(subgroupBroadcast(b, 0u), subgroupBroadcast(b, 1u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 3u)),
                mat4x4<f32>(subgroupBroadcast(b, 4u), subgroupBroadcast(b, 5u), subgroupBroadcast(b, 6u), subgroupBroadcast(b, 7u)));
}
