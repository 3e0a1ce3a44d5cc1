//! Messages about what the app keeps on this device: a training run saved to the
//! origin private file system (OPFS) so a reload, a crash or a lost GPU loses at most
//! the steps since its last autosave.

use serde::{Deserialize, Serialize};

use super::examples::ExampleEdit;
use super::train::{DataSettings, TrainPhase, TrainSettings};
use super::ModelSource;

/// A training run as saved on this device: everything needed to rebuild it after a
/// reload (the model to load, the course files, the data and training settings) and
/// the chart so far. The worker writes it as `run/run.json` beside the checkpoint and
/// offers it to the page on start ([`super::FromWorker::SavedRun`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    pub model: ModelSource,
    /// The model's name, as the page shows it.
    pub model_name: String,
    pub data: DataSettings,
    pub train: TrainSettings,
    /// The course files, in the order they were added (their bytes are in OPFS too).
    pub files: Vec<String>,
    /// The teacher's changes to the prepared examples, which the run trains on.
    #[serde(default)]
    pub edits: Vec<ExampleEdit>,
    /// The phase the run was in when saved: an active one resumes training, a paused
    /// one comes back paused, a finished or cancelled one just brings its adapter back.
    pub phase: TrainPhase,
    /// Steps in the checkpoint.
    pub step: u32,
    pub total_steps: u32,
    /// When it was saved, in milliseconds since 1970 (JavaScript's `Date.now()`).
    pub saved_at: f64,
    /// The checkpoint file holding `step` (one of two, written alternately).
    pub checkpoint: String,
    /// (step, loss) of every step up to `step`, and of every validation.
    pub losses: Vec<(u32, f64)>,
    pub val_losses: Vec<(u32, f64)>,
    pub base_val_loss: Option<f64>,
}

impl SavedRun {
    /// "Saved run: step 12 of 30, <date>" with `date` as the page formats it.
    pub fn offer(&self, date: &str) -> String {
        let state = match self.phase {
            TrainPhase::Finished => " (finished)",
            TrainPhase::Stopped => " (cancelled)",
            TrainPhase::Failed => " (stopped by an error)",
            TrainPhase::Paused => " (paused)",
            TrainPhase::Preparing | TrainPhase::Running => "",
        };
        format!(
            "Saved run: step {} of {}{state}, {date}.",
            self.step, self.total_steps
        )
    }

    /// Resuming it trains on (it was saved while training), as opposed to bringing
    /// back a paused or ended run with its adapter.
    pub fn trains_on(&self) -> bool {
        self.phase.is_active()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FromWorker, Role, ToWorker, TrainPreset};
    use super::*;

    fn saved(phase: TrainPhase, step: u32) -> SavedRun {
        SavedRun {
            model: ModelSource::Url {
                path: "models/m.gguf".into(),
            },
            model_name: "SmolLM2 135M Instruct".into(),
            data: DataSettings {
                role: Role::SocraticTutor,
                redact: false,
                seq_len: 64,
                system_prompt: None,
            },
            train: TrainPreset::Quick.settings(true, 2048),
            files: vec!["notes.md".into(), "quiz.csv".into()],
            edits: vec![ExampleEdit {
                id: super::super::ExampleId { source: "quiz.csv".into(), location: "line 4".into(), window: String::new() },
                deleted: true,
                messages: Vec::new(),
                body: None,
                label: "quiz.csv, line 4: Why?".into(),
            }],
            phase,
            step,
            total_steps: 30,
            saved_at: 1.7e12,
            checkpoint: "checkpoint-b.safetensors".into(),
            losses: vec![(1, 2.5), (2, 2.25)],
            val_losses: vec![(0, 2.75)],
            base_val_loss: Some(2.75),
        }
    }

    #[test]
    fn saved_run_messages_round_trip() {
        for request in [
            ToWorker::ResumeSavedRun,
            ToWorker::DiscardSavedRun,
            ToWorker::LoseDevice,
        ] {
            assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
            assert!(request.payloads().is_empty());
        }
        // The shape the end-to-end test posts by hand.
        assert_eq!(
            ToWorker::decode(r#"{"type":"lose_device"}"#).unwrap(),
            ToWorker::LoseDevice
        );
        let replies = [
            FromWorker::SavedRun { run: None },
            FromWorker::SavedRun {
                run: Some(saved(TrainPhase::Running, 12)),
            },
            FromWorker::RunRestored(saved(TrainPhase::Paused, 3)),
            FromWorker::Saved {
                step: 12,
                saved_at: 1.7e12,
            },
            FromWorker::DeviceLost {
                message: "Destroyed: device destroyed".into(),
                step: 4,
            },
        ];
        for reply in replies {
            let mut back = FromWorker::decode(&reply.encode()).unwrap();
            back.attach(Vec::new()).unwrap();
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn a_run_saved_before_edits_existed_has_none() {
        let mut json = serde_json::to_value(saved(TrainPhase::Paused, 3)).unwrap();
        json.as_object_mut().unwrap().remove("edits");
        let run: SavedRun = serde_json::from_value(json).unwrap();
        assert!(run.edits.is_empty());
    }

    #[test]
    fn a_run_keeps_its_system_prompt_and_older_runs_have_the_roles() {
        let mut run = saved(TrainPhase::Paused, 3);
        run.data.system_prompt = Some("Answer in two sentences.".into());
        let json = serde_json::to_value(&run).unwrap();
        let back: SavedRun = serde_json::from_value(json).unwrap();
        assert_eq!(back.data.system_prompt.as_deref(), Some("Answer in two sentences."));
        let older = serde_json::to_value(saved(TrainPhase::Paused, 3)).unwrap();
        assert!(older["data"].get("system_prompt").is_none(), "None is left out of run.json");
        let back: SavedRun = serde_json::from_value(older).unwrap();
        assert_eq!(back.data.system_prompt, None);
    }

    #[test]
    fn the_offer_says_where_the_run_stopped() {
        let running = saved(TrainPhase::Running, 12);
        assert_eq!(
            running.offer("26/11/2026, 11:30"),
            "Saved run: step 12 of 30, 26/11/2026, 11:30."
        );
        assert!(running.trains_on());
        let finished = saved(TrainPhase::Finished, 30);
        assert_eq!(
            finished.offer("today"),
            "Saved run: step 30 of 30 (finished), today."
        );
        assert!(!finished.trains_on());
        assert!(!saved(TrainPhase::Paused, 3).trains_on());
    }
}
