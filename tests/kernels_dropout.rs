//! Dropout against its CPU reference (bit for bit: the mask is an integer hash) and
//! against what dropout must be: the kept fraction near 1 − p, kept values scaled by
//! 1 / (1 − p), a different mask per seed, and the backward equal to the forward.

mod gradcheck;

use classtune::gpu::GpuError;
use classtune::kernels::dropout::{dropout_forward, dropout_forward_cpu};
use gradcheck::{random, upload};
use rand::{rngs::StdRng, SeedableRng};

#[test]
fn dropout_matches_its_reference_and_keeps_one_minus_p() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(3);
        for &(n, p, seed) in &[(1usize, 0.5f32, 1u32), (1000, 0.1, 7), (70_001, 0.05, 123), (70_001, 0.3, 124)] {
            let x = random(&mut rng, n, 0.5, 2.0);
            let xb = upload(&gpu, "x", &x)?;
            let out = gpu.buffer("out", 4 * n as u64)?;
            let mut batch = gpu.batch();
            dropout_forward(&mut batch, &xb, &out, n as u32, p, seed, false).await?;
            batch.submit()?;
            let got = gpu.read_f32_prefix(&out, n).await?;
            let want = dropout_forward_cpu(&x, p, seed);
            assert_eq!(got, want, "n {n} p {p}");
            let kept = got.iter().filter(|&&v| v != 0.0).count();
            if n > 1000 {
                let rate = kept as f64 / n as f64;
                assert!((rate - (1.0 - p as f64)).abs() < 0.01, "kept {rate} at p {p}");
            }
            for (g, v) in got.iter().zip(&x) {
                assert!(*g == 0.0 || *g == v * (1.0 / (1.0 - p)));
            }
        }
        // Different seeds, different masks; accumulate adds.
        let x = vec![1.0f32; 4096];
        let a = dropout_forward_cpu(&x, 0.5, 1);
        let b = dropout_forward_cpu(&x, 0.5, 2);
        assert!(a.iter().zip(&b).filter(|(u, v)| u != v).count() > 1500);
        let xb = upload(&gpu, "x", &x)?;
        let out = upload(&gpu, "out", &vec![1.0f32; 4096])?;
        let mut batch = gpu.batch();
        dropout_forward(&mut batch, &xb, &out, 4096, 0.5, 1, true).await?;
        batch.submit()?;
        let got = gpu.read_f32_prefix(&out, 4096).await?;
        assert!(got.iter().zip(&a).all(|(g, v)| *g == 1.0 + v));
        // p outside [0, 1) is refused.
        let mut batch = gpu.batch();
        assert!(dropout_forward(&mut batch, &xb, &out, 4096, 1.0, 1, false).await.is_err());
        Ok(())
    })
}
