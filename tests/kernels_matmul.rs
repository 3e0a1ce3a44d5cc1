//! Matmul and embedding on GGUF weights against the plain-loop CPU references, for every
//! weight type and every kernel shape, at odd sizes.

use classtune::gguf::dequant::{dequantize, quantize};
use classtune::gguf::GgmlType;
use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::lora::{LoraKernel, LoraShape, View};
use classtune::kernels::matmul::{
    embedding, embedding_cpu, gpu_row_bytes, matmul, matmul_add, matmul_at, matmul_cpu, matmul_lora, matmul_rows, matmul_swiglu, matmul_with, LoraUp,
    MatmulKernel, Params, Weight,
};
use classtune::kernels::swiglu::swiglu_forward_cpu;
mod random_weights;

use rand::{rngs::StdRng, Rng, SeedableRng};
use random_weights::{gpu, normal, random_weight};

const TYPES: [GgmlType; 8] = GgmlType::ALL;

/// |got − want| ≤ 1e-6 + 1e-5 · Σ|x·w| (+ relative slack), reporting the first miss.
fn check(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for i in 0..want.len() {
        let tol = 1e-6 + 2e-5 * scale[i] + 1e-5 * want[i].abs();
        assert!((got[i] - want[i]).abs() <= tol, "{what}: index {i}: gpu {} vs cpu {} (tol {tol})", got[i], want[i]);
    }
}

fn kernels(gpu: &Gpu) -> Vec<MatmulKernel> {
    let mut all = vec![MatmulKernel::Tiled, MatmulKernel::Vector, MatmulKernel::LaneVector];
    if gpu.has_subgroups() {
        all.push(MatmulKernel::SubgroupTiled);
    }
    all
}

#[test]
fn params_match_the_shader() {
    // 16 u32 fields in shaders/matmul.wgsl `Params` (and matvec.wgsl's).
    assert_eq!(std::mem::size_of::<Params>(), 64);
}

