// LoRA adapter of one projection, x [T, in] -> y [T, out], with A [r, in], B [out, r]
// in f32 and scale = alpha / r (rsLoRA: alpha / sqrt(r)). Derivation in
// docs/training-math.md.
//
//   forward:   u  = x · Aᵀ                 [T, r]    lora_forward_down (u kept for the backward)
//              y += scale · u · Bᵀ         [T, out]  lora_forward_up
//   backward:  du = scale · dy · B         [T, r]    lora_backward_u
//              dB = scale · dyᵀ · u        [out, r]  lora_backward_b
//              dA = duᵀ · x                [r, in]   lora_backward_a
//              dx += du · A                [T, in]   lora_backward_input
//
// All six are one small matmul, out[m, n] (+)= alpha · Σ_k L[m, k] · R[k, n], with
// L and R read through (offset, row stride, column stride), so transposes and slices of
// flat parameter/gradient buffers need no copies. Each has its own entry point so that
// pipelines and profiles carry the name of the step. On CPU devices with 8-lane
// subgroups four of them run elsewhere where the shapes allow: the up projection in
// the base projection's kernel (matmul_lora), dx in its input gradient, and dA and dB
// in that kernel's outer_sum (kernels/matmul/input_grad.rs).
//
// Two ways to compute it, picked by the loader (kernels/lora.rs, `LoraKernel`) through
// REGISTERS, with the workgroup size WX × WY: GPUs share 16 × 16 tiles through
// workgroup memory; CPU devices give each lane an 8 × 8 block in registers with no
// workgroup memory and no barrier. llvmpipe runs a workgroup's lanes as coroutines that
// switch at every barrier: the shared tiles cost ~75 µs per 256-lane workgroup there
// and took three quarters of a training step.
//
// LHS_VEC and RHS_VEC (constants, as everything a hot loop branches on: llvmpipe runs
// both sides of a branch, masked) say where an operand's 8 values at a k lie side by side
// in whole vec4s, so the register kernel loads them as two vec4s (lhs4, rhs4).
//
// On GPUs a product with few output tiles and a long contraction (u = x·Aᵀ has r = 16
// columns; dA and dB sum over every token) would leave most of the GPU idle: the loader
// splits K into ranges of k_split, each workgroup writes its range's partial sums to
// slice `split` of a scratch buffer, and lora_reduce adds the slices into `out`.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    accumulate: u32, // 1: out += alpha · L·R, 0: out = alpha · L·R
    lhs_off: u32,    // L[m, k] = lhs[lhs_off + m * lhs_rs + k * lhs_cs]
    lhs_rs: u32,
    lhs_cs: u32,
    rhs_off: u32,    // R[k, n] = rhs[rhs_off + k * rhs_rs + n * rhs_cs]
    rhs_rs: u32,
    rhs_cs: u32,
    out_off: u32,    // out[m, n] = out[out_off + m * out_rs + n]
    out_rs: u32,
    alpha: f32,
    k_split: u32,    // the tiled path's K range per workgroup, a multiple of TILE
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lhs: array<f32>;        // L, see Params
@group(0) @binding(2) var<storage, read> rhs: array<f32>;        // R, see Params
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [m, out_rs] from out_off
// L and R again, as vec4s (lora_registers, where the host found them aligned).
@group(0) @binding(4) var<storage, read> lhs4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> rhs4: array<vec4<f32>>;

const TILE = 16u;
// Side of a lane's block of outputs in lora_registers (written out for 8).
const BLOCK = 8u;
// One padding column keeps the column reads of the inner loop off a single bank.
var<workgroup> lt: array<array<f32, 17>, 16>; // L tile [m][k]
var<workgroup> rt: array<array<f32, 17>, 16>; // R tile [k][n]

fn lhs_at(m: u32, k: u32) -> f32 {
    if (m < p.m && k < p.k) {
        return lhs[p.lhs_off + m * p.lhs_rs + k * p.lhs_cs];
    }
    return 0.0;
}

fn rhs_at(k: u32, n: u32) -> f32 {
    if (k < p.k && n < p.n) {
        return rhs[p.rhs_off + k * p.rhs_rs + n * p.rhs_cs];
    }
    return 0.0;
}

