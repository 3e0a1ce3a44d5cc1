//! `classtune train`: course files in, a LoRA adapter (PEFT format) and per-step
//! metrics out, with a progress line on stderr.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use classtune::adapter::{self as peft, LoraConfig, Target};
use classtune::train::checkpoint::{self, BaseModel, Checkpoint, CheckpointMeta};
use classtune::chat::ChatTemplate;
use classtune::data::{DataError, DataOptions, Pipeline, Preset, Split, Summary};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::adamw::AdamW;
use classtune::model::{LoraWeights, Model};
use classtune::tokenizer::Tokenizer;
use classtune::train::run::{Dataset, Report, RunOptions, Runner, Tokens};
use classtune::train::{default_pass_tokens, Decay, OptimizerOptions, Schedule, Trainer};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Arguments of `classtune train`.
pub struct TrainArgs {
    pub model: PathBuf,
    pub data: Vec<PathBuf>,
    pub out: PathBuf,
    pub lora: LoraConfig,
    pub lr: f32,
    pub schedule: String,
    pub warmup_ratio: f64,
    pub weight_decay: f32,
    pub max_grad_norm: f32,
    pub run: RunOptions,
    pub seq_len: usize,
    pub val_fraction: f64,
    pub preset: Option<String>,
    pub system_prompt: Option<String>,
    pub recompute: bool,
    /// Tokens per pass (None: [`default_pass_tokens`]); never fewer than the longest.
    pub pass_tokens: Option<usize>,
    /// GPU memory budget in MiB ([`GpuOptions::memory_limit`]).
    pub gpu_memory_mib: Option<u64>,
    /// Continue this checkpoint's run (its settings replace the ones above).
    pub resume: Option<PathBuf>,
    /// Write `checkpoint.safetensors` every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Extra exports besides the PEFT adapter: gguf-lora, merged-f16, merged-q8_0.
    pub export: Vec<String>,
    /// Pause after this many steps in this invocation (resume later with `resume`).
    pub stop_after: Option<usize>,
    /// Start from an existing adapter (PEFT folder or llama.cpp LoRA GGUF).
    pub init_adapter: Option<PathBuf>,
}

/// Parses `q,k,v,...` into targets in canonical order.
pub fn parse_targets(list: &[String]) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for name in list {
        let t = Target::from_short(name)
            .ok_or_else(|| format!("unknown LoRA target {name:?}; choose from q, k, v, o, gate, up, down"))?;
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    targets.sort();
    Ok(targets)
}

