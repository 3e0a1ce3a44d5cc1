//! LoRA forward and backward kernels against an f64 CPU reference and finite
//! differences, with A, B, dA and dB at odd offsets of flat buffers (as the trainer
//! keeps them) and gradient accumulation.

mod gradcheck;

use classtune::gpu::GpuError;
use classtune::kernels::lora::{
    lora_backward_a, lora_backward_b, lora_backward_cpu, lora_backward_input, lora_backward_u, lora_forward,
    lora_forward_cpu, LoraKernel, LoraShape, View,
};
use gradcheck::{assert_close, finite_diff, random, to_f64, upload};
use rand::{rngs::StdRng, SeedableRng};

/// Σ c · (scale · (x·Aᵀ)·Bᵀ) in f64.
fn adapter_loss(x: &[f64], a: &[f64], b: &[f64], c: &[f32], s: LoraShape) -> f64 {
    let (t, din, dout, r) = (s.tokens as usize, s.d_in as usize, s.d_out as usize, s.rank as usize);
    let mut total = 0.0;
    for i in 0..t {
        let u: Vec<f64> = (0..r).map(|j| (0..din).map(|k| x[i * din + k] * a[j * din + k]).sum()).collect();
        for o in 0..dout {
            let y: f64 = (0..r).map(|j| u[j] * b[o * r + j]).sum();
            total += c[i * dout + o] as f64 * s.scale as f64 * y;
        }
    }
    total
}

struct Outputs {
    u: Vec<f32>,
    y: Vec<f32>,
    du: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
    dx: Vec<f32>,
}

/// Prior contents of the accumulated outputs (base y, base dx, earlier dA/dB).
struct Priors {
    y: Vec<f32>,
    dx: Vec<f32>,
    da: Vec<f32>,
    db: Vec<f32>,
}

async fn run_gpu(x: &[f32], a: &[f32], b: &[f32], dy: &[f32], p: &Priors, s: LoraShape) -> Result<Outputs, GpuError> {
    let gpu = gradcheck::gpu().await?;
    let (t, din, dout, r) = (s.tokens as usize, s.d_in as usize, s.d_out as usize, s.rank as usize);
    // Flat parameter and gradient buffers: [7 junk | A | 5 junk | B | 3 junk].
    let (a_off, b_off) = (7, 7 + r * din + 5);
    let mut flat = vec![9.0f32; b_off + dout * r + 3];
    flat[a_off..a_off + r * din].copy_from_slice(a);
    flat[b_off..b_off + dout * r].copy_from_slice(b);
    let mut grads = vec![f32::NAN; flat.len()];
    grads[a_off..a_off + r * din].copy_from_slice(&p.da);
    grads[b_off..b_off + dout * r].copy_from_slice(&p.db);
    let params = upload(&gpu, "lora_params", &flat)?;
    let gradb = upload(&gpu, "lora_grads", &grads)?;
    let xb = upload(&gpu, "x", x)?;
    let yb = upload(&gpu, "y", &p.y)?;
    let dyb = upload(&gpu, "dy", dy)?;
    let dxb = upload(&gpu, "dx", &p.dx)?;
    let ub = gpu.buffer("u", 4 * (t * r) as u64)?;
    let dub = gpu.buffer("du", 4 * (t * r) as u64)?;
    let (av, bv) = (View::at(&params, a_off as u32), View::at(&params, b_off as u32));
    let (dav, dbv) = (View::at(&gradb, a_off as u32), View::at(&gradb, b_off as u32));
    let mut batch = gpu.batch();
    lora_forward(&mut batch, &xb, av, bv, &ub, (&yb).into(), s).await?;
    lora_backward_u(&mut batch, &dyb, bv, &dub, s).await?;
    lora_backward_b(&mut batch, &dyb, &ub, dbv, s, true).await?;
    lora_backward_a(&mut batch, &dub, &xb, dav, s, true).await?;
    lora_backward_input(&mut batch, &dub, av, &dxb, s, true).await?;
    batch.submit()?;
    let g = gpu.read_f32_prefix(&gradb, grads.len()).await?;
    for i in (0..a_off).chain(a_off + r * din..b_off).chain(b_off + dout * r..grads.len()) {
        assert!(g[i].is_nan(), "gradient buffer written outside dA and dB at {i}");
    }
    Ok(Outputs {
        u: gpu.read_f32_prefix(&ub, t * r).await?,
        y: gpu.read_f32_prefix(&yb, t * dout).await?,
        du: gpu.read_f32_prefix(&dub, t * r).await?,
        da: g[a_off..a_off + r * din].to_vec(),
        db: g[b_off..b_off + dout * r].to_vec(),
        dx: gpu.read_f32_prefix(&dxb, t * din).await?,
    })
}

fn add(prior: &[f32], x: &[f64]) -> Vec<f64> {
    prior.iter().zip(x).map(|(&p, &x)| p as f64 + x).collect()
}

