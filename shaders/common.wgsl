// Helpers shared by every kernel; the loader prepends this file to each shader.

// Linear workgroup index for grids split over x and y (see `gpu::batch::grid`).
fn group_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Two f16 values packed in one u32 (low half first), as stored by GGUF.
fn f16_pair(bits: u32) -> vec2<f32> {
    return unpack2x16float(bits);
}

// bf16 is the top half of an f32.
fn bf16_pair(bits: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(bits << 16u), bitcast<f32>(bits & 0xffff0000u));
}
