//! GPU runtime checks shared by the native run (tests/gpu_runtime.rs, lavapipe) and the
//! browser run (tests/web.rs, WebGPU in Chromium): one test body on both hosts.

use classtune::gpu::{batch::grid, Buffer, Gpu, GpuError, Kernel};

const SCALE: &str = r#"
struct Params { n: u32, factor: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    if (i < p.n) { y[i] = x[i] * p.factor; }
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    factor: f32,
}

/// Values per run: 1094 workgroups, not a multiple of the workgroup size.
pub const N: u32 = 70_000;

/// Upload, two dispatches with different parameters around a copy in one batch, and
/// two readbacks (whole and offset). Returns the pooled result buffer.
pub async fn dispatch_copy_and_readback(gpu: &Gpu) -> Result<Buffer, GpuError> {
    let x: Vec<f32> = (0..N).map(|i| i as f32 * 0.5).collect();
    let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
    let yb = gpu.buffer("y", 4 * N as u64)?;
    let zb = gpu.scratch("z", 4 * N as u64)?;
    let pipeline = gpu.pipeline(&Kernel::new("test", SCALE, "scale")).await?;
    let mut batch = gpu.batch();
    batch.dispatch(&pipeline, &Params { n: N, factor: 3.0 }, &[(&xb).into(), (&yb).into()], grid(N.div_ceil(64)))?;
    batch.copy(&yb, 0, &zb, 0, 4 * N as u64)?;
    batch.dispatch(&pipeline, &Params { n: N, factor: 2.0 }, &[(&yb).into(), (&zb).into()], grid(N.div_ceil(64)))?;
    batch.submit()?;
    let z = gpu.read_f32_prefix(&zb, N as usize).await?;
    for (i, v) in z.iter().enumerate() {
        assert_eq!(*v, x[i] * 6.0, "index {i}");
    }
    // A second, offset readback: the async map path works more than once.
    let tail = gpu.read(&zb, 4 * (N as u64 - 4), 16).await?;
    let tail: Vec<f32> = bytemuck::pod_collect_to_vec(&tail);
    assert_eq!(tail, x[N as usize - 4..].iter().map(|v| v * 6.0).collect::<Vec<_>>());
    gpu.finish().await?;
    Ok(zb)
}

/// A WGSL error and an oversized buffer come back as errors, not panics.
pub async fn errors_are_errors(gpu: &Gpu) {
    let broken = Kernel::new("broken", "fn main( {", "main");
    match gpu.pipeline(&broken).await {
        Err(GpuError::Shader { kernel, .. }) => assert!(kernel.contains("broken")),
        other => panic!("expected a shader error, got {other:?}"),
    }
    let too_big = gpu.buffer("huge", 300 << 20);
    assert!(matches!(too_big, Err(GpuError::TooLarge { .. })), "{too_big:?}");
}
