//! The training run in the worker: the loop of `classtune train` (src/cli/train.rs),
//! one [`Runner::next`] step at a time, reporting each step to the page.
//!
//! Every step awaits GPU readbacks, so the worker's other messages are handled
//! between steps; pause and cancel set [`Control`], which the loop reads before each
//! step. A pause ends the loop the way a checkpoint does: the weights and AdamW
//! moments are read back into the [`Session`] and the trainer is dropped, so while
//! paused the adapter can be tried and exported, and resuming restores the trainer
//! from that state (the data order, schedule and dropout are functions of the seed
//! and the step, so the run continues exactly as it would have). The same state is
//! autosaved to the device while the loop runs (`persist`), and a lost GPU device is
//! reopened and the loop goes on from the last save (`recover`).

use std::rc::Rc;

use classtune::adapter::{LoraConfig, Target};
use classtune::data::Summary;
use classtune::gpu::Gpu;
use classtune::kernels::adamw::AdamW;
use classtune::model::LoraWeights;
use classtune::train::checkpoint::{data_digest, TrainState};
use classtune::train::run::{Dataset, RunOptions, Runner};
use classtune::train::{default_pass_tokens, Decay, OptimizerOptions, Schedule, Trainer};

use super::{course, persist, probe, EngineWorker, Loaded};
use crate::protocol::{DataSettings, FromWorker, StepProgress, TrainPhase, TrainSettings, TrainingPlan};
use crate::storage::autosave_due;

/// Evaluations of the validation loss over a run (besides the base model's), at most.
const EVALUATIONS: usize = 10;
/// Share of the run's time the evaluations may take, at most (on a slow device a
/// large validation split is measured less often).
const EVALUATION_SHARE: f64 = 0.2;
/// Fraction of the steps warming the learning rate up.
const WARMUP: f64 = 0.05;
/// Passes of at least this many tokens keep only layer inputs and recompute the rest in
/// the backward pass, to fit a browser's memory; so do passes that pack several longest
/// examples (a hardware GPU's), which keeps their memory near what one example took
/// without it: training SmolLM2 on passes of 1,024 tokens peaks at 1,360 MiB otherwise,
/// 456 MiB with it, and on an H100 four packed sequences of 256 with recomputation
/// still train 2.2× as fast as one pass per sequence without it.
const RECOMPUTE_FROM: usize = 1024;

/// What the training loop does after its current step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Cancel,
}

/// A training run: its settings, data and, between loops, its state.
pub struct Session {
    pub settings: TrainSettings,
    pub lora: LoraConfig,
    pub optimizer: OptimizerOptions,
    pub run: RunOptions,
    pub data: Rc<Dataset>,
    pub data_sha256: String,
    /// The data pipeline's summary (for the model card).
    pub summary: Summary,
    pub longest: usize,
    pub total_steps: usize,
    pub lora_parameters: u64,
    pub phase: TrainPhase,
    /// Weights and moments as of the last pause or end (None before the first).
    pub state: Option<TrainState>,
    /// Changes whenever `state` does (the attached adapter is tagged with it).
    pub version: u64,
    pub base_val_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub message: Option<String>,
    /// What is saved on the device, and the loss history that goes with it.
    pub saving: persist::Saving,
}

impl Session {
    fn plan(&self) -> TrainingPlan {
        TrainingPlan {
            phase: self.phase,
            step: self.state.as_ref().map_or(0, |s| s.step as u32),
            total_steps: self.total_steps as u32,
            train_examples: self.data.train.len() as u32,
            validation_examples: self.data.validation.len() as u32,
            lora_parameters: self.lora_parameters,
            base_val_loss: self.base_val_loss,
            best_val_loss: self.best_val_loss,
            has_adapter: self.state.as_ref().is_some_and(|s| s.step > 0),
            unredacted_personal_data: match self.summary.unredacted_personal_data {
                true => self.summary.personal_data.total() as u32,
                false => 0,
            },
            message: self.message.clone(),
        }
    }
}

