//! The input gradient of the quantized matmul, dx (+)= dy · W, against the plain-loop CPU
//! reference, for every kernel (dy through uniform windows, dy from storage, and rows
//! split into segments whose partial sums a second dispatch adds): every
//! weight type, odd sizes, row ranges that start inside the matrix and cross chunk
//! boundaries, the lm_head's vocabulary chunks, and ranges longer than one window and
//! than one dispatch may walk on llvmpipe. Also `outer_sum`, the LoRA weight gradients
//! through the same kernel.

use std::ops::Range;

use classtune::gguf::GgmlType;
use classtune::gpu::{Gpu, GpuError};
use classtune::kernels::lora::{LoraKernel, LoraShape, View};
use classtune::kernels::matmul::{
    gpu_row_bytes, matmul_input_grad, matmul_input_grad_cpu, matmul_input_grad_lora, matmul_input_grad_with, InputGradKernel, LoraDx, Weight,
};
mod random_weights;

use rand::{rngs::StdRng, SeedableRng};
use random_weights::{gpu, normal, random_weight};

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// |got − want| ≤ 1e-6 + 1e-4 · scale, scale = Σ|dy · w| (+ |dx0|): relative to the
/// magnitude of the terms summed, so cancellation does not make the bound meaningless.
fn check(what: &str, got: &[f32], want: &[f32], scale: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for i in 0..want.len() {
        let tol = 1e-6 + 1e-4 * scale[i];
        assert!((got[i] - want[i]).abs() <= tol, "{what}: index {i}: gpu {} vs cpu {} (tol {tol})", got[i], want[i]);
    }
}

/// One case: dy [tokens, stride] for `rows` of W, onto a random dx0 when accumulating.
struct Case<'a> {
    w: &'a Weight,
    values: &'a [f32],
    rows: Range<usize>,
    stride: usize,
    tokens: usize,
    accumulate: bool,
}

const KERNELS: [InputGradKernel; 4] =
    [InputGradKernel::Uniform, InputGradKernel::Storage, InputGradKernel::Split, InputGradKernel::Subgroup];

/// Runs `c` with each kernel against the reference; returns whether the subgroup kernel
/// took it (it refuses dy strides and row starts that are not multiples of 4).
fn run_case(gpu: &Gpu, rng: &mut StdRng, c: &Case<'_>) -> Result<bool, GpuError> {
    let k = c.w.cols();
    let mut dy = normal(rng, c.tokens * c.stride, 1.0);
    // Columns past the walked rows are NaN: no kernel may let them into a sum.
    for (i, v) in dy.iter_mut().enumerate() {
        if i % c.stride >= c.rows.len() {
            *v = f32::NAN;
        }
    }
    let dx0 = normal(rng, c.tokens * k, 1.0);
    let init = c.accumulate.then_some(&dx0[..]);
    let want = matmul_input_grad_cpu(&dy, c.stride, c.values, k, c.rows.clone(), c.tokens, init);
    let abs_init = abs(&dx0);
    let scale = matmul_input_grad_cpu(&abs(&dy), c.stride, &abs(c.values), k, c.rows.clone(), c.tokens, c.accumulate.then_some(&abs_init[..]));
    let dyb = gpu.upload("dy", bytemuck::cast_slice(&dy))?;
    let mut subgroup_ran = false;
    for kernel in KERNELS {
        let dx = gpu.upload("dx", bytemuck::cast_slice(&dx0))?;
        let mut batch = gpu.batch();
        let (stride, tokens, rows) = (c.stride as u32, c.tokens as u32, c.rows.clone());
        let result = pollster::block_on(matmul_input_grad_with(&mut batch, kernel, &dyb, stride, c.w, rows, &dx, tokens, c.accumulate));
        match result {
            Err(GpuError::Shape { ref message, .. }) if kernel == InputGradKernel::Subgroup && message.contains("multiples of 4") => {
                assert!(!c.stride.is_multiple_of(4) || !c.rows.start.is_multiple_of(4) || c.w.chunk_count() > 1, "subgroup kernel refused an aligned case: {message}");
                continue;
            }
            other => other?,
        }
        subgroup_ran |= kernel == InputGradKernel::Subgroup;
        batch.submit()?;
        let got = pollster::block_on(gpu.read_f32_prefix(&dx, c.tokens * k))?;
        let (ty, n) = (c.w.ty(), c.w.rows());
        let what = format!("{kernel:?} {ty} n={n} k={k} rows={:?} stride={} tokens={} accumulate={}", c.rows, c.stride, c.tokens, c.accumulate);
        check(&what, &got, &want, &scale);
    }
    Ok(subgroup_ran)
}

