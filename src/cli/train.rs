//! `classtune train`: course files in, a LoRA adapter (PEFT format) and per-step
//! metrics out, with a progress line on stderr.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use classtune::adapter::{self as peft, LoraConfig, Target};
use classtune::chat::ChatTemplate;
use classtune::data::{DataError, DataOptions, Pipeline, Preset, Split};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::adamw::AdamW;
use classtune::model::{LoraWeights, Model};
use classtune::tokenizer::Tokenizer;
use classtune::train::run::{self, Control, Dataset, Event, RunOptions, Tokens};
use classtune::train::{Decay, OptimizerOptions, Schedule, TrainError, Trainer};

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

pub async fn train(args: TrainArgs) -> Result<()> {
    let decay = Decay::from_name(&args.schedule)
        .ok_or_else(|| format!("unknown schedule {:?}; choose cosine, linear or constant", args.schedule))?;
    let file = MappedFile::open(&args.model).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let gguf = Gguf::parse(file.bytes(), file.len()).map_err(|e| format!("{}: {e}", args.model.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf)?;
    let data = prepare(&args, &tokenizer, &template)?;

    let started = Instant::now();
    let gpu = Gpu::new(GpuOptions::default()).await?;
    let model = Model::load_with_header(&gpu, &file, &gguf).await.map_err(|e| format!("{}: {e}", args.model.display()))?;
    let lora = LoraWeights::init(&gpu, &model.config, &args.lora, args.run.seed)?;
    let total = args.run.total_steps(data.train.len());
    let options = OptimizerOptions {
        schedule: Schedule {
            lr: args.lr,
            warmup: (args.warmup_ratio * total as f64).ceil() as usize,
            total,
            decay,
        },
        adamw: AdamW { weight_decay: args.weight_decay, ..AdamW::default() },
        max_grad_norm: args.max_grad_norm,
        seed: args.run.seed,
    };
    let longest = data.train.iter().chain(&data.validation).map(|t| t.ids.len()).max().unwrap_or(1);
    let mut trainer = Trainer::new(&gpu, &model, lora, options, longest, args.recompute)?;
    eprintln!(
        "training {} LoRA values (rank {}, alpha {}, {}) on {} with {} train / {} validation examples, {} steps; GPU memory {:.1} MiB (peak {:.1} MiB); set up in {:.1} s",
        trainer.lora().len(),
        args.lora.rank,
        args.lora.alpha,
        args.lora.targets.iter().map(|t| t.short()).collect::<Vec<_>>().join(","),
        gpu.describe(),
        data.train.len(),
        data.validation.len(),
        total,
        gpu.memory().live_bytes() as f64 / (1 << 20) as f64,
        gpu.memory().peak_bytes() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    let mut metrics = Metrics::create(&args.out.join("metrics.jsonl"))?;
    let mut progress = Progress::new(total);
    let result = run::run(&mut trainer, &gpu, &data, &args.run, |event| {
        metrics.event(event);
        progress.event(event);
        Control::Continue
    })
    .await;
    progress.finish();
    metrics.finish()?;
    // The weights are those of the last good step even when the run failed, so they
    // are written either way.
    let adapter = trainer.lora().to_adapter(&gpu, &model.config.name).await?;
    let files = peft::to_peft(&adapter, &model.config)?;
    peft::write_peft_dir(&args.out, &files)?;
    let summary = match result {
        Ok(summary) => summary,
        Err(e @ TrainError::NonFinite { .. }) => {
            return Err(format!("{e}; the adapter in {} holds them", args.out.display()).into());
        }
        Err(e) => return Err(e.into()),
    };
    std::fs::write(args.out.join("train_summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
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
fn prepare(args: &TrainArgs, tokenizer: &Tokenizer, template: &ChatTemplate) -> Result<Dataset> {
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
    if data.train.is_empty() {
        return Err(format!("no training examples came out of {} input file(s)", inputs.len()).into());
    }
    Ok(data)
}

/// metrics.jsonl: one line per step, with the validation loss on the steps that have one.
struct Metrics {
    out: BufWriter<File>,
    pending: Option<serde_json::Value>,
    started: Instant,
    error: Option<std::io::Error>,
}

impl Metrics {
    fn create(path: &Path) -> Result<Metrics> {
        let out = BufWriter::new(File::create(path).map_err(|e| format!("{}: {e}", path.display()))?);
        Ok(Metrics { out, pending: None, started: Instant::now(), error: None })
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Step { stats, epoch, .. } => {
                self.flush();
                let seconds = self.started.elapsed().as_secs_f64();
                self.started = Instant::now();
                self.pending = Some(serde_json::json!({
                    "step": stats.step,
                    "epoch": epoch,
                    "loss": stats.loss,
                    "lr": stats.lr,
                    "grad_norm": stats.grad_norm,
                    "tokens": stats.tokens,
                    "tokens_per_s": stats.tokens as f64 / seconds.max(1e-9),
                }));
            }
            Event::Validation { val_loss, .. } => {
                if let Some(line) = self.pending.as_mut() {
                    line["val_loss"] = serde_json::json!(val_loss);
                }
                self.flush();
                // Validation time is not training time.
                self.started = Instant::now();
            }
        }
    }

    fn flush(&mut self) {
        if let Some(line) = self.pending.take() {
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error.get_or_insert(e);
            }
        }
    }

    fn finish(mut self) -> Result<()> {
        self.flush();
        self.out.flush()?;
        match self.error {
            Some(e) => Err(format!("writing metrics.jsonl: {e}").into()),
            None => Ok(()),
        }
    }
}

/// The progress line: step, loss, tokens/s, ETA.
struct Progress {
    total: usize,
    started: Instant,
    tokens: usize,
    terminal: bool,
    val_loss: Option<f64>,
}

impl Progress {
    fn new(total: usize) -> Progress {
        Progress { total, started: Instant::now(), tokens: 0, terminal: std::io::stderr().is_terminal(), val_loss: None }
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Validation { val_loss, .. } => self.val_loss = Some(*val_loss),
            Event::Step { stats, .. } => {
                self.tokens += stats.tokens;
                let elapsed = self.started.elapsed().as_secs_f64();
                let eta = elapsed / stats.step as f64 * self.total.saturating_sub(stats.step) as f64;
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
            }
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