/// Steps between validation losses: about [`EVALUATIONS`] per run, fewer when one
/// evaluation costs more than [`EVALUATION_SHARE`] of the steps between two. An
/// evaluation is a forward pass per example, about half the cost per token of a
/// training step's forward and backward.
fn eval_every(data: &Dataset, run: &RunOptions, total_steps: usize) -> usize {
    let tokens = |split: &[classtune::train::run::Tokens]| split.iter().map(|t| t.ids.len()).sum::<usize>() as f64;
    let per_step = tokens(&data.train) / data.train.len().max(1) as f64 * run.per_step() as f64;
    let evaluation_in_steps = tokens(&data.validation) / (2.0 * per_step.max(1.0));
    let affordable = (evaluation_in_steps / EVALUATION_SHARE).ceil() as usize;
    total_steps.div_ceil(EVALUATIONS).max(affordable).max(1)
}

/// How a loop ended.
enum Ending {
    Finished(Option<String>),
    Paused,
    Stopped,
    Failed(String),
    /// The GPU device was lost: reopen it and go on from the last save.
    Lost(String),
    /// A probe is due: answer the probe questions with the weights so far, then go on.
    Probe,
}

impl EngineWorker {
    pub(super) fn training_active(&self) -> bool {
        self.session.borrow().as_ref().is_some_and(|s| s.phase.is_active())
    }

    /// Drops the run and its adapter's GPU weights. The caller takes the adapter off
    /// the model first ([`EngineWorker::detach_adapter`]), or drops the model.
    pub(super) fn forget_training(&self) {
        self.session.borrow_mut().take();
        self.spare.borrow_mut().take();
        self.attached.set(None);
        self.imported.set(None);
    }

    pub(super) fn post_plan(&self) {
        let plan = self.session.borrow().as_ref().map(Session::plan);
        if let Some(plan) = plan {
            self.post(&FromWorker::Training(plan));
        }
    }

    fn set_phase(&self, phase: TrainPhase, message: Option<String>) {
        if let Some(s) = self.session.borrow_mut().as_mut() {
            s.phase = phase;
            s.message = message;
        }
        self.post_plan();
    }

    /// Pause or cancel: seen by the loop before its next step. A paused run has no
    /// loop, so cancelling it ends it here.
    pub(super) fn control_training(&self, control: Control) {
        let phase = self.session.borrow().as_ref().map(|s| s.phase);
        match (phase, control) {
            (Some(p), _) if p.is_active() => self.control.set(control),
            (Some(TrainPhase::Paused), Control::Cancel) => self.set_phase(TrainPhase::Stopped, None),
            _ => {}
        }
    }

    /// A new run from scratch on the course as `data` prepares it.
    pub(super) async fn start_training(&self, data: &DataSettings, settings: &TrainSettings) -> Result<(), String> {
        if self.training_active() {
            return Err("training is already running".into());
        }
        let loaded = self.model.borrow().clone().ok_or("load a model first")?;
        let context = loaded.model.borrow().config.context as u32;
        settings.check(context)?;
        if data.seq_len != settings.seq_len {
            return Err(format!("data prepared for {} tokens but training asks {}", data.seq_len, settings.seq_len));
        }
        if self.course.borrow().is_empty() {
            return Err("add course material first".into());
        }
        // The old adapter comes off the model before its run is forgotten.
        self.detach_adapter(&loaded)?;
        let session = self.new_session(&loaded, data, settings)?;
        self.forget_training();
        self.control.set(Control::Run);
        *self.session.borrow_mut() = Some(session);
        self.post_plan();
        self.save_run_start(&loaded, data).await;
        self.train(&loaded).await;
        Ok(())
    }

