//! The pipeline: files in, examples out. For each file: sniff the format, read it
//! (streamed where the format allows), redact personal data, turn text into token
//! windows and Q&A/chats into ChatML examples, drop exact duplicates, split by document,
//! and hand each kept example to an [`ExampleSink`] (a file writer natively, a `Vec` in
//! the browser). One bad file is recorded in the summary and the batch goes on. The
//! teacher's edits of single examples ([`DataOptions::edits`]) are applied as each
//! example is made, before duplicate removal, the split and the counts.

use std::collections::HashSet;
use std::io::{BufRead, Read};

use super::chunk::{ChunkOptions, Chunker};
use super::edits::{Edits, ExampleKey};
use super::error::DataError;
use super::examples::{chat_example, conversation_messages, Example, ExampleKind, Preset};
use super::privacy::{PiiCounts, PiiScanner};
use super::readers::{docx, html, jsonl, pdf, table, text, Block, Conversation, Issues};
use super::sniff::{sniff, Format, SNIFF_LEN};
use super::split::{example_digest, split_of, ContentHash, Dedupe, Split};
use super::summary::{render_preview, ErrorEntry, FileSummary, Summary};
use super::normalize::decode_lossy;
use crate::chat::{ChatTemplate, Role};
use crate::tokenizer::Tokenizer;

/// Largest file read whole (PDF, DOCX, HTML, JSON); text formats are streamed.
pub const MAX_WHOLE_FILE: u64 = 256 << 20;

/// Settings of a data run.
#[derive(Debug, Clone, PartialEq)]
pub struct DataOptions {
    /// Tokens per example.
    pub seq_len: usize,
    /// Tokens shared by consecutive text windows.
    pub overlap: usize,
    pub preset: Option<Preset>,
    /// Replaces the preset's system prompt when set.
    pub system_prompt: Option<String>,
    pub validation_fraction: f64,
    pub seed: u64,
    /// Replace personal data by placeholders (on by default).
    pub redact: bool,
    /// Student names to find (one per entry).
    pub roster: Vec<String>,
    /// Examples shown in the preview.
    pub preview_examples: usize,
    /// What the resource-generator preset asks quizzes about (default: the file's name).
    pub topic: Option<String>,
    /// The teacher's changes to single examples.
    pub edits: Edits,
}

impl Default for DataOptions {
    fn default() -> DataOptions {
        DataOptions {
            seq_len: 512,
            overlap: 64,
            preset: Some(Preset::TeachingAssistant),
            system_prompt: None,
            validation_fraction: 0.1,
            seed: 0,
            redact: true,
            roster: Vec::new(),
            preview_examples: 5,
            topic: None,
            edits: Edits::new(),
        }
    }
}

impl DataOptions {
    /// The system prompt of Q&A and chat examples.
    pub fn system(&self) -> String {
        match (&self.system_prompt, self.preset) {
            (Some(s), _) => s.trim().to_string(),
            (None, Some(p)) => p.system_prompt().to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Where kept examples go.
pub trait ExampleSink {
    fn accept(&mut self, split: Split, example: &Example) -> Result<(), DataError>;
}

impl ExampleSink for Vec<(Split, Example)> {
    fn accept(&mut self, split: Split, example: &Example) -> Result<(), DataError> {
        self.push((split, example.clone()));
        Ok(())
    }
}

/// A data run over several files.
pub struct Pipeline<'a> {
    tok: &'a Tokenizer,
    template: &'a ChatTemplate,
    opts: DataOptions,
    system: String,
    scanner: PiiScanner,
    dedupe: Dedupe,
    hash: ContentHash,
    summary: Summary,
    preview: Vec<(Split, Example)>,
    /// The edits that found their example.
    edits_used: HashSet<ExampleKey>,
}

/// Per-file state while it is read.
struct FileRun {
    stats: FileSummary,
    issues: Issues,
    /// An error from the sink: ends the whole run.
    output: Option<DataError>,
}

impl<'a> Pipeline<'a> {
    pub fn new(tok: &'a Tokenizer, template: &'a ChatTemplate, opts: DataOptions) -> Result<Pipeline<'a>, DataError> {
        if opts.seq_len < 32 {
            return Err(DataError::Config(format!("seq_len {} is too short (at least 32)", opts.seq_len)));
        }
        if !(0.0..1.0).contains(&opts.validation_fraction) {
            return Err(DataError::Config(format!(
                "validation fraction {} must be in [0, 1)",
                opts.validation_fraction
            )));
        }
        let scanner = PiiScanner::new(&opts.roster)?;
        let system = opts.system();
        let summary = Summary {
            seq_len: opts.seq_len,
            overlap: opts.overlap,
            validation_fraction: opts.validation_fraction,
            seed: opts.seed,
            preset: opts.preset.map(|p| p.name().to_string()),
            system_prompt: system.clone(),
            redacted: opts.redact,
            ..Summary::default()
        };
        Ok(Pipeline {
            tok,
            template,
            opts,
            system,
            scanner,
            dedupe: Dedupe::default(),
            hash: ContentHash::default(),
            summary,
            preview: Vec::new(),
            edits_used: HashSet::new(),
        })
    }

    /// Reads the file `name` from memory.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8], sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        self.add_file(name, bytes, sink)
    }

