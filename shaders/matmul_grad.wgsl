// Input gradient of matmul.wgsl's y = x · Wᵀ, for training through frozen weights:
//   dx[t, k] (+)= Σ_n dy[t, n] · W[n, k]
// W stays quantized (layout as matmul.wgsl) and is dequantized with matmul.wgsl's
// dequant8, which the loader appends (kernels/matmul/input_grad.rs); frozen, so no dW.
// A file of its own because the CPU path reads dy through a uniform binding in slot 1,
// where matmul.wgsl declares its storage x.
//
// Each lane owns 8 columns (one dequant8) × a tile of 16 tokens (the subgroup module:
// two tiles, TG) and walks the rows 8 at a time: each dequantized value serves 16 (32)
// tokens from registers, each accumulator takes 8 products per update (the 128 or 256
// accumulators spill: with one product an update the kernel was store-bound, half the
// speed; 8 instead of 4 gave 5%), and all lanes read the same dy values.
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

// Values kc..kc+8 of the rows at words b (the subgroup module shares its loads).
fn values4(b: vec4<u32>, at: GradTile, sl: u32) -> W8x4 {
    return dequant4(b, at.kc);
}

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
    lora_rank: u32,  // subgroup module: rank r of an adapter term (adapter_rows); 0: none
    lora_a: u32,     // its A's f32 offset in la
    dx_off: u32,     // dx[t, k] at dx_off + t · dx_ts + k · dx_ks (within the segment's slice),
    dx_ts: u32,      // times dx_scale: dx [tokens, cols] by default, a transposed or
    dx_ks: u32,      // scaled slice of a gradient buffer for outer_sum
    dx_scale: f32,
    _pad: u32,
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

// dx[t, k..k+8] (+)= (lo, hi) · dx_scale, in the slice `base` of dx (layout in Params);
// unrolled, so no loop counts against llvmpipe's budget.
fn store_dx(base: u32, t: u32, k: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (k >= p.cols || t >= p.tokens) {
        return;
    }
    let i = base + p.dx_off + t * p.dx_ts + k * p.dx_ks;
    let s = p.dx_ks;
    var a = p.dx_scale * lo;
    var b = p.dx_scale * hi;
    if (p.epilogue == 1u) {
        a += vec4<f32>(dx[i], dx[i + s], dx[i + 2u * s], dx[i + 3u * s]);
        b += vec4<f32>(dx[i + 4u * s], dx[i + 5u * s], dx[i + 6u * s], dx[i + 7u * s]);
    }
    dx[i] = a.x;
    dx[i + s] = a.y;
    dx[i + 2u * s] = a.z;
    dx[i + 3u * s] = a.w;
    dx[i + 4u * s] = b.x;
    dx[i + 5u * s] = b.y;
    dx[i + 6u * s] = b.z;
    dx[i + 7u * s] = b.w;
}

// What a lane computes: 8 columns from k (kc: clamped to the last 8) × the 16 tokens of
// token tile `tile`, summed over rows n0..n1 of row segment `segment`.
struct GradTile {
    segment: u32,
    tile: u32,
    k: u32,
    kc: u32,
    n0: u32,
    n1: u32,
}

// Workgroups: groups of WG · 8 columns fastest, then token tiles, then row segments.
fn grad_tile(g: u32, lid: u32) -> GradTile {
    let col_groups = (p.cols / 8u + WG - 1u) / WG;
    let per_segment = col_groups * p.tiles;
    let segment = g / per_segment;
    let k = ((g % col_groups) * WG + lid) * 8u;
    let seg_rows = select(p.rows, p.seg_rows, p.seg_rows > 0u);
    let n0 = segment * seg_rows;
    // Lanes past K compute on the last columns and store nothing.
    return GradTile(segment, (g % per_segment) / col_groups, k, min(k, p.cols - 8u), n0, min(p.rows, n0 + seg_rows));
}

// Only past the last segment (the grid's rounding): segment 0 of an empty range still
// writes its zeros.
fn idle(at: GradTile) -> bool {
    return at.segment > 0u && at.n0 >= at.n1;
}

// A lane's sums for 16 tokens: dx[t, k..k+4] of token t = 4q + c in column c of l_q,
// dx[t, k+4..k+8] in h_q. Named fields, not an array, as in matmul.wgsl (llvmpipe keeps
// indexed private arrays in memory).
struct DxTile {
    l0: mat4x4<f32>,
    l1: mat4x4<f32>,
    l2: mat4x4<f32>,
    l3: mat4x4<f32>,
    h0: mat4x4<f32>,
    h1: mat4x4<f32>,
    h2: mat4x4<f32>,
    h3: mat4x4<f32>,
}

