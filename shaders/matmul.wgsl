// y[t, n] = Σ_k x[t, k] · W[n, k] (+ bias[n]), W in GGML blocks dequantized on the fly;
// and embedding rows out[t, :] = W[ids[t], :]. The input gradient dx = dy · W is
// shaders/matmul_grad.wgsl, which shares dequant8 (the base weights are frozen: no dW).
//
// Weight layout (one storage buffer per row chunk, see kernels/matmul/weight.rs): row r
// starts at word r·ROW_WORDS (a multiple of 4); Q4_0/Q4_1/Q8_0 rows hold all quants,
// then all scales; Q4_K blocks as GGML's, Q6_K padded by two bytes at its end.
//
// Constants set by the loader: FMT (0 F32, 1 F16, 2 BF16, 3 Q4_0, 4 Q4_1, 5 Q8_0,
// 6 Q4_K, 7 Q6_K), WG (lanes per workgroup), TT (tokens per tile: 16, or 32 for the
// block tile; the matrix-vector kernel is shaders/matvec.wgsl), and for the subgroup
// kernel SG (lanes whose loads one broadcast spans; divides the subgroup size) and
// BLOCKS (1: the block tile below, for CPU devices); EPILOGUE (0: y = result, 1: y += result, 2: y =
// silu(gate) · result) and BIAS (a bias is added), constants rather than parameters
// because llvmpipe runs both sides of a branch, masked: every store paid for the loads
// of the epilogues it skipped.

// ---- subgroup activation fetch: the subgroup module is the file up to "portable" ----

// x[i..i+8]: lane sl (< SG) loads one value of each SG-run and the subgroup shares them.
fn fetch_x(i: u32, sl: u32) -> W8 {
    if (SG >= 8u) {
        let v = x[i + sl];
        return W8(vec4<f32>(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u), subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
                  vec4<f32>(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u), subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
    }
    let a = x[i + sl];
    let b = x[i + 4u + sl];
    return W8(vec4<f32>(subgroupBroadcast(a, 0u), subgroupBroadcast(a, 1u), subgroupBroadcast(a, 2u), subgroupBroadcast(a, 3u)),
              vec4<f32>(subgroupBroadcast(b, 0u), subgroupBroadcast(b, 1u), subgroupBroadcast(b, 2u), subgroupBroadcast(b, 3u)));
}

@compute @workgroup_size(WG)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) sid: u32) {
    if (BLOCKS == 1u) {
        matmul_tile_blocks(group_index(wid, nwg), lid, sid % 8u);
    } else {
        matmul_tile(group_index(wid, nwg), lid, sid % SG);
    }
}

// ---- F32 / Q4_0 / Q4_1 / Q8_0 by blocks of 32 (BLOCKS = 1: CPU devices, 8-lane subgroups) ----
// llvmpipe runs a storage load as a loop over the lanes, about 22 instructions a value
// for single words and 12 for vec4s, so this tile loads whole vec4s: a lane reads a
// row's 32-value block as one vec4 of quant words (two for Q8_0; F32 two per 8 values),
// and x as one vec4 that the subgroup shares (4 tokens × 8 values a load instead of 8).
// Second views of the weight and x buffers:
@group(0) @binding(5) var<storage, read> wv: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> xv: array<vec4<f32>>;

// x[t0 + 4q + j, k..k+8] for j < 4: lane sl loads half sl % 2 of token 4q + sl / 2.
fn fetch_x4(t0: u32, q: u32, k: u32, sl: u32) -> X4 {
    return share4(xv[(x_row(t0, 4u * q + sl / 2u) + k) / 4u + sl % 2u]);
}

// Lane l's v as 4 tokens × 8 values (lanes 2j, 2j + 1: token j).
fn share4(v: vec4<f32>) -> X4 {
    return X4(W8(subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u)), W8(subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u)),
              W8(subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u)), W8(subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u)));
}

// The adapter term scale · u · Bᵀ of a LoRA projection (kernels/lora.rs: u = x · Aᵀ is
// computed first) joins the block tile's sums as r more columns: u [tokens, r] stands in
// for x and B [N, r] for W, 8 columns a step. Fused here it costs the tile's loads of
// r / 32 more blocks instead of a dispatch that reads and writes every output again.
// The host passes r and B's offset in whole vec4s.
@group(0) @binding(7) var<storage, read> lu: array<vec4<f32>>;  // u [tokens, lora_rank]
@group(0) @binding(8) var<storage, read> lb: array<vec4<f32>>;  // B, row0's row at lora_b

