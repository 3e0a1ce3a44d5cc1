//! GFLOP/s of our matmul on GGUF weight types at SmolLM2-135M shapes, next to numpy's
//! sgemm on the same machine in the same run; for the decode shapes (1 token) the time
//! per matvec and the GB/s of weights read matter, so each run submits 20 of them.
//! Native only.
//!
//! Then the training shapes (256 tokens): the forward next to the input gradient
//! dx = dy · W (`matmul_input_grad`), the lm_head in 16384-row vocabulary chunks as the
//! training step runs it.
//!
//! `cargo bench --bench matmul`; MATMUL_KERNEL=tiled|subgroup|vector forces a kernel,
//! MATMUL_TYPES=F32,Q4_1 picks types, MATMUL_SHAPES=0,2 picks forward shapes (by index),
//! MATMUL_PART=forward|grad runs one part only, MATMUL_GRAD_KERNEL=uniform|storage|split|subgroup forces
//! the input-gradient kernel.

use std::time::Instant;

use classtune::gguf::dequant::quantize;
use classtune::gguf::GgmlType;
use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::matmul::{matmul_input_grad_with, matmul_with, InputGradKernel, MatmulKernel, Weight};

mod peers;
use peers::{median, numpy_gflops};

/// (tokens, rows, cols): prefill, prefill lm_head, then the decode matvecs (attention and
/// ffn up/gate, ffn down, lm_head).
const SHAPES: [(usize, usize, usize); 5] =
    [(1024, 1536, 576), (1024, 49152, 576), (1, 1536, 576), (1, 576, 1536), (1, 49152, 576)];

/// (rows, cols) of SmolLM2-135M's matrices in training: q/o, k/v, gate/up, down, lm_head.
const TRAIN_SHAPES: [(usize, usize); 5] = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)];

/// Tokens per training step in the comparison.
const TRAIN_TOKENS: usize = 256;

/// Vocabulary rows per lm_head chunk in training.
const VOCAB_CHUNK: usize = 16384;

fn weight_bytes(ty: GgmlType, n: usize, k: usize) -> Vec<u8> {
    match ty {
        GgmlType::Q4_K | GgmlType::Q6_K => {
            // Timing does not depend on the values; keep scales finite.
            let mut bytes: Vec<u8> = (0..n * k / 256 * ty.block_bytes()).map(|i| (i * 131 % 251) as u8).collect();
            let at = if ty == GgmlType::Q4_K { 0 } else { 208 };
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                block[at..at + 2].copy_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
                if ty == GgmlType::Q4_K {
                    block[2..4].copy_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
                }
            }
            bytes
        }
        _ => {
            let values: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0).collect();
            quantize(ty, &values).unwrap_or_default()
        }
    }
}

fn main() -> Result<(), GpuError> {
    pollster::block_on(run())
}

async fn run() -> Result<(), GpuError> {
    let gpu = Gpu::new(GpuOptions::default()).await?;
    println!("device: {}", gpu.describe());
    let forced = std::env::var("MATMUL_KERNEL").ok().map(|k| match k.as_str() {
        "tiled" => MatmulKernel::Tiled,
        "vector" => MatmulKernel::Vector,
        _ => MatmulKernel::SubgroupTiled,
    });
    let types: Vec<GgmlType> = match std::env::var("MATMUL_TYPES") {
        Ok(list) => list.split(',').filter_map(|t| (0..31).filter_map(GgmlType::from_id).find(|g| g.name() == t)).collect(),
        Err(_) => vec![GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q6_K],
    };
    let shapes: Vec<(usize, usize, usize)> = match std::env::var("MATMUL_SHAPES") {
        Ok(pick) => pick.split(',').filter_map(|i| i.parse::<usize>().ok()).filter_map(|i| SHAPES.get(i).copied()).collect(),
        Err(_) => SHAPES.to_vec(),
    };
    let part = std::env::var("MATMUL_PART").unwrap_or_default();
    if part != "grad" {
        forward(&gpu, forced, &types, &shapes).await?;
    }
    if part != "forward" {
        input_grad(&gpu, forced, &types).await?;
    }
    Ok(())
}

