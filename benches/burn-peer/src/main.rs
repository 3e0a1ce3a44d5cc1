//! The burn + burn-wgpu peer of `cargo bench --bench train`: LoRA training tokens/s of
//! SmolLM2-135M in burn (Wgpu backend with Autodiff) on the device our engine uses, in
//! the same configuration: rank 16, alpha 32, LoRA on q, k, v, o, gate, up and down of
//! every layer, frozen base, AdamW at lr 2e-4 (weight decay 0, clipping at norm 1, per
//! parameter as burn does it), random token ids with every token a target, one warm-up
//! step, then the median over TRAIN_STEPS steps.
//!
//! Burn has no Q4_1: the base weights are dequantized to f32 by `classtune`, so burn
//! runs f32 matmuls where our engine reads Q4_1 blocks.
//!
//! `cargo build --release --manifest-path benches/burn-peer/Cargo.toml`, then
//! `benches/burn-peer/target/release/burn-peer`; TRAIN_SEQ (256), TRAIN_BATCH (4),
//! TRAIN_STEPS (3), CLASSTUNE_MODEL as for the bench. Prints one JSON line.

mod model;

use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;

use classtune::gguf::MappedFile;

use model::{Base, Lora};

const RANK: usize = 16;
const ALPHA: f64 = 32.0;
const LR: f64 = 2e-4;
const BURN_VERSION: &str = "0.22.1";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The bench's token ids: the same xorshift stream, so both see the same batch.
fn random_ids(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

fn main() {
    if let Err(e) = run() {
        eprintln!("burn-peer failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (seq, batch, steps) = (env("TRAIN_SEQ", 256), env("TRAIN_BATCH", 4), env("TRAIN_STEPS", 3).max(1));
    if seq < 2 || batch == 0 {
        return Err(format!("TRAIN_SEQ {seq} and TRAIN_BATCH {batch}: need a sequence of at least 2 tokens").into());
    }
    let path = std::env::var_os("CLASSTUNE_MODEL").map(Into::into).unwrap_or_else(classtune::paths::default_model);
    // The default wgpu adapter: lavapipe on a machine without a GPU, as for our engine.
    let device = Device::wgpu(DeviceKind::DefaultDevice).autodiff();
    let name = device.identity().map(|i| i.name).unwrap_or_else(|| format!("{device:?}"));

    let t = Instant::now();
    let file = MappedFile::open(&path)?;
    let base = Base::load(file.bytes(), seq, &device)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut lora = Lora::init(&base.config, RANK, &device);
    let values = lora.len();
    let mut optim = AdamWConfig::new()
        .with_weight_decay(0.0)
        .with_epsilon(1e-8)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let ids = random_ids(batch, seq, base.config.vocab);
    let scale = ALPHA / RANK as f64;

    let mut losses = Vec::new();
    let mut rates = Vec::new();
    for step in 0..=steps {
        let t = Instant::now();
        let loss = base.loss(&lora, scale, &ids, &device);
        let grads = GradientsParams::from_grads(loss.backward(), &lora);
        lora = optim.step(LR, lora, grads);
        losses.push(loss.into_scalar::<f32>() as f64);
        device.sync()?;
        if step > 0 {
            rates.push((seq * batch) as f64 / t.elapsed().as_secs_f64());
        }
        eprintln!("burn-peer step {step}: loss {:.4}, {:.2} s", losses[step], t.elapsed().as_secs_f64());
    }
    let line = serde_json::json!({
        "tokens_per_s": median(rates),
        "device": format!("{name} (burn-wgpu)"),
        "loss_step0": losses[0],
        "ln_vocab": (base.config.vocab as f64).ln(),
        "losses": losses,
        "base": "f32 (Q4_1 dequantized at load: burn has no Q4_1)",
        "lora_values": values,
        "seq": seq,
        "batch": batch,
        "steps": steps,
        "load_s": load_s,
        "burn": BURN_VERSION,
    });
    println!("{line}");
    Ok(())
}
