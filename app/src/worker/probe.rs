//! Watching the model learn: held-out questions from the course, answered greedily
//! by the adapter a few times during a run (the probe) and, after it, by the base
//! model and the adapter side by side (the quiz).
//!
//! A probe runs between two steps the way a pause does: the training loop ends, its
//! weights are read back into the session, they are put on the model for the answers
//! and taken off again, and the loop restores its trainer and goes on. The data
//! order, schedule and dropout are functions of the seed and the step, so the run is
//! the same as one without probes (the end-to-end test compares its losses with the
//! native trainer's).

use classtune::chat::Role as ChatRole;
use classtune::data::{Example, ExampleKind};
use classtune::gpu::Gpu;
use classtune::model::{GenerateOptions, Generator, LoraWeights};

use super::{course, prompt_ids, EngineWorker, Loaded};
use crate::protocol::{
    DataSettings, FromWorker, GenerateSettings, ProbeAnswer, ProbeReport, Question, QuizItem, QuizReport,
};

/// Held-out questions kept from a prepared course.
pub const QUESTIONS: usize = 8;
/// Questions asked at each probe, and tokens per answer: enough to see the style
/// change; a CPU-emulated GPU (decoding about a token a second for SmolLM2) gets one
/// short answer.
const PROBE_QUESTIONS: usize = 3;
const PROBE_TOKENS: u32 = 24;
const SOFTWARE_PROBE_QUESTIONS: usize = 1;
const SOFTWARE_PROBE_TOKENS: u32 = 16;
/// Probes per run, at most (evenly spaced, none after the last step).
const PROBES: usize = 5;
/// Share of the run's time the probes may take; one that would exceed it is skipped.
const PROBE_SHARE: f64 = 0.15;
/// Characters of a reference answer or text opening kept.
const REFERENCE_CHARS: usize = 300;
const OPENING_CHARS: usize = 120;

/// A question as the model is asked it.
#[derive(Debug, Clone)]
pub struct Probe {
    pub question: Question,
    /// The conversation's system prompt (chat questions).
    pub system: Option<String>,
}

/// The question a held-out example asks: a chat's first user message with the
/// assistant's answer as reference, or a text's opening line with the rest of it.
pub fn question(example: &Example) -> Option<Probe> {
    match example.kind {
        ExampleKind::Chat => {
            let messages = &example.messages;
            let system = messages.iter().find(|m| m.role == ChatRole::System).map(|m| m.content.clone());
            let at =
                messages.windows(2).position(|w| w[0].role == ChatRole::User && w[1].role == ChatRole::Assistant)?;
            let question = Question {
                prompt: messages[at].content.trim().to_string(),
                reference: clip(messages[at + 1].content.trim(), REFERENCE_CHARS),
                chat: true,
            };
            Some(Probe { question, system })
        }
        ExampleKind::Text => {
            let text = example.text.trim();
            let (opening, rest) = opening(text)?;
            let question =
                Question { prompt: opening.to_string(), reference: clip(rest.trim(), REFERENCE_CHARS), chat: false };
            Some(Probe { question, system: None })
        }
    }
}

/// A text's opening: its first third (at most [`OPENING_CHARS`]) cut at a space, and
/// at least its first line (the window's context line, a heading or the file's name,
/// which alone would ask every window of a file the same thing); None when nothing
/// would be left to compare with.
fn opening(text: &str) -> Option<(&str, &str)> {
    let floor = text.find('\n').map_or(0, |n| n + 1);
    let third = (text.len() / 3).min(OPENING_CHARS).max(floor).min(text.len());
    let end = (0..=third).rev().find(|&i| text.is_char_boundary(i))?;
    let cut = text[..end].rfind([' ', '\n']).filter(|&c| c > 0 && c + 1 >= floor).unwrap_or(end);
    let (opening, rest) = text.split_at(cut);
    (!opening.trim().is_empty() && !rest.trim().is_empty()).then_some((opening.trim_end(), rest))
}

fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Whether a probe follows `step` of `total`: about [`PROBES`] evenly spaced, at
/// least two steps apart (never as often as the steps themselves), none after the
/// last step (the quiz covers the finished adapter).
pub fn due(step: usize, total: usize) -> bool {
    let every = total.div_ceil(PROBES).max(2);
    step < total && step.is_multiple_of(every)
}

/// The probes' time against the run's, so they stay cheap on a slow device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    /// When the run started (ms, `Date.now()`).
    started: f64,
    spent: f64,
    /// The last probe's seconds: the next one's expected cost.
    last: Option<f64>,
}

impl Budget {
    pub fn start(now: f64) -> Budget {
        Budget { started: now, ..Budget::default() }
    }

    /// Whether another probe keeps probing within [`PROBE_SHARE`] of the run's time
    /// so far (the first is always taken: its cost is not known yet).
    pub fn allows(&self, now: f64) -> bool {
        let training = ((now - self.started) / 1000.0 - self.spent).max(0.0);
        self.last.is_none_or(|last| self.spent + last <= PROBE_SHARE * training)
    }

    fn record(&mut self, seconds: f64) {
        self.spent += seconds;
        self.last = Some(seconds);
    }
}

