//! Plain-loop references for the tests, accumulating in f64 so the reference is not the
//! noisier side of the comparison.

/// y[t, n] = Σ_k x[t, k] · w[n, k] (+ bias[n]); x [tokens, k], w [n, k] dequantized.
pub fn matmul_cpu(x: &[f32], w: &[f32], bias: Option<&[f32]>, tokens: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; tokens * n];
    for t in 0..tokens {
        let xr = &x[t * k..(t + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            // f64 accumulation so the reference is not the noisier side of the comparison.
            let dot: f64 = xr.iter().zip(wr).map(|(a, b)| *a as f64 * *b as f64).sum();
            y[t * n + j] = dot as f32 + bias.map_or(0.0, |b| b[j]);
        }
    }
    y
}

/// out[t, :] = w[ids[t], :]; w [rows, cols] dequantized.
pub fn embedding_cpu(w: &[f32], ids: &[u32], cols: usize) -> Vec<f32> {
    ids.iter().flat_map(|&id| w[id as usize * cols..(id as usize + 1) * cols].iter().copied()).collect()
}

/// dx[t, k] = dx0[t, k] + Σ_{n ∈ rows} dy[t · dy_stride + (n − rows.start)] · w[n, k]; w
/// [N, k] dequantized (gguf::dequant::dequantize), dx0 [tokens, k] or zeros.
pub fn matmul_input_grad_cpu(dy: &[f32], dy_stride: usize, w: &[f32], k: usize, rows: std::ops::Range<usize>, tokens: usize, dx0: Option<&[f32]>) -> Vec<f32> {
    let mut dx = vec![0f32; tokens * k];
    let mut acc = vec![0f64; k];
    for t in 0..tokens {
        acc.fill(0.0);
        for n in rows.clone() {
            let d = dy[t * dy_stride + n - rows.start] as f64;
            for (a, wv) in acc.iter_mut().zip(&w[n * k..(n + 1) * k]) {
                *a += d * *wv as f64;
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let init = dx0.map_or(0.0, |d| d[t * k + i] as f64);
            dx[t * k + i] = (a + init) as f32;
        }
    }
    dx
}