fn lora_matmul(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    if (REGISTERS) {
        lora_registers(group_index(wid, nwg) * WX + lid.x);
    } else {
        lora_tiled(wid, nwg, lid);
    }
}

// One 16 x 16 output tile of one K range per workgroup, one output per thread; K in
// steps of 16 (17 loop iterations per step, checked against lavapipe's loop cap on the
// Rust side). Range `split` writes slice `split` of `out` (a single range: `out` itself).
fn lora_tiled(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let tiles = ((p.m + TILE - 1u) / TILE) * tiles_n;
    let g_all = group_index(wid, nwg);
    let split = g_all / tiles;
    let g = g_all % tiles;
    let m0 = (g / tiles_n) * TILE;
    let n0 = (g % tiles_n) * TILE;
    let k_lo = split * p.k_split;
    // Uniform per workgroup, so the barriers below stay legal.
    if (m0 >= p.m) {
        return;
    }
    let k_hi = min(p.k, k_lo + p.k_split);
    var acc = 0.0;
    for (var k0 = k_lo; k0 < k_hi; k0 += TILE) {
        // Neighbouring threads load neighbouring words: along k when L is row-major,
        // along m when it is transposed; the same for R along n or k.
        if (p.lhs_cs == 1u) {
            lt[lid.y][lid.x] = lhs_at(m0 + lid.y, k0 + lid.x);
        } else {
            lt[lid.x][lid.y] = lhs_at(m0 + lid.x, k0 + lid.y);
        }
        if (p.rhs_cs == 1u) {
            rt[lid.y][lid.x] = rhs_at(k0 + lid.y, n0 + lid.x);
        } else {
            rt[lid.x][lid.y] = rhs_at(k0 + lid.x, n0 + lid.y);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            acc += lt[lid.y][kk] * rt[kk][lid.x];
        }
        workgroupBarrier();
    }
    let m = m0 + lid.y;
    let n = n0 + lid.x;
    if (m < p.m && n < p.n) {
        let at = p.out_off + split * p.m * p.out_rs + m * p.out_rs + n;
        var v = p.alpha * acc;
        if (p.accumulate != 0u) {
            v += out[at];
        }
        out[at] = v;
    }
}

// Lane `t` owns out[m0..m0+8, n0..n0+8] (8 × 8 measured 1.7× faster than 4 × 4 on
// llvmpipe: 16 loads per 64 multiply-adds instead of 8 per 16); K in steps of 1 (checked
// against lavapipe's loop cap on the Rust side). Where an operand's 8 values at a k lie
// side by side (LHS_VEC, RHS_VEC), they are two vec4 loads instead of eight: llvmpipe
// runs each storage load as a loop over the lanes (dA, dB, du and dx: 9–16% faster). Rows
// and columns past the end read the last one (the vec4s the last whole one), so the
// loop has no branches; their results are not stored.
fn lora_registers(t: u32) {
    let tiles_n = (p.n + BLOCK - 1u) / BLOCK;
    let m0 = (t / tiles_n) * BLOCK;
    let n0 = (t % tiles_n) * BLOCK;
    if (m0 >= p.m) {
        return;
    }
    let at = block_at(m0, n0);
    var acc: Block8;
    for (var k = 0u; k < p.k; k++) {
        acc = step8(acc, lhs8(at, k), rhs8(at, k));
    }
    store8(at, acc);
}

// A lane's block: its first row and column, and the offsets of its 8 rows of L and 8
// columns of R (clamped to the last).
struct BlockAt {
    m0: u32,
    n0: u32,
    l: vec4<u32>,
    l2: vec4<u32>,
    r: vec4<u32>,
    r2: vec4<u32>,
}

fn block_at(m0: u32, n0: u32) -> BlockAt {
    let quad = vec4<u32>(0u, 1u, 2u, 3u);
    return BlockAt(m0, n0,
                   p.lhs_off + min(vec4<u32>(m0) + quad, vec4<u32>(p.m - 1u)) * p.lhs_rs,
                   p.lhs_off + min(vec4<u32>(m0 + 4u) + quad, vec4<u32>(p.m - 1u)) * p.lhs_rs,
                   p.rhs_off + min(vec4<u32>(n0) + quad, vec4<u32>(p.n - 1u)) * p.rhs_cs,
                   p.rhs_off + min(vec4<u32>(n0 + 4u) + quad, vec4<u32>(p.n - 1u)) * p.rhs_cs);
}

