//! The elementwise kernels (SwiGLU, residual add) against their CPU references.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::add::{add_forward, add_forward_cpu};
use classtune::kernels::swiglu::{swiglu_forward, swiglu_forward_cpu};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: gpu {g} vs cpu {w}");
    }
}

#[test]
fn swiglu_and_add_match_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(11);
        for &n in &[1usize, 255, 1536 * 3 + 1, 70_001] {
            let mut gate: Vec<f32> = (0..n).map(|_| rng.random_range(-8.0..8.0)).collect();
            gate[0] = -120.0; // exp(-g) overflows: silu must still be -0
            let up: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            let gb = gpu.upload("gate", bytemuck::cast_slice(&gate))?;
            let ub = gpu.upload("up", bytemuck::cast_slice(&up))?;
            let ob = gpu.buffer("out", 4 * n as u64)?;
            let mut batch = gpu.batch();
            swiglu_forward(&mut batch, &gb, &ub, &ob, n as u32).await?;
            // y += x with y = up (read back afterwards), x = gate.
            add_forward(&mut batch, &gb, &ub, n as u32).await?;
            batch.submit()?;
            let want = swiglu_forward_cpu(&gate, &up);
            assert_close(&format!("swiglu n {n}"), &gpu.read_f32_prefix(&ob, n).await?, &want, 1e-6, 1e-5);
            let mut sum = up.clone();
            add_forward_cpu(&gate, &mut sum);
            assert_eq!(gpu.read_f32_prefix(&ub, n).await?, sum, "add n {n}");
        }
        Ok(())
    })
}
