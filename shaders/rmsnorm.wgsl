// RMSNorm over the last dimension (llama, qwen2). Two shapes, picked by the loader
// (kernels/rmsnorm.rs, `RowKernel`) through LANES, with WG lanes per workgroup: on GPUs
// one workgroup per row sums through workgroup memory; on CPU devices each lane owns a
// whole row, with no barrier (llvmpipe switches between a workgroup's lanes at every
// barrier: the tree below cost ~0.1 ms per row there).
//
//   forward:  rstd[t]   = 1 / sqrt(mean_d(x[t,d]^2) + eps)
//             y[t,d]    = x[t,d] * rstd[t] * w[d]
//   backward, with g[t,d] = dy[t,d] * w[d] (derivation in docs/training-math.md):
//             dx[t,d]   = rstd[t] * (g[t,d] - x[t,d] * rstd[t]^2 * mean_d(g[t,:] * x[t,:]))
//             (+= onto dx when p.accumulate: the residual stream's gradient)
//   dw[d] = sum_t dy[t,d] * x[t,d] * rstd[t] is not computed: the norm weights are
//   frozen in LoRA training, only the gradient flowing through to x is needed.
// rstd is stored so the backward needs no second reduction over x^2.

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    accumulate: u32, // backward only: 1 = dx +=, 0 = dx =
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [rows, dim]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [dim]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // [rows, dim]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // [rows]; the backward reads it
// Backward only (a binding number may name different variables in different entry points):
@group(0) @binding(3) var<storage, read> dy: array<f32>;         // [rows, dim]
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;   // [rows, dim]

var<workgroup> partial: array<f32, WG>;

// Sum of partial[0..WG) into partial[0]; every thread must call it (it has barriers).
fn reduce_partial(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    if (LANES) {
        forward_row(group_index(wid, nwg) * WG + lid);
        return;
    }
    let row = group_index(wid, nwg);
    // Uniform per workgroup (derived from workgroup_id), so the barriers below stay legal.
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    // Strided over the row: neighbouring threads read neighbouring elements.
    var s = 0.0;
    for (var d = lid; d < p.dim; d += WG) {
        let v = x[base + d];
        s += v * v;
    }
    partial[lid] = s;
    reduce_partial(lid);
    // 1/sqrt rather than inverseSqrt: the latter may be a low-precision approximation.
    let r = 1.0 / sqrt(partial[0] / f32(p.dim) + p.eps);
    for (var d = lid; d < p.dim; d += WG) {
        y[base + d] = x[base + d] * r * w[d];
    }
    if (lid == 0u) {
        rstd[row] = r;
    }
}

@compute @workgroup_size(WG)
fn rmsnorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    if (LANES) {
        backward_row(group_index(wid, nwg) * WG + lid);
        return;
    }
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    // mean_d(g * x) with g = dy * w.
    var s = 0.0;
    for (var d = lid; d < p.dim; d += WG) {
        s += dy[base + d] * w[d] * x[base + d];
    }
    partial[lid] = s;
    reduce_partial(lid);
    let r = rstd[row];
    let c = r * r * partial[0] / f32(p.dim);
    for (var d = lid; d < p.dim; d += WG) {
        let v = r * (dy[base + d] * w[d] - x[base + d] * c);
        if (p.accumulate != 0u) {
            dx[base + d] += v;
        } else {
            dx[base + d] = v;
        }
    }
}

// ---- one lane per row (LANES) ----

fn forward_row(row: u32) {
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var s = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        let v = x[base + d];
        s += v * v;
    }
    let r = 1.0 / sqrt(s / f32(p.dim) + p.eps);
    for (var d = 0u; d < p.dim; d++) {
        y[base + d] = x[base + d] * r * w[d];
    }
    rstd[row] = r;
}

fn backward_row(row: u32) {
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var s = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        s += dy[base + d] * w[d] * x[base + d];
    }
    let r = rstd[row];
    let c = r * r * s / f32(p.dim);
    for (var d = 0u; d < p.dim; d++) {
        let v = r * (dy[base + d] * w[d] - x[base + d] * c);
        if (p.accumulate != 0u) {
            dx[base + d] += v;
        } else {
            dx[base + d] = v;
        }
    }
}