/// A LoRA projection's output, y (+)= x·Wᵀ + scale · u·Bᵀ, against the CPU for the
/// block tile's fused adapter columns (F32, Q4_1, Q8_0 at prefill token counts, ranks in
/// whole vec4s) and the fallback (a K-quant, decode token counts, rank 6, B off a vec4).
/// B sits between NaNs and u is followed by NaNs: the fused term's reads past rank r
/// (r = 4, 12: half of the last 8-column step) must be masked, not multiplied by zero.
#[test]
fn matmul_lora_adds_the_adapter_term() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(29);
    for ty in [GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K] {
        let (n, k) = (83, if ty.block_len() == 256 { 256 } else { 96 });
        let (bytes, wv) = random_weight(&mut rng, ty, n, k);
        let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
        let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
        for (i, (tokens, rank, b_off)) in [(40usize, 16usize, 4usize), (121, 12, 0), (5, 4, 8), (3, 16, 4), (9, 6, 4), (9, 8, 2)].into_iter().enumerate() {
            let x = normal(&mut rng, tokens * k, 1.0);
            let u = normal(&mut rng, tokens * rank, 1.0);
            let b = normal(&mut rng, n * rank, 0.5);
            let scale = 0.75f32;
            let mut b_buf = vec![f32::NAN; b_off + n * rank + 8];
            b_buf[b_off..b_off + n * rank].copy_from_slice(&b);
            let mut u_buf = u.clone();
            u_buf.extend([f32::NAN; 8]);
            let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let mut bound = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k);
            let mut want = matmul_cpu(&x, &wv, None, tokens, n, k);
            for t in 0..tokens {
                for o in 0..n {
                    let term: f32 = (0..rank).map(|j| u[t * rank + j] * b[o * rank + j]).sum();
                    let size: f32 = (0..rank).map(|j| (u[t * rank + j] * b[o * rank + j]).abs()).sum();
                    want[t * n + o] += scale * term;
                    bound[t * n + o] += scale * size;
                }
            }
            let accumulate = i % 2 == 1;
            let y0 = normal(&mut rng, tokens * n, 1.0);
            if accumulate {
                want.iter_mut().zip(&y0).for_each(|(w, y)| *w += y);
                bound.iter_mut().zip(&y0).for_each(|(s, y)| *s += y.abs());
            }
            let (xb, ub, bb) = (gpu.upload("x", bytemuck::cast_slice(&x))?, gpu.upload("u", bytemuck::cast_slice(&u_buf))?, gpu.upload("b", bytemuck::cast_slice(&b_buf))?);
            let y = gpu.upload("y", bytemuck::cast_slice(&y0))?;
            let shape = LoraShape { tokens: tokens as u32, d_in: k as u32, d_out: n as u32, rank: rank as u32, scale, kernel: LoraKernel::choose(&gpu) };
            let up = LoraUp { u: &ub, b: View::at(&bb, b_off as u32), shape };
            let mut batch = gpu.batch();
            pollster::block_on(matmul_lora(&mut batch, &xb, &w, None, &y, tokens as u32, accumulate, up))?;
            batch.submit()?;
            let got = pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?;
            check(&format!("matmul_lora {ty} tokens={tokens} rank={rank} b_off={b_off} accumulate={accumulate}"), &got, &want, &bound);
            // An adapter shaped for another projection is refused by both paths.
            let wrong = LoraUp { shape: LoraShape { d_out: n as u32 + 1, ..shape }, ..up };
            let err = pollster::block_on(matmul_lora(&mut gpu.batch(), &xb, &w, None, &y, tokens as u32, accumulate, wrong)).unwrap_err();
            assert!(err.to_string().contains(&format!("maps {k}→{}", n + 1)), "{err}");
            let nan = LoraUp { shape: LoraShape { scale: f32::NAN, ..shape }, ..up };
            let err = pollster::block_on(matmul_lora(&mut gpu.batch(), &xb, &w, None, &y, tokens as u32, accumulate, nan)).unwrap_err();
            assert!(err.to_string().contains("scale NaN"), "{err}");
        }
    }
    Ok(())
}

#[test]
fn matmul_every_type_kernel_and_shape() -> Result<(), GpuError> {
    let gpu = gpu()?;
    println!("{}", gpu.describe());
    let mut rng = StdRng::seed_from_u64(7);
    for ty in TYPES {
        // Float types also K = 40: rows that end inside a 32-value step.
        let shapes: Vec<(usize, usize)> = match ty.block_len() {
            256 => vec![(97, 512), (1000, 256)],
            32 => vec![(97, 160), (1000, 96)],
            _ => vec![(97, 160), (1000, 96), (13, 40)],
        };
        for (n, k) in shapes {
            let (bytes, wv) = random_weight(&mut rng, ty, n, k);
            let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
            let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
            let bias_v = normal(&mut rng, n, 1.0);
            let bias = gpu.upload("bias", bytemuck::cast_slice(&bias_v))?;
            // 121 tokens: the block tile's 64-token tiles, the second one part empty.
            for tokens in [1usize, 2, 4, 7, 33, 121] {
                let x = normal(&mut rng, tokens * k, 1.0);
                let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
                let scale = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k);
                let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
                for (i, kernel) in kernels(&gpu).into_iter().enumerate() {
                    // The lane-per-row kernel is for decoding; 33 tokens already cover
                    // its storage-x path, 121 would only cost test time.
                    if kernel == MatmulKernel::LaneVector && tokens > 33 {
                        continue;
                    }
                    // Every kernel runs both epilogues over the token counts: writing y
                    // with a bias, and adding onto a random y0 without one (each pair is
                    // a pipeline of its own: EPILOGUE and BIAS are constants).
                    let with_bias = (i + tokens) % 2 == 0;
                    let accumulate = !with_bias;
                    let b = with_bias.then_some(&bias);
                    let mut want = matmul_cpu(&x, &wv, with_bias.then_some(&bias_v[..]), tokens, n, k);
                    let y0 = normal(&mut rng, tokens * n, 1.0);
                    let y = gpu.upload("y", bytemuck::cast_slice(&y0))?;
                    let mut scale = scale.clone();
                    if accumulate {
                        want.iter_mut().zip(&y0).for_each(|(w, y)| *w += y);
                        scale.iter_mut().zip(&y0).for_each(|(s, y)| *s += y.abs());
                    }
                    let mut batch = gpu.batch();
                    let (rows, stride, t) = (0..n, n as u32, tokens as u32);
                    pollster::block_on(matmul_with(&mut batch, kernel, &xb, &w, b, rows, &y, stride, t, accumulate))?;
                    batch.submit()?;
                    let got = pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?;
                    let what = format!("{ty} {kernel:?} n={n} k={k} tokens={tokens} bias={with_bias} accumulate={accumulate}");
                    check(&what, &got, &want, &scale);
                }
            }
        }
    }
    Ok(())
}

