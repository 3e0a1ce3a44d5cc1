//! GPU runtime checks shared by the native run (tests/gpu_runtime.rs, lavapipe) and the
//! browser run (tests/web.rs, WebGPU in Chromium): one test body on both hosts.

use classtune::gpu::{batch::grid, scale_kernel, Buffer, Gpu, GpuError, Kernel, ScaleParams};

/// Values per run: 1094 workgroups, not a multiple of the workgroup size.
pub const N: u32 = 70_000;

/// The runtime's self-test, then upload, two dispatches of its kernel with different
/// parameters around a copy in one batch, and two readbacks (whole and offset). Returns
/// the pooled result buffer.
pub async fn dispatch_copy_and_readback(gpu: &Gpu) -> Result<Buffer, GpuError> {
    gpu.self_test().await?;
    let x: Vec<f32> = (0..N).map(|i| i as f32 * 0.5).collect();
    let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
    let yb = gpu.buffer("y", 4 * N as u64)?;
    let zb = gpu.scratch("z", 4 * N as u64)?;
    let pipeline = gpu.pipeline(&scale_kernel()).await?;
    let mut batch = gpu.batch();
    batch.dispatch(&pipeline, &ScaleParams { n: N, factor: 3.0 }, &[(&xb).into(), (&yb).into()], grid(N.div_ceil(64)))?;
    batch.copy(&yb, 0, &zb, 0, 4 * N as u64)?;
    batch.dispatch(&pipeline, &ScaleParams { n: N, factor: 2.0 }, &[(&yb).into(), (&zb).into()], grid(N.div_ceil(64)))?;
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
