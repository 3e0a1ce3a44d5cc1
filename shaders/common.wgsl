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

// ---- GGML weight unpacking (owned by kernels/matmul; blocks repacked to whole words) ----

// Four 4-bit values from the bytes of `q`, nibble at bit `shift` (0 low, 4 high) of each.
fn nibbles4(q: u32, shift: u32) -> vec4<f32> {
    let v = (q >> shift) & 0x0f0f0f0fu;
    return vec4<f32>(unpack4xU8(v));
}

// Four signed bytes.
fn bytes4_i8(q: u32) -> vec4<f32> {
    return vec4<f32>(unpack4xI8(q));
}

// Byte `j` of a little-endian run of words.
fn byte_of(words: vec3<u32>, j: u32) -> u32 {
    return (words[j / 4u] >> (8u * (j % 4u))) & 0xffu;
}

// (scale, min) of Q4_K sub-block j from its 12 packed scale bytes (ggml get_scale_min_k4).
fn scale_min_k4(j: u32, s: vec3<u32>) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_of(s, j) & 63u), f32(byte_of(s, j + 4u) & 63u));
    }
    let sc = (byte_of(s, j + 4u) & 0xfu) | ((byte_of(s, j - 4u) >> 6u) << 4u);
    let m = (byte_of(s, j + 4u) >> 4u) | ((byte_of(s, j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(m));
}
// ---- end GGML weight unpacking ----
