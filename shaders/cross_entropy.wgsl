// Causal-LM cross-entropy fused with the vocabulary-chunked lm_head: the logits of one
// vocabulary chunk [rows, cols] (row stride `stride`, columns col_start .. col_start+cols
// of the vocabulary) are folded into per-row running state, so no [rows x vocab]
// tensor ever exists. Derivation in docs/training-math.md.
//
//   forward, per chunk (cross_entropy_forward), online log-sum-exp:
//     m'   = max(m, max_c z[c])
//     s'   = s * exp(m - m') + sum_c exp(z[c] - m')
//     zt   = z[target - col_start] when the target falls in this chunk
//   finalize (cross_entropy_finalize), per row and over all rows:
//     lse  = m + log(s),   loss = mask * (lse - zt)
//     totals = (sum loss, count = sum mask, sum loss / count, 1 / count)
//   backward, in the same pass (WEIGH): the gradient of scale * mean loss with respect
//   to the lm_head's input x, dx = (softmax(z) · W - W[target]) * mask * scale / count,
//   accumulated online, chunk by chunk:
//     the forward turns each chunk into e[c] = exp(z[c] - m') in place and writes
//     factor = exp(m - m'); the caller rescales the dx accumulated so far by factor
//     (cross_entropy_rescale) and adds e · W_chunk (matmul_input_grad); after the last
//     chunk every term is relative to the final max, whose sum of exp is s, and
//     cross_entropy_input_grad makes dx = (dx / s - W[target]) * mask * scale / count.
//   So the lm_head runs once per pass; no chunk's logits are recomputed.
//
// mask is 0 or 1 per row; masked rows have loss 0, gradient 0 and do not count. An
// unmasked row whose target was in no chunk gets a NaN loss, so bad targets are loud.

struct Params {
    rows: u32,
    cols: u32,      // columns of this chunk
    col_start: u32, // vocabulary index of the chunk's first column
    stride: u32,    // row stride of the chunk's logits, >= cols
    first: u32,     // forward: 1 starts the running state afresh
    scale: f32,     // input gradient: gradient scale (1 / micro-batches, ...)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// cross_entropy_forward; WEIGH (a constant) also rewrites the logits
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;    // [rows, stride]
@group(0) @binding(2) var<storage, read> targets: array<u32>;         // [rows]
@group(0) @binding(3) var<storage, read_write> state: array<vec4<f32>>; // [rows]: (max, sum exp, target logit, found)
@group(0) @binding(4) var<storage, read_write> factor: array<f32>;    // [rows]: exp(old max - new max)
// cross_entropy_finalize (a binding number may name different variables in different entry points)
@group(0) @binding(1) var<storage, read> fin_state: array<vec4<f32>>; // [rows]
@group(0) @binding(2) var<storage, read> fin_mask: array<u32>;        // [rows]
@group(0) @binding(3) var<storage, read_write> fin_lse: array<f32>;   // [rows]
@group(0) @binding(4) var<storage, read_write> loss: array<f32>;      // [rows]
@group(0) @binding(5) var<storage, read_write> totals: array<f32>;    // [4]
// cross_entropy_rescale
@group(0) @binding(1) var<storage, read> rs_factor: array<f32>;       // [rows]
@group(0) @binding(2) var<storage, read_write> rs_dx: array<f32>;     // [rows, cols]
// cross_entropy_input_grad
@group(0) @binding(1) var<storage, read_write> ig_dx: array<f32>;     // [rows, cols]: Σ e · W in, dx out
@group(0) @binding(2) var<storage, read> ig_state: array<vec4<f32>>;  // [rows]
@group(0) @binding(3) var<storage, read> ig_mask: array<u32>;         // [rows]
@group(0) @binding(4) var<storage, read> ig_target: array<f32>;       // [rows, cols]: W[target]
@group(0) @binding(5) var<storage, read> ig_totals: array<f32>;       // [4]

const WG = 256u;
// The lowest finite f32: a running max that has seen nothing. WGSL has no infinities.
const LOWEST = -3.4028234663852886e38;

var<workgroup> wmax: array<f32, WG>;
var<workgroup> wsum: array<f32, WG>;

// (m, s) of two partial log-sum-exps combined. exp(LOWEST - m) underflows to 0.
fn lse_merge(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// One workgroup per row; threads stride over the chunk's columns (cols / 256 steps each).
@compute @workgroup_size(256)
fn cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.stride;
    // Online per thread: one exp per element (rescale the sum when the max grows).
    var m = LOWEST;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let z = logits[base + c];
        if (z > m) {
            s = s * exp(m - z) + 1.0;
            m = z;
        } else {
            s += exp(z - m);
        }
    }
    wmax[lid] = m;
    wsum[lid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let merged = lse_merge(vec2<f32>(wmax[lid], wsum[lid]), vec2<f32>(wmax[lid + stride], wsum[lid + stride]));
            wmax[lid] = merged.x;
            wsum[lid] = merged.y;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var chunk = vec4<f32>(wmax[0], wsum[0], 0.0, 0.0);
        let t = targets[row];
        if (t >= p.col_start && t - p.col_start < p.cols) {
            chunk.z = logits[base + t - p.col_start];
            chunk.w = 1.0;
        }
        var merged = chunk;
        var f = 1.0;
        if (p.first == 0u) {
            let old = state[row];
            merged = vec4<f32>(lse_merge(old.xy, chunk.xy), old.z + chunk.z, max(old.w, chunk.w));
            f = exp(old.x - merged.x);
        }
        state[row] = merged;
        factor[row] = f;
        wmax[0] = merged.x;
    }
    if (WEIGH) {
        workgroupBarrier();
        let m = wmax[0];
        for (var c = lid; c < p.cols; c += WG) {
            logits[base + c] = exp(logits[base + c] - m);
        }
    }
}