    /// A run on the course as `data` prepares it (its report posted), before any step.
    pub(super) fn new_session(&self, loaded: &Loaded, data: &DataSettings, settings: &TrainSettings) -> Result<Session, String> {
        let prepared = course::prepare(&self.course.borrow(), &loaded.tokenizer, &loaded.template, data, settings.seed)?;
        self.course.borrow_mut().keep(prepared.listed);
        self.post(&FromWorker::Course(prepared.report));
        *self.questions.borrow_mut() = prepared.questions;
        let dataset = prepared.dataset;
        if dataset.train.is_empty() {
            return Err("the course gave no training examples: see the notes on each file".into());
        }
        let mut targets: Vec<Target> = settings.targets.iter().filter_map(|t| Target::from_short(t)).collect();
        targets.sort();
        targets.dedup();
        let lora = LoraConfig { rank: settings.rank as usize, alpha: settings.alpha, dropout: 0.0, rslora: false, targets };
        let mut run = RunOptions {
            epochs: settings.epochs as usize,
            max_steps: (settings.max_steps > 0).then_some(settings.max_steps as usize),
            batch: settings.batch as usize,
            grad_accum: 1,
            eval_every: 0,
            patience: None,
            seed: settings.seed,
        };
        let total_steps = run.total_steps(dataset.train.len());
        run.eval_every = eval_every(&dataset, &run, total_steps);
        let optimizer = OptimizerOptions {
            schedule: Schedule {
                lr: settings.lr,
                warmup: (WARMUP * total_steps as f64).ceil() as usize,
                total: total_steps,
                decay: Decay::Cosine,
            },
            adamw: AdamW::default(),
            max_grad_norm: 1.0,
            seed: settings.seed,
        };
        let longest = dataset.train.iter().chain(&dataset.validation).map(|t| t.ids.len()).max().unwrap_or(1);
        Ok(Session {
            settings: settings.clone(),
            lora,
            optimizer,
            run,
            data_sha256: data_digest(&dataset),
            data: Rc::new(dataset),
            summary: prepared.summary,
            longest,
            total_steps,
            lora_parameters: 0,
            phase: TrainPhase::Preparing,
            state: None,
            version: 0,
            base_val_loss: None,
            val_loss: None,
            best_val_loss: None,
            message: None,
            saving: persist::Saving::default(),
        })
    }

    pub(super) async fn resume_training(&self) -> Result<(), String> {
        let phase = self.session.borrow().as_ref().map(|s| s.phase);
        if phase != Some(TrainPhase::Paused) {
            return Err("no paused training to resume".into());
        }
        let loaded = self.model.borrow().clone().ok_or("the model is gone")?;
        // Checked here, where refusing leaves the run paused, not in the loop.
        self.detach_adapter(&loaded)?;
        self.control.set(Control::Run);
        self.set_phase(TrainPhase::Preparing, None);
        self.train(&loaded).await;
        Ok(())
    }

    /// Runs the session's loop until it ends, pauses or fails, and reports how; a lost
    /// device is reopened (with the model) and the loop goes on from the last save.
    pub(super) async fn train(&self, loaded: &Loaded) {
        let mut ending = self.run_loop(loaded).await;
        while let Ending::Lost(reason) = ending {
            ending = match self.recover(loaded, &reason).await {
                Ok(()) => self.run_loop(loaded).await,
                Err(message) => Ending::Failed(message),
            };
        }
        let (phase, message) = match ending {
            Ending::Finished(note) => (TrainPhase::Finished, note),
            // (`run_loop` takes the probes and goes on: a probe never ends the run.)
            Ending::Paused | Ending::Probe => (TrainPhase::Paused, None),
            Ending::Stopped => (TrainPhase::Stopped, None),
            Ending::Failed(message) | Ending::Lost(message) => (TrainPhase::Failed, Some(message)),
        };
        self.control.set(Control::Run);
        self.set_phase(phase, message);
        self.save_checkpoint(loaded).await;
    }

