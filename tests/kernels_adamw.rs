//! AdamW and the global gradient norm against CPU references over several steps, with
//! and without clipping, across two parameter buffers that share one norm.

mod gradcheck;

use classtune::gpu::GpuError;
use classtune::kernels::adamw::{
    adamw_step, adamw_step_cpu, grad_norm_sq, grad_norm_sq_cpu, AdamW, AdamWBuffers, AdamWStep, Clip,
};
use gradcheck::{assert_close, random, to_f64, upload};
use rand::{rngs::StdRng, SeedableRng};

#[test]
fn grad_norm_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(51);
        // Up to several thousand partial sums, so the second pass loops too.
        for &n in &[1usize, 255, 16_385, 5_000_003] {
            let g = random(&mut rng, n, -1.0, 1.0);
            let h = random(&mut rng, 77, -3.0, 3.0);
            let (gb, hb) = (upload(&gpu, "g", &g)?, upload(&gpu, "h", &h)?);
            let out = gpu.buffer("norm_sq", 4)?;
            let both = upload(&gpu, "norm_sq_both", &[123.0])?;
            let mut batch = gpu.batch();
            grad_norm_sq(&mut batch, &gb, &out, n as u32, false).await?;
            grad_norm_sq(&mut batch, &gb, &both, n as u32, false).await?; // overwrites 123
            grad_norm_sq(&mut batch, &hb, &both, 77, true).await?;
            batch.submit()?;
            let want = grad_norm_sq_cpu(&g);
            assert_close(&format!("n {n}"), &gpu.read_f32_prefix(&out, 1).await?, &[want], 0.0, 2e-6);
            let want_both = want + grad_norm_sq_cpu(&h);
            assert_close(&format!("n {n} + 77"), &gpu.read_f32_prefix(&both, 1).await?, &[want_both], 0.0, 2e-6);
        }
        // An empty gradient has norm 0.
        let gb = gpu.buffer("empty", 4)?;
        let out = upload(&gpu, "norm_sq", &[5.0])?;
        let mut batch = gpu.batch();
        grad_norm_sq(&mut batch, &gb, &out, 0, false).await?;
        batch.submit()?;
        assert_eq!(gpu.read_f32_prefix(&out, 1).await?, [0.0]);
        Ok(())
    })
}

#[test]
fn adamw_matches_cpu_over_steps() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(52);
        let config = AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
        // (max_norm, gradient range): clipping active, inactive (norm below max), off.
        for (max_norm, range) in [(Some(1.0f32), 1.0f32), (Some(1e4), 1.0), (None, 2.0)] {
            let sizes = [1001usize, 37];
            let mut params: Vec<Vec<f32>> = sizes.iter().map(|&n| random(&mut rng, n, -1.0, 1.0)).collect();
            let mut m: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
            let mut v = m.clone();
            let pb: Vec<_> = params.iter().map(|p| upload(&gpu, "param", p)).collect::<Result<_, _>>()?;
            let gb: Vec<_> = sizes.iter().map(|&n| gpu.buffer("grad", 4 * n as u64)).collect::<Result<_, _>>()?;
            let mb: Vec<_> = sizes.iter().map(|&n| gpu.buffer("m", 4 * n as u64)).collect::<Result<_, _>>()?;
            let vb: Vec<_> = sizes.iter().map(|&n| gpu.buffer("v", 4 * n as u64)).collect::<Result<_, _>>()?;
            let norm = gpu.buffer("norm_sq", 4)?;
            for step in 1..=6u32 {
                let lr = 1e-2 * (1.0 - step as f32 / 10.0); // a decaying schedule
                let st = AdamWStep { step, lr, zero_grad: true };
                let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| random(&mut rng, n, -range, range)).collect();
                for (b, g) in gb.iter().zip(&grads) {
                    gpu.write(b, 0, bytemuck::cast_slice(g))?;
                }
                let mut batch = gpu.batch();
                for (i, (b, &n)) in gb.iter().zip(&sizes).enumerate() {
                    grad_norm_sq(&mut batch, b, &norm, n as u32, i > 0).await?;
                }
                for i in 0..sizes.len() {
                    let buffers = AdamWBuffers { param: &pb[i], grad: &gb[i], m: &mb[i], v: &vb[i] };
                    let clip = max_norm.map(|max_norm| Clip { norm_sq: &norm, max_norm });
                    adamw_step(&mut batch, buffers, clip, sizes[i] as u32, &config, &st).await?;
                }
                batch.submit()?;
                let norm_sq: f64 = grads.iter().map(|g| grad_norm_sq_cpu(g)).sum();
                assert_close(&format!("step {step} norm²"), &gpu.read_f32_prefix(&norm, 1).await?, &[norm_sq], 0.0, 2e-6);
                for i in 0..sizes.len() {
                    let clip = max_norm.map(|mn| (norm_sq as f32, mn));
                    adamw_step_cpu(&mut params[i], &grads[i], &mut m[i], &mut v[i], clip, &config, &st);
                    let what = format!("max_norm {max_norm:?} step {step} buffer {i}");
                    let n = sizes[i];
                    assert_close(&format!("{what} param"), &gpu.read_f32_prefix(&pb[i], n).await?, &to_f64(&params[i]), 1e-6, 1e-5);
                    assert_close(&format!("{what} m"), &gpu.read_f32_prefix(&mb[i], n).await?, &to_f64(&m[i]), 1e-7, 1e-5);
                    assert_close(&format!("{what} v"), &gpu.read_f32_prefix(&vb[i], n).await?, &to_f64(&v[i]), 1e-9, 1e-5);
                    assert!(gpu.read_f32_prefix(&gb[i], n).await?.iter().all(|&g| g == 0.0), "{what}: grad not zeroed");
                }
            }
        }
        Ok(())
    })
}

