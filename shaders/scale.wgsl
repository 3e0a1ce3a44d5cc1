// y = x · factor: the runtime's self-test (src/gpu/self_test.rs), one dispatch with a
// known answer that a host runs before trusting a device; the runtime's checks
// (tests/runtime_checks) also run it around a copy and offset readbacks.

struct Params {
    n: u32,
    factor: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    if (i < p.n) {
        y[i] = x[i] * p.factor;
    }
}
