//! Command-line front end: argument parsing and the commands. Results go to stdout,
//! diagnostics to stderr.

mod commands;
mod data;
mod export;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "classtune", version, about = "Fine-tune and run small LLMs on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// One variant per command, parsed once: their size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Architecture, parameters, tensor types and memory needs of a GGUF model.
    Info {
        /// GGUF model [default: the SmolLM2 model that scripts/setup.sh caches]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Generate a completion (only the completion goes to stdout).
    Generate {
        /// GGUF model [default: the SmolLM2 model that scripts/setup.sh caches]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        /// Wrap the prompt as a user turn with the model's chat template.
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 40)]
        top_k: u32,
        #[arg(long, default_value_t = 0.95)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// A LoRA adapter to apply: a PEFT folder or a llama.cpp LoRA GGUF file.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Logits of every position for the given token ids, as JSON (for parity checks
    /// against other engines and the browser build).
    Logits {
        /// GGUF model [default: the SmolLM2 model that scripts/setup.sh caches]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        /// Comma-separated token ids.
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u32>,
        /// A LoRA adapter to apply: a PEFT folder or a llama.cpp LoRA GGUF file.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Mean negative log-likelihood of a text file under the model, as JSON.
    Score {
        /// GGUF model [default: the SmolLM2 model that scripts/setup.sh caches]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Tokens per scoring window.
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        /// A LoRA adapter to apply: a PEFT folder or a llama.cpp LoRA GGUF file.
        #[arg(long)]
        adapter: Option<PathBuf>,
    },
    /// Fine-tune a LoRA adapter on course material; writes the adapter (PEFT format) and
    /// metrics.jsonl to --out.
    Train {
        /// GGUF model [default: the SmolLM2 model that scripts/setup.sh caches]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        /// Course files (any format `classtune data` reads); without it, the bundled sample course.
        #[arg(long, num_args = 1..)]
        data: Vec<PathBuf>,
        /// Output folder: adapter_model.safetensors, adapter_config.json, metrics.jsonl.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        rank: usize,
        #[arg(long, default_value_t = 32.0)]
        alpha: f32,
        #[arg(long, default_value_t = 0.0)]
        dropout: f32,
        /// Scale by alpha / sqrt(rank) (rsLoRA) instead of alpha / rank.
        #[arg(long)]
        rslora: bool,
        /// Adapted projections.
        #[arg(long, value_delimiter = ',', default_value = "q,k,v,o,gate,up,down")]
        targets: Vec<String>,
        #[arg(long, default_value_t = 2e-4)]
        lr: f32,
        /// cosine, linear or constant decay after warmup.
        #[arg(long, default_value = "cosine")]
        schedule: String,
        /// Fraction of the steps spent warming the learning rate up from 0.
        #[arg(long, default_value_t = 0.05)]
        warmup_ratio: f64,
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f32,
        /// Global gradient-norm clipping (0: off).
        #[arg(long, default_value_t = 1.0)]
        max_grad_norm: f32,
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        #[arg(long)]
        max_steps: Option<usize>,
        /// Tokens per example (longer examples are truncated, with a warning).
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Sequences per micro-batch.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Micro-batches per optimizer step.
        #[arg(long, default_value_t = 1)]
        grad_accum: usize,
        /// Fraction of documents held out for the validation loss.
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        /// Validation loss every N steps (0: only at the end).
        #[arg(long, default_value_t = 10)]
        eval_every: usize,
        /// Stop when the validation loss has not improved for N evaluations.
        #[arg(long)]
        patience: Option<usize>,
        /// Keep only each layer's input and recompute the rest in the backward: less GPU
        /// memory (about a fifth of the activations), about a third more time.
        #[arg(long)]
        recompute: bool,
        /// Tokens one forward and backward pass holds: a step's sequences are packed into
        /// passes of up to this many (each still attends to itself alone). Default: the
        /// longest sequence times --batch on a hardware GPU, up to 1024 tokens (3x the speed
        /// of a pass per sequence on an H100), the longest sequence on a CPU-emulated one.
        /// GPU memory grows with it; --recompute takes most of that back.
        #[arg(long)]
        pass_tokens: Option<usize>,
        /// Most GPU memory to use, in MiB: a run that needs more stops while setting up,
        /// saying which buffer did not fit, instead of running out later.
        #[arg(long)]
        gpu_memory: Option<u64>,
        /// socratic-tutor, teaching-assistant (default) or resource-generator.
        #[arg(long, conflicts_with = "system_prompt")]
        preset: Option<String>,
        #[arg(long)]
        system_prompt: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Continue the run of this checkpoint (its settings are used; give the same data).
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Write --out/checkpoint.safetensors every N steps (0: only at the end).
        #[arg(long, default_value_t = 50)]
        checkpoint_every: usize,
        /// Also write these formats to --out: gguf-lora, merged-f16, merged-q8_0.
        #[arg(long, value_delimiter = ',')]
        export: Vec<String>,
        /// Pause after N steps (the checkpoint in --out continues it with --resume).
        #[arg(long)]
        stop_after: Option<usize>,
        /// Start from this adapter (a PEFT folder or a llama.cpp LoRA GGUF, e.g. trained
        /// elsewhere) instead of a fresh one; its rank, alpha and targets are used.
        #[arg(long, conflicts_with = "resume")]
        init_adapter: Option<PathBuf>,
    },
    /// Write a checkpoint's adapter as PEFT files, a llama.cpp LoRA GGUF, or merged into
    /// the base model as a standalone GGUF.
    Export {
        /// The base GGUF model the checkpoint was trained on [default: the cached SmolLM2]
        #[arg(long, default_value_os_t = classtune::paths::default_model(), hide_default_value = true)]
        model: PathBuf,
        #[arg(long)]
        checkpoint: PathBuf,
        /// peft, gguf-lora, merged-f16 (= merged-gguf) or merged-q8_0.
        #[arg(long)]
        format: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prepare training data from course material (txt, md, html, pdf, docx, csv/tsv,
    /// ChatML/alpaca/prompt-completion JSON(L)); without --input, the bundled sample course.
    Data {
        /// Input files.
        #[arg(long, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Output folder: train.jsonl, val.jsonl, summary.json, preview.txt, axolotl/.
        #[arg(long)]
        out: PathBuf,
        /// GGUF model whose tokenizer and chat template to use (default: SmolLM2-135M-Instruct in the cache).
        #[arg(long)]
        model: Option<PathBuf>,
        /// socratic-tutor, teaching-assistant (default) or resource-generator.
        #[arg(long, conflicts_with = "system_prompt")]
        preset: Option<String>,
        /// Your own system prompt for Q&A and chat examples.
        #[arg(long)]
        system_prompt: Option<String>,
        /// Tokens per example.
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        /// Tokens shared by consecutive text windows.
        #[arg(long, default_value_t = 64)]
        overlap: usize,
        /// Class roster (one student name per line) for the personal-data scan.
        #[arg(long)]
        roster: Option<PathBuf>,
        /// Fraction of documents held out for validation.
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep personal data instead of replacing it with placeholders (flagged in the summary).
        #[arg(long)]
        no_redact: bool,
    },
}

pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let result = pollster::block_on(async {
        match cli.command {
            Command::Info { model, json } => commands::info(&model, json).await,
            Command::Generate { model, prompt, chat, max_tokens, temperature, top_k, top_p, repetition_penalty, seed, adapter } => {
                let options = classtune::model::GenerateOptions {
                    max_tokens,
                    temperature,
                    top_k,
                    top_p,
                    repetition_penalty,
                    seed,
                    stop: Vec::new(),
                };
                commands::generate(&model, adapter.as_deref(), &prompt, chat, options).await
            }
            Command::Logits { model, ids, adapter } => commands::logits(&model, adapter.as_deref(), &ids).await,
            Command::Score { model, data, seq_len, adapter } => commands::score(&model, adapter.as_deref(), &data, seq_len).await,
            Command::Train {
                model,
                data,
                out,
                rank,
                alpha,
                dropout,
                rslora,
                targets,
                lr,
                schedule,
                warmup_ratio,
                weight_decay,
                max_grad_norm,
                epochs,
                max_steps,
                seq_len,
                batch,
                grad_accum,
                val_fraction,
                eval_every,
                patience,
                recompute,
                pass_tokens,
                gpu_memory,
                preset,
                system_prompt,
                seed,
                resume,
                checkpoint_every,
                export,
                stop_after,
                init_adapter,
            } => match train::parse_targets(&targets) {
                Ok(targets) => {
                    train::train(train::TrainArgs {
                        model,
                        data,
                        out,
                        lora: classtune::adapter::LoraConfig { rank, alpha, dropout, rslora, targets },
                        lr,
                        schedule,
                        warmup_ratio,
                        weight_decay,
                        max_grad_norm,
                        run: classtune::train::run::RunOptions { epochs, max_steps, batch, grad_accum, eval_every, patience, seed },
                        seq_len,
                        val_fraction,
                        preset,
                        system_prompt,
                        recompute,
                        pass_tokens,
                        gpu_memory_mib: gpu_memory,
                        resume,
                        checkpoint_every,
                        export,
                        stop_after,
                        init_adapter,
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            Command::Export { model, checkpoint, format, out } => export::run(&model, &checkpoint, &format, &out),
            Command::Data { input, out, model, preset, system_prompt, seq_len, overlap, roster, val_fraction, seed, no_redact } => {
                data::run(data::DataArgs {
                    inputs: input,
                    out,
                    model,
                    preset,
                    system_prompt,
                    seq_len,
                    overlap,
                    roster,
                    validation_fraction: val_fraction,
                    seed,
                    no_redact,
                })
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