    /// Reads the file `name` from `input` (give a `BufReader` of 64 KiB or more, so the
    /// first fill holds enough bytes to recognise the format). Problems with the file
    /// are recorded in the summary; the `Err` is only for the sink failing.
    pub fn add_file<R: BufRead>(&mut self, name: &str, mut input: R, sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        let mut run = FileRun {
            stats: FileSummary {
                file: name.to_string(),
                ..FileSummary::default()
            },
            issues: Issues::default(),
            output: None,
        };
        let result = self.read_file(name, &mut input, &mut run, sink);
        let FileRun { mut stats, issues, output } = run;
        if let Some(e) = output {
            return Err(e);
        }
        let mut failed = false;
        if let Err(e) = result {
            stats.error = Some(e.to_string());
            self.summary.errors.push(ErrorEntry {
                file: name.to_string(),
                message: e.to_string(),
            });
            failed = true;
        } else if stats.examples == 0 && stats.duplicates_removed == 0 {
            self.summary.warnings.push(super::error::Warning::new(name, "", "no training examples came from this file"));
        }
        for e in issues.errors {
            self.summary.errors.push(ErrorEntry {
                file: name.to_string(),
                message: e.to_string(),
            });
        }
        self.summary.warnings.extend(issues.warnings);
        if failed {
            self.summary.files_failed += 1;
        } else {
            self.summary.documents += 1;
        }
        self.summary.personal_data.add(&stats.personal_data);
        self.summary.files.push(stats);
        Ok(())
    }

    fn read_file<R: BufRead>(
        &mut self,
        name: &str,
        input: &mut R,
        run: &mut FileRun,
        sink: &mut dyn ExampleSink,
    ) -> Result<(), DataError> {
        let io = |e: std::io::Error| DataError::Io {
            file: name.to_string(),
            offset: 0,
            reason: e.to_string(),
        };
        let head = input.fill_buf().map_err(io)?;
        if head.is_empty() {
            return Err(DataError::Empty { file: name.to_string() });
        }
        let format = sniff(name, &head[..head.len().min(SNIFF_LEN)]).map_err(|what| DataError::Unsupported {
            file: name.to_string(),
            what,
        })?;
        run.stats.format = format.name().to_string();
        let mut counter = CountingReader { inner: input, count: 0 };
        let result = match format {
            Format::Text | Format::Markdown => {
                let mut chunker = Chunker::new(self.tok, self.chunk_options(), name).map_err(|e| tok_err(name, e))?;
                let mut out = Vec::new();
                let mut issues = Issues::default();
                let units = text::read_text(name, &mut counter, format == Format::Markdown, &mut issues, &mut |block| {
                    self.text_block(name, block, &mut chunker, &mut out, run, sink)
                })?;
                merge(&mut run.issues, issues);
                run.stats.units = units;
                self.finish_text(name, &mut chunker, run, sink)
            }
            Format::Csv | Format::Tsv => {
                let delimiter = if format == Format::Csv { b',' } else { b'\t' };
                let mut issues = Issues::default();
                let n = table::read_table(name, &mut counter, delimiter, &mut issues, &mut |conv| self.conversation(name, conv, run, sink))?;
                merge(&mut run.issues, issues);
                run.stats.units = n;
                Ok(())
            }
            Format::Jsonl => {
                let mut issues = Issues::default();
                let n = jsonl::read_jsonl(name, &mut counter, &mut issues, &mut |conv| self.conversation(name, conv, run, sink))?;
                merge(&mut run.issues, issues);
                run.stats.units = n;
                Ok(())
            }
            Format::Json | Format::Html | Format::Pdf | Format::Docx => {
                let mut bytes = Vec::new();
                (&mut counter).take(MAX_WHOLE_FILE + 1).read_to_end(&mut bytes).map_err(io)?;
                if bytes.len() as u64 > MAX_WHOLE_FILE {
                    return Err(DataError::Unsupported {
                        file: name.to_string(),
                        what: format!("a {} file larger than {} MiB", format.name(), MAX_WHOLE_FILE >> 20),
                    });
                }
                self.whole_file(name, format, &bytes, run, sink)
            }
        };
        run.stats.bytes = counter.count;
        result
    }