#[test]
fn default_entry_points_and_row_range() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(11);
    let (n, k, tokens) = (301, 64, 9);
    let (bytes, wv) = random_weight(&mut rng, GgmlType::Q4_1, n, k);
    let w = Weight::upload(&gpu, "w", GgmlType::Q4_1, n, k, &bytes)?;
    let x = normal(&mut rng, tokens * k, 1.0);
    let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
    let full = matmul_cpu(&x, &wv, None, tokens, n, k);
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
    let scale_full = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k);
    let y = gpu.buffer("y", 4 * (tokens * n) as u64)?;
    // matmul_add onto a residual: y2 = y0 + x·Wᵀ, for decode (1 token) and prefill.
    let y0 = normal(&mut rng, tokens * n, 1.0);
    let y2 = gpu.upload("y2", bytemuck::cast_slice(&y0))?;
    let y1 = gpu.upload("y1", bytemuck::cast_slice(&y0[..n]))?;
    let (start, count, stride) = (13usize, 200usize, 256usize);
    let yr = gpu.buffer("yr", 4 * (tokens * stride) as u64)?;
    let mut batch = gpu.batch();
    pollster::block_on(matmul(&mut batch, &xb, &w, None, &y, tokens as u32))?;
    pollster::block_on(matmul_add(&mut batch, &xb, &w, None, &y2, tokens as u32))?;
    pollster::block_on(matmul_add(&mut batch, &xb, &w, None, &y1, 1))?;
    pollster::block_on(matmul_rows(&mut batch, &xb, &w, start, count, &yr, stride as u32, tokens as u32))?;
    batch.submit()?;
    check("matmul", &pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?, &full, &scale_full);
    let plus = |v: &[f32]| -> Vec<f32> { v.iter().zip(&y0).map(|(a, b)| a + b).collect() };
    let scale_plus: Vec<f32> = scale_full.iter().zip(&y0).map(|(a, b)| a + b.abs()).collect();
    check("matmul_add", &pollster::block_on(gpu.read_f32_prefix(&y2, tokens * n))?, &plus(&full), &scale_plus);
    check("matmul_add 1 token", &pollster::block_on(gpu.read_f32_prefix(&y1, n))?, &plus(&full)[..n], &scale_plus[..n]);
    let got = pollster::block_on(gpu.read_f32_prefix(&yr, tokens * stride))?;
    let pick = |v: &[f32]| -> Vec<f32> { (0..tokens).flat_map(|t| v[t * n + start..t * n + start + count].to_vec()).collect() };
    let got_rows: Vec<f32> = (0..tokens).flat_map(|t| got[t * stride..t * stride + count].to_vec()).collect();
    check("matmul_rows", &got_rows, &pick(&full), &pick(&scale_full));
    Ok(())
}

