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

// Rotates pair number i (over rows, heads and pairs) by sign * angle.
fn rotate_pair(i: u32, sign: f32) {
    let half = p.head_dim / 2u;
    if (i >= p.rows * p.heads * half) {
        return;
    }
    let k = i % half;
    let row_head = i / half;
    let t = row_head / p.heads;
    let base = row_head * p.head_dim;
    var a = base + 2u * k;
    var b = a + 1u;
    if (p.neox != 0u) {
        a = base + k;
        b = base + k + half;
    }
    let r = reduce_angle(f32(pos[t]) * inv_freq[k]);
    let c = cos(r);
    let s = sign * sin(r);
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