pub async fn train(mut args: TrainArgs) -> Result<()> {
    for format in &args.export {
        super::export::Format::parse(format)?;
    }
    let file = MappedFile::open(&args.model).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let gguf = Gguf::parse(file.bytes(), file.len()).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let resume = match &args.resume {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let ckpt = Checkpoint::from_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            // The run continues with its own settings; the data must be given again.
            let m = &ckpt.meta;
            (args.lora, args.run, args.seq_len) = (m.lora.clone(), m.run.clone(), m.seq_len);
            eprintln!("resuming {} at step {}", path.display(), m.step);
            Some(ckpt)
        }
        None => None,
    };
    let init = match &args.init_adapter {
        Some(path) => {
            let config = classtune::model::Config::from_gguf(&gguf)?;
            let adapter = super::commands::read_adapter(path, &config)?;
            args.lora = adapter.config.clone();
            eprintln!("starting from adapter {} (rank {}, alpha {})", path.display(), args.lora.rank, args.lora.alpha);
            Some(adapter)
        }
        None => None,
    };
    let decay = Decay::from_name(&args.schedule)
        .ok_or_else(|| format!("unknown schedule {:?}; choose cosine, linear or constant", args.schedule))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf)?;
    let (data, data_summary) = prepare(&args, &tokenizer, &template)?;
    let base = BaseModel {
        name: gguf.get_str("general.name").unwrap_or("model").to_string(),
        architecture: gguf.get_str("general.architecture").unwrap_or("").to_string(),
        sha256: checkpoint::sha256_hex(file.bytes().chunks(1 << 24)),
    };
    let data_sha256 = checkpoint::data_digest(&data);

    let started = Instant::now();
    let gpu = Gpu::new(GpuOptions { memory_limit: args.gpu_memory_mib.map(|m| m << 20), ..GpuOptions::default() }).await?;
    let model = Model::load_with_header(&gpu, &file, &gguf).await.map_err(|e| format!("{}: {e}", args.model.display()))?;
    let total = args.run.total_steps(data.train.len());
    let longest = data.train.iter().chain(&data.validation).map(|t| t.ids.len()).max().unwrap_or(1);
    let pass_tokens = match args.pass_tokens {
        Some(asked) if asked < longest => {
            eprintln!("warning: --pass-tokens {asked} is below the longest sequence ({longest} tokens); passes hold {longest}");
            longest
        }
        Some(asked) => asked,
        None => default_pass_tokens(&gpu, longest, args.run.batch),
    };
    let (mut trainer, options, best) = match &resume {
        Some(ckpt) => {
            ckpt.check_matches(&base, &data_sha256)?;
            let m = &ckpt.meta;
            let t = Trainer::restore(&gpu, &model, &m.lora, m.optimizer.clone(), &ckpt.state, pass_tokens, args.recompute)?;
            (t, m.optimizer.clone(), m.best_val_loss)
        }
        None => {
            let options = OptimizerOptions {
                schedule: Schedule { lr: args.lr, warmup: (args.warmup_ratio * total as f64).ceil() as usize, total, decay },
                adamw: AdamW { weight_decay: args.weight_decay, ..AdamW::default() },
                max_grad_norm: args.max_grad_norm,
                seed: args.run.seed,
            };
            let lora = match &init {
                Some(adapter) => LoraWeights::from_adapter(&gpu, &model.config, adapter)?,
                None => LoraWeights::init(&gpu, &model.config, &args.lora, args.run.seed)?,
            };
            (Trainer::new(&gpu, &model, lora, options.clone(), pass_tokens, args.recompute)?, options, None)
        }
    };
    eprintln!(
        "training {} LoRA values (rank {}, alpha {}, {}) on {} with {} train / {} validation examples, {} steps, up to {} tokens a pass{}; GPU memory {:.1} MiB; set up in {:.1} s",
        trainer.lora().len(),
        args.lora.rank,
        args.lora.alpha,
        args.lora.targets.iter().map(|t| t.short()).collect::<Vec<_>>().join(","),
        gpu.describe(),
        data.train.len(),
        data.validation.len(),
        total,
        pass_tokens,
        if args.recompute { " (recomputed)" } else { "" },
        gpu.memory().live_bytes() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let metrics_path = args.out.join("metrics.jsonl");
    let mut metrics = Metrics::open(&metrics_path, resume.is_some())?;
    let mut progress = Progress::new(total, trainer.steps_done());
    let mut runner = Runner::new(args.run.clone(), best);
    let mut failure = None;
    if trainer.steps_done() == 0 {
        if let Some(v) = runner.validate(&trainer, &gpu, &data).await? {
            eprintln!("base model validation loss {v:.4}");
        }
    }
    let ckpt_path = args.out.join("checkpoint.safetensors");
    let meta = |step: usize, best_val_loss: Option<f64>| CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        step,
        lora: args.lora.clone(),
        optimizer: options.clone(),
        run: args.run.clone(),
        seq_len: args.seq_len,
        base: base.clone(),
        data_sha256: data_sha256.clone(),
        train_examples: data.train.len(),
        best_val_loss,
    };
    loop {
        let report = match runner.next(&mut trainer, &gpu, &data, false).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        metrics.report(&report);
        progress.report(&report);
        let step = report.stats.step;
        if args.stop_after.is_some_and(|n| step - progress.first_step >= n) && step < report.total_steps {
            eprintln!("\npausing after step {step}; continue with --resume {}", ckpt_path.display());
            break;
        }
        if args.checkpoint_every > 0 && step % args.checkpoint_every == 0 && step < report.total_steps {
            let state = trainer.state(&gpu).await?;
            let bytes = Checkpoint { meta: meta(step, runner.summary().best_val_loss), state }.to_bytes()?;
            checkpoint::write_atomic(&ckpt_path, &bytes).map_err(|e| format!("{}: {e}", ckpt_path.display()))?;
        }
    }
    progress.finish();
    metrics.finish()?;
    // The weights are those of the last good step even when a step failed, so the
    // checkpoint and the adapter are written either way.
    let state = trainer.state(&gpu).await?;
    let bytes = Checkpoint { meta: meta(state.step, runner.summary().best_val_loss), state }.to_bytes()?;
    checkpoint::write_atomic(&ckpt_path, &bytes).map_err(|e| format!("{}: {e}", ckpt_path.display()))?;
    let adapter = trainer.lora().to_adapter(&gpu, &base.name).await?;
    let files = peft::to_peft(&adapter, &model.config)?;
    peft::write_peft_dir(&args.out, &files)?;
    let summary = runner.summary();
    let facts = peft::TrainingFacts {
        steps: summary.steps,
        epochs: args.run.epochs,
        learning_rate: options.schedule.lr,
        seq_len: args.seq_len,
        batch: args.run.batch,
        grad_accum: args.run.grad_accum,
        base_val_loss: summary.base_val_loss,
        val_loss: summary.val_loss,
    };
    std::fs::write(args.out.join("README.md"), peft::model_card(&adapter, &facts, &data_summary))?;
    if data_summary.unredacted_personal_data {
        eprintln!("warning: the material held personal data that was NOT redacted; the adapter may have memorized it: do not share it");
    }
    for format in &args.export {
        let path = super::export::write(super::export::Format::parse(format)?, &adapter, &gguf, file.bytes(), &args.out)?;
        eprintln!("exported {}", path.display());
    }
    if let Some(e) = failure {
        return Err(format!("{e}; {} and the adapter in {} hold them", ckpt_path.display(), args.out.display()).into());
    }
    std::fs::write(args.out.join("train_summary.json"), serde_json::to_string_pretty(summary)? + "\n")?;
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    eprintln!(
        "done: {} steps in {:.1} s; train loss {}, validation loss {} (base model {}){}",
        summary.steps,
        started.elapsed().as_secs_f64(),
        show(summary.last_loss),
        show(summary.val_loss),
        show(summary.base_val_loss),
        if summary.early_stopped { ", stopped early" } else { "" }
    );
    println!("wrote {}", args.out.display());
    Ok(())
}