/// matmul_at writes rows y_row.. of a larger buffer and leaves the others alone, for a
/// decode (matrix-vector) and a prefill (tiled) token count.
#[test]
fn matmul_at_writes_its_rows_only() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(17);
    let (n, k) = (75, 96);
    let (bytes, wv) = random_weight(&mut rng, GgmlType::Q4_1, n, k);
    let w = Weight::upload(&gpu, "w", GgmlType::Q4_1, n, k, &bytes)?;
    let bias_v = normal(&mut rng, n, 1.0);
    let bias = gpu.upload("bias", bytemuck::cast_slice(&bias_v))?;
    let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
    for (tokens, y_row) in [(1usize, 5usize), (3, 0), (9, 4)] {
        let total = y_row + tokens + 2;
        let x = normal(&mut rng, tokens * k, 1.0);
        let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let y0 = normal(&mut rng, total * n, 1.0);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
        let y = gpu.upload("y", bytemuck::cast_slice(&y0))?;
        let mut batch = gpu.batch();
        pollster::block_on(matmul_at(&mut batch, &xb, &w, Some(&bias), &y, y_row as u32, tokens as u32))?;
        batch.submit()?;
        let mut want = y0.clone();
        want[y_row * n..(y_row + tokens) * n].copy_from_slice(&matmul_cpu(&x, &wv, Some(&bias_v), tokens, n, k));
        let mut scale: Vec<f32> = y0.iter().map(|v| v.abs()).collect();
        scale[y_row * n..(y_row + tokens) * n].copy_from_slice(&matmul_cpu(&abs_x, &abs_w, None, tokens, n, k));
        let got = pollster::block_on(gpu.read_f32_prefix(&y, total * n))?;
        check(&format!("matmul_at tokens={tokens} y_row={y_row}"), &got, &want, &scale);
    }
    Ok(())
}

/// The up projection with SwiGLU in its epilogue equals matmul, then swiglu on the CPU,
/// for decode (matrix-vector) and prefill (tiled) token counts and every weight type.
#[test]
fn matmul_swiglu_is_matmul_then_swiglu() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(19);
    for ty in TYPES {
        let (n, k) = (83, if ty.block_len() == 256 { 256 } else { 96 });
        let (bytes, wv) = random_weight(&mut rng, ty, n, k);
        let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
        let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
        for tokens in [1usize, 3, 9] {
            let x = normal(&mut rng, tokens * k, 1.0);
            let gate = normal(&mut rng, tokens * n, 2.0);
            let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let up = matmul_cpu(&x, &wv, None, tokens, n, k);
            let want = swiglu_forward_cpu(&gate, &up);
            let silu: Vec<f32> = swiglu_forward_cpu(&gate, &vec![1.0; gate.len()]);
            let scale: Vec<f32> = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k).iter().zip(&silu).map(|(s, g)| s * g.abs()).collect();
            let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
            let gb = gpu.upload("gate", bytemuck::cast_slice(&gate))?;
            let y = gpu.buffer("y", 4 * (tokens * n) as u64)?;
            let mut batch = gpu.batch();
            pollster::block_on(matmul_swiglu(&mut batch, &xb, &w, &gb, &y, tokens as u32))?;
            batch.submit()?;
            let got = pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?;
            check(&format!("matmul_swiglu {ty} tokens={tokens}"), &got, &want, &scale);
        }
    }
    Ok(())
}

