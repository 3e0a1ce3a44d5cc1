//! SmolLM2-135M prefill and decode speed on our kernels, next to llama.cpp on the CPU
//! (llama-cpp-python) measured in the same run, plus cold start and GPU memory.
//!
//! `cargo bench --bench engine` (model from CLASSTUNE_MODEL or the setup cache);
//! ENGINE_PROFILE=1 adds a prefill and 32 decode steps timed kernel by kernel
//! (gpu::Profile).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use classtune::gguf::{MappedFile, TensorSource};
use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::{GenerateOptions, Generator, KvCache, Model};

mod peers;
use peers::median;

const PREFILL: usize = 256;
const DECODE: usize = 64;
const RUNS: usize = 3;

/// llama.cpp's prefill and decode tok/s for the same file, prompt length and budget.
fn llama_cpp(path: &Path) -> Option<(f64, f64)> {
    let script = format!(
        r#"
import time, statistics
from llama_cpp import Llama
m = Llama(model_path={path:?}, n_ctx=1024, n_threads=2, n_batch={PREFILL}, verbose=False)
prompt = [ (i * 7919) % 40000 + 100 for i in range({PREFILL}) ]
pre, dec = [], []
for _ in range({RUNS}):
    m.reset(); t = time.perf_counter(); m.eval(prompt); pre.append({PREFILL} / (time.perf_counter() - t))
    t = time.perf_counter()
    for _ in range({DECODE}):
        tok = m.sample(temp=0.0); m.eval([tok])
    dec.append({DECODE} / (time.perf_counter() - t))
print(statistics.median(pre), statistics.median(dec))
"#,
        path = path.display().to_string()
    );
    let out = Command::new("python3").args(["-c", &script]).output().ok()?;
    if !out.status.success() {
        eprintln!("llama.cpp peer failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().filter_map(|s| s.parse::<f64>().ok());
    Some((parts.next()?, parts.next()?))
}

fn main() {
    let path = classtune::paths::default_model();
    if let Err(e) = pollster::block_on(run(&path)) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

async fn run(path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let cold = Instant::now();
    let gpu = Gpu::new(GpuOptions::default()).await?;
    let file = MappedFile::open(path)?;
    let gguf = file.header().await?;
    let model = Model::load_with_header(&gpu, &file, &gguf).await?;
    let loaded = cold.elapsed().as_secs_f64();
    let prompt: Vec<u32> = (0..PREFILL).map(|i| ((i * 7919) % 40000 + 100) as u32).collect();
    let options = GenerateOptions { max_tokens: 1, temperature: 0.0, ..Default::default() };
    let mut generator = Generator::new(&gpu, &model, 1024)?;
    generator.generate(&gpu, &prompt[..8], &options, |_| true).await?;
    let first_token = cold.elapsed().as_secs_f64();

    let mut prefill = Vec::new();
    let mut cache = KvCache::new(&gpu, &model.config, 1024)?;
    for _ in 0..RUNS {
        cache.truncate(0);
        let logits = gpu.buffer("bench.logits", (model.config.vocab * 4) as u64)?;
        let t = Instant::now();
        let mut batch = gpu.batch();
        model.last_logits(&mut batch, &mut cache, &prompt, &logits).await?;
        batch.submit()?;
        gpu.read_f32_prefix(&logits, 1).await?;
        prefill.push(PREFILL as f64 / t.elapsed().as_secs_f64());
    }
    let mut decode = Vec::new();
    for _ in 0..RUNS {
        generator.reset();
        // Time from the first generated token to the last: pure decode steps.
        let mut first = None;
        let budget = GenerateOptions { max_tokens: DECODE + 1, ..options.clone() };
        let (tokens, _) = generator
            .generate(&gpu, &prompt[..16], &budget, |_| {
                first.get_or_insert_with(Instant::now);
                true
            })
            .await?;
        if let Some(first) = first {
            decode.push((tokens.len() - 1) as f64 / first.elapsed().as_secs_f64());
        }
    }
    let (prefill, decode) = (median(prefill), median(decode));
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("device: {}", gpu.describe());
    println!("cold start: model loaded in {loaded:.2} s, first token at {first_token:.2} s (includes shader compilation)");
    println!("prefill ({PREFILL} tokens): {prefill:.1} tok/s; decode: {decode:.1} tok/s (median of {RUNS})");
    println!(
        "GPU memory: weights {:.1} MiB, KV cache for 1024 tokens {:.1} MiB, peak {:.1} MiB",
        mib(model.weight_bytes()),
        mib(model.config.kv_cache_bytes(1024)),
        mib(gpu.memory().peak_bytes())
    );
    match llama_cpp(path) {
        Some((lp, ld)) => println!(
            "llama.cpp CPU (2 threads): prefill {lp:.1} tok/s, decode {ld:.1} tok/s; ratio ours/llama.cpp: prefill {:.2}, decode {:.2}",
            prefill / lp,
            decode / ld
        ),
        None => println!("llama.cpp CPU peer unavailable (pip install llama-cpp-python; see docs/benchmarks.md)"),
    }
    if std::env::var_os("ENGINE_PROFILE").is_some() {
        generator.reset();
        let budget = GenerateOptions { max_tokens: 32, ..options.clone() };
        gpu.start_profile();
        generator.generate(&gpu, &prompt[..16], &budget, |_| true).await?;
        if let Some(profile) = gpu.take_profile() {
            println!("a 16-token prefill and 32 decode steps, kernel by kernel:\n{}", profile.table(12));
        }
    }
    Ok(())
}
