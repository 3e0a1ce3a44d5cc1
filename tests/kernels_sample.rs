//! On-GPU token choice against the CPU reference of the same rule: greedy exactly,
//! top-k = 1 as greedy, fixed draws with penalty / temperature / top-k / top-p, and
//! the repetition penalty moving the argmax when it should.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::sample::{
    argmax_cpu, argmax_rows, penalize_cpu, sample_forward, sample_forward_cpu, SampleShape, SamplerConfig,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn logits(rng: &mut StdRng, rows: usize, vocab: usize) -> Vec<f32> {
    (0..rows * vocab).map(|_| rng.random_range(-4.0f32..4.0).powi(3) / 8.0).collect()
}

fn one_row(vocab: u32, history_len: u32, out_index: u32) -> SampleShape {
    SampleShape { vocab, row: 0, history_start: 0, history_len, out_index }
}

/// Runs each (config, u) on the GPU in one batch and returns the chosen ids.
async fn sample_all(
    gpu: &Gpu,
    logits: &[f32],
    history: &[u32],
    runs: &[(SamplerConfig, f32)],
) -> Result<Vec<u32>, GpuError> {
    let vocab = logits.len() as u32;
    let lb = gpu.upload("logits", bytemuck::cast_slice(logits))?;
    let hb = gpu.upload("history", bytemuck::cast_slice(history))?;
    let ob = gpu.buffer("out", 4 * runs.len() as u64)?;
    let mut batch = gpu.batch();
    for (i, (config, u)) in runs.iter().enumerate() {
        sample_forward(&mut batch, &lb, &hb, &ob, one_row(vocab, history.len() as u32, i as u32), config, *u).await?;
    }
    batch.submit()?;
    gpu.read_u32_prefix(&ob, runs.len()).await
}

#[test]
fn greedy_and_top_k_one_are_argmax() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(1);
        for vocab in [1usize, 300, 49_152, 151_936] {
            let mut l = logits(&mut rng, 1, vocab);
            if vocab > 300 {
                // A tie for the maximum: the lower id wins.
                let top = l[argmax_cpu(&l) as usize];
                l[vocab - 7] = top;
                l[vocab / 2] = top;
            }
            let want = argmax_cpu(&l);
            let top_k_one = SamplerConfig { temperature: 0.8, top_k: 1, top_p: 0.9, repetition_penalty: 1.0 };
            let got = sample_all(&gpu, &l, &[0], &[(SamplerConfig::greedy(), 0.3), (top_k_one, 0.99)]).await?;
            assert_eq!(got, vec![want, want], "vocab {vocab}");
        }
        Ok(())
    })
}

#[test]
fn draws_match_cpu_rule() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(2);
        for vocab in [1000usize, 151_936] {
            let l = logits(&mut rng, 1, vocab);
            let history: Vec<u32> = (0..64).map(|_| rng.random_range(0..vocab as u32)).collect();
            let configs = [
                SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 },
                SamplerConfig { temperature: 0.7, top_k: 40, top_p: 1.0, repetition_penalty: 1.0 },
                SamplerConfig { temperature: 0.7, top_k: 40, top_p: 0.9, repetition_penalty: 1.3 },
                SamplerConfig { temperature: 1.3, top_k: 0, top_p: 0.95, repetition_penalty: 1.1 },
                SamplerConfig { temperature: 0.2, top_k: 64, top_p: 0.5, repetition_penalty: 0.8 },
            ];
            let mut runs = Vec::new();
            for config in configs {
                for _ in 0..6 {
                    runs.push((config, rng.random_range(0.0f32..1.0)));
                }
            }
            let got = sample_all(&gpu, &l, &history, &runs).await?;
            for ((config, u), g) in runs.iter().zip(&got) {
                let want = sample_forward_cpu(&l, &history, config, *u);
                assert_eq!(*g, want, "vocab {vocab} {config:?} u {u}: gpu {g} vs cpu {want}");
            }
        }
        Ok(())
    })
}