#[test]
fn embedding_every_type() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(3);
    for ty in TYPES {
        let (rows, cols) = (53, if ty.block_len() == 256 { 512 } else { 96 });
        let (bytes, wv) = random_weight(&mut rng, ty, rows, cols);
        let w = Weight::upload(&gpu, "w", ty, rows, cols, &bytes)?;
        let ids: Vec<u32> = (0..37).map(|i| if i == 5 { rows as u32 - 1 } else { rng.random_range(0..rows as u32) }).collect();
        let idb = gpu.upload("ids", bytemuck::cast_slice(&ids))?;
        let out = gpu.buffer("out", 4 * (ids.len() * cols) as u64)?;
        let mut batch = gpu.batch();
        pollster::block_on(embedding(&mut batch, &w, &idb, &out, ids.len() as u32))?;
        batch.submit()?;
        let got = pollster::block_on(gpu.read_f32_prefix(&out, ids.len() * cols))?;
        let want = embedding_cpu(&wv, &ids, cols);
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            assert!((g - e).abs() <= 1e-6 * e.abs(), "{ty} embedding index {i}: gpu {g} vs cpu {e}");
        }
    }
    Ok(())
}

#[test]
fn chunked_weights_give_the_same_results() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(5);
    let (n, k, tokens) = (203, 64, 5);
    for ty in [GgmlType::Q8_0, GgmlType::F16] {
        let (bytes, wv) = random_weight(&mut rng, ty, n, k);
        // 23 rows per chunk: boundaries fall inside workgroup tiles and the row range.
        let row_bytes = gpu_row_bytes(ty, k);
        let w = Weight::upload_chunked(&gpu, "w", ty, n, k, &bytes, (23 * row_bytes) as u64)?;
        assert_eq!(w.chunk_count(), n.div_ceil(23), "{ty}");
        let x = normal(&mut rng, tokens * k, 1.0);
        let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
        let want = matmul_cpu(&x, &wv, None, tokens, n, k);
        let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
        let scale = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k);
        let (start, count) = (40usize, 100usize);
        let y = gpu.buffer("y", 4 * (tokens * n) as u64)?;
        let yr = gpu.buffer("yr", 4 * (tokens * count) as u64)?;
        let ids: Vec<u32> = vec![0, 22, 23, 202, 100];
        let idb = gpu.upload("ids", bytemuck::cast_slice(&ids))?;
        let e = gpu.buffer("e", 4 * (ids.len() * k) as u64)?;
        let mut batch = gpu.batch();
        for kernel in kernels(&gpu) {
            pollster::block_on(matmul_with(&mut batch, kernel, &xb, &w, None, 0..n, &y, n as u32, tokens as u32, false))?;
        }
        pollster::block_on(matmul_rows(&mut batch, &xb, &w, start, count, &yr, count as u32, tokens as u32))?;
        pollster::block_on(embedding(&mut batch, &w, &idb, &e, ids.len() as u32))?;
        batch.submit()?;
        check(&format!("{ty} chunked"), &pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?, &want, &scale);
        let got = pollster::block_on(gpu.read_f32_prefix(&yr, tokens * count))?;
        let pick = |v: &[f32]| -> Vec<f32> { (0..tokens).flat_map(|t| v[t * n + start..t * n + start + count].to_vec()).collect() };
        check(&format!("{ty} chunked rows"), &got, &pick(&want), &pick(&scale));
        assert_eq!(pollster::block_on(gpu.read_f32_prefix(&e, ids.len() * k))?, embedding_cpu(&wv, &ids, k), "{ty} chunked embedding");
    }
    Ok(())
}

#[test]
fn weight_over_the_binding_limit_splits() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let limit = gpu.limits().max_storage_buffer_binding_size;
    // Q8_0 rows of 1024 values take 1088 GPU bytes; 130_000 rows are 135 MiB.
    let (n, k) = (130_000usize, 1024usize);
    let mut values = vec![0f32; k];
    values[3] = 1.0;
    let row = quantize(GgmlType::Q8_0, &values).expect("quantize");
    let mut bytes = Vec::with_capacity(n * row.len());
    for _ in 0..n {
        bytes.extend_from_slice(&row);
    }
    let w = Weight::upload(&gpu, "big", GgmlType::Q8_0, n, k, &bytes)?;
    drop(bytes);
    assert!(w.gpu_bytes() > limit && w.chunk_count() == 2, "{} bytes in {} chunks", w.gpu_bytes(), w.chunk_count());
    let x: Vec<f32> = (0..k).map(|i| i as f32).collect();
    let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
    let y = gpu.buffer("y", 4 * n as u64)?;
    let mut batch = gpu.batch();
    pollster::block_on(matmul(&mut batch, &xb, &w, None, &y, 1))?;
    batch.submit()?;
    let got = pollster::block_on(gpu.read_f32_prefix(&y, n))?;
    let want = 3.0 * dequantize(GgmlType::Q8_0, &row, k).expect("dequantize")[3];
    if let Some(i) = got.iter().position(|v| *v != want) {
        panic!("row {i}: {} instead of {want}", got[i]);
    }
    Ok(())
}

