// AdamW over one flat f32 parameter buffer (all LoRA A and B matrices, or a part of
// them), with global-norm gradient clipping, as torch.optim.AdamW and
// torch.nn.utils.clip_grad_norm_ compute them.
//
//   grad_norm_sq:  out[g] (+)= Σ grad[i]² over span g  (first pass: partial sums of squares;
//                  second pass, square = 0: their plain sum)
//   adamw_step, at step t >= 1 with c = min(1, max_norm / (sqrt(norm_sq) + 1e-6)) when
//   clipping, else c = 1:
//     g  = c · grad
//     θ  = θ · (1 − lr · weight_decay)               decoupled weight decay
//     m  = m + (1 − β1) · (g − m)                     (= β1·m + (1 − β1)·g)
//     v  = β2 · v + (1 − β2) · g²
//     θ  = θ − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
//     grad = 0 when zero_grad (ready for the next accumulation)
// The bias corrections are computed on the CPU in f64 and passed in.

struct Params {
    n: u32,
    zero_grad: u32,
    clip: u32,          // 1: scale the gradient by c (norm_sq is bound)
    span: u32,          // grad_norm_sq: elements per workgroup
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step_size: f32,     // lr / (1 − β1^t)
    inv_sqrt_bc2: f32,  // 1 / sqrt(1 − β2^t)
    max_norm: f32,
    accumulate: u32,    // grad_norm_sq: 1 adds onto sq_out
    square: u32,        // grad_norm_sq: 1 sums squares (first pass), 0 plain values (second)
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// adamw_step
@group(0) @binding(1) var<storage, read_write> param: array<f32>;  // [n]
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;   // [n]
@group(0) @binding(3) var<storage, read_write> m: array<f32>;      // [n], first moment
@group(0) @binding(4) var<storage, read_write> v: array<f32>;      // [n], second moment
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;      // [1], Σ grad² over all parameters
// grad_norm_sq (a binding number may name different variables in different entry points)
@group(0) @binding(1) var<storage, read> sq_in: array<f32>;        // [n]
@group(0) @binding(2) var<storage, read_write> sq_out: array<f32>; // [ceil(n / span)]

@compute @workgroup_size(256)
fn adamw_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 256u + lid;
    if (i >= p.n) {
        return;
    }
    var g = grad[i];
    if (p.clip != 0u) {
        g *= min(1.0, p.max_norm / (sqrt(norm_sq[0]) + 1e-6));
    }
    let theta = param[i] * (1.0 - p.lr * p.weight_decay);
    let m1 = m[i] + (1.0 - p.beta1) * (g - m[i]);
    let v1 = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = m1;
    v[i] = v1;
    param[i] = theta - p.step_size * m1 / (sqrt(v1) * p.inv_sqrt_bc2 + p.eps);
    if (p.zero_grad != 0u) {
        grad[i] = 0.0;
    }
}

const WG = 256u;
var<workgroup> partial: array<f32, WG>;

// Workgroup g sums the squares of sq_in[g·span .. min((g+1)·span, n)) in a fixed order
// (span / 256 loop steps per thread), so the norm is the same on every run.
@compute @workgroup_size(256)
fn grad_norm_sq(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    let start = g * p.span;
    // Workgroup 0 always writes, so an empty input still yields 0.
    if (start >= p.n && g > 0u) {
        return;
    }
    let end = min(start + p.span, p.n);
    var s = 0.0;
    for (var i = start + lid; i < end; i += WG) {
        let x = sq_in[i];
        s += select(x, x * x, p.square != 0u);
    }
    partial[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        if (p.accumulate != 0u) {
            sq_out[g] += partial[0];
        } else {
            sq_out[g] = partial[0];
        }
    }
}