#[test]
fn input_grad_every_type_and_shape() -> Result<(), GpuError> {
    let gpu = gpu()?;
    println!("{}", gpu.describe());
    let mut rng = StdRng::seed_from_u64(23);
    let mut subgroup_cases = 0;
    for ty in GgmlType::ALL {
        // Odd N; K of 5, 3 and 9 blocks of 32, or 2, 1 and 3 K-quant super-blocks
        // (F32/F16/BF16 also K = 40: fewer columns than one workgroup covers).
        let shapes: Vec<(usize, usize)> = match ty.block_len() {
            256 => vec![(97, 512), (45, 256), (13, 768)],
            32 => vec![(97, 160), (301, 96), (13, 288)],
            _ => vec![(97, 160), (301, 40), (13, 288)],
        };
        for (i, (n, k)) in shapes.into_iter().enumerate() {
            let (bytes, values) = random_weight(&mut rng, ty, n, k);
            let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
            for (j, tokens) in [1usize, 3, 17, 130].into_iter().enumerate() {
                // Whole matrix (dy [tokens, N]), and an inner row range in a wider dy.
                // Odd strides and strides of whole vec4s (what the subgroup kernel takes).
                let stride = if j % 2 == 0 { n } else { n.next_multiple_of(4) };
                let rows = if (i + j) % 2 == 0 { 0..n } else { n / 3..n - 1 };
                for accumulate in [false, true] {
                    let case = Case { w: &w, values: &values, rows: rows.clone(), stride, tokens, accumulate };
                    subgroup_cases += run_case(&gpu, &mut rng, &case)? as usize;
                }
            }
        }
    }
    assert!(subgroup_cases >= 40, "the subgroup kernel ran {subgroup_cases} cases");
    Ok(())
}

/// A LoRA projection's input gradient, dx (+)= dy·W + du·A, against the CPU for the
/// subgroup kernel's fused adapter rows (N a multiple of 4, ranks in whole vec4s) and the
/// fallback (odd N, rank 6, A off a vec4, a K-quant), with A between NaNs.
#[test]
fn input_grad_lora_adds_the_adapter_rows() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(31);
    for ty in [GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4_K] {
        let k = if ty.block_len() == 256 { 256 } else { 96 };
        for (i, (n, tokens, rank, a_off)) in [(84usize, 40usize, 16usize, 4usize), (84, 17, 12, 0), (20, 5, 4, 8), (83, 9, 16, 4), (84, 9, 6, 4), (84, 9, 8, 2)].into_iter().enumerate() {
            let (bytes, values) = random_weight(&mut rng, ty, n, k);
            let w = Weight::upload(&gpu, "w", ty, n, k, &bytes)?;
            let dy = normal(&mut rng, tokens * n, 1.0);
            let du = normal(&mut rng, tokens * rank, 1.0);
            let a = normal(&mut rng, rank * k, 0.5);
            let mut a_buf = vec![f32::NAN; a_off + rank * k + 8];
            a_buf[a_off..a_off + rank * k].copy_from_slice(&a);
            let accumulate = i % 2 == 0;
            let dx0 = normal(&mut rng, tokens * k, 1.0);
            let init = accumulate.then_some(&dx0[..]);
            let mut want = matmul_input_grad_cpu(&dy, n, &values, k, 0..n, tokens, init);
            let abs_init = abs(&dx0);
            let mut bound = matmul_input_grad_cpu(&abs(&dy), n, &abs(&values), k, 0..n, tokens, accumulate.then_some(&abs_init[..]));
            for t in 0..tokens {
                for c in 0..k {
                    want[t * k + c] += (0..rank).map(|j| du[t * rank + j] * a[j * k + c]).sum::<f32>();
                    bound[t * k + c] += (0..rank).map(|j| (du[t * rank + j] * a[j * k + c]).abs()).sum::<f32>();
                }
            }
            let (dyb, dub, ab) = (gpu.upload("dy", bytemuck::cast_slice(&dy))?, gpu.upload("du", bytemuck::cast_slice(&du))?, gpu.upload("a", bytemuck::cast_slice(&a_buf))?);
            let dx = gpu.upload("dx", bytemuck::cast_slice(&dx0))?;
            let shape = LoraShape { tokens: tokens as u32, d_in: k as u32, d_out: n as u32, rank: rank as u32, scale: 0.5, kernel: LoraKernel::choose(&gpu) };
            let lora = LoraDx { du: &dub, a: View::at(&ab, a_off as u32), shape };
            let mut batch = gpu.batch();
            pollster::block_on(matmul_input_grad_lora(&mut batch, &dyb, &w, &dx, tokens as u32, accumulate, lora))?;
            batch.submit()?;
            let got = pollster::block_on(gpu.read_f32_prefix(&dx, tokens * k))?;
            check(&format!("input_grad_lora {ty} n={n} tokens={tokens} rank={rank} a_off={a_off} accumulate={accumulate}"), &got, &want, &bound);
            // An adapter shaped for another projection is refused by both paths.
            let wrong = LoraDx { shape: LoraShape { d_in: k as u32 + 8, ..shape }, ..lora };
            let err = pollster::block_on(matmul_input_grad_lora(&mut gpu.batch(), &dyb, &w, &dx, tokens as u32, accumulate, wrong)).unwrap_err();
            assert!(err.to_string().contains(&format!("maps {}→{n}", k + 8)), "{err}");
            let zero = LoraDx { shape: LoraShape { rank: 0, ..shape }, ..lora };
            let err = pollster::block_on(matmul_input_grad_lora(&mut gpu.batch(), &dyb, &w, &dx, tokens as u32, accumulate, zero)).unwrap_err();
            assert!(err.to_string().contains("rank 0"), "{err}");
        }
    }
    Ok(())
}