    fn whole_file(&mut self, name: &str, format: Format, bytes: &[u8], run: &mut FileRun, sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        let blocks = match format {
            Format::Pdf => pdf::read_pdf(name, bytes, &mut run.issues)?,
            Format::Docx => docx::read_docx(name, bytes)?,
            Format::Html | Format::Json => {
                let (text, lossy) = decode_lossy(bytes);
                if lossy {
                    run.issues.warn(name, "", "the file is not valid UTF-8; bad bytes were replaced with U+FFFD");
                }
                if format == Format::Json {
                    let convs = jsonl::read_json(name, &text, &mut run.issues)?;
                    run.stats.units = convs.len();
                    for conv in convs {
                        self.conversation(name, conv, run, sink)?;
                    }
                    return Ok(());
                }
                html::read_html(&text)
            }
            _ => Vec::new(),
        };
        if !blocks.iter().any(|b| matches!(b, Block::Paragraph(_) | Block::Heading { .. })) {
            return Err(DataError::NoContent {
                file: name.to_string(),
                what: "no text found in it".to_string(),
            });
        }
        run.stats.units = blocks.iter().filter(|b| !matches!(b, Block::Page(_))).count();
        let mut chunker = Chunker::new(self.tok, self.chunk_options(), name).map_err(|e| tok_err(name, e))?;
        let mut out = Vec::new();
        for block in blocks {
            self.text_block(name, block, &mut chunker, &mut out, run, sink)?;
        }
        self.finish_text(name, &mut chunker, run, sink)
    }

    fn chunk_options(&self) -> ChunkOptions {
        ChunkOptions {
            seq_len: self.opts.seq_len,
            overlap: self.opts.overlap,
        }
    }

    fn redact(&self, text: &str, counts: &mut PiiCounts) -> String {
        let (out, found) = self.scanner.scan(text, self.opts.redact);
        counts.add(&found);
        out.into_owned()
    }

    fn text_block(
        &mut self,
        name: &str,
        block: Block,
        chunker: &mut Chunker<'_>,
        out: &mut Vec<Example>,
        run: &mut FileRun,
        sink: &mut dyn ExampleSink,
    ) -> Result<(), DataError> {
        let block = match block {
            Block::Heading { level, text } => Block::Heading {
                level,
                text: self.redact(&text, &mut run.stats.personal_data),
            },
            Block::Paragraph(text) => Block::Paragraph(self.redact(&text, &mut run.stats.personal_data)),
            page => page,
        };
        chunker.push(&block, out).map_err(|e| tok_err(name, e))?;
        let key = format!("doc:{name}");
        for ex in out.drain(..) {
            self.accept(&key, ex, run, sink)?;
        }
        Ok(())
    }

    fn finish_text(&mut self, name: &str, chunker: &mut Chunker<'_>, run: &mut FileRun, sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        let mut out = Vec::new();
        chunker.finish(&mut out).map_err(|e| tok_err(name, e))?;
        let key = format!("doc:{name}");
        for ex in out {
            self.accept(&key, ex, run, sink)?;
        }
        self.summary.hard_cuts += chunker.hard_cuts;
        Ok(())
    }

