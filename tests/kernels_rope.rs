//! RoPE on the GPU against its CPU reference, the two pair layouts against each
//! other, and the inverse frequencies against transformers' scaling rules.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::rope::{rope_forward, rope_forward_cpu, rope_forward_qk, rope_inv_freq, KeyRows, RopeScaling, RopeStyle};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: gpu {g} vs cpu {w}");
    }
}

const LLAMA3: RopeScaling = RopeScaling::Llama3 {
    factor: 32.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
};

#[test]
fn rope_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(3);
        let cases = [
            (1usize, 9usize, 64usize, 100_000.0f32, None, RopeStyle::Interleaved),
            (5, 3, 64, 100_000.0, None, RopeStyle::Neox),
            (7, 2, 16, 10_000.0, Some(RopeScaling::Linear { factor: 4.0 }), RopeStyle::Interleaved),
            (33, 14, 128, 500_000.0, Some(LLAMA3), RopeStyle::Interleaved),
            (33, 2, 128, 1_000_000.0, None, RopeStyle::Neox),
            (3, 1, 2, 10_000.0, None, RopeStyle::Neox),
        ];
        for (rows, heads, hd, theta, scaling, style) in cases {
            let x: Vec<f32> = (0..rows * heads * hd).map(|_| rng.random_range(-2.0..2.0)).collect();
            // Packed sequences restart at 0; a KV-cache offset puts rows far out.
            let pos: Vec<u32> = (0..rows as u32).map(|t| if t % 4 == 3 { 30_000 + 977 * t } else { t }).collect();
            let inv_freq = rope_inv_freq(hd, theta, scaling);
            let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
            let pb = gpu.upload("pos", bytemuck::cast_slice(&pos))?;
            let fb = gpu.upload("inv_freq", bytemuck::cast_slice(&inv_freq))?;
            let mut batch = gpu.batch();
            rope_forward(&mut batch, &xb, &pb, &fb, rows as u32, heads as u32, hd as u32, style).await?;
            batch.submit()?;
            let mut want = x.clone();
            rope_forward_cpu(&mut want, &pos, &inv_freq, heads, hd, style);
            let got = gpu.read_f32_prefix(&xb, x.len()).await?;
            assert_close(&format!("rows {rows} heads {heads} hd {hd} {style:?}"), &got, &want, 2e-5, 1e-5);
        }
        Ok(())
    })
}

/// The fused q + k dispatch equals the CPU reference on each, with the keys at an
/// offset (KV-cache rows) and the elements around them untouched.
#[test]
fn rope_qk_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(5);
        // (rows, q heads, k heads, head_dim, rows before the keys, style)
        let cases = [
            (1usize, 9usize, 3usize, 64usize, 7usize, RopeStyle::Interleaved),
            (5, 3, 1, 64, 0, RopeStyle::Neox),
            (7, 6, 2, 18, 3, RopeStyle::Interleaved),
            (33, 4, 4, 128, 11, RopeStyle::Neox),
        ];
        for (rows, heads, k_heads, hd, past, style) in cases {
            let q: Vec<f32> = (0..rows * heads * hd).map(|_| rng.random_range(-2.0..2.0)).collect();
            // Cache with `past` rows before and two rows after the new keys.
            let kv = k_heads * hd;
            let k: Vec<f32> = (0..(past + rows + 2) * kv).map(|_| rng.random_range(-2.0..2.0)).collect();
            let pos: Vec<u32> = (0..rows as u32).map(|t| past as u32 + if t % 4 == 3 { 30_000 + 977 * t } else { t }).collect();
            let inv_freq = rope_inv_freq(hd, 10_000.0, None);
            let qb = gpu.upload("q", bytemuck::cast_slice(&q))?;
            let kb = gpu.upload("k", bytemuck::cast_slice(&k))?;
            let pb = gpu.upload("pos", bytemuck::cast_slice(&pos))?;
            let fb = gpu.upload("inv_freq", bytemuck::cast_slice(&inv_freq))?;
            let mut batch = gpu.batch();
            let keys = KeyRows { heads: k_heads as u32, offset: (past * kv) as u32 };
            rope_forward_qk(&mut batch, &qb, &kb, keys, &pb, &fb, rows as u32, heads as u32, hd as u32, style).await?;
            batch.submit()?;
            let mut want_q = q.clone();
            rope_forward_cpu(&mut want_q, &pos, &inv_freq, heads, hd, style);
            let mut want_k = k.clone();
            rope_forward_cpu(&mut want_k[past * kv..(past + rows) * kv], &pos, &inv_freq, k_heads, hd, style);
            let what = format!("rows {rows} heads {heads}/{k_heads} hd {hd} past {past} {style:?}");
            assert_close(&format!("{what} q"), &gpu.read_f32_prefix(&qb, q.len()).await?, &want_q, 2e-5, 1e-5);
            assert_close(&format!("{what} k"), &gpu.read_f32_prefix(&kb, k.len()).await?, &want_k, 2e-5, 1e-5);
        }
        Ok(())
    })
}