/// Row ranges that start and end inside chunks of a weight split every 23 rows, and the
/// lm_head pattern: vocabulary chunks in turn, accumulating after the first, equal the
/// whole product.
#[test]
fn input_grad_across_row_chunks() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(29);
    let (n, tokens) = (203, 17);
    for ty in [GgmlType::Q8_0, GgmlType::Q4_1, GgmlType::F16, GgmlType::Q6_K] {
        let k = if ty.block_len() == 256 { 256 } else { 96 };
        let (bytes, values) = random_weight(&mut rng, ty, n, k);
        let w = Weight::upload_chunked(&gpu, "w", ty, n, k, &bytes, (23 * gpu_row_bytes(ty, k)) as u64)?;
        assert_eq!(w.chunk_count(), n.div_ceil(23), "{ty}");
        for rows in [0..n, 40..140, 23..46, 50..51, 202..203] {
            for accumulate in [false, true] {
                let case = Case { w: &w, values: &values, rows: rows.clone(), stride: rows.len() + 3, tokens, accumulate };
                run_case(&gpu, &mut rng, &case)?;
            }
        }
        // Vocabulary chunks of 64 rows (the last one short), each with its own dy
        // [tokens, 64], into one dx.
        let dy = normal(&mut rng, tokens * n, 1.0);
        let want = matmul_input_grad_cpu(&dy, n, &values, k, 0..n, tokens, None);
        let scale = matmul_input_grad_cpu(&abs(&dy), n, &abs(&values), k, 0..n, tokens, None);
        let chunks: Vec<(Range<usize>, classtune::gpu::Buffer)> = (0..n)
            .step_by(64)
            .map(|start| {
                let end = (start + 64).min(n);
                let pick = |(t, j): (usize, usize)| if j < end { dy[t * n + j] } else { 0.0 };
                let chunk: Vec<f32> = (0..tokens).flat_map(|t| (start..start + 64).map(move |j| (t, j))).map(pick).collect();
                Ok((start..end, gpu.upload("dy chunk", bytemuck::cast_slice(&chunk))?))
            })
            .collect::<Result<_, GpuError>>()?;
        // The subgroup kernel refuses these 23-row chunks (starts not multiples of 4).
        for kernel in KERNELS.into_iter().filter(|&k| k != InputGradKernel::Subgroup) {
            let dx = gpu.upload("dx", bytemuck::cast_slice(&normal(&mut rng, tokens * k, 1.0)))?;
            let mut batch = gpu.batch();
            for (i, (rows, dyc)) in chunks.iter().enumerate() {
                let t = tokens as u32;
                pollster::block_on(matmul_input_grad_with(&mut batch, kernel, dyc, 64, &w, rows.clone(), &dx, t, i > 0))?;
            }
            batch.submit()?;
            let got = pollster::block_on(gpu.read_f32_prefix(&dx, tokens * k))?;
            check(&format!("{kernel:?} {ty} vocabulary chunks"), &got, &want, &scale);
        }
    }
    Ok(())
}