/// Runs the data pipeline over the inputs and keeps the token ids and masks.
fn prepare(args: &TrainArgs, tokenizer: &Tokenizer, template: &ChatTemplate) -> Result<(Dataset, Summary)> {
    let preset = match &args.preset {
        Some(name) => Some(Preset::from_name(name).ok_or_else(|| format!("unknown preset {name:?}"))?),
        None => Some(Preset::TeachingAssistant),
    };
    let opts = DataOptions {
        seq_len: args.seq_len,
        preset,
        system_prompt: args.system_prompt.clone(),
        validation_fraction: args.val_fraction,
        seed: args.run.seed,
        ..DataOptions::default()
    };
    let inputs = if args.data.is_empty() { super::data::sample_course()? } else { args.data.clone() };
    let mut examples: Vec<(Split, classtune::data::Example)> = Vec::new();
    let mut pipeline = Pipeline::new(tokenizer, template, opts)?;
    for path in &inputs {
        let name = path.display().to_string();
        match File::open(path) {
            Ok(f) => pipeline.add_file(&name, BufReader::new(f), &mut examples)?,
            Err(e) => pipeline.add_error(DataError::Io { file: name, offset: 0, reason: e.to_string() }),
        }
    }
    let (summary, _) = pipeline.finish()?;
    for e in &summary.errors {
        eprintln!("error: {}", e.message);
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    if summary.truncated_examples > 0 {
        eprintln!(
            "warning: {} example(s) were longer than --seq-len {} and were truncated",
            summary.truncated_examples, args.seq_len
        );
    }
    let mut data = Dataset::default();
    for (split, ex) in examples {
        let tokens = Tokens { ids: ex.input_ids, mask: ex.loss_mask };
        match split {
            Split::Train => data.train.push(tokens),
            Split::Validation => data.validation.push(tokens),
        }
    }
    let held = data.hold_out_examples(args.val_fraction, args.run.seed);
    if held > 0 {
        eprintln!(
            "note: the split by document left one side empty ({} document(s)); holding out {held} of the examples instead",
            summary.documents
        );
    }
    if data.train.is_empty() {
        return Err(format!("no training examples came out of {} input file(s)", inputs.len()).into());
    }
    Ok((data, summary))
}

/// metrics.jsonl: one JSON line per step, with the validation loss on the steps that
/// have one.
struct Metrics {
    out: BufWriter<File>,
    last: Instant,
}

impl Metrics {
    /// `append` continues a resumed run's file.
    fn open(path: &Path, append: bool) -> Result<Metrics> {
        let file = std::fs::OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(path);
        let out = BufWriter::new(file.map_err(|e| format!("{}: {e}", path.display()))?);
        Ok(Metrics { out, last: Instant::now() })
    }

    fn report(&mut self, r: &Report) {
        let seconds = self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        let mut line = serde_json::json!({
            "step": r.stats.step,
            "epoch": r.epoch,
            "loss": r.stats.loss,
            "lr": r.stats.lr,
            "grad_norm": r.stats.grad_norm,
            "tokens": r.stats.tokens,
            "tokens_per_s": r.stats.tokens as f64 / seconds.max(1e-9),
        });
        if let Some(v) = r.val_loss {
            line["val_loss"] = serde_json::json!(v);
        }
        // A failed metrics write must not end hours of training; it shows at the end.
        let _ = writeln!(self.out, "{line}");
    }

    fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| format!("writing metrics.jsonl: {e}").into())
    }
}