impl EngineWorker {
    /// Greedy answer to `probe` with the model as it is (adapter attached or not).
    // The model stays shared-borrowed while it generates: nothing attaches meanwhile.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn answer(&self, gpu: &Gpu, loaded: &Loaded, probe: &Probe, max_tokens: u32) -> Result<String, String> {
        let settings = GenerateSettings {
            chat: probe.question.chat,
            max_tokens,
            system: probe.system.clone(),
            ..GenerateSettings::default()
        };
        let (ids, stop) = prompt_ids(loaded, &probe.question.prompt, &settings)?;
        let model = loaded.model.try_borrow().map_err(|_| "the model is being changed: try again")?;
        let context = (ids.len() + max_tokens as usize).min(model.config.context.max(1));
        let options = GenerateOptions {
            max_tokens: max_tokens as usize,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
            stop: stop.clone(),
        };
        let mut generator = Generator::new(gpu, &model, context).map_err(|e| e.to_string())?;
        let (tokens, _) = generator.generate(gpu, &ids, &options, |_| true).await.map_err(|e| e.to_string())?;
        let kept: Vec<u32> = tokens.into_iter().filter(|t| !stop.contains(t)).collect();
        let bytes = loaded.tokenizer.decode_bytes(&kept).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// Answers the first probe questions with the session's weights as of its last
    /// step (the loop has just stored them) and reports them.
    pub(super) async fn probe_adapter(&self, gpu: &Gpu, loaded: &Loaded) -> Result<(), String> {
        let (count, tokens) = match gpu.is_software() {
            true => (SOFTWARE_PROBE_QUESTIONS, SOFTWARE_PROBE_TOKENS),
            false => (PROBE_QUESTIONS, PROBE_TOKENS),
        };
        let probes: Vec<Probe> = self.questions.borrow().iter().take(count).cloned().collect();
        let (lora, params, step, total_steps) = {
            let session = self.session.borrow();
            let s = session.as_ref().ok_or("no training session")?;
            let state = s.state.as_ref().ok_or("no weights yet")?;
            (s.lora.clone(), state.params.clone(), state.step, s.total_steps)
        };
        if probes.is_empty() {
            return Ok(());
        }
        let started = js_sys::Date::now();
        let config = loaded.model.borrow().config.clone();
        let weights = LoraWeights::from_flat(gpu, &config, &lora, &params).map_err(|e| e.to_string())?;
        loaded.model.try_borrow_mut().map_err(|_| "the model is in use")?.attach(Some(weights));
        let mut answers = Vec::with_capacity(probes.len());
        let mut failure = None;
        for probe in &probes {
            match self.answer(gpu, loaded, probe, tokens).await {
                Ok(answer) => answers.push(ProbeAnswer { question: probe.question.clone(), answer }),
                Err(message) => {
                    failure = Some(message);
                    break;
                }
            }
        }
        // The training loop runs its own copy of the weights: these go.
        loaded.model.try_borrow_mut().map_err(|_| "the model is in use")?.attach(None);
        if let Some(message) = failure {
            return Err(message);
        }
        let seconds = (js_sys::Date::now() - started) / 1000.0;
        let mut budget = self.probe_budget.get();
        budget.record(seconds);
        self.probe_budget.set(budget);
        self.post(&FromWorker::Probe(ProbeReport {
            step: step as u32,
            total_steps: total_steps as u32,
            answers,
            seconds,
        }));
        Ok(())
    }

    /// The held-out questions answered by the base model, then by the adapter: the
    /// last run's, or (no run: an imported adapter) the course's as `data` prepares it.
    pub(super) async fn quiz(&self, max_tokens: u32, data: &DataSettings) -> Result<QuizReport, String> {
        let loaded = self.model.borrow().clone().ok_or("no model is loaded")?;
        let mut probes: Vec<Probe> = self.questions.borrow().clone();
        if probes.is_empty() && !self.course.borrow().is_empty() {
            probes = course::prepare(&self.course.borrow(), &loaded.tokenizer, &loaded.template, data, 0)?.questions;
        }
        if probes.is_empty() {
            return Err("the course material has no held-out questions yet: add some first".into());
        }
        let gpu = self.gpu().await.map_err(|e| format!("no GPU: {e}"))?;
        self.running.set(self.running.get() + 1);
        let answers = self.quiz_answers(&gpu, &loaded, &probes, max_tokens).await;
        self.running.set(self.running.get().saturating_sub(1));
        let (base, adapter) = answers?;
        let session = self.session.borrow();
        let (base_val_loss, adapter_val_loss, val_step) = match (session.as_ref(), self.imported.get()) {
            (Some(s), None) => (s.base_val_loss, s.val_loss, s.state.as_ref().map_or(0, |st| st.step as u32)),
            _ => (None, None, 0),
        };
        let items = probes
            .into_iter()
            .zip(base.into_iter().zip(adapter))
            .map(|(probe, (base, adapter))| QuizItem { question: probe.question, base, adapter })
            .collect();
        Ok(QuizReport { items, base_val_loss, adapter_val_loss, val_step })
    }

    async fn quiz_answers(
        &self,
        gpu: &Gpu,
        loaded: &Loaded,
        probes: &[Probe],
        max_tokens: u32,
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let mut columns = [Vec::new(), Vec::new()];
        for (column, adapter) in columns.iter_mut().zip([false, true]) {
            self.use_adapter(gpu, loaded, adapter)?;
            for probe in probes {
                column.push(self.answer(gpu, loaded, probe, max_tokens).await?);
            }
        }
        let [base, adapter] = columns;
        Ok((base, adapter))
    }
}
