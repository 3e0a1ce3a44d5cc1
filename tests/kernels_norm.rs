//! RMSNorm on the GPU against its CPU reference, at odd sizes.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::rmsnorm::{rmsnorm_forward, rmsnorm_forward_cpu, rmsnorm_forward_with, RowKernel};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: gpu {g} vs cpu {w}");
    }
}

#[test]
fn rmsnorm_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(7);
        // Both kernel shapes on every device (the device picks one); 70 rows span two
        // workgroups of the one-lane-per-row shape.
        let cases = [(1usize, 7usize), (3, 576), (5, 4096), (17, 1000), (2, 257), (70, 33)];
        for ((rows, dim), kernel) in cases.into_iter().flat_map(|c| [RowKernel::Workgroup, RowKernel::Lanes].map(|k| (c, k))) {
            let x: Vec<f32> = (0..rows * dim).map(|_| rng.random_range(-3.0..3.0)).collect();
            let w: Vec<f32> = (0..dim).map(|_| rng.random_range(0.5..1.5)).collect();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
            let wb = gpu.upload("w", bytemuck::cast_slice(&w))?;
            let yb = gpu.buffer("y", 4 * (rows * dim) as u64)?;
            let rb = gpu.buffer("rstd", 4 * rows as u64)?;
            let mut batch = gpu.batch();
            rmsnorm_forward_with(&mut batch, kernel, &xb, &wb, &yb, &rb, rows as u32, dim as u32, 1e-5).await?;
            batch.submit()?;
            let (y, rstd) = rmsnorm_forward_cpu(&x, &w, rows, dim, 1e-5);
            let what = format!("{kernel:?}: rows {rows} dim {dim}");
            assert_close(&format!("{what} y"), &gpu.read_f32_prefix(&yb, rows * dim).await?, &y, 1e-5, 1e-5);
            assert_close(&format!("{what} rstd"), &gpu.read_f32_prefix(&rb, rows).await?, &rstd, 0.0, 1e-5);
        }
        Ok(())
    })
}

#[test]
fn rmsnorm_rejects_short_buffers() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let x = gpu.buffer("x", 4 * 64)?;
        let w = gpu.buffer("w", 4 * 63)?;
        let y = gpu.buffer("y", 4 * 64)?;
        let r = gpu.buffer("rstd", 4)?;
        let mut batch = gpu.batch();
        let result = rmsnorm_forward(&mut batch, &x, &w, &y, &r, 1, 64, 1e-5).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        Ok(())
    })
}
