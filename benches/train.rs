//! LoRA training speed and memory on SmolLM2-135M (rank 16, alpha 32, all seven
//! projections, AdamW with clipping), next to PyTorch + PEFT on this CPU measured in
//! the same run (scripts/bench/peft_train.py), burn + burn-wgpu on the same device when
//! benches/burn-peer is built, and numpy's sgemm as the ceiling.
//!
//! `cargo bench --bench train`; TRAIN_SEQ (256), TRAIN_BATCH (4), TRAIN_STEPS (3),
//! TRAIN_RECOMPUTE (0) change the configuration; TRAIN_PASS (TRAIN_SEQ) the tokens one
//! pass holds (TRAIN_PASS=1024 packs the batch's four sequences into one pass);
//! CLASSTUNE_MODEL the model;
//! TRAIN_PROFILE=1 adds one more step timed kernel by kernel (gpu::Profile);
//! TRAIN_SCORED=30 scores only the last 30% of each sequence, as chat data scores the
//! assistant's answer after the prompt (the peers always score every token).

use std::process::Command;
use std::time::Instant;

use classtune::adapter::LoraConfig;
use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::adamw::AdamW;
use classtune::model::{Config, LoraWeights, Model};
use classtune::train::run::Tokens;
use classtune::train::{Decay, OptimizerOptions, Schedule, Sequence, Trainer};

