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
// All six are one small tiled matmul, out[m, n] (+)= alpha · Σ_k L[m, k] · R[k, n], with
// L and R read through (offset, row stride, column stride), so transposes and slices of
// flat parameter/gradient buffers need no copies. Each has its own entry point so that
// pipelines and profiles carry the name of the step.

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> lhs: array<f32>;        // L, see Params
@group(0) @binding(2) var<storage, read> rhs: array<f32>;        // R, see Params
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [m, out_rs] from out_off

const TILE = 16u;
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

// One 16 x 16 output tile per workgroup, one output per thread; K in steps of 16 (17
// loop iterations per step, checked against lavapipe's loop cap on the Rust side).
fn lora_matmul(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) {
    let tiles_n = (p.n + TILE - 1u) / TILE;
    let g = group_index(wid, nwg);
    let m0 = (g / tiles_n) * TILE;
    let n0 = (g % tiles_n) * TILE;
    // Uniform per workgroup, so the barriers below stay legal.
    if (m0 >= p.m) {
        return;
    }
    var acc = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += TILE) {
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
        let at = p.out_off + m * p.out_rs + n;
        var v = p.alpha * acc;
        if (p.accumulate != 0u) {
            v += out[at];
        }
        out[at] = v;
    }
}

@compute @workgroup_size(16, 16)
fn lora_forward_down(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn lora_forward_up(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn lora_backward_u(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn lora_backward_b(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn lora_backward_a(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}

@compute @workgroup_size(16, 16)
fn lora_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    lora_matmul(wid, nwg, lid);
}