/// Rows over several uniform windows (1024 rows each) for several token tiles, starting
/// 3 rows into a window.
#[test]
fn input_grad_many_windows() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(41);
    let (n, k) = (2500, 64);
    let (bytes, values) = random_weight(&mut rng, GgmlType::Q4_0, n, k);
    let w = Weight::upload(&gpu, "w", GgmlType::Q4_0, n, k, &bytes)?;
    for (rows, accumulate) in [(3..2403, false), (0..n, true)] {
        run_case(&gpu, &mut rng, &Case { w: &w, values: &values, rows, stride: n, tokens: 40, accumulate })?;
    }
    Ok(())
}

/// 70,000 rows in one call: more than one invocation may loop over on llvmpipe (65,535),
/// so the dispatch must be split; a silently shortened loop would miss rows.
#[test]
fn input_grad_longer_than_one_dispatch() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(31);
    let (n, k) = (70_000, 32);
    let (bytes, values) = random_weight(&mut rng, GgmlType::Q8_0, n, k);
    let w = Weight::upload(&gpu, "w", GgmlType::Q8_0, n, k, &bytes)?;
    for accumulate in [false, true] {
        run_case(&gpu, &mut rng, &Case { w: &w, values: &values, rows: 0..n, stride: n, tokens: 3, accumulate })?;
    }
    Ok(())
}

/// An empty row range overwrites dx with zeros, or leaves it as it is when accumulating.
#[test]
fn input_grad_empty_rows() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let mut rng = StdRng::seed_from_u64(37);
    let (bytes, _) = random_weight(&mut rng, GgmlType::Q4_0, 9, 64);
    let w = Weight::upload(&gpu, "w", GgmlType::Q4_0, 9, 64, &bytes)?;
    let dx0 = normal(&mut rng, 5 * 64, 1.0);
    let dy = gpu.buffer("dy", 4)?;
    for (kernel, accumulate) in KERNELS.into_iter().flat_map(|k| [(k, true), (k, false)]) {
        let dx = gpu.upload("dx", bytemuck::cast_slice(&dx0))?;
        let mut batch = gpu.batch();
        pollster::block_on(matmul_input_grad_with(&mut batch, kernel, &dy, 0, &w, 4..4, &dx, 5, accumulate))?;
        batch.submit()?;
        let got = pollster::block_on(gpu.read_f32_prefix(&dx, 5 * 64))?;
        let want = if accumulate { dx0.clone() } else { vec![0.0; 5 * 64] };
        assert_eq!(got, want, "{kernel:?} accumulate={accumulate}");
    }
    Ok(())
}

#[test]
fn input_grad_bad_shapes_are_errors() -> Result<(), GpuError> {
    let gpu = gpu()?;
    let w = Weight::upload(&gpu, "w", GgmlType::F32, 4, 8, &[0; 128])?;
    let dy = gpu.buffer("dy", 4 * 2 * 4)?;
    let dx = gpu.buffer("dx", 4 * 2 * 8)?;
    let mut batch = gpu.batch();
    let mut call = |dy: &classtune::gpu::Buffer, stride: u32, rows: Range<usize>, dx: &classtune::gpu::Buffer, tokens: u32| {
        pollster::block_on(matmul_input_grad(&mut batch, dy, stride, &w, rows, dx, tokens, false))
    };
    assert!(call(&dy, 4, 0..4, &dx, 2).is_ok());
    assert!(call(&dy, 4, 0..4, &dx, 0).is_ok(), "no tokens: nothing to do");
    for (what, result) in [
        ("too many tokens for dy and dx", call(&dy, 4, 0..4, &dx, 3)),
        ("rows past the end", call(&dy, 4, 2..5, &dx, 2)),
        ("stride below the row count", call(&dy, 3, 0..4, &dx, 2)),
        ("dy and dx the same buffer", call(&dx, 4, 0..4, &dx, 2)),
    ] {
        assert!(matches!(result, Err(GpuError::Shape { .. })), "{what}: {result:?}");
    }
    Ok(())
}

