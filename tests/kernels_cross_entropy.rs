//! The vocabulary-chunked cross-entropy against a CPU log-softmax cross-entropy, and its
//! one-pass gradient through the lm_head against a CPU reference and finite differences:
//! several chunks, a last chunk shorter than the others, a row stride wider than the
//! chunk, masked tokens, chunks whose running max grows and shrinks.

mod gradcheck;

use classtune::gguf::GgmlType;
use classtune::gpu::{Buffer, Gpu, GpuError};
use classtune::kernels::cross_entropy::{
    cross_entropy_cpu, cross_entropy_finalize, cross_entropy_forward, cross_entropy_input_grad, cross_entropy_input_grad_cpu,
    cross_entropy_rescale, VocabChunk, STATE_PER_ROW, TOTALS_LEN,
};
use classtune::kernels::matmul::{embedding, matmul_input_grad, matmul_rows, Weight};
use gradcheck::{assert_close, finite_diff, random, upload, upload_u32};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// One vocabulary chunk's logits as `matmul_rows` would leave them: [rows, stride].
fn chunk_of(logits: &[f32], vocab: usize, rows: usize, start: usize, cols: usize, stride: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; rows * stride]; // padding columns must never be read
    for t in 0..rows {
        out[t * stride..t * stride + cols].copy_from_slice(&logits[t * vocab + start..t * vocab + start + cols]);
    }
    out
}

struct Run {
    lse: Vec<f32>,
    loss: Vec<f32>,
    totals: Vec<f32>,
}

/// Forward over all chunks and finalize, in one batch.
async fn run(gpu: &Gpu, logits: &[f32], targets: &[u32], mask: &[u32], vocab: usize, chunk: usize, pad: usize) -> Result<Run, GpuError> {
    let rows = targets.len();
    let starts: Vec<usize> = (0..vocab).step_by(chunk).collect();
    let stride = chunk + pad;
    let chunks: Vec<(VocabChunk, Buffer)> = starts
        .iter()
        .map(|&s| {
            let cols = chunk.min(vocab - s);
            let data = chunk_of(logits, vocab, rows, s, cols, stride);
            let spec = VocabChunk { rows: rows as u32, cols: cols as u32, col_start: s as u32, stride: stride as u32 };
            upload(gpu, "logits_chunk", &data).map(|b| (spec, b))
        })
        .collect::<Result<_, _>>()?;
    let tb = upload_u32(gpu, "targets", targets)?;
    let mb = upload_u32(gpu, "mask", mask)?;
    let state = gpu.buffer("state", 4 * STATE_PER_ROW as u64 * rows as u64)?;
    let factor = gpu.buffer("factor", 4 * rows as u64)?;
    let lse = gpu.buffer("lse", 4 * rows as u64)?;
    let loss = gpu.buffer("loss", 4 * rows as u64)?;
    let totals = gpu.buffer("totals", 4 * TOTALS_LEN as u64)?;
    let mut batch = gpu.batch();
    for (i, (spec, buffer)) in chunks.iter().enumerate() {
        cross_entropy_forward(&mut batch, buffer, &tb, &state, &factor, *spec, i == 0, false).await?;
    }
    cross_entropy_finalize(&mut batch, &state, &mb, &lse, &loss, &totals, rows as u32).await?;
    batch.submit()?;
    for (spec, buffer) in &chunks {
        let data = gpu.read_f32_prefix(buffer, rows * stride).await?;
        for t in 0..rows {
            for c in spec.cols as usize..stride {
                assert!(data[t * stride + c].is_nan(), "padding column {c} of row {t} was written");
            }
        }
    }
    Ok(Run {
        lse: gpu.read_f32_prefix(&lse, rows).await?,
        loss: gpu.read_f32_prefix(&loss, rows).await?,
        totals: gpu.read_f32_prefix(&totals, TOTALS_LEN as usize).await?,
    })
}

fn check(what: &str, r: &Run, logits: &[f32], targets: &[u32], mask: &[u32], vocab: usize) {
    let cpu = cross_entropy_cpu(logits, targets, mask, vocab);
    // lse of masked rows is computed too (cheap, and harmless).
    assert_close(&format!("{what} lse"), &r.lse, &cpu.lse, 1e-5, 1e-5);
    assert_close(&format!("{what} loss"), &r.loss, &cpu.loss, 2e-5, 1e-5);
    let totals = [cpu.loss.iter().sum(), cpu.count as f64, cpu.mean, if cpu.count > 0 { 1.0 / cpu.count as f64 } else { 0.0 }];
    assert_close(&format!("{what} totals"), &r.totals, &totals, 1e-4, 1e-5);
}