    fn conversation(&mut self, name: &str, mut conv: Conversation, run: &mut FileRun, sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        for m in &mut conv.messages {
            m.content = self.redact(&m.content, &mut run.stats.personal_data);
        }
        if let Some(h) = conv.hint.take() {
            conv.hint = Some(self.redact(&h, &mut run.stats.personal_data));
        }
        let topic = self.opts.topic.clone().unwrap_or_else(|| topic_of(name));
        let messages = conversation_messages(&conv, self.opts.preset, &self.system, &topic);
        let key: String = messages
            .iter()
            .filter(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\u{1F}");
        let ex = chat_example(self.tok, self.template, name, &conv.location, messages, self.opts.seq_len)
            .map_err(|e| tok_err(name, e))?;
        self.accept(&format!("chat:{key}"), ex, run, sink)
    }

    /// `ex` as the teacher edited it; None when they deleted it.
    fn edit(&mut self, ex: Example) -> Result<Option<Example>, DataError> {
        if self.opts.edits.is_empty() {
            return Ok(Some(ex));
        }
        let key = ExampleKey::of(&ex);
        let Some(edit) = self.opts.edits.get(&key) else { return Ok(Some(ex)) };
        self.edits_used.insert(key);
        if edit.deleted {
            self.summary.examples_deleted += 1;
            return Ok(None);
        }
        if edit.is_empty() {
            return Ok(Some(ex));
        }
        let source = ex.source.clone();
        let (scanner, redact) = (&self.scanner, self.opts.redact);
        let clean = |text: &str| scanner.scan(&super::normalize::clean_text(text), redact).0.into_owned();
        edit.apply(ex, self.tok, self.template, self.opts.seq_len, clean).map(Some).map_err(|e| tok_err(&source, e))
    }

    fn accept(&mut self, key: &str, ex: Example, run: &mut FileRun, sink: &mut dyn ExampleSink) -> Result<(), DataError> {
        let Some(ex) = self.edit(ex)? else { return Ok(()) };
        if ex.kind == ExampleKind::Chat && !ex.loss_mask.contains(&1) {
            let what = if ex.edited.is_some() { "after the edit, the prompt alone" } else { "the prompt alone" };
            run.issues.warn(
                &ex.source,
                ex.location.clone(),
                format!("skipped: {what} is longer than {} tokens, nothing of the answer fits", self.opts.seq_len),
            );
            return Ok(());
        }
        let digest = example_digest(&ex);
        if !self.dedupe.first_time_digest(&digest) {
            run.stats.duplicates_removed += 1;
            self.summary.duplicates_removed += 1;
            return Ok(());
        }
        let split = split_of(self.opts.seed, key, self.opts.validation_fraction);
        let n = ex.input_ids.len();
        let s = &mut self.summary;
        s.examples += 1;
        s.examples_edited += usize::from(ex.edited.is_some());
        s.tokens += n;
        s.trained_tokens += ex.trained_tokens();
        match split {
            Split::Train => {
                s.train_examples += 1;
                s.train_tokens += n;
            }
            Split::Validation => {
                s.validation_examples += 1;
                s.validation_tokens += n;
            }
        }
        match ex.kind {
            ExampleKind::Text => s.text_examples += 1,
            ExampleKind::Chat => s.chat_examples += 1,
        }
        if ex.truncated {
            s.truncated_examples += 1;
            run.stats.truncated += 1;
        }
        run.stats.examples += 1;
        run.stats.tokens += n;
        self.hash.add_digest(split, n, &digest);
        if let Err(e) = sink.accept(split, &ex) {
            run.output = Some(e.clone());
            return Err(e);
        }
        if self.preview.len() < self.opts.preview_examples {
            self.preview.push((split, ex));
        }
        Ok(())
    }

    /// The summary and the preview text.
    pub fn finish(mut self) -> Result<(Summary, String), DataError> {
        self.summary.content_hash = self.hash.hex();
        self.summary.edits_unused = self.opts.edits.len() - self.edits_used.len();
        self.summary.unredacted_personal_data = !self.opts.redact && self.summary.personal_data.total() > 0;
        let preview = render_preview(self.tok, &self.preview).map_err(|e| tok_err("preview", e))?;
        Ok((self.summary, preview))
    }

    /// Records a file that could not even be opened (the batch goes on).
    pub fn add_error(&mut self, error: DataError) {
        let file = error.file().to_string();
        self.summary.files_failed += 1;
        self.summary.files.push(FileSummary {
            file: file.clone(),
            error: Some(error.to_string()),
            ..FileSummary::default()
        });
        self.summary.errors.push(ErrorEntry {
            file,
            message: error.to_string(),
        });
    }

    /// The summary so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
}

fn merge(into: &mut Issues, from: Issues) {
    into.warnings.extend(from.warnings);
    into.errors.extend(from.errors);
}

fn tok_err(name: &str, e: crate::tokenizer::TokenizerError) -> DataError {
    DataError::Tokenizer {
        file: name.to_string(),
        reason: e.to_string(),
    }
}

/// `units/water-cycle_qa.csv` → `water cycle qa`.
fn topic_of(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let stem = base.rsplit_once('.').map_or(base, |(s, _)| s);
    stem.replace(['-', '_'], " ").trim().to_string()
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: BufRead> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CountingReader<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }
    fn consume(&mut self, amt: usize) {
        self.count += amt as u64;
        self.inner.consume(amt);
    }
}
