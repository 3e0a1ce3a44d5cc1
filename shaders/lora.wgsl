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
// pipelines and profiles carry the name of the step.
//
// Two ways to compute it, picked by the loader (kernels/lora.rs, `LoraKernel`) through
// REGISTERS, with the workgroup size WX × WY: GPUs share 16 × 16 tiles through
// workgroup memory; CPU devices give each lane an 8 × 8 block in registers with no
// workgroup memory and no barrier. llvmpipe runs a workgroup's lanes as coroutines that
// switch at every barrier: the shared tiles cost ~75 µs per 256-lane workgroup there
// and took three quarters of a training step.
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
    lhs_vec: u32,    // 1: lora_registers loads L's 8 rows at a k as two vec4s (lhs4), 0: one by one
    rhs_vec: u32,    // 1: the same for R's 8 columns (rhs4)
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
// side by side (the host checks), they are two vec4 loads instead of eight: llvmpipe runs
// each storage load as a loop over the lanes (dA, dB, du and dx: 9–16% faster). Rows
// and columns past the end read the last one (the vec4s the last whole one), so the
// loop has no branches; their results are not stored.
fn lora_registers(t: u32) {
    let tiles_n = (p.n + BLOCK - 1u) / BLOCK;
    let m0 = (t / tiles_n) * BLOCK;
    let n0 = (t % tiles_n) * BLOCK;
    if (m0 >= p.m) {
        return;
    }
    let quad = vec4<u32>(0u, 1u, 2u, 3u);
    let l = p.lhs_off + min(vec4<u32>(m0) + quad, vec4<u32>(p.m - 1u)) * p.lhs_rs;
    let l2 = p.lhs_off + min(vec4<u32>(m0 + 4u) + quad, vec4<u32>(p.m - 1u)) * p.lhs_rs;
    let r = p.rhs_off + min(vec4<u32>(n0) + quad, vec4<u32>(p.n - 1u)) * p.rhs_cs;
    let r2 = p.rhs_off + min(vec4<u32>(n0 + 4u) + quad, vec4<u32>(p.n - 1u)) * p.rhs_cs;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    var a8 = vec4<f32>(0.0);
    var a9 = vec4<f32>(0.0);
    var a10 = vec4<f32>(0.0);
    var a11 = vec4<f32>(0.0);
    var a12 = vec4<f32>(0.0);
    var a13 = vec4<f32>(0.0);
    var a14 = vec4<f32>(0.0);
    var a15 = vec4<f32>(0.0);
    for (var k = 0u; k < p.k; k++) {
        var rv: vec4<f32>;
        var rw: vec4<f32>;
        if (p.rhs_vec == 1u) {
            let o = p.rhs_off + k * p.rhs_rs;
            rv = rhs4[(o + min(n0, p.n - 4u)) / 4u];
            rw = rhs4[(o + min(n0 + 4u, p.n - 4u)) / 4u];
        } else {
            let rk = r + k * p.rhs_rs;
            rv = vec4<f32>(rhs[rk.x], rhs[rk.y], rhs[rk.z], rhs[rk.w]);
            let rk2 = r2 + k * p.rhs_rs;
            rw = vec4<f32>(rhs[rk2.x], rhs[rk2.y], rhs[rk2.z], rhs[rk2.w]);
        }
        var lv: vec4<f32>;
        var lw: vec4<f32>;
        if (p.lhs_vec == 1u) {
            let o = p.lhs_off + k * p.lhs_cs;
            lv = lhs4[(o + min(m0, p.m - 4u)) / 4u];
            lw = lhs4[(o + min(m0 + 4u, p.m - 4u)) / 4u];
        } else {
            let lk = l + k * p.lhs_cs;
            lv = vec4<f32>(lhs[lk.x], lhs[lk.y], lhs[lk.z], lhs[lk.w]);
            let lk2 = l2 + k * p.lhs_cs;
            lw = vec4<f32>(lhs[lk2.x], lhs[lk2.y], lhs[lk2.z], lhs[lk2.w]);
        }
        a0 += lv.x * rv;
        a1 += lv.x * rw;
        a2 += lv.y * rv;
        a3 += lv.y * rw;
        a4 += lv.z * rv;
        a5 += lv.z * rw;
        a6 += lv.w * rv;
        a7 += lv.w * rw;
        a8 += lw.x * rv;
        a9 += lw.x * rw;
        a10 += lw.y * rv;
        a11 += lw.y * rw;
        a12 += lw.z * rv;
        a13 += lw.z * rw;
        a14 += lw.w * rv;
        a15 += lw.w * rw;
    }
    store4(m0 + 0u, n0, a0);
    store4(m0 + 0u, n0 + 4u, a1);
    store4(m0 + 1u, n0, a2);
    store4(m0 + 1u, n0 + 4u, a3);
    store4(m0 + 2u, n0, a4);
    store4(m0 + 2u, n0 + 4u, a5);
    store4(m0 + 3u, n0, a6);
    store4(m0 + 3u, n0 + 4u, a7);
    store4(m0 + 4u, n0, a8);
    store4(m0 + 4u, n0 + 4u, a9);
    store4(m0 + 5u, n0, a10);
    store4(m0 + 5u, n0 + 4u, a11);
    store4(m0 + 6u, n0, a12);
    store4(m0 + 6u, n0 + 4u, a13);
    store4(m0 + 7u, n0, a14);
    store4(m0 + 7u, n0 + 4u, a15);
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