    async fn run_loop(&self, loaded: &Loaded) -> Ending {
        match self.gpu().await {
            // Whatever failed, a lost device is why (setup and validation included).
            Ok(gpu) => loop {
                match self.train_loop(&gpu, loaded).await {
                    Ending::Probe => {
                        if let Err(message) = self.probe_adapter(&gpu, loaded).await {
                            web_sys::console::warn_1(&format!("probe answers: {message}").into());
                        }
                    }
                    Ending::Failed(message) => match gpu.lost() {
                        Some(reason) => break Ending::Lost(reason),
                        None => break Ending::Failed(message),
                    },
                    ending => break ending,
                }
            },
            Err(e) => Ending::Failed(format!("no GPU: {e}")),
        }
    }

    // The model stays shared-borrowed while the GPU works: attaching an adapter needs
    // `try_borrow_mut` and refuses (with a message) until this ends.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn train_loop(&self, gpu: &Gpu, loaded: &Loaded) -> Ending {
        // The loop's own copy of the session's settings: the session itself is only
        // borrowed between awaits.
        let (lora, optimizer, run, data, longest, state, best) = {
            let session = self.session.borrow();
            let Some(s) = session.as_ref() else { return Ending::Failed("no training session".into()) };
            (s.lora.clone(), s.optimizer.clone(), s.run.clone(), s.data.clone(), s.longest, s.state.clone(), s.best_val_loss)
        };
        // The trainer runs its own adapter: take the tried one off the model.
        if let Err(message) = self.detach_adapter(loaded) {
            return Ending::Failed(message);
        }
        self.spare.borrow_mut().take();
        self.imported.set(None);
        let Ok(model) = loaded.model.try_borrow() else { return Ending::Failed("the model is in use".into()) };
        let pass_tokens = default_pass_tokens(gpu, longest, run.batch);
        let recompute = pass_tokens >= RECOMPUTE_FROM || pass_tokens > longest;
        let trainer = match &state {
            Some(state) => Trainer::restore(gpu, &model, &lora, optimizer.clone(), state, pass_tokens, recompute),
            None => LoraWeights::init(gpu, &model.config, &lora, run.seed)
                .map_err(Into::into)
                .and_then(|weights| Trainer::new(gpu, &model, weights, optimizer.clone(), pass_tokens, recompute)),
        };
        let mut trainer = match trainer {
            Ok(t) => t,
            Err(e) => return Ending::Failed(format!("could not set up training: {e}")),
        };
        let mut runner = Runner::new(run, best);
        if trainer.steps_done() == 0 {
            match runner.validate(&trainer, gpu, &data).await {
                Ok(base) => self.update(|s| s.base_val_loss = base),
                Err(e) => return Ending::Failed(format!("validation of the base model: {e}")),
            }
            self.probe_budget.set(probe::Budget::start(js_sys::Date::now()));
            let total_steps = self.session.borrow().as_ref().map_or(0, |s| s.total_steps);
            if let Err(message) = self.calibrate(&trainer, gpu, &data, runner.options(), total_steps).await {
                return Ending::Failed(format!("timing the first example: {message}"));
            }
        }
        let lora_parameters = trainer.lora().len() as u64;
        self.update(|s| s.lora_parameters = lora_parameters);
        self.set_phase(TrainPhase::Running, None);

