//! The runtime natively (lavapipe): the checks shared with the browser run
//! (tests/runtime_checks), plus pool accounting and the workgroup grid.

mod runtime_checks;

use classtune::gpu::{batch::grid, Gpu, GpuError, GpuOptions};

#[test]
fn dispatch_copy_and_readback() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let zb = runtime_checks::dispatch_copy_and_readback(&gpu).await?;
        let n = runtime_checks::N as u64;
        let live = gpu.memory().live_bytes();
        assert!(live >= 4 * n, "live {live}");
        drop(zb);
        assert_eq!(gpu.memory().live_bytes(), live, "pooled buffers stay counted");
        let again = gpu.scratch("z2", 4 * n - 100)?;
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
        runtime_checks::errors_are_errors(&gpu).await;
        Ok(())
    })
}

#[test]
fn grid_splits_large_counts() {
    assert_eq!(grid(10), [10, 1, 1]);
    let g = grid(200_000);
    assert!(g[0] <= 65535 && g[0] * g[1] >= 200_000);
}

#[test]
fn profile_times_each_dispatch_and_leaves_results_unchanged() -> Result<(), GpuError> {
    use classtune::kernels::add::add_forward;
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let x = gpu.upload("x", bytemuck::cast_slice(&[1.0f32; 100]))?;
        let y = gpu.upload("y", bytemuck::cast_slice(&[2.0f32; 100]))?;
        gpu.start_profile();
        let mut batch = gpu.batch();
        for _ in 0..3 {
            add_forward(&mut batch, &x, &y, 100).await?;
        }
        batch.submit()?;
        let profile = gpu.take_profile().expect("profiling was on");
        assert!(gpu.take_profile().is_none(), "taking the profile ends it");
        let kernels = profile.kernels();
        assert_eq!(kernels.len(), 1, "{kernels:?}");
        assert!(kernels[0].name.starts_with("add."), "{}", kernels[0].name);
        assert_eq!(kernels[0].dispatches, 3);
        assert!(profile.total() > std::time::Duration::ZERO);
        // Each dispatch ran in order: y = 2 + 3 · 1.
        assert_eq!(gpu.read_f32(&y).await?, vec![5.0; 100]);
        Ok(())
    })
}