/// Median seconds of `runs` submits of what `record` puts in a batch, after one untimed
/// run (it compiles the pipelines on lavapipe).
async fn time_batches<F>(gpu: &Gpu, runs: usize, mut record: F) -> Result<f64, GpuError>
where
    F: AsyncFnMut(&mut classtune::gpu::Batch<'_>) -> Result<(), GpuError>,
{
    let mut times = Vec::new();
    for i in 0..runs + 1 {
        let mut batch = gpu.batch();
        record(&mut batch).await?;
        let start = Instant::now();
        batch.submit()?;
        gpu.finish().await?;
        if i > 0 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

/// The forward y = x · Wᵀ next to the input gradient dx = dy · W at the training shapes,
/// each with the kernel the device gets by default unless forced.
async fn input_grad(gpu: &Gpu, forced: Option<MatmulKernel>, types: &[GgmlType]) -> Result<(), GpuError> {
    let m = TRAIN_TOKENS;
    let grad_kernel = match std::env::var("MATMUL_GRAD_KERNEL").as_deref() {
        Ok("uniform") => InputGradKernel::Uniform,
        Ok("storage") => InputGradKernel::Storage,
        Ok("split") => InputGradKernel::Split,
        Ok("subgroup") => InputGradKernel::Subgroup,
        _ => InputGradKernel::choose(&gpu.batch()),
    };
    println!("\ntraining shapes, {m} tokens: forward y = x·Wᵀ next to the input gradient dx = dy·W");
    for (n, k) in TRAIN_SHAPES {
        let chunk = n.min(VOCAB_CHUNK);
        println!("  W[{n}×{k}]{}", if chunk < n { format!(" in {chunk}-row chunks") } else { String::new() });
        for &ty in types {
            let k = k.next_multiple_of(ty.block_len());
            let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 / 17.0).collect();
            let dy: Vec<f32> = (0..m * chunk).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
            let (xb, dyb) = (gpu.upload("x", bytemuck::cast_slice(&x))?, gpu.upload("dy", bytemuck::cast_slice(&dy))?);
            let (y, dx) = (gpu.buffer("y", 4 * (m * chunk) as u64)?, gpu.buffer("dx", 4 * (m * k) as u64)?);
            let w = Weight::upload(gpu, "w", ty, n, k, &weight_bytes(ty, n, k))?;
            let kernel = forced.unwrap_or_else(|| MatmulKernel::choose(&gpu.batch(), m as u32));
            let runs = if n > 10_000 { 3 } else { 7 };
            let (w, xb, dyb, y, dx) = (&w, &xb, &dyb, &y, &dx);
            let forward = time_batches(gpu, runs, async |batch| {
                for start in (0..n).step_by(chunk) {
                    let rows = start..(start + chunk).min(n);
                    matmul_with(batch, kernel, xb, w, None, rows, y, chunk as u32, m as u32, false).await?;
                }
                Ok(())
            })
            .await?;
            // The lm_head's chunks accumulate into one dx, as in the training step.
            let grad = time_batches(gpu, runs, async |batch| {
                for start in (0..n).step_by(chunk) {
                    let rows = start..(start + chunk).min(n);
                    matmul_input_grad_with(batch, grad_kernel, dyb, chunk as u32, w, rows, dx, m as u32, start > 0).await?;
                }
                Ok(())
            })
            .await?;
            let gflops = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
            println!(
                "    {:5} k={k}: forward {kernel:?} {:6.1} GFLOP/s {:7.2} ms   input grad {grad_kernel:?} {:6.1} GFLOP/s {:7.2} ms ({:.0}% of forward)",
                ty.name(),
                gflops(forward),
                forward * 1e3,
                gflops(grad),
                grad * 1e3,
                100.0 * forward / grad
            );
        }
    }
    Ok(())
}

/// The forward at `shapes`, each next to numpy's sgemm.
async fn forward(gpu: &Gpu, forced: Option<MatmulKernel>, types: &[GgmlType], shapes: &[(usize, usize, usize)]) -> Result<(), GpuError> {
    for &(m, n, k) in shapes {
        let numpy = numpy_gflops(m, n, k);
        println!("\nX[{m}×{k}] · W[{n}×{k}]ᵀ   numpy sgemm: {}", numpy.map_or("n/a".into(), |g| format!("{g:.1} GFLOP/s")));
        // The lm_head shape's output (192 MiB) exceeds one binding: vocab chunks, as in
        // the model, all in one submit.
        let chunk = n.min((64 << 20) / (4 * m));
        let y = gpu.buffer("y", 4 * (m * chunk) as u64)?;
        for &ty in types {
            // K-quant rows are whole 256-value super-blocks: 576 becomes 768 for them.
            let k = k.next_multiple_of(ty.block_len());
            let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 / 17.0).collect();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
            let w = Weight::upload(gpu, "w", ty, n, k, &weight_bytes(ty, n, k))?;
            let kernel = forced.unwrap_or_else(|| MatmulKernel::choose(&gpu.batch(), m as u32));
            let runs = if m * n > 10_000_000 { 3 } else { 7 };
            // Decode matvecs take tens of µs: several per submit hide its fixed cost.
            let repeat = if m <= 4 { 20 } else { 1 };
            let mut times = Vec::new();
            for i in 0..runs + 1 {
                let mut batch = gpu.batch();
                for _ in 0..repeat {
                    for start in (0..n).step_by(chunk) {
                        let rows = start..(start + chunk).min(n);
                        matmul_with(&mut batch, kernel, &xb, &w, None, rows, &y, chunk as u32, m as u32, false).await?;
                    }
                }
                let start = Instant::now();
                batch.submit()?;
                gpu.finish().await?;
                // The first run compiles the pipeline on lavapipe.
                if i > 0 {
                    times.push(start.elapsed().as_secs_f64() / repeat as f64);
                }
            }
            let t = median(times);
            let gflops = 2.0 * (m * n * k) as f64 / t / 1e9;
            let ratio = numpy.map_or(String::new(), |g| format!("  {:.0}% of numpy", 100.0 * gflops / g));
            println!(
                "  {:5} k={k} {kernel:?}: {gflops:7.1} GFLOP/s  {:7.2} ms  {:6.1} GB/s weights{ratio}",
                ty.name(),
                t * 1e3,
                w.gpu_bytes() as f64 / t / 1e9
            );
        }
    }
    Ok(())
}