// scale · u[t0 + 4q + j, c..c+8] for j < 4 as fetch_x4; columns from r on are zero.
fn fetch_u4(t0: u32, q: u32, c: u32, sl: u32) -> X4 {
    let t = min(t0 + 4u * q + sl / 2u, p.tokens - 1u);
    let c4 = c + 4u * (sl % 2u);
    let v = lu[(t * p.lora_rank + c4) / 4u];
    return share4(select(vec4<f32>(0.0), p.lora_scale * v, c4 < p.lora_rank));
}

// B[row, c..c+8] (row local to this dispatch, clamped to its last), zero from r on.
fn lora_b8(row: u32, c: u32) -> W8 {
    let i = (p.lora_b + min(row, p.rows - 1u) * p.lora_rank + c) / 4u;
    return W8(lb[i], select(vec4<f32>(0.0), lb[i + 1u], c + 4u < p.lora_rank));
}

// The quant words of block blk of the row at word `base`: Q4 in `a`, Q8_0 in `a`, `b`.
struct Quants {
    a: vec4<u32>,
    b: vec4<u32>,
}

fn block_quants(base: u32, blk: u32) -> Quants {
    if (FMT == 0u) {
        return Quants(vec4<u32>(0u), vec4<u32>(0u));
    }
    if (FMT == 5u) {
        return Quants(wv[base / 4u + 2u * blk], wv[base / 4u + 2u * blk + 1u]);
    }
    return Quants(wv[base / 4u + blk], vec4<u32>(0u));
}

// Scale (and Q4_1's min) of block blk of the row at word `base`.
fn block_scale(base: u32, blk: u32) -> vec2<f32> {
    if (FMT == 0u) {
        return vec2<f32>(0.0);
    }
    if (FMT == 5u) {
        return vec2<f32>(f16_pair(w[base + (p.cols / 32u) * 8u + blk / 2u])[blk % 2u], 0.0);
    }
    let scales = base + (p.cols / 32u) * 4u;
    if (FMT == 3u) {
        return vec2<f32>(f16_pair(w[scales + blk / 2u])[blk % 2u], 0.0);
    }
    return f16_pair(w[scales + blk]);
}

// Values 8·sub..8·sub+8 of block blk of the row at word `base`, from its quant words
// (layout as dequant8); F32 rows are read here, two vec4s at a time.
fn block_values(base: u32, blk: u32, q: Quants, s: vec2<f32>, sub: u32) -> W8 {
    if (FMT == 0u) {
        let i = base / 4u + blk * 8u + sub * 2u;
        return W8(bitcast<vec4<f32>>(wv[i]), bitcast<vec4<f32>>(wv[i + 1u]));
    }
    if (FMT == 5u) {
        let pair = select(q.b, q.a, sub < 2u);
        return W8(s.x * bytes4_i8(pair[(2u * sub) % 4u]), s.x * bytes4_i8(pair[(2u * sub) % 4u + 1u]));
    }
    let shift = (sub / 2u) * 4u;
    let lo = nibbles4(q.a[(2u * sub) % 4u], shift);
    let hi = nibbles4(q.a[(2u * sub) % 4u + 1u], shift);
    if (FMT == 3u) {
        return W8(s.x * (lo - 8.0), s.x * (hi - 8.0));
    }
    return W8(s.x * lo + s.y, s.x * hi + s.y);
}

// Both row groups' products with x for tokens t0..t0+16 at k, each fetch serving 8 rows;
// with `adapter`, with scale · u at its columns k..k+8 (a literal at each call, so the
// branch in fetch4 is gone once the compiler has inlined it).
fn add_products(acc_a: ptr<function, Tile>, acc_b: ptr<function, Tile>, wa: W32, wb: W32, t0: u32, k: u32, sl: u32, adapter: bool) {
    let x0 = fetch4(t0, 0u, k, sl, adapter);
    (*acc_a).q0 += products(wa, x0);
    (*acc_b).q0 += products(wb, x0);
    let x1 = fetch4(t0, 1u, k, sl, adapter);
    (*acc_a).q1 += products(wa, x1);
    (*acc_b).q1 += products(wb, x1);
    let x2 = fetch4(t0, 2u, k, sl, adapter);
    (*acc_a).q2 += products(wa, x2);
    (*acc_b).q2 += products(wb, x2);
    let x3 = fetch4(t0, 3u, k, sl, adapter);
    (*acc_a).q3 += products(wa, x3);
    (*acc_b).q3 += products(wb, x3);
}