// acc + 4 rows' products: column j of lo / hi is row j's values k..k+4 / k+4..k+8, so
// lo · d.q0 sums Σ_j dy[t, j] · W[j, k..k+4] for tokens 0–3.
fn grad_step(acc: DxTile, lo: mat4x4<f32>, hi: mat4x4<f32>, d: Dy16) -> DxTile {
    return DxTile(acc.l0 + lo * d.q0, acc.l1 + lo * d.q1, acc.l2 + lo * d.q2, acc.l3 + lo * d.q3,
                  acc.h0 + hi * d.q0, acc.h1 + hi * d.q1, acc.h2 + hi * d.q2, acc.h3 + hi * d.q3);
}

@compute @workgroup_size(WG)
fn matmul_input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let at = grad_tile(group_index(wid, nwg), lid);
    if (idle(at)) {
        return;
    }
    store_grad(at, input_grad(at, 0u));
}

// The rows' sums, 8 rows a step. The host keeps a segment's rows / 8 iterations within
// llvmpipe's 65,535 loop iterations. `sl`: the lane within its subgroup (0 outside the
// subgroup module).
fn input_grad(at: GradTile, sl: u32) -> DxTile {
    var acc: DxTile;
    for (var n = at.n0; n < at.n1; n += 8u) {
        let a = rows4(at, n, sl);
        let b = rows4(at, n + 4u, sl);
        acc = grad_step2(acc, a, fetch_dy(at.tile, a.r, at.n1, sl), b, fetch_dy(at.tile, b.r, at.n1, sl));
    }
    return acc;
}

// 8 values of 4 rows.
struct W8x4 {
    a: W8,
    b: W8,
    c: W8,
    d: W8,
}

// Values k..k+8 of the rows at words b, each through dequant8.
fn dequant4(b: vec4<u32>, k: u32) -> W8x4 {
    return W8x4(dequant8(b.x, k), dequant8(b.y, k), dequant8(b.z, k), dequant8(b.w, k));
}

// 4 rows from n of W at the lane's columns, rows past the end repeating the last (valid
// loads) with zero weight.
struct Rows4 {
    lo: mat4x4<f32>,
    hi: mat4x4<f32>,
    r: vec4<u32>,
}

fn rows4(at: GradTile, n: u32, sl: u32) -> Rows4 {
    let rn = vec4<u32>(n) + vec4<u32>(0u, 1u, 2u, 3u);
    let r = min(rn, vec4<u32>(at.n1 - 1u));
    let b = (r + p.row0) * p.row_words;
    let live = vec4<f32>(rn < vec4<u32>(at.n1));
    let v = values4(b, at, sl);
    return Rows4(mat4x4<f32>(v.a.lo * live.x, v.b.lo * live.y, v.c.lo * live.z, v.d.lo * live.w),
                 mat4x4<f32>(v.a.hi * live.x, v.b.hi * live.y, v.c.hi * live.z, v.d.hi * live.w), r);
}

// acc + 8 rows' products (as grad_step for each Rows4), each accumulator updated once.
fn grad_step2(acc: DxTile, a: Rows4, da: Dy16, b: Rows4, db: Dy16) -> DxTile {
    return DxTile(acc.l0 + (a.lo * da.q0 + b.lo * db.q0), acc.l1 + (a.lo * da.q1 + b.lo * db.q1),
                  acc.l2 + (a.lo * da.q2 + b.lo * db.q2), acc.l3 + (a.lo * da.q3 + b.lo * db.q3),
                  acc.h0 + (a.hi * da.q0 + b.hi * db.q0), acc.h1 + (a.hi * da.q1 + b.hi * db.q1),
                  acc.h2 + (a.hi * da.q2 + b.hi * db.q2), acc.h3 + (a.hi * da.q3 + b.hi * db.q3));
}

fn store_grad(at: GradTile, acc: DxTile) {
    let t0 = (p.tile0 + at.tile) * 16u;
    let base = select(0u, at.segment * p.tokens * p.cols, p.seg_rows > 0u);
    store4_dx(base, t0, at.k, acc.l0, acc.h0);
    store4_dx(base, t0 + 4u, at.k, acc.l1, acc.h1);
    store4_dx(base, t0 + 8u, at.k, acc.l2, acc.h2);
    store4_dx(base, t0 + 12u, at.k, acc.l3, acc.h3);
}

