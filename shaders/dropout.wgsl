// Inverted dropout with a counter-based mask: element i of a call is kept when a hash of
// (seed, i) clears the threshold, so the backward (and an activation recomputation)
// regenerates exactly the forward's mask from the seed instead of storing it.
//
//   forward:  out (+)= keep(i) · x[i] / (1 − p)
//   backward: the same operation on the gradient (dropout is diagonal and linear).

struct Params {
    n: u32,
    seed: u32,
    // keep element i when hash(seed, i) >= threshold (= p · 2³²).
    threshold: u32,
    accumulate: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [n]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [n]

// PCG-RXS-M-XS 32-bit output function (O'Neill), as a hash.
fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

@compute @workgroup_size(256)
fn dropout_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    let keep = pcg_hash(i + pcg_hash(p.seed)) >= p.threshold;
    let v = select(0.0, x[i] * p.scale, keep);
    if (p.accumulate != 0u) {
        out[i] += v;
    } else {
        out[i] = v;
    }
}