mod peers;
use peers::{median, numpy_gflops};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// PyTorch + PEFT tokens/s for the same configuration, 2 threads.
fn peft_peer(model: &std::path::Path, seq: usize, batch: usize) -> Option<f64> {
    let out = Command::new("python3")
        .args(["scripts/bench/peft_train.py", "--model"])
        .arg(model)
        .args(["--seq", &seq.to_string(), "--batch", &batch.to_string(), "--steps", "3", "--threads", "2"])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("PyTorch + PEFT peer failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.lines().last()?).ok()?;
    v["tokens_per_s"].as_f64()
}

/// The burn + burn-wgpu peer (benches/burn-peer, built on its own): tokens/s and its
/// step-0 loss, or why not. BURN_PEER names the binary when it is not in the default place.
fn burn_peer(model: &std::path::Path, seq: usize, batch: usize, steps: usize) -> Result<(f64, f64), String> {
    let bin = std::env::var_os("BURN_PEER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/burn-peer/target/release/burn-peer"));
    if !bin.exists() {
        return Err(format!(
            "not built ({} missing): cargo build --release --manifest-path benches/burn-peer/Cargo.toml",
            bin.display()
        ));
    }
    let out = Command::new(&bin)
        .env("CLASSTUNE_MODEL", model)
        .env("TRAIN_SEQ", seq.to_string())
        .env("TRAIN_BATCH", batch.to_string())
        .env("TRAIN_STEPS", steps.to_string())
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!("failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or("")).map_err(|e| format!("unreadable output: {e}"))?;
    match (v["tokens_per_s"].as_f64(), v["loss_step0"].as_f64()) {
        (Some(rate), Some(loss)) => Ok((rate, loss)),
        _ => Err(format!("unexpected output: {stdout}")),
    }
}

/// Matmul FLOPs of one training pass over `t` tokens with frozen base weights: the
/// forward (plus a recomputed one) and the input gradients of every projection and
/// of the lm_head (computed twice: loss, then its gradient), and causal attention.
fn step_flops(c: &Config, t: usize, rank: usize, recompute: bool) -> f64 {
    let (d, q, kv, f) = (c.hidden as f64, (c.n_heads * c.head_dim) as f64, (c.n_kv_heads * c.head_dim) as f64, c.ffn as f64);
    let per_layer = d * q * 2.0 + d * kv * 2.0 + 3.0 * d * f;
    let lora_per_layer = rank as f64 * (2.0 * d + q + d + 2.0 * (d + kv) + 3.0 * (d + f));
    let t = t as f64;
    let forwards = if recompute { 2.0 } else { 1.0 };
    let linear = c.n_layers as f64 * (per_layer * (forwards + 1.0) + lora_per_layer * (forwards + 3.0)) * 2.0 * t;
    let head = 3.0 * 2.0 * t * d * c.vocab as f64;
    // Causal attention: QKᵀ and PV forward (half the square), five such products backward.
    let attention = c.n_layers as f64 * (forwards * 2.0 + 5.0) * t * t * q;
    linear + head + attention
}

fn main() {
    if let Err(e) = pollster::block_on(run()) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (seq, batch, steps) = (env("TRAIN_SEQ", 256), env("TRAIN_BATCH", 4), env("TRAIN_STEPS", 3));
    let recompute = env("TRAIN_RECOMPUTE", 0) != 0;
    let pass_tokens = env("TRAIN_PASS", seq).max(seq);
    let scored = env("TRAIN_SCORED", 100).min(100);
    let path = std::env::var_os("CLASSTUNE_MODEL").map(Into::into).unwrap_or_else(classtune::paths::default_model);
    let gpu = Gpu::new(GpuOptions::default()).await?;
    let file = MappedFile::open(&path)?;
    let model = Model::load(&gpu, &file).await?;
    let lora_config = LoraConfig { rank: 16, alpha: 32.0, ..LoraConfig::default() };
    let lora = LoraWeights::init(&gpu, &model.config, &lora_config, 0)?;
    let options = OptimizerOptions {
        schedule: Schedule { lr: 2e-4, warmup: 0, total: steps + 1, decay: Decay::Cosine },
        adamw: AdamW::default(),
        max_grad_norm: 1.0,
        seed: 0,
    };
    let mut trainer = Trainer::new(&gpu, &model, lora, options, pass_tokens, recompute)?;
    // Random ids, every token a target (raw-text batches) unless TRAIN_SCORED says less.
    let first_scored = seq - seq * scored / 100;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<Tokens> = (0..batch)
        .map(|_| Tokens {
            ids: (0..seq)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % model.config.vocab as u64) as u32
                })
                .collect(),
            mask: (0..seq).map(|i| u8::from(i >= first_scored)).collect(),
        })
        .collect();
    let seqs: Vec<Sequence<'_>> = data.iter().map(Tokens::sequence).collect();
    println!(
        "LoRA training, {} on {}: rank 16, all 7 projections ({} values), seq {seq}, batch {batch}, {pass_tokens} tokens a pass, recompute {recompute}, scored {scored}%",
        model.config.name,
        gpu.describe(),
        trainer.lora().len()
    );
    let warm_up = trainer.step(&gpu, &seqs).await?; // warm-up: pipelines compile
    let mut rates = Vec::new();
    for _ in 0..steps {
        let t = Instant::now();
        trainer.step(&gpu, &seqs).await?;
        rates.push((seq * batch) as f64 / t.elapsed().as_secs_f64());
    }
    let ours = median(rates);
    if env("TRAIN_PROFILE", 0) != 0 {
        gpu.start_profile();
        trainer.step(&gpu, &seqs).await?;
        if let Some(profile) = gpu.take_profile() {
            println!("one step, kernel by kernel:\n{}", profile.table(15));
        }
    }
    let t = Instant::now();
    trainer.evaluate(&gpu, &seqs).await?;
    let forward = (seq * batch) as f64 / t.elapsed().as_secs_f64();
    let flops = step_flops(&model.config, seq, 16, recompute) * batch as f64;
    let achieved = flops * ours / (seq * batch) as f64 / 1e9;
    let sgemm = numpy_gflops(seq, model.config.ffn, model.config.hidden);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("ours:            {ours:.1} tok/s (median of {steps} steps); forward alone {forward:.1} tok/s");
    match sgemm {
        Some(g) => println!("achieved:        {achieved:.1} GFLOP/s = {:.0}% of numpy sgemm ({g:.1} GFLOP/s, same run)", 100.0 * achieved / g),
        None => println!("achieved:        {achieved:.1} GFLOP/s (numpy unavailable)"),
    }
    println!(
        "GPU memory:      peak {:.1} MiB, largest buffer (binding) {:.1} MiB, limit {:.0} MiB",
        mib(gpu.memory().peak_bytes()),
        mib(gpu.memory().largest_buffer_bytes()),
        mib(gpu.limits().max_storage_buffer_binding_size as u64)
    );
    match peft_peer(&path, seq, batch) {
        Some(peer) => println!("PyTorch + PEFT:  {peer:.1} tok/s on 2 CPU threads (same run); ours / peer = {:.2}", ours / peer),
        None => println!("PyTorch + PEFT peer unavailable (pip install torch transformers peft gguf)"),
    }
    match burn_peer(&path, seq, batch, steps) {
        Ok((peer, loss)) => println!(
            "burn + burn-wgpu: {peer:.1} tok/s (same device, f32 base; step-0 loss {loss:.3}, ours {:.3}); ours / burn = {:.2}",
            warm_up.loss,
            ours / peer
        ),
        Err(why) => println!("burn + burn-wgpu peer {why}"),
    }
    Ok(())
}
