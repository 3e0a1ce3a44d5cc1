//! The vocabulary-chunked cross-entropy against a CPU log-softmax cross-entropy and
//! finite differences: several chunks, a last chunk shorter than the others, a row
//! stride wider than the chunk, masked tokens.

mod gradcheck;

use classtune::gpu::{Buffer, Gpu, GpuError};
use classtune::kernels::cross_entropy::{
    cross_entropy_backward, cross_entropy_backward_cpu, cross_entropy_cpu, cross_entropy_finalize,
    cross_entropy_forward, VocabChunk, STATE_PER_ROW, TOTALS_LEN,
};
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
    /// dlogits [rows, vocab] reassembled from the chunks.
    dlogits: Vec<f32>,
}

/// Forward over all chunks, finalize, then the backward of every chunk, in one batch.
#[allow(clippy::too_many_arguments)]
async fn run(gpu: &Gpu, logits: &[f32], targets: &[u32], mask: &[u32], vocab: usize, chunk: usize, pad: usize, scale: f32) -> Result<Run, GpuError> {
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
    let lse = gpu.buffer("lse", 4 * rows as u64)?;
    let loss = gpu.buffer("loss", 4 * rows as u64)?;
    let totals = gpu.buffer("totals", 4 * TOTALS_LEN as u64)?;
    let mut batch = gpu.batch();
    for (i, (spec, buffer)) in chunks.iter().enumerate() {
        cross_entropy_forward(&mut batch, buffer, &tb, &state, *spec, i == 0).await?;
    }
    cross_entropy_finalize(&mut batch, &state, &mb, &lse, &loss, &totals, rows as u32).await?;
    for (spec, buffer) in &chunks {
        cross_entropy_backward(&mut batch, buffer, &tb, &mb, &lse, &totals, *spec, scale).await?;
    }
    batch.submit()?;
    let mut dlogits = vec![0.0; rows * vocab];
    for (spec, buffer) in &chunks {
        let data = gpu.read_f32_prefix(buffer, rows * stride).await?;
        for t in 0..rows {
            for c in 0..spec.cols as usize {
                dlogits[t * vocab + spec.col_start as usize + c] = data[t * stride + c];
            }
            for c in spec.cols as usize..stride {
                assert!(data[t * stride + c].is_nan(), "padding column {c} of row {t} was written");
            }
        }
    }
    Ok(Run {
        lse: gpu.read_f32_prefix(&lse, rows).await?,
        loss: gpu.read_f32_prefix(&loss, rows).await?,
        totals: gpu.read_f32_prefix(&totals, TOTALS_LEN as usize).await?,
        dlogits,
    })
}

#[allow(clippy::too_many_arguments)]
fn check(what: &str, r: &Run, logits: &[f32], targets: &[u32], mask: &[u32], vocab: usize, scale: f32, fd: bool) {
    let cpu = cross_entropy_cpu(logits, targets, mask, vocab);
    let rows = targets.len();
    // lse of masked rows is computed too (cheap, and harmless).
    assert_close(&format!("{what} lse"), &r.lse, &cpu.lse, 1e-5, 1e-5);
    assert_close(&format!("{what} loss"), &r.loss, &cpu.loss, 2e-5, 1e-5);
    let totals = [cpu.loss.iter().sum(), cpu.count as f64, cpu.mean, if cpu.count > 0 { 1.0 / cpu.count as f64 } else { 0.0 }];
    assert_close(&format!("{what} totals"), &r.totals, &totals, 1e-4, 1e-5);
    let want = cross_entropy_backward_cpu(logits, targets, mask, vocab, scale as f64);
    assert_close(&format!("{what} dlogits vs cpu"), &r.dlogits, &want, 1e-7, 1e-4);
    if fd {
        let x: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let mean = |z: &[f64]| {
            let mut sum = 0.0;
            let mut count = 0;
            for t in 0..rows {
                if mask[t] == 0 {
                    continue;
                }
                let row = &z[t * vocab..(t + 1) * vocab];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                sum += lse - row[targets[t] as usize];
                count += 1;
            }
            if count == 0 { 0.0 } else { scale as f64 * sum / count as f64 }
        };
        let fd = finite_diff(&x, 1e-6, mean);
        assert_close(&format!("{what} dlogits vs finite differences"), &r.dlogits, &fd, 1e-7, 1e-4);
    }
}

#[test]
fn chunked_cross_entropy_matches_cpu_and_finite_differences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(31);
        // (rows, vocab, chunk, padding columns, scale, masked rows, logit spread, FD)
        let cases = [
            (7usize, 1001usize, 384usize, 0usize, 1.0f32, vec![2usize, 5], 4.0f32, true),
            (5, 1000, 1000, 0, 0.5, vec![], 4.0, true), // one chunk
            (3, 513, 256, 13, 1.0, vec![1], 30.0, true),  // wide logits, strided rows, last chunk of 1 column
            (1, 37, 5, 3, 1.0, vec![], 4.0, true),         // chunks narrower than a workgroup
            (9, 40_009, 16_384, 0, 0.25, vec![0, 8], 8.0, false),
            (4, 300, 128, 0, 1.0, vec![0, 1, 2, 3], 4.0, false), // everything masked: zero loss and gradient
        ];
        for (rows, vocab, chunk, pad, scale, masked, spread, fd) in cases {
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
            let r = run(&gpu, &logits, &targets, &mask, vocab, chunk, pad, scale).await?;
            let what = format!("rows {rows} vocab {vocab} chunk {chunk}");
            check(&what, &r, &logits, &targets, &mask, vocab, scale, fd);
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
        let r = run(&gpu, &logits, &targets, &mask, vocab, 300, 0, 1.0).await?;
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
        let mut batch = gpu.batch();
        let too_long = VocabChunk { rows: 10, cols: 11, col_start: 0, stride: 11 };
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &state, too_long, true).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let narrow_stride = VocabChunk { rows: 10, cols: 10, col_start: 0, stride: 9 };
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &state, narrow_stride, true).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        let result = cross_entropy_forward(&mut batch, &logits, &targets, &logits, VocabChunk::dense(10, 0, 10), true).await;
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        Ok(())
    })
}
