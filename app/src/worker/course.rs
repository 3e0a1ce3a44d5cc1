//! Course material in the worker: the files the teacher added (kept as bytes, so the
//! course can be prepared again with other settings), the teacher's changes to single
//! examples, and the data pipeline run over both, giving the training examples, the
//! report the page shows and the examples it browses.
//!
//! Changes are kept by the identity of the example the material makes (its file,
//! place and, for a text window, a digest of its text), and the pipeline applies them
//! whenever it prepares the course, so they hold across other settings and files, and
//! training, its data digest and the saved run all see the edited examples.

use std::collections::HashSet;

use classtune::chat::ChatTemplate;
use classtune::data::{DataOptions, Example, Pipeline, Preset, Split, Summary};
use classtune::tokenizer::Tokenizer;
use classtune::train::run::{Dataset, Tokens};

use super::examples::{engine_edits, page_of, Listed};
use super::probe::{self, Probe};
use super::EngineWorker;
use crate::edits;
use crate::protocol::{
    CourseReport, DataSettings, DeletedExample, ExampleChange, ExampleEdit, ExampleId, ExamplePage, FileReport,
    FromWorker,
};

/// Fraction of the documents held out for the validation loss.
const VALIDATION_FRACTION: f64 = 0.1;
/// Warnings listed per file (the rest are counted).
const WARNINGS_PER_FILE: usize = 8;

/// The course files, in the order they were added, and the teacher's changes.
#[derive(Default)]
pub struct Course {
    files: Vec<(String, Vec<u8>)>,
    edits: Vec<ExampleEdit>,
    /// The examples of the last preparation the page was told about.
    listed: Vec<Listed>,
    /// The page of them the teacher looks at.
    page: u32,
}

impl Course {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Adds a file, replacing one of the same name; the changes to the examples of a
    /// replaced file go (its lines and sections are others now).
    pub fn add(&mut self, name: String, bytes: Vec<u8>) {
        match self.files.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) if slot.1 == bytes => {}
            Some(slot) => {
                slot.1 = bytes;
                self.edits.retain(|e| e.id.source != name);
            }
            None => self.files.push((name, bytes)),
        }
    }

    /// Removes a file and the changes to its examples.
    pub fn remove(&mut self, name: &str) {
        self.files.retain(|(n, _)| n != name);
        self.edits.retain(|e| e.id.source != name);
    }

    /// The files by name, in the order they were added (a run saves them).
    pub fn files(&self) -> &[(String, Vec<u8>)] {
        &self.files
    }

    /// The teacher's changes (a run saves them).
    pub fn edits(&self) -> &[ExampleEdit] {
        &self.edits
    }

    /// Takes up the changes of a saved run.
    pub fn restore_edits(&mut self, edits: Vec<ExampleEdit>) {
        self.edits = edits;
    }

    /// Keeps the examples of a preparation whose report goes to the page.
    pub fn keep(&mut self, listed: Vec<Listed>) {
        self.listed = listed;
    }

    /// Records a change of an example as last prepared.
    fn change(&mut self, id: &ExampleId, change: &ExampleChange, tok: &Tokenizer) -> Result<(), String> {
        let shown = match self.listed.iter().enumerate().find(|(_, l)| l.id == *id) {
            Some((at, listed)) => Some(listed.view(at, tok)?),
            None => None,
        };
        edits::record(&mut self.edits, id, change, shown.as_ref()).map_err(|e| e.to_string())
    }

    /// Page `page` (from 0) of the examples last prepared, the last one if it is past
    /// it; the page shown from now on.
    fn show_page(&mut self, page: u32, tok: &Tokenizer) -> Result<ExamplePage, String> {
        self.page = page;
        page_of(&self.listed, page, tok)
    }
}

/// The course as training data.
pub struct Prepared {
    pub dataset: Dataset,
    pub summary: Summary,
    pub report: CourseReport,
    /// Questions from the validation examples, for probes and the quiz.
    pub questions: Vec<Probe>,
    /// Every example, for the page to browse ([`Course::keep`]).
    pub listed: Vec<Listed>,
}

