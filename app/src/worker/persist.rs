//! The training run saved on this device, in OPFS under `run/`: `run.json` (a
//! [`SavedRun`]: model, settings, course file names, the chart so far), the course
//! files, and two checkpoint files written in turn. A save writes the checkpoint that
//! `run.json` does not point to, then `run.json` (each replaced only once complete),
//! so a crash or a full disk mid-save leaves the previous save whole.
//!
//! A run is saved when it starts (course files and settings), after its first step,
//! every `storage::AUTOSAVE_MS` of training and whenever its loop stops. After a
//! reload the page is offered the saved run; resuming loads its model (from the
//! device's copy), its course files and its checkpoint, and goes on exactly as an
//! uninterrupted run, since the data order and the schedule are functions of the seed
//! and the step.

use classtune::train::checkpoint::Checkpoint;

use super::course::Course;
use super::export::{base_model, model_sha256, session_checkpoint};
use super::{cache, store, EngineWorker, Loaded};
use crate::protocol::{DataSettings, FromWorker, SavedRun, TrainPhase};
use crate::storage::{course_file_name, next_checkpoint, COURSE_DIR, RUN_DIR, RUN_FILE};

/// A session's link to its save.
#[derive(Default)]
pub struct Saving {
    /// `run.json` as last written; `None` while the run is not saved.
    pub run: Option<SavedRun>,
    /// When the loop last saved (ms since 1970).
    pub saved_ms: Option<f64>,
    /// (step, loss) of each step and each validation so far, for the chart after a reload.
    pub losses: Vec<(u32, f64)>,
    pub val_losses: Vec<(u32, f64)>,
    /// Lost devices recovered from in this run.
    pub recoveries: u32,
}

impl Saving {
    /// Notes a step (a step done again after a recovery replaces the first try).
    pub fn record(&mut self, step: u32, loss: f64, val_loss: Option<f64>) {
        self.rollback(step.saturating_sub(1));
        self.losses.push((step, loss));
        if let Some(v) = val_loss {
            self.val_losses.push((step, v));
        }
    }

    /// Forgets the steps after `step` (the run goes back to its save there).
    pub fn rollback(&mut self, step: u32) {
        self.losses.retain(|l| l.0 <= step);
        self.val_losses.retain(|l| l.0 <= step);
    }
}

fn run_path(name: &str) -> String {
    format!("{RUN_DIR}/{name}")
}

fn course_path(index: usize) -> String {
    format!("{RUN_DIR}/{COURSE_DIR}/{}", course_file_name(index))
}

async fn read_run() -> Result<Option<SavedRun>, String> {
    let Some(bytes) = store::read(&run_path(RUN_FILE))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("the saved run is unreadable: {e}"))
}

impl EngineWorker {
    /// Tells the page about the run saved on this device, if any.
    pub(super) async fn announce_saved_run(&self) {
        match read_run().await {
            Ok(run) => self.post(&FromWorker::SavedRun { run }),
            Err(message) => self.post_error("saved_run", message),
        }
    }

    /// Deletes the saved run; the current run (if any) is no longer saved either.
    pub(super) async fn discard_saved_run(&self) {
        if let Err(e) = store::remove(RUN_DIR).await {
            self.post_error("discard_saved_run", e.to_string());
        }
        if let Some(s) = self.session.borrow_mut().as_mut() {
            s.saving.run = None;
        }
        self.post(&FromWorker::SavedRun { run: None });
    }

    /// A new run replaces the saved one: its course files and settings go to the
    /// device before the first step. A failure is reported and the run goes on unsaved.
    pub(super) async fn save_run_start(&self, loaded: &Loaded, data: &DataSettings) {
        let files = self.course.borrow().files().to_vec();
        let edits = self.course.borrow().edits().to_vec();
        let run = async {
            store::remove(RUN_DIR).await?;
            let model = cache::keep(&loaded.source, loaded.file.blob()).await?;
            for (index, (_, bytes)) in files.iter().enumerate() {
                store::write(&course_path(index), bytes, "the course files").await?;
            }
            let run = {
                let session = self.session.borrow();
                let Some(s) = session.as_ref() else {
                    return Ok(None);
                };
                SavedRun {
                    model,
                    model_name: loaded.model.borrow().config.name.clone(),
                    data: data.clone(),
                    train: s.settings.clone(),
                    files: files.iter().map(|(name, _)| name.clone()).collect(),
                    edits,
                    phase: s.phase,
                    step: 0,
                    total_steps: s.total_steps as u32,
                    saved_at: js_sys::Date::now(),
                    checkpoint: String::new(),
                    losses: Vec::new(),
                    val_losses: Vec::new(),
                    base_val_loss: None,
                }
            };
            let json = serde_json::to_vec(&run).map_err(|e| store::StoreError::Io {
                what: RUN_FILE.into(),
                message: e.to_string(),
            })?;
            store::write(&run_path(RUN_FILE), &json, "the run's settings").await?;
            Ok::<_, store::StoreError>(Some(run))
        };
        match run.await {
            Ok(run) => self.update(|s| s.saving.run = run),
            Err(e) => self.post_error("autosave", e.to_string()),
        }
    }