// Tokens t..t+4: column c of lo / hi is token t + c.
fn store4_dx(base: u32, t: u32, k: u32, lo: mat4x4<f32>, hi: mat4x4<f32>) {
    store_dx(base, t, k, lo[0], hi[0]);
    store_dx(base, t + 1u, k, lo[1], hi[1]);
    store_dx(base, t + 2u, k, lo[2], hi[2]);
    store_dx(base, t + 3u, k, lo[3], hi[3]);
}

// ---- storage dy: the storage module is the file from "shared" on ----

@group(0) @binding(1) var<storage, read> dy: array<f32>;  // [tokens, dy_stride]

fn values4(b: vec4<u32>, at: GradTile, sl: u32) -> W8x4 {
    return dequant4(b, at.kc);
}

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
// The host keeps dy_stride, dy_col and the rows' start multiples of 4. TG (a constant):
// token tiles per lane, 1 or 2.
//
// DY_T (a constant): dy is given rows-major instead, [rows, dy_stride] with the tokens
// along a row. outer_sum (kernels/matmul/input_grad.rs) computes the LoRA weight
// gradients with it: dA = duᵀ · x walks the tokens of x as W's rows and shares du [T, r]
// as dy (the r columns of du as the "tokens"); dB the same with dy and u, stored
// transposed and scaled (dx_ts, dx_ks, dx_scale).

@group(0) @binding(1) var<storage, read> dy4: array<vec4<f32>>;  // [tokens, dy_stride / 4]; DY_T: [rows, dy_stride / 4]
@group(0) @binding(6) var<storage, read> wv: array<vec4<u32>>;   // w again, as vec4s

// Values kc..kc+8 of the rows at words b, with fewer loads than dequant8's single words
// (3 a row for Q4_1, each a loop over the lanes: sharing them took the Q4_1 input
// gradient from 48–52 to 58–66 GFLOP/s and training +10%):
// F32 rows (outer_sum's activations) as two vec4s; Q4_0, Q4_1 and Q8_0 shared, as the 8
// lanes of a subgroup cover two blocks of every row: each lane loads one block of one
// row (its quant vec4s and scale word), and takes its own values from the broadcasts.
// Other types dequant8.
fn values4(b: vec4<u32>, at: GradTile, sl: u32) -> W8x4 {
    if (FMT == 0u) {
        return W8x4(f32_row8(b.x, at.kc), f32_row8(b.y, at.kc), f32_row8(b.z, at.kc), f32_row8(b.w, at.kc));
    }
    if (FMT < 3u || FMT > 5u) {
        return dequant4(b, at.kc);
    }
    // Lane sl: columns k0 + 8·sl of a subgroup's 64 from k0 (a multiple of 64, so blocks
    // b0 and b0 + 1); it loads block b0 + sl % 2 of row sl / 2 (clamped to the last
    // block: lanes past the end are not stored).
    let nb = p.cols / 32u;
    let b0 = (at.k - 8u * sl) / 32u;
    let bl = min(b0 + sl % 2u, nb - 1u);
    let row = b[sl / 2u];
    if (FMT == 5u) {
        // A Q8_0 block is two quant vec4s, and b0's scale word holds both blocks' f16
        // scales (b0 is even).
        let i = (row + 8u * bl) / 4u;
        let q0 = wv[i];
        let q1 = wv[i + 1u];
        let sc = w[row + 8u * nb + b0 / 2u];
        return W8x4(q8_values(subgroupBroadcast(q0, 0u), subgroupBroadcast(q1, 0u), subgroupBroadcast(q0, 1u), subgroupBroadcast(q1, 1u), subgroupBroadcast(sc, 0u), sl),
                    q8_values(subgroupBroadcast(q0, 2u), subgroupBroadcast(q1, 2u), subgroupBroadcast(q0, 3u), subgroupBroadcast(q1, 3u), subgroupBroadcast(sc, 2u), sl),
                    q8_values(subgroupBroadcast(q0, 4u), subgroupBroadcast(q1, 4u), subgroupBroadcast(q0, 5u), subgroupBroadcast(q1, 5u), subgroupBroadcast(sc, 4u), sl),
                    q8_values(subgroupBroadcast(q0, 6u), subgroupBroadcast(q1, 6u), subgroupBroadcast(q0, 7u), subgroupBroadcast(q1, 7u), subgroupBroadcast(sc, 6u), sl));
    }
    let q = wv[(row + 4u * bl) / 4u];
    // Scale words: Q4_1 one (d, m) per block, Q4_0 one f16 per block (b0's word holds
    // both blocks' scales: b0 is even).
    let sc = w[row + 4u * nb + select(bl, bl / 2u, FMT == 3u)];
    return W8x4(q4_values(subgroupBroadcast(q, 0u), subgroupBroadcast(q, 1u), subgroupBroadcast(sc, 0u), subgroupBroadcast(sc, 1u), sl),
                q4_values(subgroupBroadcast(q, 2u), subgroupBroadcast(q, 3u), subgroupBroadcast(sc, 2u), subgroupBroadcast(sc, 3u), sl),
                q4_values(subgroupBroadcast(q, 4u), subgroupBroadcast(q, 5u), subgroupBroadcast(sc, 4u), subgroupBroadcast(sc, 5u), sl),
                q4_values(subgroupBroadcast(q, 6u), subgroupBroadcast(q, 7u), subgroupBroadcast(sc, 6u), subgroupBroadcast(sc, 7u), sl));
}