var<workgroup> wloss: array<f32, WG>;
var<workgroup> wcount: array<f32, WG>;

// One workgroup for all rows (rows / 256 steps per thread), so the sum is deterministic.
@compute @workgroup_size(256)
fn cross_entropy_finalize(@builtin(local_invocation_index) lid: u32) {
    var sum = 0.0;
    var count = 0.0;
    for (var row = lid; row < p.rows; row += WG) {
        let st = fin_state[row];
        let lse = st.x + log(st.y);
        fin_lse[row] = lse;
        var l = 0.0;
        if (fin_mask[row] != 0u) {
            l = lse - st.z;
            if (st.w == 0.0) {
                // NaN: the target was in no chunk. Built from a runtime value (st.w is 0
                // here): Tint rejects a NaN constant expression.
                l = bitcast<f32>(0x7fc00000u | u32(st.w));
            }
            count += 1.0;
        }
        loss[row] = l;
        sum += l;
    }
    wloss[lid] = sum;
    wcount[lid] = count;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            wloss[lid] += wloss[lid + stride];
            wcount[lid] += wcount[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let n = wcount[0];
        let inv = select(0.0, 1.0 / n, n > 0.0);
        totals[0] = wloss[0];
        totals[1] = n;
        totals[2] = wloss[0] * inv;
        totals[3] = inv;
    }
}

// dx[row, :] *= factor[row], one thread per element: the sum so far, moved onto the
// new running max.
@compute @workgroup_size(256)
fn cross_entropy_rescale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * WG + lid;
    if (i < p.rows * p.cols) {
        rs_dx[i] *= rs_factor[i / p.cols];
    }
}

// dx = (Σ e · W / s - W[target]) * mask * scale / count, one thread per element.
@compute @workgroup_size(256)
fn cross_entropy_input_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * WG + lid;
    if (i >= p.rows * p.cols) {
        return;
    }
    let row = i / p.cols;
    var g = 0.0;
    if (ig_mask[row] != 0u) {
        g = (ig_dx[i] / ig_state[row].y - ig_target[i]) * p.scale * ig_totals[3];
    }
    ig_dx[i] = g;
}