#[test]
fn chunked_cross_entropy_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(31);
        // (rows, vocab, chunk, padding columns, masked rows, logit spread)
        let cases = [
            (7usize, 1001usize, 384usize, 0usize, vec![2usize, 5], 4.0f32),
            (5, 1000, 1000, 0, vec![], 4.0), // one chunk
            (3, 513, 256, 13, vec![1], 30.0),  // wide logits, strided rows, last chunk of 1 column
            (1, 37, 5, 3, vec![], 4.0),         // chunks narrower than a workgroup
            (9, 40_009, 16_384, 0, vec![0, 8], 8.0),
            (4, 300, 128, 0, vec![0, 1, 2, 3], 4.0), // everything masked: zero loss
        ];
        for (rows, vocab, chunk, pad, masked, spread) in cases {
            let mut logits = random(&mut rng, rows * vocab, -spread, spread);
            let targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..vocab as u32)).collect();
            let mut mask = vec![1u32; rows];
            for &t in &masked {
                mask[t] = 0;
            }
            // One row's target is the largest logit, one the very last column.
            logits[targets[0] as usize] = spread + 1.0;
            let mut targets = targets;
            if rows > 1 {
                targets[rows - 1] = vocab as u32 - 1;
            }
            let r = run(&gpu, &logits, &targets, &mask, vocab, chunk, pad).await?;
            let what = format!("rows {rows} vocab {vocab} chunk {chunk}");
            check(&what, &r, &logits, &targets, &mask, vocab);
        }
        Ok(())
    })
}

/// dx of `scale · mean loss` through an f32 lm_head W [vocab, dim], in one pass over the
/// chunks as training runs it (kernels/cross_entropy.rs, step by step).
#[allow(clippy::too_many_arguments)]
async fn lm_head_grad(
    gpu: &Gpu,
    x: &[f32],
    w: &[f32],
    targets: &[u32],
    mask: &[u32],
    dim: usize,
    chunk: usize,
    scale: f32,
) -> Result<Vec<f32>, GpuError> {
    let (rows, vocab) = (targets.len(), w.len() / dim);
    let weight = Weight::upload(gpu, "w", GgmlType::F32, vocab, dim, bytemuck::cast_slice(w))?;
    let xb = upload(gpu, "x", x)?;
    let (tb, mb) = (upload_u32(gpu, "targets", targets)?, upload_u32(gpu, "mask", mask)?);
    let f = |label: &str, n: usize| gpu.buffer(label, 4 * n.max(4) as u64);
    let (logits, state, factor) = (f("logits", rows * chunk)?, f("state", 4 * rows)?, f("factor", rows)?);
    let (lse, loss, totals) = (f("lse", rows)?, f("loss", rows)?, f("totals", 4)?);
    let (dx, target_rows) = (f("dx", rows * dim)?, f("target_rows", rows * dim)?);
    let (t, d) = (rows as u32, dim as u32);
    let mut batch = gpu.batch();
    for (n, start) in (0..vocab).step_by(chunk).enumerate() {
        let cols = chunk.min(vocab - start);
        matmul_rows(&mut batch, &xb, &weight, start, cols, &logits, cols as u32, t).await?;
        let spec = VocabChunk::dense(t, start as u32, cols as u32);
        cross_entropy_forward(&mut batch, &logits, &tb, &state, &factor, spec, n == 0, true).await?;
        if n > 0 {
            cross_entropy_rescale(&mut batch, &factor, &dx, t, d).await?;
        }
        matmul_input_grad(&mut batch, &logits, cols as u32, &weight, start..start + cols, &dx, t, n > 0).await?;
    }
    cross_entropy_finalize(&mut batch, &state, &mb, &lse, &loss, &totals, t).await?;
    embedding(&mut batch, &weight, &tb, &target_rows, t).await?;
    cross_entropy_input_grad(&mut batch, &dx, &state, &mb, &target_rows, &totals, t, d, scale).await?;
    batch.submit()?;
    gpu.read_f32_prefix(&dx, rows * dim).await
}

