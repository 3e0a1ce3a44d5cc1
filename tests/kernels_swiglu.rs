//! The elementwise kernels (SwiGLU, residual add) and the row gather against their CPU
//! references.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::add::{add_forward, add_forward_cpu};
use classtune::kernels::gather::{gather_rows, gather_rows_cpu, gather_rows_index};
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

/// Gathering the kept rows and spreading them back with the inverse index returns the
/// source where kept and zeros elsewhere, exactly (the training loss path, both ways).
#[test]
fn gather_rows_and_back_match_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(12);
        for &(rows, cols, keep) in &[(1usize, 4usize, 1.0), (7, 12, 0.5), (257, 576, 0.3), (64, 8, 0.0)] {
            let src: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-3.0..3.0)).collect();
            let (picked, slots) = gather_rows_index((0..rows).map(|_| rng.random_bool(keep)));
            let n = picked.len();
            let sb = gpu.upload("src", bytemuck::cast_slice(&src))?;
            let (pb, lb) = (gpu.upload("picked", bytemuck::cast_slice(&picked))?, gpu.upload("slots", bytemuck::cast_slice(&slots))?);
            let (gathered, back) = (gpu.buffer("gathered", (4 * (n * cols).max(4)) as u64)?, gpu.buffer("back", (4 * rows * cols) as u64)?);
            let mut batch = gpu.batch();
            gather_rows(&mut batch, &pb, &sb, rows as u32, &gathered, n as u32, cols as u32).await?;
            gather_rows(&mut batch, &lb, &gathered, n as u32, &back, rows as u32, cols as u32).await?;
            batch.submit()?;
            let want = gather_rows_cpu(&picked, &src, cols);
            assert_eq!(gpu.read_f32_prefix(&gathered, n * cols).await?, want, "gather {rows}×{cols}");
            let spread = gather_rows_cpu(&slots, &want, cols);
            for (t, row) in spread.chunks(cols).enumerate() {
                let expect: Vec<f32> = if slots[t] == u32::MAX { vec![0.0; cols] } else { src[t * cols..(t + 1) * cols].to_vec() };
                assert_eq!(row, &expect[..], "reference spread, row {t}");
            }
            assert_eq!(gpu.read_f32_prefix(&back, rows * cols).await?, spread, "spread back {rows}×{cols}");
        }
        let b = gpu.buffer("b", 64)?;
        let err = gather_rows(&mut gpu.batch(), &b, &b, 1, &b, 1, 6).await.map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("multiple of 4"), "{err}");
        Ok(())
    })
}