fn fetch4(t0: u32, q: u32, k: u32, sl: u32, adapter: bool) -> X4 {
    if (adapter) {
        return fetch_u4(t0, q, k, sl);
    }
    return fetch_x4(t0, q, k, sl);
}

// Block blk of 4 rows (at words b): quant words and scales, loaded once for its 4 steps.
struct Blocks4 {
    q0: Quants,
    q1: Quants,
    q2: Quants,
    q3: Quants,
    s0: vec2<f32>,
    s1: vec2<f32>,
    s2: vec2<f32>,
    s3: vec2<f32>,
}

fn blocks4(b: vec4<u32>, blk: u32) -> Blocks4 {
    return Blocks4(block_quants(b.x, blk), block_quants(b.y, blk), block_quants(b.z, blk), block_quants(b.w, blk),
                   block_scale(b.x, blk), block_scale(b.y, blk), block_scale(b.z, blk), block_scale(b.w, blk));
}

fn values32(b: vec4<u32>, blk: u32, q: Blocks4, sub: u32) -> W32 {
    return W32(block_values(b.x, blk, q.q0, q.s0, sub), block_values(b.y, blk, q.q1, q.s1, sub),
               block_values(b.z, blk, q.q2, q.s2, sub), block_values(b.w, blk, q.q3, q.s3, sub));
}

// Each lane owns 8 rows (lane + i·WG, two groups of 4) × TT = 16 or 32 tokens, a block
// of 32 values a step. Every x fetch (a vec4 a lane, shared) serves 8 rows and every
// dequantized block 32 tokens: 1.15–1.2× the 4-row × 64-token tile on llvmpipe, with
// the same 256 accumulators (they spill; each update adds 8 products). 8 × 64 spilled
// too far (0.7×).
fn matmul_tile_blocks(g: u32, lid: u32, sl: u32) {
    let t0 = (g % p.token_tiles) * TT;
    let ra = (g / p.token_tiles) * 8u * WG + lid + vec4<u32>(0u, 1u, 2u, 3u) * WG;
    let rb = ra + 4u * WG;
    let ba = (min(ra, vec4<u32>(p.rows - 1u)) + p.row0) * p.row_words;
    let bb = (min(rb, vec4<u32>(p.rows - 1u)) + p.row0) * p.row_words;
    var a0: Tile;
    var b0: Tile;
    var a1: Tile;
    var b1: Tile;
    // F32 rows may end inside a block (K a multiple of 8): the last one stops early.
    for (var blk = 0u; blk < (p.cols + 31u) / 32u; blk++) {
        let qa = blocks4(ba, blk);
        let qb = blocks4(bb, blk);
        for (var sub = 0u; sub < 4u; sub++) {
            let k = blk * 32u + sub * 8u;
            if (k >= p.cols) {
                break;
            }
            let wa = values32(ba, blk, qa, sub);
            let wb = values32(bb, blk, qb, sub);
            add_products(&a0, &b0, wa, wb, t0, k, sl, false);
            if (TT == 32u) {
                add_products(&a1, &b1, wa, wb, t0 + 16u, k, sl, false);
            }
        }
    }
    for (var c = 0u; c < p.lora_rank; c += 8u) {
        let wa = W32(lora_b8(ra.x, c), lora_b8(ra.y, c), lora_b8(ra.z, c), lora_b8(ra.w, c));
        let wb = W32(lora_b8(rb.x, c), lora_b8(rb.y, c), lora_b8(rb.z, c), lora_b8(rb.w, c));
        add_products(&a0, &b0, wa, wb, t0, c, sl, true);
        if (TT == 32u) {
            add_products(&a1, &b1, wa, wb, t0 + 16u, c, sl, true);
        }
    }
    store_tile(ra, t0, a0);
    store_tile(rb, t0, b0);
    if (TT == 32u) {
        store_tile(ra, t0 + 16u, a1);
        store_tile(rb, t0 + 16u, b1);
    }
}