        let (started, first_step) = (js_sys::Date::now(), trainer.steps_done());
        let mut tokens = 0usize;
        let ending = loop {
            match self.control.get() {
                Control::Pause => break Ending::Paused,
                Control::Cancel => break Ending::Stopped,
                Control::Run => {}
            }
            let report = match runner.next(&mut trainer, gpu, &data, false).await {
                Ok(Some(report)) => report,
                Ok(None) => {
                    let early = runner.summary().early_stopped;
                    break Ending::Finished(early.then(|| "the validation loss stopped improving".to_string()));
                }
                Err(e) => break Ending::Failed(e.to_string()),
            };
            let stats = report.stats;
            tokens += stats.tokens;
            let seconds = ((js_sys::Date::now() - started) / 1000.0).max(1e-3);
            let done = (stats.step - first_step).max(1);
            let memory = gpu.memory();
            self.update(|s| {
                s.val_loss = report.val_loss.or(s.val_loss);
                s.best_val_loss = runner.summary().best_val_loss;
                s.saving.record(stats.step as u32, stats.loss, report.val_loss);
            });
            self.post(&FromWorker::Progress(StepProgress {
                step: stats.step as u32,
                total_steps: report.total_steps as u32,
                epoch: report.epoch,
                loss: stats.loss,
                val_loss: report.val_loss,
                lr: stats.lr,
                tokens_per_second: tokens as f64 / seconds,
                eta_seconds: seconds / done as f64 * report.total_steps.saturating_sub(stats.step) as f64,
                gpu_bytes: memory.live_bytes(),
                gpu_peak_bytes: memory.peak_bytes(),
            }));
            let last_save = self.session.borrow().as_ref().and_then(|s| s.saving.saved_ms);
            if autosave_due(js_sys::Date::now(), last_save) {
                match trainer.state(gpu).await {
                    Ok(state) => self.update(|s| {
                        s.state = Some(state);
                        s.version += 1;
                    }),
                    Err(e) => break Ending::Failed(format!("reading the weights back: {e}")),
                }
                self.save_checkpoint(loaded).await;
            }
            if probe::due(stats.step, report.total_steps)
                && !self.questions.borrow().is_empty()
                && self.probe_budget.get().allows(js_sys::Date::now())
            {
                break Ending::Probe;
            }
        };
        // The device is gone, and the weights with it: the last save is what is left.
        if gpu.lost().is_some() {
            return ending;
        }
        // Keep what the run learned, whatever ended it (after a failed step the
        // weights are those of the last good one).
        match trainer.state(gpu).await {
            Ok(state) => self.update(|s| {
                s.state = Some(state);
                s.version += 1;
            }),
            Err(e) if matches!(ending, Ending::Failed(_)) => {
                web_sys::console::warn_1(&format!("reading the weights back after a failure: {e}").into())
            }
            Err(e) => return Ending::Failed(format!("reading the weights back: {e}")),
        }
        ending
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Session)) {
        if let Some(s) = self.session.borrow_mut().as_mut() {
            f(s);
        }
    }

    /// Puts the trained adapter on the model (`want`) or takes it off, keeping its GPU
    /// weights aside so switching back costs no upload.
    pub(super) fn use_adapter(&self, gpu: &Gpu, loaded: &Loaded, want: bool) -> Result<(), String> {
        if !want {
            return self.detach_adapter(loaded);
        }
        if let Some(version) = self.imported.get() {
            return self.attach_imported(loaded, version);
        }
        let (version, weights) = {
            let session = self.session.borrow();
            let s = session.as_ref().filter(|s| !s.phase.is_active());
            let Some((s, state)) = s.and_then(|s| s.state.as_ref().map(|state| (s, state))) else {
                return Err(match session.as_ref().map(|s| s.phase) {
                    Some(p) if p.is_active() => "training is running: pause it to try the adapter".into(),
                    _ => "no adapter yet: train one first".into(),
                });
            };
            if self.attached.get() == Some(s.version) {
                return Ok(());
            }
            let spare = self.spare.borrow_mut().take().filter(|(v, _)| *v == s.version);
            let weights = match spare {
                Some((_, weights)) => weights,
                None => {
                    let config = loaded.model.borrow().config.clone();
                    LoraWeights::from_flat(gpu, &config, &s.lora, &state.params).map_err(|e| e.to_string())?
                }
            };
            (s.version, weights)
        };
        let mut model = loaded.model.try_borrow_mut().map_err(|_| "another generation is running: wait for it to end")?;
        model.attach(Some(weights));
        self.attached.set(Some(version));
        Ok(())
    }

    pub(super) fn detach_adapter(&self, loaded: &Loaded) -> Result<(), String> {
        let Some(version) = self.attached.get() else { return Ok(()) };
        let mut model = loaded.model.try_borrow_mut().map_err(|_| "another generation is running: wait for it to end")?;
        if let Some(weights) = model.attach(None) {
            *self.spare.borrow_mut() = Some((version, weights));
        }
        self.attached.set(None);
        Ok(())
    }
}