#[test]
fn lora_matches_cpu_and_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let mut rng = StdRng::seed_from_u64(41);
        // (tokens, in, out, rank, finite differences too)
        let cases = [
            (1usize, 7usize, 9usize, 1usize, true),
            (5, 23, 19, 3, true),
            (3, 17, 33, 16, true),
            (37, 96, 200, 64, false),
            (130, 576, 192, 16, false),
            (18, 1536, 576, 8, false),
            // dA and dB over 600 tokens: on the tiled kernel, K split in four ranges
            // (the last shorter and not a whole tile) and summed by a second pass.
            (600, 96, 200, 16, false),
        ];
        // Both kernels on every device: the device picks one, the other must agree too.
        let kernels = [LoraKernel::Tiled, LoraKernel::Registers];
        for ((t, din, dout, r, fd), kernel) in cases.into_iter().flat_map(|c| kernels.map(|k| (c, k))) {
            let s = LoraShape {
                tokens: t as u32,
                d_in: din as u32,
                d_out: dout as u32,
                rank: r as u32,
                scale: 2.0 / r as f32,
                kernel,
            };
            let x = random(&mut rng, t * din, -1.0, 1.0);
            let a = random(&mut rng, r * din, -0.5, 0.5);
            let b = random(&mut rng, dout * r, -0.5, 0.5);
            let dy = random(&mut rng, t * dout, -1.0, 1.0);
            let priors = Priors {
                y: random(&mut rng, t * dout, -1.0, 1.0),
                dx: random(&mut rng, t * din, -1.0, 1.0),
                da: random(&mut rng, r * din, -1.0, 1.0),
                db: random(&mut rng, dout * r, -1.0, 1.0),
            };
            let got = run_gpu(&x, &a, &b, &dy, &priors, s).await?;
            let what = format!("{kernel:?}: T {t} in {din} out {dout} r {r}");
            let (u, y) = lora_forward_cpu(&x, &a, &b, &priors.y, s);
            let want = lora_backward_cpu(&x, &a, &b, &dy, s);
            // Sums of up to 1536 products of values below 1: f32 error well under 1e-4.
            let (abs, rel) = (1e-4, 1e-4);
            assert_close(&format!("{what} u"), &got.u, &u, abs, rel);
            assert_close(&format!("{what} y"), &got.y, &y, abs, rel);
            assert_close(&format!("{what} du"), &got.du, &want.du, abs, rel);
            assert_close(&format!("{what} dA (accumulated)"), &got.da, &add(&priors.da, &want.da), abs, rel);
            assert_close(&format!("{what} dB (accumulated)"), &got.db, &add(&priors.db, &want.db), abs, rel);
            assert_close(&format!("{what} dx (accumulated)"), &got.dx, &add(&priors.dx, &want.dx), abs, rel);
            if fd {
                let (x64, a64, b64) = (to_f64(&x), to_f64(&a), to_f64(&b));
                let fa = finite_diff(&a64, 1e-6, |a| adapter_loss(&x64, a, &b64, &dy, s));
                let fb = finite_diff(&b64, 1e-6, |b| adapter_loss(&x64, &a64, b, &dy, s));
                let fx = finite_diff(&x64, 1e-6, |x| adapter_loss(x, &a64, &b64, &dy, s));
                assert_close(&format!("{what} dA vs finite differences"), &got.da, &add(&priors.da, &fa), abs, rel);
                assert_close(&format!("{what} dB vs finite differences"), &got.db, &add(&priors.db, &fb), abs, rel);
                assert_close(&format!("{what} dx vs finite differences"), &got.dx, &add(&priors.dx, &fx), abs, rel);
            }
        }
        Ok(())
    })
}

#[test]
fn lora_rejects_bad_shapes() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let x = gpu.buffer("x", 4 * 64)?;
        let a = gpu.buffer("a", 4 * 64)?;
        let b = gpu.buffer("b", 4 * 64)?;
        let u = gpu.buffer("u", 4 * 64)?;
        let y = gpu.buffer("y", 4 * 64)?;
        let mut batch = gpu.batch();
        let ok = LoraShape { tokens: 2, d_in: 16, d_out: 16, rank: 4, scale: 1.0, kernel: LoraKernel::choose(&gpu) };
        for (bad, why) in [
            (LoraShape { rank: 0, ..ok }, "rank 0"),
            (LoraShape { rank: 65, ..ok }, "rank above 64"),
            (LoraShape { rank: 17, d_in: 16, ..ok }, "rank above a dimension"),
            (LoraShape { tokens: 5, ..ok }, "x too short"),
            (LoraShape { scale: f32::NAN, ..ok }, "NaN scale"),
        ] {
            let result = lora_forward(&mut batch, &x, (&a).into(), (&b).into(), &u, (&y).into(), bad).await;
            assert!(matches!(result, Err(GpuError::Shape { .. })), "{why}: {result:?}");
        }
        // A at an offset that runs past the buffer.
        let result = lora_forward(&mut batch, &x, View::at(&a, 1), (&b).into(), &u, (&y).into(), ok).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "offset: {result:?}");
        // Output aliasing an input.
        let result = lora_backward_input(&mut batch, &u, (&a).into(), &a, ok, true).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "alias: {result:?}");
        batch.submit()?;
        // No tokens, in buffers sized for more (as the trainer's): dA = duᵀ·x is an
        // empty sum, written as zeros by either kernel, not split into ranges.
        for kernel in [LoraKernel::Tiled, LoraKernel::Registers] {
            let empty = LoraShape { tokens: 0, kernel, ..ok };
            let da = upload(&gpu, "da", &[7.0; 64])?;
            let mut batch = gpu.batch();
            lora_backward_a(&mut batch, &u, &x, (&da).into(), empty, false).await?;
            batch.submit()?;
            let got = gpu.read_f32_prefix(&da, 64).await?;
            assert!(got[..64].iter().all(|&v| v == 0.0), "{kernel:?}: {got:?}");
        }
        Ok(())
    })
}