// ---- shared: both modules ----
struct Params {
    tokens: u32,
    rows: u32,       // rows computed by this dispatch
    cols: u32,       // K, a multiple of 8
    row0: u32,       // first computed row, local to this chunk
    row_words: u32,  // u32 words per weight row in the chunk
    y_stride: u32,   // f32 per output row of y
    y_col: u32,      // column of y that row0 lands in
    bias_row: u32,   // bias index of row0 (with BIAS)
    token_tiles: u32,
    lora_rank: u32,  // block tile: rank r of an adapter term added before the epilogue; 0: none
    lora_scale: f32, // its scale (alpha / r)
    lora_b: u32,     // f32 offset in lb of B's row for row0 (B [N, r] row-major)
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;         // [tokens, cols]
@group(0) @binding(2) var<storage, read> w: array<u32>;         // [rows, row_words] of one chunk
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // [tokens, y_stride]
@group(0) @binding(4) var<storage, read> bias: array<f32>;      // [N] (any buffer without bias); the gate [tokens, y_stride] with EPILOGUE 2

// ---- dequant: W8 and dequant8 (needs `w` and `p.cols`), also appended to matmul_grad.wgsl ----
struct W8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// Values k..k+8 (k a multiple of 8) of the row starting at word `base`.
fn dequant8(base: u32, k: u32) -> W8 {
    if (FMT == 0u) {
        let i = base + k;
        return W8(bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u])),
                  bitcast<vec4<f32>>(vec4<u32>(w[i + 4u], w[i + 5u], w[i + 6u], w[i + 7u])));
    }
    if (FMT == 1u || FMT == 2u) {
        let i = base + k / 2u;
        if (FMT == 1u) {
            return W8(vec4<f32>(f16_pair(w[i]), f16_pair(w[i + 1u])), vec4<f32>(f16_pair(w[i + 2u]), f16_pair(w[i + 3u])));
        }
        return W8(vec4<f32>(bf16_pair(w[i]), bf16_pair(w[i + 1u])), vec4<f32>(bf16_pair(w[i + 2u]), bf16_pair(w[i + 3u])));
    }
    if (FMT == 3u || FMT == 4u) {
        // Quant plane: 4 words per 32 values, low nibbles values 0–15, high 16–31;
        // then the scale plane (Q4_0: one f16 per block, Q4_1: (d, m) per block).
        let blk = k / 32u;
        let j = k % 32u;
        let q = base + blk * 4u + (j % 16u) / 4u;
        let shift = (j / 16u) * 4u;
        let lo = nibbles4(w[q], shift);
        let hi = nibbles4(w[q + 1u], shift);
        let scales = base + (p.cols / 32u) * 4u;
        if (FMT == 3u) {
            let d = f16_pair(w[scales + blk / 2u])[blk % 2u];
            return W8(d * (lo - 8.0), d * (hi - 8.0));
        }
        let s = f16_pair(w[scales + blk]);
        return W8(s.x * lo + s.y, s.x * hi + s.y);
    }
    if (FMT == 5u) {
        // Quant plane: 8 words of i8 per 32 values; then one f16 scale per block.
        let blk = k / 32u;
        let q = base + k / 4u;
        let d = f16_pair(w[base + (p.cols / 32u) * 8u + blk / 2u])[blk % 2u];
        return W8(d * bytes4_i8(w[q]), d * bytes4_i8(w[q + 1u]));
    }
    if (FMT == 6u) {
        // 36 words per 256 values: (d, dmin), 12 scale bytes, then four 32-byte runs,
        // each holding sub-block 2i in low nibbles and 2i+1 in high nibbles.
        let b = base + (k / 256u) * 36u;
        let j = k % 256u;
        let sub = j / 32u;
        let q = b + 4u + (sub / 2u) * 8u + (j % 32u) / 4u;
        let shift = (sub % 2u) * 4u;
        let dm = f16_pair(w[b]);
        let sm = scale_min_k4(sub, vec3<u32>(w[b + 1u], w[b + 2u], w[b + 3u]));
        let d = dm.x * sm.x;
        let m = dm.y * sm.y;
        return W8(d * nibbles4(w[q], shift) - m, d * nibbles4(w[q + 1u], shift) - m);
    }
    // Q6_K, 53 words per 256 values: ql[128 B], qh[64 B], 16 i8 scales, d. Each half
    // of 128 values takes 64 ql bytes and 32 qh bytes; quarter i of a half uses ql
    // low (i = 0, 1) or high (2, 3) nibbles and qh bits 2i..2i+1.
    let b = base + (k / 256u) * 53u;
    let j = k % 256u;
    let half = j / 128u;
    let quarter = (j % 128u) / 32u;
    let l = j % 32u;
    let ql = b + (64u * half + 32u * (quarter % 2u) + l) / 4u;
    let qh = b + 32u + (32u * half + l) / 4u;
    let lshift = (quarter / 2u) * 4u;
    let hshift = 2u * quarter;
    let si = 8u * half + l / 16u + 2u * quarter;
    let sc = f32(extractBits(i32(w[b + 48u + si / 4u]), 8u * (si % 4u), 8u));
    let d = f16_pair(w[b + 52u]).x * sc;
    let q0 = nibbles4(w[ql], lshift) + 16.0 * vec4<f32>(unpack4xU8((w[qh] >> hshift) & 0x03030303u)) - 32.0;
    let q1 = nibbles4(w[ql + 1u], lshift) + 16.0 * vec4<f32>(unpack4xU8((w[qh + 1u] >> hshift) & 0x03030303u)) - 32.0;
    return W8(d * q0, d * q1);
}
// ---- end dequant ----

