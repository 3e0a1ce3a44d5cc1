//! Command-line front end: argument parsing and the commands. Results go to stdout,
//! diagnostics to stderr.

mod commands;
mod data;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "classtune", version, about = "Fine-tune and run small LLMs on your own GPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
            Command::Generate { model, prompt, chat, max_tokens, temperature, top_k, top_p, repetition_penalty, seed } => {
                let options = classtune::model::GenerateOptions {
                    max_tokens,
                    temperature,
                    top_k,
                    top_p,
                    repetition_penalty,
                    seed,
                    stop: Vec::new(),
                };
                commands::generate(&model, &prompt, chat, options).await
            }
            Command::Logits { model, ids } => commands::logits(&model, &ids).await,
            Command::Score { model, data, seq_len } => commands::score(&model, &data, seq_len).await,
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
