//! `classtune data`: course files in, a prepared dataset out (see docs/data.md).

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use classtune::chat::ChatTemplate;
use classtune::data::export::{axolotl_yaml, engine_line, export_file, export_line, ExportFiles, TrainSettings};
use classtune::data::{DataError, DataOptions, Example, ExampleKind, ExampleSink, Pipeline, Preset, Split};
use classtune::gguf::{Gguf, MappedFile, TensorSource};
use classtune::tokenizer::Tokenizer;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Arguments of `classtune data`.
pub struct DataArgs {
    pub inputs: Vec<PathBuf>,
    pub out: PathBuf,
    pub model: Option<PathBuf>,
    pub preset: Option<String>,
    pub system_prompt: Option<String>,
    pub seq_len: usize,
    pub overlap: usize,
    pub roster: Option<PathBuf>,
    pub validation_fraction: f64,
    pub seed: u64,
    pub no_redact: bool,
}

/// The bundled sample course, used when no `--input` is given.
const SAMPLE_COURSE: &str = "sample-course";

pub fn run(args: DataArgs) -> Result<()> {
    let model = args.model.clone().unwrap_or_else(classtune::paths::default_model);
    let file = MappedFile::open(&model).map_err(|e| format!("{e} (give the model with --model; scripts/setup.sh downloads the default one)"))?;
    let gguf = Gguf::parse(file.bytes(), file.len()).map_err(|e| format!("{}: {e}", model.display()))?;
    let tokenizer = Tokenizer::from_gguf(&gguf)?;
    let template = ChatTemplate::from_gguf(&gguf)?;

    let preset = match &args.preset {
        Some(name) => Some(Preset::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            format!("unknown preset {name:?}; choose one of {}", names.join(", "))
        })?),
        None => Some(Preset::TeachingAssistant),
    };
    let roster = match &args.roster {
        Some(path) => read_roster(path)?,
        None => Vec::new(),
    };
    let opts = DataOptions {
        seq_len: args.seq_len,
        overlap: args.overlap,
        preset,
        system_prompt: args.system_prompt.clone(),
        validation_fraction: args.validation_fraction,
        seed: args.seed,
        redact: !args.no_redact,
        roster,
        ..DataOptions::default()
    };
    let inputs = if args.inputs.is_empty() { sample_course()? } else { args.inputs.clone() };

    std::fs::create_dir_all(args.out.join("axolotl"))?;
    let mut sink = FileSink::create(&args.out)?;
    let mut pipeline = Pipeline::new(&tokenizer, &template, opts)?;
    for path in &inputs {
        let name = path.display().to_string();
        match File::open(path) {
            Ok(f) => pipeline.add_file(&name, BufReader::with_capacity(256 << 10, f), &mut sink)?,
            Err(e) => pipeline.add_error(DataError::Io {
                file: name.clone(),
                offset: 0,
                reason: e.to_string(),
            }),
        }
    }
    let (summary, preview) = pipeline.finish()?;
    let files = sink.finish()?;
    let settings = TrainSettings {
        seq_len: args.seq_len,
        seed: args.seed,
        ..TrainSettings::default()
    };
    std::fs::write(args.out.join("axolotl/axolotl.yaml"), axolotl_yaml(&settings, files))?;
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&summary)? + "\n")?;
    std::fs::write(args.out.join("preview.txt"), preview)?;

    for e in &summary.errors {
        eprintln!("error: {}", e.message);
    }
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    if summary.unredacted_personal_data {
        eprintln!("warning: personal data found in the material was NOT redacted (--no-redact); an adapter can memorize it");
    }
    println!(
        "{} document(s), {} failed; {} examples ({} train, {} validation), {} tokens ({} trained), {} truncated, {} duplicates removed; personal data redacted: {}",
        summary.documents,
        summary.files_failed,
        summary.examples,
        summary.train_examples,
        summary.validation_examples,
        summary.tokens,
        summary.trained_tokens,
        summary.truncated_examples,
        summary.duplicates_removed,
        summary.personal_data.total()
    );
    println!("wrote {}", args.out.display());
    if summary.documents == 0 {
        return Err("no input file could be used".into());
    }
    Ok(())
}

pub(super) fn sample_course() -> Result<Vec<PathBuf>> {
    let dir = Path::new(SAMPLE_COURSE);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("no --input given and the sample course ./{SAMPLE_COURSE} cannot be read: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.') || n == "README.md"))
        .collect();
    files.sort();
    Ok(files)
}

/// One student name per line; blank lines and `#` comments ignored.
fn read_roster(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("roster {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Writes train.jsonl / val.jsonl and the Axolotl export files as examples arrive.
struct FileSink {
    dir: PathBuf,
    train: BufWriter<File>,
    val: BufWriter<File>,
    export: [(BufWriter<File>, bool); 4],
}

impl FileSink {
    fn create(dir: &Path) -> std::io::Result<FileSink> {
        let open = |p: PathBuf| File::create(p).map(BufWriter::new);
        let ax = dir.join("axolotl");
        Ok(FileSink {
            dir: dir.to_path_buf(),
            train: open(dir.join("train.jsonl"))?,
            val: open(dir.join("val.jsonl"))?,
            export: [
                (open(ax.join(export_file(ExampleKind::Chat, false)))?, false),
                (open(ax.join(export_file(ExampleKind::Text, false)))?, false),
                (open(ax.join(export_file(ExampleKind::Chat, true)))?, false),
                (open(ax.join(export_file(ExampleKind::Text, true)))?, false),
            ],
        })
    }

    /// Flushes everything, removes empty export files, says which are left.
    fn finish(mut self) -> std::io::Result<ExportFiles> {
        self.train.flush()?;
        self.val.flush()?;
        let mut used = [false; 4];
        for (i, (w, u)) in self.export.iter_mut().enumerate() {
            w.flush()?;
            used[i] = *u;
        }
        for (i, kind, val) in [(0, ExampleKind::Chat, false), (1, ExampleKind::Text, false), (2, ExampleKind::Chat, true), (3, ExampleKind::Text, true)] {
            if !used[i] {
                std::fs::remove_file(self.dir.join("axolotl").join(export_file(kind, val)))?;
            }
        }
        Ok(ExportFiles {
            train_chat: used[0],
            train_text: used[1],
            val_chat: used[2],
            val_text: used[3],
        })
    }
}

impl ExampleSink for FileSink {
    fn accept(&mut self, split: Split, ex: &Example) -> std::result::Result<(), DataError> {
        let io = |e: std::io::Error| DataError::Output(e.to_string());
        let val = split == Split::Validation;
        let w = if val { &mut self.val } else { &mut self.train };
        writeln!(w, "{}", engine_line(ex)?).map_err(io)?;
        let i = match (ex.kind, val) {
            (ExampleKind::Chat, false) => 0,
            (ExampleKind::Text, false) => 1,
            (ExampleKind::Chat, true) => 2,
            (ExampleKind::Text, true) => 3,
        };
        let (w, used) = &mut self.export[i];
        *used = true;
        writeln!(w, "{}", export_line(ex)?).map_err(io)?;
        Ok(())
    }
}