/// llama.cpp permutes Q/K rows so that pairs (i, i + hd/2) of HF space become
/// (2i, 2i+1): interleaved RoPE on the permuted head equals NEOX RoPE, permuted.
#[test]
fn interleaved_is_permuted_neox() {
    let (hd, heads) = (8, 2);
    let x: Vec<f32> = (0..hd * heads).map(|i| i as f32 * 0.37 - 2.0).collect();
    let permute = |v: &[f32]| {
        let mut w = vec![0.0; v.len()];
        for h in 0..heads {
            for i in 0..hd / 2 {
                w[h * hd + 2 * i] = v[h * hd + i];
                w[h * hd + 2 * i + 1] = v[h * hd + i + hd / 2];
            }
        }
        w
    };
    let inv_freq = rope_inv_freq(hd, 10_000.0, None);
    let mut neox = x.clone();
    rope_forward_cpu(&mut neox, &[5], &inv_freq, heads, hd, RopeStyle::Neox);
    let mut inter = permute(&x);
    rope_forward_cpu(&mut inter, &[5], &inv_freq, heads, hd, RopeStyle::Interleaved);
    assert_eq!(inter, permute(&neox));
}

#[test]
fn inv_freq_scaling_rules() {
    let plain = rope_inv_freq(64, 500_000.0, None);
    assert_eq!(plain.len(), 32);
    assert_eq!(plain[0], 1.0);
    assert!((plain[1] as f64 / 500_000f64.powf(-2.0 / 64.0) - 1.0).abs() < 1e-7);

    let linear = rope_inv_freq(64, 500_000.0, Some(RopeScaling::Linear { factor: 4.0 }));
    for (l, p) in linear.iter().zip(&plain) {
        assert!((l * 4.0 - p).abs() <= 1e-7 * p, "{l} {p}");
    }

    // llama3: wavelengths under 8192/4 keep their frequency, over 8192/1 are divided by
    // 32, and in between blend linearly in 8192/wavelen.
    let scaled = rope_inv_freq(64, 500_000.0, Some(LLAMA3));
    let (mut kept, mut divided, mut blended) = (0, 0, 0);
    for (s, p) in scaled.iter().zip(&plain) {
        let wavelen = 2.0 * std::f64::consts::PI / *p as f64;
        let (s, p) = (*s as f64, *p as f64);
        if wavelen < 2048.0 {
            assert_eq!(s, p);
            kept += 1;
        } else if wavelen > 8192.0 {
            assert!((s - p / 32.0).abs() <= 1e-6 * s);
            divided += 1;
        } else {
            let smooth = (8192.0 / wavelen - 1.0) / 3.0;
            assert!((s - ((1.0 - smooth) * p / 32.0 + smooth * p)).abs() <= 1e-6 * s);
            assert!(s < p && s > p / 32.0);
            blended += 1;
        }
    }
    assert!(kept > 0 && divided > 0 && blended > 0, "{kept} {divided} {blended}");
}