// Lane sl's 8 values of a Q8_0 row from its two blocks' quant vec4s (a0, a1 and b0, b1:
// value j of a block is byte j % 4 of word j / 4) and their scale word.
fn q8_values(a0: vec4<u32>, a1: vec4<u32>, b0: vec4<u32>, b1: vec4<u32>, sc: u32, sl: u32) -> W8 {
    let second = sl >= 4u;
    let low = (sl % 4u) < 2u;
    let v = select(select(a1, a0, low), select(b1, b0, low), second);
    let words = select(v.xy, v.zw, sl % 2u == 1u);
    let s = f16_pair(sc);
    let d = select(s.x, s.y, second);
    return W8(d * bytes4_i8(words.x), d * bytes4_i8(words.y));
}

fn f32_row8(base: u32, k: u32) -> W8 {
    let i = (base + k) / 4u;
    return W8(bitcast<vec4<f32>>(wv[i]), bitcast<vec4<f32>>(wv[i + 1u]));
}

// Lane sl's 8 values of a row from its two blocks' quants (qa, qb) and scale words (as
// dequant8: value j of a block is in word (j % 16) / 4, low nibbles for j < 16).
fn q4_values(qa: vec4<u32>, qb: vec4<u32>, sa: u32, sb: u32, sl: u32) -> W8 {
    let second = sl >= 4u;
    let qv = select(qa, qb, second);
    let words = select(qv.xy, qv.zw, sl % 2u == 1u);
    let shift = ((sl % 4u) / 2u) * 4u;
    let lo = nibbles4(words.x, shift);
    let hi = nibbles4(words.y, shift);
    let s = f16_pair(select(sa, sb, second));
    if (FMT == 3u) {
        let d = select(s.x, s.y, second);
        return W8(d * (lo - 8.0), d * (hi - 8.0));
    }
    return W8(s.x * lo + s.y, s.x * hi + s.y);
}

@compute @workgroup_size(WG)
fn matmul_input_grad_subgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                              @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    let at = grad_tile(group_index(wid, nwg), lid);
    if (idle(at)) {
        return;
    }
    let sl = sid % 8u;
    if (TG == 1u) {
        store_grad(at, adapter_rows(input_grad(at, sl), at, sl));
        return;
    }
    // TG = 2: token tiles 2i and 2i + 1 (p.tiles counts the pairs), so each row step's
    // shared weight loads serve 32 tokens: 1.1–1.2× one tile on llvmpipe (four tiles
    // were slower: 512 accumulators spill too far).
    let a = tile_of(at, 2u * at.tile);
    let b = tile_of(at, 2u * at.tile + 1u);
    var sa: DxTile;
    var sb: DxTile;
    for (var n = at.n0; n < at.n1; n += 8u) {
        let ra = rows4(at, n, sl);
        let rb = rows4(at, n + 4u, sl);
        sa = grad_step2(sa, ra, fetch_dy(a.tile, ra.r, at.n1, sl), rb, fetch_dy(a.tile, rb.r, at.n1, sl));
        sb = grad_step2(sb, ra, fetch_dy(b.tile, ra.r, at.n1, sl), rb, fetch_dy(b.tile, rb.r, at.n1, sl));
    }
    store_grad(a, adapter_rows(sa, a, sl));
    store_grad(b, adapter_rows(sb, b, sl));
}

fn tile_of(at: GradTile, tile: u32) -> GradTile {
    return GradTile(at.segment, tile, at.k, at.kc, at.n0, at.n1);
}

