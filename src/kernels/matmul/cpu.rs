//! Plain-loop references for the tests.

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
