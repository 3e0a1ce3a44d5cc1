//! The commands behind `classtune info | generate | score`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use classtune::chat::{ChatTemplate, Message};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::{Config, GenerateOptions, Generator, KvCache, Model};
use classtune::tokenizer::Tokenizer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Tokens of context the CLI reserves for generation.
const CONTEXT: usize = 2048;

fn open(path: &Path) -> Result<(MappedFile, Gguf)> {
    let file = MappedFile::open(path).map_err(|e| match path == classtune::paths::default_model() {
        true => format!("{e} (the default model: `bash scripts/setup.sh model` downloads it)"),
        false => e.to_string(),
    })?;
    let gguf = Gguf::parse(file.bytes(), file.len()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file, gguf))
}

pub async fn info(path: &Path, json: bool) -> Result<()> {
    let (_, gguf) = open(path)?;
    let config = Config::from_gguf(&gguf).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut types: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    let mut weight_bytes = 0;
    for t in gguf.tensors() {
        let entry = types.entry(t.ty.name().to_string()).or_default();
        entry.0 += 1;
        entry.1 += t.size;
        weight_bytes += t.size;
    }
    let kv = config.kv_cache_bytes(CONTEXT);
    let summary = serde_json::json!({
        "file": path.display().to_string(),
        "config": config,
        "parameters": config.parameter_count(),
        "tensor_types": types.iter().map(|(k, (n, b))| (k.clone(), serde_json::json!({"tensors": n, "bytes": b}))).collect::<BTreeMap<_, _>>(),
        "memory": {
            "weights_bytes": weight_bytes,
            "kv_cache_bytes": kv,
            "kv_cache_tokens": CONTEXT,
        },
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("model:        {} ({})", config.name, config.arch.name());
    println!("parameters:   {:.1} M", config.parameter_count() as f64 / 1e6);
    println!(
        "shape:        {} layers, hidden {}, ffn {}, heads {} (kv {}), head dim {}, vocab {}, context {}",
        config.n_layers, config.hidden, config.ffn, config.n_heads, config.n_kv_heads, config.head_dim, config.vocab, config.context
    );
    let list: Vec<String> = types.iter().map(|(k, (n, b))| format!("{k} ×{n} ({:.1} MiB)", mib(*b))).collect();
    println!("tensor types: {}", list.join(", "));
    println!(
        "GPU memory:   {:.1} MiB weights (kept quantized) + {:.1} MiB KV cache for {CONTEXT} tokens",
        mib(weight_bytes),
        mib(kv)
    );
    Ok(())
}

async fn load(path: &Path, adapter: Option<&Path>) -> Result<(Gpu, Model, Tokenizer, Gguf)> {
    let started = Instant::now();
    let (file, gguf) = open(path)?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let gpu = Gpu::new(GpuOptions::default()).await?;
    let mut model = Model::load_with_header(&gpu, &file, &gguf).await.map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(dir) = adapter {
        let loaded = read_adapter(dir, &model.config)?;
        let weights = classtune::model::LoraWeights::from_adapter(&gpu, &model.config, &loaded)?;
        eprintln!("applying adapter {} (rank {}, {} projections)", dir.display(), loaded.config.rank, loaded.pairs.len());
        model.attach(Some(weights));
    }
    eprintln!(
        "loaded {} on {} in {:.2} s ({:.1} MiB on the GPU)",
        model.config.name,
        gpu.describe(),
        started.elapsed().as_secs_f64(),
        model.weight_bytes() as f64 / (1 << 20) as f64
    );
    Ok((gpu, model, tokenizer, gguf))
}

/// A PEFT adapter folder or a llama.cpp LoRA GGUF file, for the base model `config`.
pub fn read_adapter(path: &Path, config: &Config) -> Result<classtune::adapter::Adapter> {
    let loaded = if path.is_dir() {
        classtune::adapter::read_peft_dir(path, config)
    } else {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        classtune::adapter::from_gguf_lora(&bytes, config)
    };
    Ok(loaded.map_err(|e| format!("{}: {e}", path.display()))?)
}

pub async fn generate(path: &Path, adapter: Option<&Path>, prompt: &str, chat: bool, mut options: GenerateOptions) -> Result<()> {
    let (gpu, model, tokenizer, gguf) = load(path, adapter).await?;
    let ids = if chat {
        let template = ChatTemplate::from_gguf(&gguf)?;
        let text = template.render(&[Message::user(prompt)], true);
        options.stop = template.stop_ids(&tokenizer);
        tokenizer.encode(&text, true)?
    } else {
        options.stop = tokenizer.eos_id().into_iter().collect();
        with_bos(&tokenizer, tokenizer.encode(prompt, false)?)
    };
    let mut generator = Generator::new(&gpu, &model, CONTEXT)?;
    let mut decoder = tokenizer.stream_decoder();
    let mut stdout = std::io::stdout();
    let started = Instant::now();
    let mut first = None;
    let stop = options.stop.clone();
    let mut decode_error = None;
    let (tokens, reason) = generator
        .generate(&gpu, &ids, &options, |id| {
            first.get_or_insert_with(Instant::now);
            if !stop.contains(&id) {
                match decoder.push(id) {
                    Ok(Some(text)) => {
                        let _ = stdout.write_all(text.as_bytes());
                        let _ = stdout.flush();
                    }
                    Ok(None) => {}
                    Err(error) => {
                        decode_error.get_or_insert(error);
                        return false;
                    }
                }
            }
            true
        })
        .await?;
    if let Some(error) = decode_error {
        return Err(error.into());
    }
    if let Some(rest) = decoder.finish() {
        stdout.write_all(rest.as_bytes())?;
    }
    println!();
    let first = first.unwrap_or_else(Instant::now);
    let decode_secs = first.elapsed().as_secs_f64();
    eprintln!(
        "{} prompt tokens, {} generated ({reason:?}); first token after {:.2} s, then {:.1} tok/s",
        ids.len(),
        tokens.len(),
        (first - started).as_secs_f64(),
        (tokens.len().saturating_sub(1)) as f64 / decode_secs.max(1e-9)
    );
    Ok(())
}

pub async fn logits(path: &Path, adapter: Option<&Path>, ids: &[u32]) -> Result<()> {
    let (gpu, model, _, _) = load(path, adapter).await?;
    let mut cache = KvCache::new(&gpu, &model.config, ids.len())?;
    let logits = model.logits(&gpu, &mut cache, ids).await?;
    let rows: Vec<&[f32]> = logits.chunks(model.config.vocab).collect();
    println!("{}", serde_json::json!({ "ids": ids, "vocab": model.config.vocab, "logits": rows }));
    Ok(())
}

pub async fn score(path: &Path, adapter: Option<&Path>, data: &Path, seq_len: usize) -> Result<()> {
    if seq_len < 2 {
        return Err("--seq-len must be at least 2".into());
    }
    let text = std::fs::read(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let text = String::from_utf8(text).map_err(|e| {
        format!("{}: not UTF-8 text (invalid byte at offset {})", data.display(), e.utf8_error().valid_up_to())
    })?;
    let (gpu, model, tokenizer, _) = load(path, adapter).await?;
    let ids = with_bos(&tokenizer, tokenizer.encode(&text, false)?);
    if ids.len() < 2 {
        return Err(format!("{}: fewer than two tokens to score", data.display()).into());
    }
    let vocab = model.config.vocab;
    let mut cache = KvCache::new(&gpu, &model.config, seq_len)?;
    let (mut total, mut count) = (0f64, 0usize);
    // Non-overlapping windows: each token after a window's first is predicted from the
    // tokens before it in that window.
    for window in ids.chunks(seq_len) {
        if window.len() < 2 {
            continue;
        }
        cache.truncate(0);
        let logits = model.logits(&gpu, &mut cache, window).await?;
        for (pos, &target) in window.iter().enumerate().skip(1) {
            let row = &logits[(pos - 1) * vocab..pos * vocab];
            total += nll(row, target as usize);
            count += 1;
        }
    }
    let mean = total / count as f64;
    println!(
        "{}",
        serde_json::json!({
            "file": data.display().to_string(),
            "tokens": count,
            "mean_nll": mean,
            "perplexity": mean.exp(),
            "seq_len": seq_len,
        })
    );
    Ok(())
}

/// Prepends the beginning-of-sequence token where the model expects one.
fn with_bos(tokenizer: &Tokenizer, ids: Vec<u32>) -> Vec<u32> {
    match (tokenizer.add_bos(), tokenizer.bos_id()) {
        (true, Some(bos)) => std::iter::once(bos).chain(ids).collect(),
        _ => ids,
    }
}

/// −log softmax(row)[target], in f64 for a stable sum.
fn nll(row: &[f32], target: usize) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - row[target] as f64
}
