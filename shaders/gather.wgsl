// Row gather, out[i, :] = src[index[i], :], with zeros where index[i] is NONE.
//
// The loss needs the lm_head only at positions that have a target (chat data trains on
// the assistant's tokens alone), so training gathers those rows of the final norm's
// output before the lm_head, and the same kernel is the backward: with the inverse
// index (each position's row among the gathered ones, or NONE) it spreads the gathered
// rows' gradient back and writes zeros elsewhere.
//
// Rows are moved as vec4 (cols a multiple of 4): llvmpipe loads per lane and component.

const NONE = 0xffffffffu;

struct Params {
    rows: u32,  // rows of out
    cols4: u32, // vec4 per row
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;          // [rows]
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;      // [.., cols4]
@group(0) @binding(3) var<storage, read_write> out: array<vec4<f32>>; // [rows, cols4]

@compute @workgroup_size(64)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let e = group_index(wid, nwg) * 64u + lid;
    if (e >= p.rows * p.cols4) {
        return;
    }
    let r = index[e / p.cols4];
    var v = vec4<f32>(0.0);
    if (r != NONE) {
        v = src[r * p.cols4 + e % p.cols4];
    }
    out[e] = v;
}