// x of 4 tokens × 8 values.
struct X4 {
    a: W8,
    b: W8,
    c: W8,
    d: W8,
}

fn dot8(a: W8, b: W8) -> f32 {
    return dot(a.lo, b.lo) + dot(a.hi, b.hi);
}

// 4 weight rows × 8 values.
struct W32 {
    r0: W8,
    r1: W8,
    r2: W8,
    r3: W8,
}

// A lane's outputs for 4 tokens: token j's 4 rows in column j.
fn products(w: W32, x: X4) -> mat4x4<f32> {
    return mat4x4<f32>(vec4<f32>(dot8(w.r0, x.a), dot8(w.r1, x.a), dot8(w.r2, x.a), dot8(w.r3, x.a)),
                       vec4<f32>(dot8(w.r0, x.b), dot8(w.r1, x.b), dot8(w.r2, x.b), dot8(w.r3, x.b)),
                       vec4<f32>(dot8(w.r0, x.c), dot8(w.r1, x.c), dot8(w.r2, x.c), dot8(w.r3, x.c)),
                       vec4<f32>(dot8(w.r0, x.d), dot8(w.r1, x.d), dot8(w.r2, x.d), dot8(w.r3, x.d)));
}

// A lane's 4 rows × 16 tokens of accumulators: tokens 4i..4i+4 in q_i (as products).
// Named fields, not an array: llvmpipe keeps indexed private arrays in memory.
struct Tile {
    q0: mat4x4<f32>,
    q1: mat4x4<f32>,
    q2: mat4x4<f32>,
    q3: mat4x4<f32>,
}

fn store_tile(r: vec4<u32>, t0: u32, acc: Tile) {
    store4(r, t0, 0u, acc.q0[0]);
    store4(r, t0, 1u, acc.q0[1]);
    store4(r, t0, 2u, acc.q0[2]);
    store4(r, t0, 3u, acc.q0[3]);
    store4(r, t0, 4u, acc.q1[0]);
    store4(r, t0, 5u, acc.q1[1]);
    store4(r, t0, 6u, acc.q1[2]);
    store4(r, t0, 7u, acc.q1[3]);
    store4(r, t0, 8u, acc.q2[0]);
    store4(r, t0, 9u, acc.q2[1]);
    store4(r, t0, 10u, acc.q2[2]);
    store4(r, t0, 11u, acc.q2[3]);
    store4(r, t0, 12u, acc.q3[0]);
    store4(r, t0, 13u, acc.q3[1]);
    store4(r, t0, 14u, acc.q3[2]);
    store4(r, t0, 15u, acc.q3[3]);
}

// Offset of x[t0 + t, 0], tokens past the end clamped to the last one.
fn x_row(t0: u32, t: u32) -> u32 {
    return min(t0 + t, p.tokens - 1u) * p.cols;
}