#[test]
fn one_pass_lm_head_gradient_matches_cpu_and_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(33);
        // (rows, vocab, dim, chunk, scale, masked rows, logit spread, FD)
        let cases = [
            (7usize, 1001usize, 16usize, 384usize, 1.0f32, vec![2usize, 5], 1.0f32, true),
            (5, 1000, 8, 1000, 0.5, vec![], 1.0, true), // one chunk: no rescale
            (3, 513, 24, 256, 1.0, vec![1], 6.0, true), // wide logits, last chunk of 1 column
            (2, 40_009, 8, 16_384, 0.25, vec![0], 2.0, false),
            (4, 300, 8, 128, 1.0, vec![0, 1, 2, 3], 1.0, false), // everything masked: zero gradient
        ];
        for (rows, vocab, dim, chunk, scale, masked, spread, fd) in cases {
            let x = random(&mut rng, rows * dim, -spread, spread);
            let mut w = random(&mut rng, vocab * dim, -1.0, 1.0);
            // The running max grows in the last chunk, so the sums before it are rescaled.
            for j in 0..dim {
                w[(vocab - 1) * dim + j] = 2.0 * x[j].signum();
            }
            let targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..vocab as u32)).collect();
            let mut mask = vec![1u32; rows];
            for &t in &masked {
                mask[t] = 0;
            }
            let what = format!("rows {rows} vocab {vocab} dim {dim} chunk {chunk}");
            let got = lm_head_grad(&gpu, &x, &w, &targets, &mask, dim, chunk, scale).await?;
            let want = cross_entropy_input_grad_cpu(&x, &w, &targets, &mask, dim, scale as f64);
            assert_close(&format!("{what} dx vs cpu"), &got, &want, 1e-6, 1e-4);
            if fd {
                let wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
                let mean = |xs: &[f64]| {
                    let (mut sum, mut count) = (0.0, 0);
                    for t in (0..rows).filter(|&t| mask[t] != 0) {
                        let z: Vec<f64> = (0..vocab).map(|v| (0..dim).map(|j| xs[t * dim + j] * wd[v * dim + j]).sum()).collect();
                        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        sum += m + z.iter().map(|v| (v - m).exp()).sum::<f64>().ln() - z[targets[t] as usize];
                        count += 1;
                    }
                    if count == 0 { 0.0 } else { scale as f64 * sum / count as f64 }
                };
                let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let fd = finite_diff(&xd, 1e-6, mean);
                assert_close(&format!("{what} dx vs finite differences"), &got, &fd, 1e-6, 1e-4);
            }
        }
        Ok(())
    })
}

#[test]
fn unreachable_targets_give_nan_loss() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(32);
        let (rows, vocab) = (3usize, 700usize);
        let logits = random(&mut rng, rows * vocab, -5.0, 5.0);
        // Row 1's target is past the vocabulary, row 2's too but it is masked.
        let targets = [17u32, 700, 9999];
        let mask = [1u32, 1, 0];
        let r = run(&gpu, &logits, &targets, &mask, vocab, 300, 0).await?;
        assert!(r.loss[1].is_nan(), "unmasked row with an unreachable target: loss {}", r.loss[1]);
        assert_eq!(r.loss[2], 0.0);
        let cpu = cross_entropy_cpu(&logits, &[17, 0, 0], &[1, 0, 0], vocab);
        assert_close("row 0 loss", &r.loss[..1], &cpu.loss[..1], 2e-5, 1e-5);
        Ok(())
    })
}

#[test]
fn cross_entropy_rejects_bad_chunks() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let logits = gpu.buffer("logits", 4 * 100)?;
        let targets = gpu.buffer("targets", 4 * 10)?;
        let state = gpu.buffer("state", 4 * 40)?;
        let factor = gpu.buffer("factor", 4 * 10)?;
        let mut batch = gpu.batch();
        let too_long = VocabChunk { rows: 10, cols: 11, col_start: 0, stride: 11 };
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &state, &factor, too_long, true, false).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let narrow_stride = VocabChunk { rows: 10, cols: 10, col_start: 0, stride: 9 };
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &state, &factor, narrow_stride, true, false).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &logits, &factor, VocabChunk::dense(10, 0, 10), true, false).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        Ok(())
    })
}
