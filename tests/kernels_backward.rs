//! Backward kernels of RMSNorm, RoPE and SwiGLU against finite differences of an f64
//! CPU forward and against their modules' CPU references, at small odd shapes.

mod gradcheck;

use classtune::gpu::GpuError;
use classtune::kernels::rmsnorm::{
    rmsnorm_backward, rmsnorm_backward_cpu, rmsnorm_backward_with, rmsnorm_forward_with, RowKernel,
};
use classtune::kernels::rope::{rope_backward, rope_backward_cpu, rope_inv_freq, RopeScaling, RopeStyle};
use classtune::kernels::swiglu::{swiglu_backward, swiglu_backward_cpu};
use gradcheck::{assert_close, dot, finite_diff, random, to_f64, upload, upload_u32};
use rand::{rngs::StdRng, SeedableRng};

/// RMSNorm forward in f64, rstd recomputed from x (what finite differences must see).
fn rmsnorm_f64(x: &[f64], w: &[f32], rows: usize, dim: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; rows * dim];
    for t in 0..rows {
        let row = &x[t * dim..(t + 1) * dim];
        let r = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + eps).sqrt();
        for d in 0..dim {
            y[t * dim + d] = row[d] * r * w[d] as f64;
        }
    }
    y
}

#[test]
fn rmsnorm_backward_matches_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(21);
        let eps = 1e-5f32;
        let cases = [(1usize, 7usize), (3, 37), (5, 257), (2, 1001), (67, 9)];
        for ((rows, dim), kernel) in cases.into_iter().flat_map(|c| [RowKernel::Workgroup, RowKernel::Lanes].map(|k| (c, k))) {
            let x = random(&mut rng, rows * dim, -2.0, 2.0);
            let w = random(&mut rng, dim, 0.5, 1.5);
            let dy = random(&mut rng, rows * dim, -1.0, 1.0);
            let prior = random(&mut rng, rows * dim, -1.0, 1.0);
            let (xb, wb, dyb) = (upload(&gpu, "x", &x)?, upload(&gpu, "w", &w)?, upload(&gpu, "dy", &dy)?);
            let yb = gpu.buffer("y", 4 * (rows * dim) as u64)?;
            let rb = gpu.buffer("rstd", 4 * rows as u64)?;
            let dxb = gpu.buffer("dx", 4 * (rows * dim) as u64)?;
            let acc = upload(&gpu, "dx_acc", &prior)?;
            let mut batch = gpu.batch();
            let (r, d) = (rows as u32, dim as u32);
            rmsnorm_forward_with(&mut batch, kernel, &xb, &wb, &yb, &rb, r, d, eps).await?;
            rmsnorm_backward_with(&mut batch, kernel, &xb, &wb, &rb, &dyb, &dxb, r, d, false).await?;
            rmsnorm_backward_with(&mut batch, kernel, &xb, &wb, &rb, &dyb, &acc, r, d, true).await?;
            batch.submit()?;
            let got = gpu.read_f32_prefix(&dxb, rows * dim).await?;
            let what = format!("rmsnorm {kernel:?} rows {rows} dim {dim}");

            let fd = finite_diff(&to_f64(&x), 1e-6, |x| dot(&dy, &rmsnorm_f64(x, &w, rows, dim, eps as f64)));
            assert_close(&format!("{what} dx vs finite differences"), &got, &fd, 2e-5, 1e-4);
            let rstd = gpu.read_f32_prefix(&rb, rows).await?;
            let cpu = rmsnorm_backward_cpu(&x, &w, &rstd, &dy, rows, dim);
            assert_close(&format!("{what} dx vs cpu"), &got, &to_f64(&cpu), 1e-6, 1e-5);
            let summed: Vec<f64> = prior.iter().zip(&cpu).map(|(&p, &c)| p as f64 + c as f64).collect();
            let got_acc = gpu.read_f32_prefix(&acc, rows * dim).await?;
            assert_close(&format!("{what} dx accumulated"), &got_acc, &summed, 2e-6, 1e-5);
        }
        Ok(())
    })
}

/// RoPE forward in f64 with the GPU's angles (f32 product, then f64 sin/cos).
fn rope_f64(x: &[f64], pos: &[u32], inv_freq: &[f32], heads: usize, hd: usize, style: RopeStyle) -> Vec<f64> {
    let mut y = x.to_vec();
    let half = hd / 2;
    for (t, &position) in pos.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * hd;
            for (i, &f) in inv_freq.iter().enumerate() {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    RopeStyle::Neox => (base + i, base + i + half),
                };
                let angle = (position as f32 * f) as f64;
                let (s, c) = angle.sin_cos();
                y[a] = x[a] * c - x[b] * s;
                y[b] = x[a] * s + x[b] * c;
            }
        }
    }
    y
}