fn store(row: u32, t0: u32, t: u32, v: f32) {
    if (row < p.rows && t0 + t < p.tokens) {
        var b = 0.0;
        if (BIAS) {
            b = bias[p.bias_row + row];
        }
        let i = (t0 + t) * p.y_stride + p.y_col + row;
        if (EPILOGUE == 1u) {
            y[i] += v + b;
        } else if (EPILOGUE == 2u) {
            // SwiGLU as swiglu.wgsl: the gate [tokens, y_stride] sits in the bias slot.
            let g = bias[i];
            y[i] = g / (1.0 + exp(-g)) * v;
        } else {
            y[i] = v + b;
        }
    }
}

// Writes tokens t0 + t of the lane's four rows (components of v).
fn store4(r: vec4<u32>, t0: u32, t: u32, v: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        store(r[i], t0, t, v[i]);
    }
}

// Each lane owns 4 weight rows (lane + i·WG) × TT = 16 tokens, 64 accumulators (a
// Tile). On llvmpipe every per-lane storage load is scalarized, so the tile is as large
// as possible: per 8 values of k a lane makes 16 activation loads (fetch_x) and 4 weight
// loads of dequant8 for 512 multiply-adds.
fn matmul_tile(g: u32, lid: u32, sl: u32) {
    let t0 = (g % p.token_tiles) * 16u;
    let r = (g / p.token_tiles) * 4u * WG + lid + vec4<u32>(0u, 1u, 2u, 3u) * WG;
    let b = (min(r, vec4<u32>(p.rows - 1u)) + p.row0) * p.row_words;
    var acc: Tile;
    for (var k = 0u; k < p.cols; k += 8u) {
        let w = W32(dequant8(b.x, k), dequant8(b.y, k), dequant8(b.z, k), dequant8(b.w, k));
        acc.q0 += products(w, X4(fetch_x(x_row(t0, 0u) + k, sl), fetch_x(x_row(t0, 1u) + k, sl),
                                 fetch_x(x_row(t0, 2u) + k, sl), fetch_x(x_row(t0, 3u) + k, sl)));
        acc.q1 += products(w, X4(fetch_x(x_row(t0, 4u) + k, sl), fetch_x(x_row(t0, 5u) + k, sl),
                                 fetch_x(x_row(t0, 6u) + k, sl), fetch_x(x_row(t0, 7u) + k, sl)));
        acc.q2 += products(w, X4(fetch_x(x_row(t0, 8u) + k, sl), fetch_x(x_row(t0, 9u) + k, sl),
                                 fetch_x(x_row(t0, 10u) + k, sl), fetch_x(x_row(t0, 11u) + k, sl)));
        acc.q3 += products(w, X4(fetch_x(x_row(t0, 12u) + k, sl), fetch_x(x_row(t0, 13u) + k, sl),
                                 fetch_x(x_row(t0, 14u) + k, sl), fetch_x(x_row(t0, 15u) + k, sl)));
    }
    store_tile(r, t0, acc);
}

// Embedding gather: y[t, k..k+8] = W[ids[t], k..k+8] for the ids in this chunk. It
// shares the matmul bindings so both entry points live in one module with one dequant8:
// x holds the u32 ids (bit-cast), p.row0 is the chunk's first row, p.rows its row count.
@compute @workgroup_size(64)
fn embedding_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    let per_row = p.cols / 8u;
    let t = i / per_row;
    if (t >= p.tokens) {
        return;
    }
    let id = bitcast<u32>(x[t]);
    if (id < p.row0 || id - p.row0 >= p.rows) {
        return;
    }
    let k = (i % per_row) * 8u;
    let v = dequant8((id - p.row0) * p.row_words, k);
    let o = t * p.cols + k;
    for (var j = 0u; j < 4u; j++) {
        y[o + j] = v.lo[j];
        y[o + 4u + j] = v.hi[j];
    }
}

// ---- portable activation fetch: the portable module is the file from "shared" on ----

// x[i..i+8] through uniform loads: every lane asks for the same address, which llvmpipe
// and SwiftShader serve with one scalar load.
fn fetch_x(i: u32, sl: u32) -> W8 {
    return W8(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]), vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]));
}

@compute @workgroup_size(WG)
fn matmul_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    matmul_tile(group_index(wid, nwg), lid, 0u);
}