// The LoRA term dx += du · A of a projection (kernels/lora.rs) joins the sums as r more
// rows: A [r, K] (f32, row-major) stands in for W and du [tokens, r] for dy, 4 rows a
// step. Fused here it costs r / 4 steps of the row loop instead of a dispatch that reads
// and writes all of dx again. The host passes r and A's offset in whole vec4s, and
// lora_rank 0 to every dispatch but one.
@group(0) @binding(4) var<storage, read> du4: array<vec4<f32>>;  // du [tokens, lora_rank]
@group(0) @binding(5) var<storage, read> la: array<vec4<f32>>;   // A from lora_a

fn adapter_rows(sums: DxTile, at: GradTile, sl: u32) -> DxTile {
    var acc = sums;
    let t = (p.tile0 + at.tile) * 16u;
    let c = p.cols / 4u;
    for (var j = 0u; j < p.lora_rank; j += 4u) {
        let i = (p.lora_a + j * p.cols + at.kc) / 4u;
        let lo = mat4x4<f32>(la[i], la[i + c], la[i + 2u * c], la[i + 3u * c]);
        let hi = mat4x4<f32>(la[i + 1u], la[i + c + 1u], la[i + 2u * c + 1u], la[i + 3u * c + 1u]);
        let a = du4[(min(t + sl, p.tokens - 1u) * p.lora_rank + j) / 4u];
        let b = du4[(min(t + 8u + sl, p.tokens - 1u) * p.lora_rank + j) / 4u];
        acc = grad_step(acc, lo, hi, share_dy(a, b));
    }
    return acc;
}

// dy[t, dy_col + r.x .. + 4] of token t (clamped to the last), rows from n1 on zero:
// the vec4 reaches past the walked rows where they end inside it.
fn dy_row4(t: u32, r: vec4<u32>, n1: u32) -> vec4<f32> {
    let v = dy4[(min(t, p.tokens - 1u) * p.dy_stride + p.dy_col + r.x) / 4u];
    return select(vec4<f32>(0.0), v, r.x + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n1));
}

fn fetch_dy(tile: u32, r: vec4<u32>, n1: u32, sl: u32) -> Dy16 {
    let t = (p.tile0 + tile) * 16u;
    if (DY_T) {
        // Lane l: tokens t + 8·(l % 2) .. + 8 of row r[l / 2] (r clamped to the walked
        // rows), each vec4 kept inside the row: tokens past the end are not stored.
        let o = (r[sl / 2u] + p.dy_col) * p.dy_stride;
        let c = t + 8u * (sl % 2u);
        return share_rows(dy4[(o + min(c, p.tokens - 4u)) / 4u], dy4[(o + min(c + 4u, p.tokens - 4u)) / 4u]);
    }
    return share_dy(dy_row4(t + sl, r, n1), dy_row4(t + 8u + sl, r, n1));
}

// Lane l's a and b (tokens 8·(l % 2) .. + 4 and + 4 .. + 8 of row l / 2) as 16 tokens ×
// 4 rows: the same broadcasts as share_dy, transposed.
fn share_rows(a: vec4<f32>, b: vec4<f32>) -> Dy16 {
    return Dy16(transpose(mat4x4<f32>(subgroupBroadcast(a, 0u), subgroupBroadcast(a, 2u), subgroupBroadcast(a, 4u), subgroupBroadcast(a, 6u))),
                transpose(mat4x4<f32>(subgroupBroadcast(b, 0u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 4u), subgroupBroadcast(b, 6u))),
                transpose(mat4x4<f32>(subgroupBroadcast(a, 1u), subgroupBroadcast(a, 3u), subgroupBroadcast(a, 5u), subgroupBroadcast(a, 7u))),
                transpose(mat4x4<f32>(subgroupBroadcast(b, 1u), subgroupBroadcast(b, 3u), subgroupBroadcast(b, 5u), subgroupBroadcast(b, 7u))));
}

// Lane l's a (token l) and b (token 8 + l) as 16 tokens × 4 rows.
fn share_dy(a: vec4<f32>, b: vec4<f32>) -> Dy16 {
    return Dy16(mat4x4<f32>(subgroupBroadcast(a, 0u), subgroupBroadcast(a, 1u), subgroupBroadcast(a, 2u), subgroupBroadcast(a, 3u)),
                mat4x4<f32>(subgroupBroadcast(a, 4u), subgroupBroadcast(a, 5u), subgroupBroadcast(a, 6u), subgroupBroadcast(a, 7u)),
                mat4x4<f32>(subgroupBroadcast(b, 0u), subgroupBroadcast(b, 1u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 3u)),
                mat4x4<f32>(subgroupBroadcast(b, 4u), subgroupBroadcast(b, 5u), subgroupBroadcast(b, 6u), subgroupBroadcast(b, 7u)));
}