    /// Saves the session's state and phase over the older of the two checkpoints, then
    /// points `run.json` to it; tells the page with [`FromWorker::Saved`].
    pub(super) async fn save_checkpoint(&self, loaded: &Loaded) {
        if self
            .session
            .borrow()
            .as_ref()
            .is_none_or(|s| s.saving.run.is_none())
        {
            return;
        }
        // The base model's digest goes into the checkpoint (hashed once per model).
        let sha256 = match model_sha256(loaded).await {
            Ok(sha256) => sha256,
            Err(message) => return self.post_error("autosave", message),
        };
        let now = js_sys::Date::now();
        let save = {
            let session = self.session.borrow();
            let Some((s, saved)) = session
                .as_ref()
                .and_then(|s| s.saving.run.as_ref().map(|r| (s, r)))
            else {
                return;
            };
            let state = s
                .state
                .clone()
                .filter(|state| state.step as u32 != saved.step || saved.checkpoint.is_empty());
            let step = s.state.as_ref().map_or(0, |state| state.step as u32);
            let bytes = match state
                .map(|state| session_checkpoint(s, loaded, sha256, state).to_bytes())
                .transpose()
            {
                Ok(bytes) => bytes,
                Err(e) => return self.post_error("autosave", e.to_string()),
            };
            let mut run = saved.clone();
            if bytes.is_some() {
                run.checkpoint = next_checkpoint(&saved.checkpoint).to_string();
            }
            run.phase = s.phase;
            run.step = step;
            run.saved_at = now;
            let upto = |losses: &[(u32, f64)]| losses.iter().copied().filter(|l| l.0 <= step).collect();
            run.losses = upto(&s.saving.losses);
            run.val_losses = upto(&s.saving.val_losses);
            run.base_val_loss = s.base_val_loss;
            (run, bytes)
        };
        let (run, bytes) = save;
        let written = async {
            if let Some(bytes) = &bytes {
                store::write(&run_path(&run.checkpoint), bytes, "the training checkpoint").await?;
            }
            let json = serde_json::to_vec(&run).map_err(|e| store::StoreError::Io {
                what: RUN_FILE.into(),
                message: e.to_string(),
            })?;
            store::write(&run_path(RUN_FILE), &json, "the run's settings").await
        };
        match written.await {
            Ok(()) => {
                let step = run.step;
                self.update(|s| {
                    s.saving.run = Some(run);
                    s.saving.saved_ms = Some(now);
                });
                self.post(&FromWorker::Saved {
                    step,
                    saved_at: now,
                });
            }
            Err(e) => {
                // Try again at the next interval, not at every step.
                self.update(|s| s.saving.saved_ms = Some(now));
                self.post_error("autosave", e.to_string());
            }
        }
    }

    /// Brings back the saved run: its model, course files, settings and checkpoint;
    /// a run saved while training trains on.
    pub(super) async fn resume_saved_run(&self) -> Result<(), String> {
        if self.training_active() {
            return Err("training is running: cancel it before resuming the saved run".into());
        }
        let run = read_run().await?.ok_or("no saved run on this device")?;
        let checkpoint = match run.checkpoint.as_str() {
            "" => None,
            name => {
                let bytes = store::read(&run_path(name))
                    .await
                    .map_err(|e| e.to_string())?;
                let bytes =
                    bytes.ok_or_else(|| format!("the saved checkpoint {name} is missing"))?;
                Some(
                    Checkpoint::from_bytes(&bytes)
                        .map_err(|e| format!("the saved checkpoint: {e}"))?,
                )
            }
        };
        let mut course = Course::default();
        for (index, name) in run.files.iter().enumerate() {
            let bytes = store::read(&course_path(index))
                .await
                .map_err(|e| e.to_string())?;
            course.add(
                name.clone(),
                bytes.ok_or_else(|| {
                    format!("the course file {name} is missing from the saved run")
                })?,
            );
        }
        let current = self
            .model
            .borrow()
            .clone()
            .filter(|loaded| loaded.source == run.model);
        let loaded = match current {
            Some(loaded) => loaded,
            None => {
                let report = self.load_model(run.model.clone()).await?;
                self.post(&FromWorker::ModelLoaded(report));
                self.model
                    .borrow()
                    .clone()
                    .ok_or("the model did not load")?
            }
        };
        course.restore_edits(run.edits.clone());
        *self.course.borrow_mut() = course;
        self.detach_adapter(&loaded)?;
        let mut session = self.new_session(&loaded, &run.data, &run.train)?;
        if let Some(checkpoint) = checkpoint {
            let base = base_model(&loaded, model_sha256(&loaded).await?);
            checkpoint
                .check_matches(&base, &session.data_sha256)
                .map_err(|e| format!("the saved checkpoint {e}"))?;
            session.best_val_loss = checkpoint.meta.best_val_loss;
            session.state = Some(checkpoint.state);
        }
        session.base_val_loss = run.base_val_loss;
        session.phase = if run.phase.is_active() {
            TrainPhase::Preparing
        } else {
            run.phase
        };
        session.saving = Saving {
            losses: run.losses.clone(),
            val_losses: run.val_losses.clone(),
            run: Some(run.clone()),
            ..Saving::default()
        };
        self.forget_training();
        self.control.set(super::training::Control::Run);
        *self.session.borrow_mut() = Some(session);
        self.post(&FromWorker::RunRestored(run.clone()));
        self.post_plan();
        if run.trains_on() {
            self.train(&loaded).await;
        }
        Ok(())
    }
}