#[test]
fn bad_shapes_are_errors() -> Result<(), GpuError> {
    let gpu = gpu()?;
    assert!(Weight::upload(&gpu, "w", GgmlType::Q4_0, 2, 48, &[0; 72]).is_err(), "cols not whole blocks");
    assert!(Weight::upload(&gpu, "w", GgmlType::Q4_0, 2, 64, &[0; 71]).is_err(), "wrong byte count");
    let w = Weight::upload(&gpu, "w", GgmlType::F32, 4, 8, &[0; 128])?;
    let x = gpu.buffer("x", 4 * 8)?;
    let y = gpu.buffer("y", 4 * 4)?;
    let mut batch = gpu.batch();
    let too_many_tokens = pollster::block_on(matmul(&mut batch, &x, &w, None, &y, 2));
    assert!(matches!(too_many_tokens, Err(GpuError::Shape { .. })), "{too_many_tokens:?}");
    let past_end = pollster::block_on(matmul_rows(&mut batch, &x, &w, 2, 3, &y, 4, 1));
    assert!(matches!(past_end, Err(GpuError::Shape { .. })), "{past_end:?}");
    Ok(())
}

#[test]
fn portable_matvec_every_type() -> Result<(), GpuError> {
    // The browser path: no subgroups, so the matrix-vector kernel reduces through
    // workgroup memory; rows 97 leave the last workgroup partly empty.
    let gpu = pollster::block_on(Gpu::new(GpuOptions { subgroups: false, ..GpuOptions::default() }))?;
    assert!(!gpu.has_subgroups());
    let mut rng = StdRng::seed_from_u64(13);
    for ty in TYPES {
        let (n, k) = (97, if ty.block_len() == 256 { 512 } else { 160 });
        let (bytes, wv) = random_weight(&mut rng, ty, n, k);
        let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
        let abs_w: Vec<f32> = wv.iter().map(|v| v.abs()).collect();
        for (tokens, accumulate) in [(1usize, false), (3, true)] {
            let x = normal(&mut rng, tokens * k, 1.0);
            let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let y0 = normal(&mut rng, tokens * n, 1.0);
            let mut want = matmul_cpu(&x, &wv, None, tokens, n, k);
            let mut scale = matmul_cpu(&abs_x, &abs_w, None, tokens, n, k);
            if accumulate {
                want.iter_mut().zip(&y0).for_each(|(w, y)| *w += y);
                scale.iter_mut().zip(&y0).for_each(|(s, y)| *s += y.abs());
            }
            let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
            let y = gpu.upload("y", bytemuck::cast_slice(&y0))?;
            let mut batch = gpu.batch();
            let (rows, stride, t) = (0..n, n as u32, tokens as u32);
            pollster::block_on(matmul_with(&mut batch, MatmulKernel::Vector, &xb, &w, None, rows, &y, stride, t, accumulate))?;
            batch.submit()?;
            let got = pollster::block_on(gpu.read_f32_prefix(&y, tokens * n))?;
            check(&format!("portable {ty} tokens={tokens} accumulate={accumulate}"), &got, &want, &scale);
        }
    }
    Ok(())
}