// 8 values as two vec4s.
struct V8 {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// L[m0..m0+8, k].
fn lhs8(at: BlockAt, k: u32) -> V8 {
    if (LHS_VEC) {
        let o = p.lhs_off + k * p.lhs_cs;
        return V8(lhs4[(o + min(at.m0, p.m - 4u)) / 4u], lhs4[(o + min(at.m0 + 4u, p.m - 4u)) / 4u]);
    }
    let a = at.l + k * p.lhs_cs;
    let b = at.l2 + k * p.lhs_cs;
    return V8(vec4<f32>(lhs[a.x], lhs[a.y], lhs[a.z], lhs[a.w]), vec4<f32>(lhs[b.x], lhs[b.y], lhs[b.z], lhs[b.w]));
}

// R[k, n0..n0+8].
fn rhs8(at: BlockAt, k: u32) -> V8 {
    if (RHS_VEC) {
        let o = p.rhs_off + k * p.rhs_rs;
        return V8(rhs4[(o + min(at.n0, p.n - 4u)) / 4u], rhs4[(o + min(at.n0 + 4u, p.n - 4u)) / 4u]);
    }
    let a = at.r + k * p.rhs_rs;
    let b = at.r2 + k * p.rhs_rs;
    return V8(vec4<f32>(rhs[a.x], rhs[a.y], rhs[a.z], rhs[a.w]), vec4<f32>(rhs[b.x], rhs[b.y], rhs[b.z], rhs[b.w]));
}

// A lane's 8 × 8 sums: q0 holds rows m0..m0+4 × columns n0..n0+4 (column c: row m0 + c),
// q1 the same rows × n0+4..n0+8, q2 and q3 rows m0+4..m0+8. Named fields, not an array:
// llvmpipe keeps indexed private arrays in memory.
struct Block8 {
    q0: mat4x4<f32>,
    q1: mat4x4<f32>,
    q2: mat4x4<f32>,
    q3: mat4x4<f32>,
}

// acc + the products of L's 8 rows and R's 8 columns at one k.
fn step8(acc: Block8, l: V8, r: V8) -> Block8 {
    return Block8(acc.q0 + outer(r.lo, l.lo), acc.q1 + outer(r.hi, l.lo), acc.q2 + outer(r.lo, l.hi), acc.q3 + outer(r.hi, l.hi));
}

// Column c is l[c] · r.
fn outer(r: vec4<f32>, l: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(l.x * r, l.y * r, l.z * r, l.w * r);
}

fn store8(at: BlockAt, acc: Block8) {
    for (var c = 0u; c < 4u; c++) {
        store4(at.m0 + c, at.n0, acc.q0[c]);
        store4(at.m0 + c, at.n0 + 4u, acc.q1[c]);
        store4(at.m0 + 4u + c, at.n0, acc.q2[c]);
        store4(at.m0 + 4u + c, at.n0 + 4u, acc.q3[c]);
    }
}

fn store4(m: u32, n0: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n0 + j < p.n) {
            let at = p.out_off + m * p.out_rs + n0 + j;
            var o = p.alpha * v[j];
            if (p.accumulate != 0u) {
                o += out[at];
            }
            out[at] = o;
        }
    }
}

@compute @workgroup_size(WX, WY)
fn lora_forward_down(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(WX, WY)
fn lora_forward_up(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(WX, WY)
fn lora_backward_u(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(WX, WY)
fn lora_backward_b(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(WX, WY)
fn lora_backward_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(WX, WY)
fn lora_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

// The split path's second pass: out[m, n] (+)= alpha · Σ_s partial[s, m, n] over the
// p.k slices of `lhs` (each [m, n] from lhs_off), one output per thread.
@group(0) @binding(2) var<storage, read_write> sums: array<f32>; // lora_reduce's `out`

@compute @workgroup_size(WX, WY)
fn lora_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * (WX * WY) + lid;
    if (i >= p.m * p.n) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < p.k; s++) {
        acc += lhs[p.lhs_off + s * p.m * p.n + i];
    }
    let at = p.out_off + (i / p.n) * p.out_rs + i % p.n;
    var v = p.alpha * acc;
    if (p.accumulate != 0u) {
        v += sums[at];
    }
    sums[at] = v;
}