/// `outer_sum` (the LoRA weight gradients on CPU devices): out (+)= scale · Sᵀ · X, plain
/// and transposed, against f64 loops; S's columns from 4 (a partial token tile) to 20
/// (two tiles), row counts off the 8-row step, an output offset between NaNs, and
/// more rows than one dispatch walks.
#[test]
fn outer_sum_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gpu()?;
        let batch = gpu.batch();
        if !classtune::kernels::matmul::outer_sum_fits(&batch, 4, 8) {
            eprintln!("outer_sum: not on this device ({}), skipped", gpu.describe());
            return Ok(());
        }
        drop(batch);
        let mut rng = StdRng::seed_from_u64(23);
        // (rows, S columns, X columns, transposed, accumulate)
        let cases = [
            (1usize, 4usize, 8usize, false, false),
            (13, 12, 72, true, true),
            (37, 20, 24, false, true),
            (256, 16, 576, true, false),
            (50, 60, 40, true, false),
            (40_000, 4, 8, false, true),
        ];
        for (rows, sc, cols, transposed, accumulate) in cases {
            let s = normal(&mut rng, rows * sc, 0.5);
            let x = normal(&mut rng, rows * cols, 0.5);
            let scale = 0.75;
            let off = 5;
            let prior = normal(&mut rng, sc * cols, 1.0);
            let mut out = vec![f32::NAN; off + sc * cols + 3];
            out[off..off + sc * cols].copy_from_slice(&prior);
            let (sb, xb, ob) = (gpu.upload("s", bytemuck::cast_slice(&s))?, gpu.upload("x", bytemuck::cast_slice(&x))?, gpu.upload("out", bytemuck::cast_slice(&out))?);
            let mut batch = gpu.batch();
            let view = View::at(&ob, off as u32);
            classtune::kernels::matmul::outer_sum(&mut batch, &sb, &xb, [rows as u32, sc as u32, cols as u32], view, transposed, scale, accumulate).await?;
            batch.submit()?;
            let got = gpu.read_f32_prefix(&ob, out.len()).await?;
            let what = format!("rows {rows} S {sc} X {cols} transposed {transposed} accumulate {accumulate}");
            assert!(got[..off].iter().chain(&got[off + sc * cols..]).all(|v| v.is_nan()), "{what}: written outside out");
            for j in 0..sc {
                for c in 0..cols {
                    let sum: f64 = (0..rows).map(|n| s[n * sc + j] as f64 * x[n * cols + c] as f64).sum();
                    let at = if transposed { c * sc + j } else { j * cols + c };
                    let want = scale as f64 * sum + if accumulate { prior[at] as f64 } else { 0.0 };
                    let g = got[off + at] as f64;
                    assert!((g - want).abs() <= 1e-4 * (1.0 + want.abs()) + 1e-6 * rows as f64, "{what}: out[{j}, {c}] = {g}, want {want}");
                }
            }
        }
        let (sb, xb, ob) = (gpu.buffer("s", 4 * 64)?, gpu.buffer("x", 4 * 64)?, gpu.buffer("out", 4 * 64)?);
        let mut batch = gpu.batch();
        let mut call = |shape: [u32; 3], out: &classtune::gpu::Buffer| {
            pollster::block_on(classtune::kernels::matmul::outer_sum(&mut batch, &sb, &xb, shape, View::at(out, 0), false, 1.0, false))
        };
        for (what, result) in [
            ("S columns off whole vec4s", call([2, 6, 8], &ob)),
            ("X columns off 8", call([2, 4, 12], &ob)),
            ("more rows than S and X hold", call([20, 4, 8], &ob)),
            ("out the same buffer as X", call([2, 4, 8], &xb)),
        ] {
            assert!(matches!(result, Err(GpuError::Shape { .. })), "{what}: {result:?}");
        }
        Ok(())
    })
}
