// SwiGLU gating of the MLP (llama, qwen2), elementwise over [rows, ffn].
//
//   forward:  out = silu(gate) * up,  silu(g) = g * sigmoid(g) = g / (1 + exp(-g))
//   backward, with s = sigmoid(gate) and silu'(g) = s * (1 + g * (1 - s)):
//             dgate = dout * up * s * (1 + gate * (1 - s)),   dup = dout * silu(gate)
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
// Backward only (a binding number may name different variables in different entry points):
@group(0) @binding(3) var<storage, read> dout: array<f32>;        // [n]
@group(0) @binding(4) var<storage, read_write> dgate: array<f32>; // [n]
@group(0) @binding(5) var<storage, read_write> dup: array<f32>;   // [n]

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

@compute @workgroup_size(256)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let g = gate[i];
    let d = dout[i];
    // exp(-g) = inf for g << 0 gives s = 0 and both gradients 0, the right limits.
    let s = 1.0 / (1.0 + exp(-g));
    dgate[i] = d * up[i] * s * (1.0 + g * (1.0 - s));
    dup[i] = d * g * s;
}