#[test]
fn rope_backward_matches_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(22);
        let scaling = Some(RopeScaling::Linear { factor: 2.0 });
        for (rows, heads, hd, style) in
            [(1usize, 3usize, 2usize, RopeStyle::Neox), (5, 3, 10, RopeStyle::Interleaved), (7, 2, 18, RopeStyle::Neox), (3, 5, 64, RopeStyle::Interleaved)]
        {
            let n = rows * heads * hd;
            let dy = random(&mut rng, n, -1.0, 1.0);
            let x = random(&mut rng, n, -2.0, 2.0);
            let pos: Vec<u32> = (0..rows as u32).map(|t| if t % 3 == 2 { 4_000 + 131 * t } else { t }).collect();
            let inv_freq = rope_inv_freq(hd, 10_000.0, scaling);
            let dxb = upload(&gpu, "dx", &dy)?;
            let pb = upload_u32(&gpu, "pos", &pos)?;
            let fb = upload(&gpu, "inv_freq", &inv_freq)?;
            let mut batch = gpu.batch();
            rope_backward(&mut batch, &dxb, &pb, &fb, rows as u32, heads as u32, hd as u32, style).await?;
            batch.submit()?;
            let got = gpu.read_f32_prefix(&dxb, n).await?;
            let what = format!("rope rows {rows} heads {heads} hd {hd} {style:?}");
            let fd = finite_diff(&to_f64(&x), 1e-6, |x| dot(&dy, &rope_f64(x, &pos, &inv_freq, heads, hd, style)));
            assert_close(&format!("{what} vs finite differences"), &got, &fd, 2e-5, 1e-5);
            let mut cpu = dy.clone();
            rope_backward_cpu(&mut cpu, &pos, &inv_freq, heads, hd, style);
            assert_close(&format!("{what} vs cpu"), &got, &to_f64(&cpu), 2e-5, 1e-5);
        }
        Ok(())
    })
}

fn swiglu_f64(gate: &[f64], up: &[f64]) -> Vec<f64> {
    gate.iter().zip(up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}

#[test]
fn swiglu_backward_matches_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(23);
        for &n in &[1usize, 255, 1001, 70_001] {
            let mut gate = random(&mut rng, n, -8.0, 8.0);
            gate[0] = -120.0; // exp(-g) overflows in f32: both gradients must be ~0, not NaN
            if n > 1 {
                gate[1] = 95.0;
            }
            let up = random(&mut rng, n, -2.0, 2.0);
            let dout = random(&mut rng, n, -1.0, 1.0);
            let (gb, ub, db) = (upload(&gpu, "gate", &gate)?, upload(&gpu, "up", &up)?, upload(&gpu, "dout", &dout)?);
            let dgb = gpu.buffer("dgate", 4 * n as u64)?;
            let dub = gpu.buffer("dup", 4 * n as u64)?;
            let mut batch = gpu.batch();
            swiglu_backward(&mut batch, &gb, &ub, &db, &dgb, &dub, n as u32).await?;
            batch.submit()?;
            let dgate = gpu.read_f32_prefix(&dgb, n).await?;
            let dup = gpu.read_f32_prefix(&dub, n).await?;
            let (cg, cu) = swiglu_backward_cpu(&gate, &up, &dout);
            assert_close(&format!("swiglu n {n} dgate vs cpu"), &dgate, &to_f64(&cg), 1e-6, 1e-5);
            assert_close(&format!("swiglu n {n} dup vs cpu"), &dup, &to_f64(&cu), 1e-6, 1e-5);
            if n <= 1001 {
                // Elementwise: the loss Σ dout·out separates, so each FD needs one element.
                let (g64, u64_) = (to_f64(&gate), to_f64(&up));
                let fdg = finite_diff(&g64, 1e-6, |g| dot(&dout, &swiglu_f64(g, &u64_)));
                let fdu = finite_diff(&u64_, 1e-6, |u| dot(&dout, &swiglu_f64(&g64, u)));
                assert_close(&format!("swiglu n {n} dgate vs finite differences"), &dgate, &fdg, 1e-5, 1e-4);
                assert_close(&format!("swiglu n {n} dup vs finite differences"), &dup, &fdu, 1e-5, 1e-4);
            }
        }
        Ok(())
    })
}

#[test]
fn backward_kernels_reject_bad_arguments() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let x = gpu.buffer("x", 4 * 64)?;
        let w = gpu.buffer("w", 4 * 64)?;
        let r = gpu.buffer("rstd", 4)?;
        let dy = gpu.buffer("dy", 4 * 64)?;
        let short = gpu.buffer("short", 4 * 63)?;
        let mut batch = gpu.batch();
        // dx aliasing an input.
        let result = rmsnorm_backward(&mut batch, &x, &w, &r, &dy, &x, 1, 64, false).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let result = rmsnorm_backward(&mut batch, &x, &w, &r, &short, &dy, 1, 64, false).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let result = swiglu_backward(&mut batch, &x, &w, &dy, &short, &r, 64, ).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let result = rope_backward(&mut batch, &x, &r, &w, 1, 1, 63, RopeStyle::Neox).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        Ok(())
    })
}
