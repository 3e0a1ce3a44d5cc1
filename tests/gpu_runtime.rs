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
