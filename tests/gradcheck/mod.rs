//! Shared by the training-kernel tests: tolerance checks that name the index and both
//! values, central finite differences in f64, seeded random data.
#![allow(dead_code)]

use classtune::gpu::{Buffer, Gpu, GpuError};
use rand::{rngs::StdRng, Rng};

/// `|got − want| <= abs + rel·|want|` everywhere, else a panic naming the first index.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g as f64 - w).abs() <= abs + rel * w.abs();
        assert!(ok, "{what}[{i}]: gpu {g} vs reference {w} (diff {:e})", (g as f64 - w).abs());
    }
}

/// Central differences `(f(x + h·e_i) − f(x − h·e_i)) / 2h` of a scalar function, for
/// every i; `h` is relative to `max(1, |x_i|)`.
pub fn finite_diff(x: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            let step = h * orig.abs().max(1.0);
            x[i] = orig + step;
            let plus = f(&x);
            x[i] = orig - step;
            let minus = f(&x);
            x[i] = orig;
            (plus - minus) / (2.0 * step)
        })
        .collect()
}

pub fn random(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

pub fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// `Σ c_i · y_i`: the scalar loss whose gradient with respect to y is c.
pub fn dot(c: &[f32], y: &[f64]) -> f64 {
    c.iter().zip(y).map(|(&c, &y)| c as f64 * y).sum()
}

pub async fn gpu() -> Result<Gpu, GpuError> {
    Gpu::new(classtune::gpu::GpuOptions::default()).await
}

pub fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> Result<Buffer, GpuError> {
    gpu.upload(label, bytemuck::cast_slice(data))
}

pub fn upload_u32(gpu: &Gpu, label: &str, data: &[u32]) -> Result<Buffer, GpuError> {
    gpu.upload(label, bytemuck::cast_slice(data))
}