/// Runs the data pipeline over every file, with the teacher's changes; `seed` places
/// the validation split.
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
        system_prompt: settings.system_prompt.clone(),
        validation_fraction: VALIDATION_FRACTION,
        seed,
        redact: settings.redact,
        // The page browses every example instead.
        preview_examples: 0,
        edits: engine_edits(&course.edits),
        ..DataOptions::default()
    };
    let mut pipeline = Pipeline::new(tokenizer, template, options).map_err(|e| e.to_string())?;
    let mut examples: Vec<(Split, Example)> = Vec::new();
    for (name, bytes) in &course.files {
        pipeline.add_bytes(name, bytes, &mut examples).map_err(|e| format!("{name}: {e}"))?;
    }
    let (summary, _) = pipeline.finish().map_err(|e| e.to_string())?;
    let mut dataset = Dataset::default();
    let mut listed = Vec::with_capacity(examples.len());
    // Any example may end up held out (below), so each one's question is noted.
    let mut questions: Vec<(usize, Probe)> = Vec::new();
    for (split, example) in examples {
        if let Some(question) = probe::question(&example) {
            questions.push((listed.len(), question));
        }
        let tokens = Tokens { ids: example.input_ids.clone(), mask: example.loss_mask.clone() };
        match split {
            Split::Train => dataset.train.push(tokens),
            Split::Validation => dataset.validation.push(tokens),
        }
        listed.push(Listed::new(example));
    }
    dataset.hold_out_examples(VALIDATION_FRACTION, seed);
    let held_out: HashSet<&[u32]> = dataset.validation.iter().map(|t| t.ids.as_slice()).collect();
    for l in &mut listed {
        l.held_out = held_out.contains(l.example.input_ids.as_slice());
    }
    let mut questions: Vec<Probe> = questions.into_iter().filter(|(at, _)| listed[*at].held_out).map(|(_, q)| q).collect();
    // Where the course has questions and answers, those; text openings otherwise.
    questions.sort_by_key(|q| !q.question.chat);
    let mut seen = HashSet::new();
    questions.retain(|q| seen.insert(q.question.prompt.clone()));
    questions.truncate(probe::QUESTIONS);
    let page = page_of(&listed, course.page, tokenizer)?;
    let report = report(&summary, &dataset, settings, course, page);
    Ok(Prepared { dataset, summary, report, questions, listed })
}

fn report(summary: &Summary, data: &Dataset, settings: &DataSettings, course: &Course, page: ExamplePage) -> CourseReport {
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
        page,
        edited: summary.examples_edited as u32,
        deleted: course
            .edits
            .iter()
            .filter(|e| e.deleted)
            .map(|e| DeletedExample { id: e.id.clone(), label: e.label.clone() })
            .collect(),
        unused_edits: summary.edits_unused as u32,
    }
}

impl EngineWorker {
    /// Prepares the course with `data` and posts its report (or why it could not).
    pub(super) fn report_course(&self, request: &str, data: &DataSettings) {
        let Some(loaded) = self.model.borrow().clone() else {
            self.post_error(request, "load a model first: its tokenizer prepares the course".into());
            return;
        };
        let prepared = prepare(&self.course.borrow(), &loaded.tokenizer, &loaded.template, data, 0);
        match prepared {
            Ok(prepared) => {
                self.course.borrow_mut().keep(prepared.listed);
                self.post(&FromWorker::Course(prepared.report));
            }
            Err(message) => self.post_error(request, message),
        }
    }

    /// Page `page` of the examples last prepared.
    pub(super) fn course_examples(&self, page: u32) -> Result<ExamplePage, String> {
        let loaded = self.model.borrow().clone().ok_or("no model is loaded")?;
        self.course.borrow_mut().show_page(page, &loaded.tokenizer)
    }

    /// Changes one example and prepares the course again with `data`. An edit after
    /// which the example is not trained on (a chat whose prompt now fills the example)
    /// is refused and undone.
    pub(super) fn change_example(&self, id: &ExampleId, change: &ExampleChange, data: &DataSettings) -> Result<(), String> {
        let loaded = self.model.borrow().clone().ok_or("load a model first: its tokenizer prepares the course")?;
        let before = self.course.borrow().edits.clone();
        self.course.borrow_mut().change(id, change, &loaded.tokenizer)?;
        let prepared = prepare(&self.course.borrow(), &loaded.tokenizer, &loaded.template, data, 0);
        let lost = match (&prepared, change) {
            (Ok(p), ExampleChange::Chat { .. } | ExampleChange::Text { .. }) => !p.listed.iter().any(|l| l.id == *id),
            (Ok(_), _) => false,
            (Err(_), _) => true,
        };
        if lost {
            self.course.borrow_mut().edits = before;
        }
        let prepared = prepared?;
        if lost {
            return Err(format!(
                "After this change nothing of the answer fits in an example of {} tokens: shorten the other \
                 messages, or delete the example.",
                data.seq_len
            ));
        }
        self.course.borrow_mut().keep(prepared.listed);
        self.post(&FromWorker::Course(prepared.report));
        Ok(())
    }
}