/// The progress line: step, loss, tokens/s, ETA.
struct Progress {
    total: usize,
    first_step: usize,
    started: Instant,
    tokens: usize,
    terminal: bool,
    val_loss: Option<f64>,
}

impl Progress {
    fn new(total: usize, first_step: usize) -> Progress {
        Progress {
            total,
            first_step,
            started: Instant::now(),
            tokens: 0,
            terminal: std::io::stderr().is_terminal(),
            val_loss: None,
        }
    }

    fn report(&mut self, r: &Report) {
        let stats = &r.stats;
        self.val_loss = r.val_loss.or(self.val_loss);
        self.tokens += stats.tokens;
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = stats.step - self.first_step;
        let eta = elapsed / done.max(1) as f64 * self.total.saturating_sub(stats.step) as f64;
        let width = 24;
        let filled = width * stats.step / self.total.max(1);
        let bar: String = "#".repeat(filled) + &"-".repeat(width - filled);
        let val = self.val_loss.map_or(String::new(), |v| format!(" val {v:.4}"));
        let line = format!(
            "[{bar}] step {}/{} loss {:.4}{val} lr {:.2e} {:.0} tok/s ETA {}",
            stats.step,
            self.total,
            stats.loss,
            stats.lr,
            self.tokens as f64 / elapsed.max(1e-9),
            clock(eta)
        );
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        if r.early_stop {
            eprintln!("\nvalidation loss stopped improving: stopping early");
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
