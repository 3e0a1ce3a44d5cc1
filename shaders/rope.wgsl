// Rotary position embedding, in place on x[rows, heads, head_dim] (queries or keys).
//
//   forward:  for each pair (a, b) of one head and pair index i < head_dim/2,
//             with angle = pos[t] * inv_freq[i]:
//               x'[a] = x[a] * cos(angle) - x[b] * sin(angle)
//               x'[b] = x[a] * sin(angle) + x[b] * cos(angle)
//             pairs: interleaved (a, b) = (2i, 2i+1)   (llama in GGUF space)
//                    neox        (a, b) = (i, i + head_dim/2) (qwen2, HF llama)
//   backward: the rotation is orthogonal, so its transpose is its inverse: the same
//             rotation by -angle, applied in place to dx' (dq or dk) gives dx:
//               dx[a] =  dx'[a] * cos(angle) + dx'[b] * sin(angle)
//               dx[b] = -dx'[a] * sin(angle) + dx'[b] * cos(angle)
//   rope_forward_qk: the forward on queries and keys in one dispatch, the keys rotated in
//             place at an offset of their buffer (their KV-cache rows).
// inv_freq comes from the CPU (`rope_inv_freq`), so theta and llama3/linear scaling
// live in one place; pos is per row, so packed sequences and KV-cache offsets are
// both expressible.

struct Params {
    rows: u32,
    heads: u32,
    head_dim: u32,
    neox: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;   // [rows, heads, head_dim]; dx' -> dx in the backward
@group(0) @binding(2) var<storage, read> pos: array<u32>;       // [rows]
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;  // [head_dim / 2]

// rope_forward_qk only: x holds the queries, k the keys from element k_offset on.
struct QkParams {
    rows: u32,
    heads: u32,      // query heads
    head_dim: u32,
    neox: u32,
    k_heads: u32,
    k_offset: u32,   // first element of the keys in k
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> pq: QkParams;
@group(0) @binding(4) var<storage, read_write> k: array<f32>;   // [.., rows, k_heads, head_dim]

// 2*pi split into a head with few mantissa bits (k * HI is exact for k < 2^16) and the
// rest, so angle - k*2pi loses nothing (Cody-Waite reduction).
const TWO_PI_HI = 6.28125;
const TWO_PI_LO = 0.0019353071795864769;
const INV_TWO_PI = 0.15915494309189535;

// sin/cos are only specified to 2^-11 absolute on [-pi, pi] in Vulkan/WebGPU; angles
// reach pos * 1 rad (thousands), so reduce them first.
fn reduce_angle(a: f32) -> f32 {
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

// Pair number i (over rows, heads and pairs): its elements (a, b), row and pair index.
fn pair_index(i: u32, heads: u32, head_dim: u32, neox: u32) -> vec4<u32> {
    let half = head_dim / 2u;
    let j = i % half;
    let row_head = i / half;
    let base = row_head * head_dim;
    if (neox != 0u) {
        return vec4<u32>(base + j, base + j + half, row_head / heads, j);
    }
    return vec4<u32>(base + 2u * j, base + 2u * j + 1u, row_head / heads, j);
}

// (cos, sign * sin) of the angle of row t, pair index j.
// sin and cos to about 1e-7 on any device: WGSL's builtins are only specified to 2^-11
// absolute and SwiftShader's are about 2e-4 off, enough to move logits by 1e-2.
// Cody-Waite reduction by pi/2, then Taylor polynomials on [-pi/4, pi/4]; returns
// (cos a, sin a).
const HALF_PI_HI = 1.5703125;
const HALF_PI_LO = 4.838267948966e-4;
const TWO_OVER_PI = 0.6366197723675814;
fn precise_cos_sin(a: f32) -> vec2<f32> {
    let q = round(a * TWO_OVER_PI);
    let t = (a - q * HALF_PI_HI) - q * HALF_PI_LO;
    let t2 = t * t;
    let s = t * (1.0 + t2 * (-1.0 / 6.0 + t2 * (1.0 / 120.0 + t2 * (-1.0 / 5040.0 + t2 * (1.0 / 362880.0)))));
    let c = 1.0 + t2 * (-0.5 + t2 * (1.0 / 24.0 + t2 * (-1.0 / 720.0 + t2 * (1.0 / 40320.0 + t2 * (-1.0 / 3628800.0)))));
    let quadrant = i32(q) & 3;
    if (quadrant == 0) { return vec2<f32>(c, s); }
    if (quadrant == 1) { return vec2<f32>(-s, c); }
    if (quadrant == 2) { return vec2<f32>(-c, -s); }
    return vec2<f32>(s, -c);
}

fn rotation(t: u32, j: u32, sign: f32) -> vec2<f32> {
    let r = reduce_angle(f32(pos[t]) * inv_freq[j]);
    let cs = precise_cos_sin(r);
    return vec2<f32>(cs.x, sign * cs.y);
}

// Rotates pair number i (over rows, heads and pairs) by sign * angle.
fn rotate_pair(i: u32, sign: f32) {
    if (i >= p.rows * p.heads * (p.head_dim / 2u)) {
        return;
    }
    let e = pair_index(i, p.heads, p.head_dim, p.neox);
    let a = e.x;
    let b = e.y;
    let cs = rotation(e.z, e.w, sign);
    let c = cs.x;
    let s = cs.y;
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}

@compute @workgroup_size(64)
fn rope_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    rotate_pair(group_index(wid, nwg) * 64u + lid, 1.0);
}

@compute @workgroup_size(64)
fn rope_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    rotate_pair(group_index(wid, nwg) * 64u + lid, -1.0);
}

// Pairs 0 .. rows·heads·half are the queries', the rest the keys'.
@compute @workgroup_size(64)
fn rope_forward_qk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    let half = pq.head_dim / 2u;
    let nq = pq.rows * pq.heads * half;
    if (i < nq) {
        let e = pair_index(i, pq.heads, pq.head_dim, pq.neox);
        let cs = rotation(e.z, e.w, 1.0);
        let x0 = x[e.x];
        let x1 = x[e.y];
        x[e.x] = x0 * cs.x - x1 * cs.y;
        x[e.y] = x0 * cs.y + x1 * cs.x;
    } else if (i < nq + pq.rows * pq.k_heads * half) {
        let e = pair_index(i - nq, pq.k_heads, pq.head_dim, pq.neox);
        let cs = rotation(e.z, e.w, 1.0);
        let a = pq.k_offset + e.x;
        let b = pq.k_offset + e.y;
        let x0 = k[a];
        let x1 = k[b];
        k[a] = x0 * cs.x - x1 * cs.y;
        k[b] = x0 * cs.y + x1 * cs.x;
    }
}
