//! The runtime itself: upload, dispatch with params, copy, readback, pool accounting,
//! and a WGSL error surfacing as an `Err` instead of a panic.

use classtune::gpu::{batch::grid, Gpu, GpuError, GpuOptions, Kernel};

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

#[test]
fn dispatch_copy_and_readback() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let n = 70_000u32; // more than 65535 workgroups of 1 would need; here 1094 groups
        let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
        let yb = gpu.buffer("y", 4 * n as u64)?;
        let zb = gpu.scratch("z", 4 * n as u64)?;
        let pipeline = gpu.pipeline(&Kernel::new("test", SCALE, "scale")).await?;
        let mut batch = gpu.batch();
        batch.dispatch(&pipeline, &Params { n, factor: 3.0 }, &[(&xb).into(), (&yb).into()], grid(n.div_ceil(64)))?;
        batch.copy(&yb, 0, &zb, 0, 4 * n as u64)?;
        batch.dispatch(&pipeline, &Params { n, factor: 2.0 }, &[(&yb).into(), (&zb).into()], grid(n.div_ceil(64)))?;
        batch.submit()?;
        let z = gpu.read_f32_prefix(&zb, n as usize).await?;
        for (i, v) in z.iter().enumerate() {
            assert_eq!(*v, x[i] * 6.0, "index {i}");
        }
        let live = gpu.memory().live_bytes();
        assert!(live >= 3 * 4 * n as u64, "live {live}");
        drop(zb);
        assert_eq!(gpu.memory().live_bytes(), live, "pooled buffers stay counted");
        let again = gpu.scratch("z2", 4 * n as u64 - 100)?;
        assert_eq!(gpu.memory().live_bytes(), live, "pool reuses the freed buffer");
        drop(again);
        gpu.trim();
        assert!(gpu.memory().live_bytes() < live);
        Ok(())
    })
}

#[test]
fn shader_error_is_an_error() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let broken = Kernel::new("broken", "fn main( {", "main");
        match gpu.pipeline(&broken).await {
            Err(GpuError::Shader { kernel, .. }) => assert!(kernel.contains("broken")),
            other => panic!("expected a shader error, got {other:?}"),
        }
        let too_big = gpu.buffer("huge", 300 << 20);
        assert!(matches!(too_big, Err(GpuError::TooLarge { .. })), "{too_big:?}");
        Ok(())
    })
}

#[test]
fn grid_splits_large_counts() {
    assert_eq!(grid(10), [10, 1, 1]);
    let g = grid(200_000);
    assert!(g[0] <= 65535 && g[0] * g[1] >= 200_000);
}