/// Cases small enough to know the answer: the draw walks the kept set in id order.
#[test]
fn top_k_and_top_p_keep_the_right_sets() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        // probabilities ∝ 1, 2, 4, 8 → 1/15, 2/15, 4/15, 8/15
        let l: Vec<f32> = [0.0f32, 1.0, 2.0, 3.0].iter().map(|v| v * std::f32::consts::LN_2).collect();
        let plain = SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
        let top2 = SamplerConfig { top_k: 2, ..plain };
        let nucleus = SamplerConfig { top_p: 0.6, ..plain }; // 8/15 < 0.6 ≤ 12/15: ids 2, 3
        let runs = [
            (plain, 0.0),
            (plain, 0.5),  // 7.5/15 lies in id 3's range [7, 15)
            (plain, 0.45), // 6.75/15 lies in id 2's range [3, 7)
            (top2, 0.0),   // ids 2, 3 only: the first kept is 2
            (top2, 0.34),  // 0.34 * 12 = 4.08 > 4: id 3
            (nucleus, 0.3),
            (nucleus, 0.4),
        ];
        let got = sample_all(&gpu, &l, &[0], &runs).await?;
        assert_eq!(got, vec![0, 3, 2, 2, 3, 2, 3]);
        for ((config, u), g) in runs.iter().zip(&got) {
            assert_eq!(sample_forward_cpu(&l, &[], config, *u), *g, "{config:?} {u}");
        }
        Ok(())
    })
}

#[test]
fn repetition_penalty_moves_the_argmax() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let penalty = |history_penalty: f32| SamplerConfig { repetition_penalty: history_penalty, ..SamplerConfig::greedy() };
        let mut l = vec![-3.0f32; 5000];
        l[10] = 2.0;
        l[4000] = 1.8;
        // 2.0 / 1.3 = 1.54 < 1.8: id 4000 wins; once per id even when repeated.
        let got = sample_all(&gpu, &l, &[10, 10, 10, 77], &[(penalty(1.3), 0.0), (penalty(1.0), 0.0)]).await?;
        assert_eq!(got, vec![4000, 10]);
        let mut twice = l.clone();
        twice[4000] = 1.5; // 1.54 > 1.5 only if the penalty applied once
        assert_eq!(sample_all(&gpu, &twice, &[10, 10, 10], &[(penalty(1.3), 0.0)]).await?, vec![10]);
        // Negative logits are multiplied: -0.5 * 1.3 = -0.65 < -0.6.
        let mut neg = vec![-9.0f32; 5000];
        neg[3] = -0.5;
        neg[4999] = -0.6;
        assert_eq!(sample_all(&gpu, &neg, &[3], &[(penalty(1.3), 0.0)]).await?, vec![4999]);
        let p = penalize_cpu(&neg, &[3, 3], 1.3);
        assert_eq!(argmax_cpu(&p), 4999);
        Ok(())
    })
}

#[test]
fn argmax_rows_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(4);
        let (rows, vocab) = (5usize, 49_153usize);
        let mut l = logits(&mut rng, rows, vocab);
        l[2 * vocab + 9] = 100.0;
        l[2 * vocab + 7] = 100.0;
        let lb = gpu.upload("logits", bytemuck::cast_slice(&l))?;
        let ob = gpu.buffer("ids", 4 * rows as u64)?;
        let mut batch = gpu.batch();
        argmax_rows(&mut batch, &lb, &ob, rows as u32, vocab as u32).await?;
        batch.submit()?;
        let want: Vec<u32> = l.chunks(vocab).map(argmax_cpu).collect();
        assert_eq!(want[2], 7);
        assert_eq!(gpu.read_u32_prefix(&ob, rows).await?, want);
        Ok(())
    })
}

#[test]
fn sample_checks_arguments() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let l = gpu.buffer("logits", 4 * 100)?;
        let h = gpu.buffer("history", 4)?;
        let o = gpu.buffer("out", 4)?;
        let mut batch = gpu.batch();
        let greedy = SamplerConfig::greedy();
        let too_long = SampleShape { vocab: 101, row: 0, history_start: 0, history_len: 0, out_index: 0 };
        let bad_u = SampleShape { vocab: 100, ..too_long };
        for (shape, u) in [(too_long, 0.5), (bad_u, 1.0), (SampleShape { out_index: 1, ..bad_u }, 0.5)] {
            let r = sample_forward(&mut batch, &l, &h, &o, shape, &greedy, u).await;
            assert!(matches!(r, Err(GpuError::Shape { .. })), "{shape:?} {u}: {r:?}");
        }
        Ok(())
    })
}
