//! Shared by the matmul kernel tests: the device, and random weights of every GGUF type
//! with their exact dequantized values.

use classtune::gguf::dequant::{dequantize, quantize};
use classtune::gguf::GgmlType;
use classtune::gpu::{Gpu, GpuError, GpuOptions};
use half::f16;
use rand::{rngs::StdRng, Rng};

pub fn gpu() -> Result<Gpu, GpuError> {
    pollster::block_on(Gpu::new(GpuOptions::default()))
}

pub fn normal(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| (rng.random::<f32>() + rng.random::<f32>() + rng.random::<f32>() - 1.5) * 2.0 * scale).collect()
}

/// GGUF bytes of a random [rows × cols] weight of type `ty` and their exact values.
pub fn random_weight(rng: &mut StdRng, ty: GgmlType, rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let n = rows * cols;
    let bytes = match ty {
        GgmlType::Q4_K | GgmlType::Q6_K => {
            // Random quants with small, finite f16 scales, like a real K-quant tensor.
            let mut bytes: Vec<u8> = (0..n / 256 * ty.block_bytes()).map(|_| rng.random()).collect();
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                let mut scale = |at: usize, rng: &mut StdRng| {
                    let v = f16::from_f32(rng.random_range(0.0005..0.004));
                    block[at..at + 2].copy_from_slice(&v.to_le_bytes());
                };
                if ty == GgmlType::Q4_K {
                    scale(0, rng);
                    scale(2, rng);
                } else {
                    scale(208, rng);
                }
            }
            bytes
        }
        _ => quantize(ty, &normal(rng, n, 0.1)).expect("quantize"),
    };
    let values = dequantize(ty, &bytes, n).expect("dequantize");
    (bytes, values)
}
