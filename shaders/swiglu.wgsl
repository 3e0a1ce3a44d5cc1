// SwiGLU gating of the MLP (llama, qwen2), elementwise over [rows, ffn].
//
//   forward:  out = silu(gate) * up,  silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
//   backward (next to it later), with s = sigmoid(gate):
//             dgate = dout * up * s * (1 + gate * (1 - s)),   dup = dout * gate * s
// Nothing extra is stored: the backward recomputes s from gate.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate: array<f32>;       // [n]
@group(0) @binding(2) var<storage, read> up: array<f32>;         // [n]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [n]

@compute @workgroup_size(256)
fn swiglu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    // For g << 0, exp(-g) overflows to inf and g / inf = -0: the right limit.
    out[i] = g / (1.0 + exp(-g)) * up[i];
}
