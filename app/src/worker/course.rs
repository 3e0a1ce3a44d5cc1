//! Course material in the worker: the files the teacher added (kept as bytes, so the
//! course can be prepared again with other settings) and the data pipeline run over
//! them, giving the training examples and the report the page shows.

use classtune::chat::ChatTemplate;
use classtune::data::{DataOptions, Example, Pipeline, Preset, Split, Summary};
use classtune::tokenizer::Tokenizer;
use classtune::train::run::{Dataset, Tokens};

use super::probe::{self, Probe};
use crate::protocol::{CourseReport, DataSettings, FileReport};

/// Fraction of the documents held out for the validation loss.
const VALIDATION_FRACTION: f64 = 0.1;
/// Examples shown in the preview.
const PREVIEW_EXAMPLES: usize = 3;
/// Warnings listed per file (the rest are counted).
const WARNINGS_PER_FILE: usize = 8;

/// The course files, in the order they were added.
#[derive(Default)]
pub struct Course {
    files: Vec<(String, Vec<u8>)>,
}

impl Course {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Adds a file, replacing one of the same name.
    pub fn add(&mut self, name: String, bytes: Vec<u8>) {
        match self.files.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = bytes,
            None => self.files.push((name, bytes)),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.files.retain(|(n, _)| n != name);
    }

    /// The files by name, in the order they were added (a run saves them).
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }
}

/// The course as training data.
pub struct Prepared {
    pub dataset: Dataset,
    pub summary: Summary,
    pub report: CourseReport,
    /// Questions from the validation examples, for probes and the quiz.
    pub questions: Vec<Probe>,
}

/// Runs the data pipeline over every file; `seed` places the validation split.
pub fn prepare(
    course: &Course,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    settings: &DataSettings,
    seed: u64,
) -> Result<Prepared, String> {
    let preset = Preset::from_name(settings.role.name()).ok_or_else(|| format!("unknown role {}", settings.role.name()))?;
    let options = DataOptions {
        seq_len: settings.seq_len as usize,
        preset: Some(preset),
        validation_fraction: VALIDATION_FRACTION,
        seed,
        redact: settings.redact,
        preview_examples: PREVIEW_EXAMPLES,
        ..DataOptions::default()
    };
    let mut pipeline = Pipeline::new(tokenizer, template, options).map_err(|e| e.to_string())?;
    let mut examples: Vec<(Split, Example)> = Vec::new();
    for (name, bytes) in &course.files {
        pipeline.add_bytes(name, bytes, &mut examples).map_err(|e| format!("{name}: {e}"))?;
    }
    let (summary, preview) = pipeline.finish().map_err(|e| e.to_string())?;
    let mut dataset = Dataset::default();
    // Any example may end up held out (below), so each one's question is noted.
    let mut questions: Vec<(Vec<u32>, Probe)> = Vec::new();
    for (split, example) in examples {
        if let Some(question) = probe::question(&example) {
            questions.push((example.input_ids.clone(), question));
        }
        let tokens = Tokens { ids: example.input_ids, mask: example.loss_mask };
        match split {
            Split::Train => dataset.train.push(tokens),
            Split::Validation => dataset.validation.push(tokens),
        }
    }
    dataset.hold_out_examples(VALIDATION_FRACTION, seed);
    let held_out: std::collections::HashSet<&[u32]> = dataset.validation.iter().map(|t| t.ids.as_slice()).collect();
    let mut questions: Vec<Probe> =
        questions.into_iter().filter(|(ids, _)| held_out.contains(ids.as_slice())).map(|(_, q)| q).collect();
    // Where the course has questions and answers, those; text openings otherwise.
    questions.sort_by_key(|q| !q.question.chat);
    let mut seen = std::collections::HashSet::new();
    questions.retain(|q| seen.insert(q.question.prompt.clone()));
    questions.truncate(probe::QUESTIONS);
    let report = report(&summary, &dataset, settings, preview);
    Ok(Prepared { dataset, summary, report, questions })
}

fn report(summary: &Summary, data: &Dataset, settings: &DataSettings, preview: String) -> CourseReport {
    let files = summary
        .files
        .iter()
        .map(|f| {
            let notes: Vec<String> = summary
                .warnings
                .iter()
                .filter(|w| w.file == f.file)
                .map(|w| if w.location.is_empty() { w.message.clone() } else { format!("{}: {}", w.location, w.message) })
                .collect();
            let mut warnings: Vec<String> = notes.iter().take(WARNINGS_PER_FILE).cloned().collect();
            if notes.len() > WARNINGS_PER_FILE {
                warnings.push(format!("… and {} more like these", notes.len() - WARNINGS_PER_FILE));
            }
            FileReport {
                name: f.file.clone(),
                format: f.format.clone(),
                bytes: f.bytes,
                examples: f.examples as u32,
                tokens: f.tokens as u64,
                personal_data: f.personal_data.total() as u32,
                warnings,
                error: f.error.clone(),
            }
        })
        .collect();
    CourseReport {
        files,
        train_examples: data.train.len() as u32,
        validation_examples: data.validation.len() as u32,
        tokens: summary.tokens as u64,
        trained_tokens: summary.trained_tokens as u64,
        truncated_examples: summary.truncated_examples as u32,
        duplicates_removed: summary.duplicates_removed as u32,
        seq_len: settings.seq_len,
        role: settings.role,
        system_prompt: summary.system_prompt.clone(),
        personal_data: summary.personal_data.total() as u32,
        redacted: summary.redacted,
        unredacted_personal_data: summary.unredacted_personal_data,
        preview,
    }
}