/// The first step of Adam moves every parameter by about lr against its gradient's
/// sign, whatever the gradient's size: a check of the bias correction on its own.
#[test]
fn first_step_is_sign_descent() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let grad = [3.0f32, -1e-3, 0.5, -40.0];
        let pb = upload(&gpu, "param", &[0.0; 4])?;
        let gb = upload(&gpu, "grad", &grad)?;
        let (mb, vb) = (gpu.buffer("m", 16)?, gpu.buffer("v", 16)?);
        let mut batch = gpu.batch();
        let step = AdamWStep { step: 1, lr: 0.1, zero_grad: false };
        adamw_step(&mut batch, AdamWBuffers { param: &pb, grad: &gb, m: &mb, v: &vb }, None, 4, &AdamW::default(), &step).await?;
        batch.submit()?;
        let want: Vec<f64> = grad.iter().map(|g| -0.1 * g.signum() as f64).collect();
        assert_close("param", &gpu.read_f32_prefix(&pb, 4).await?, &want, 1e-5, 1e-4);
        assert_eq!(gpu.read_f32_prefix(&gb, 4).await?, grad, "grad kept without zero_grad");
        Ok(())
    })
}

#[test]
fn adamw_rejects_bad_arguments() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let (p, g, m, v) = (gpu.buffer("p", 64)?, gpu.buffer("g", 64)?, gpu.buffer("m", 64)?, gpu.buffer("v", 60)?);
        let mut batch = gpu.batch();
        let step = AdamWStep { step: 1, lr: 1e-3, zero_grad: true };
        let config = AdamW::default();
        let short = adamw_step(&mut batch, AdamWBuffers { param: &p, grad: &g, m: &m, v: &v }, None, 16, &config, &step).await;
        assert!(matches!(short, Err(GpuError::Shape { .. })), "{short:?}");
        let alias = adamw_step(&mut batch, AdamWBuffers { param: &p, grad: &g, m: &m, v: &m }, None, 15, &config, &step).await;
        assert!(matches!(alias, Err(GpuError::Shape { .. })), "{alias:?}");
        let zero = AdamWStep { step: 0, ..step };
        let result = adamw_step(&mut batch, AdamWBuffers { param: &p, grad: &g, m: &m, v: &v }, None, 15, &config, &zero).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        Ok(())
    })
}
