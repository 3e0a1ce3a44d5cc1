//! Files the teacher brings back: an adapter (PEFT files, a PEFT zip or a llama.cpp
//! LoRA GGUF) to try in the chat, and a checkpoint whose run goes on from its step.
//!
//! An imported adapter takes the trained one's place in the chat until the next run
//! starts or resumes; its GPU weights live where a detached trained adapter's do
//! (`spare`), under a version of their own. A checkpoint becomes a paused run on the
//! current course, refused (with the checkpoint's reason) when it was made with
//! another base model or other data.

use std::io::{Cursor, Read};

use classtune::adapter::{from_gguf_lora, from_peft, Adapter, CONFIG_FILE, SAFETENSORS_FILE};
use classtune::model::LoraWeights;
use classtune::train::checkpoint::Checkpoint;

use super::export::{base_model, model_sha256};
use super::training::Control;
use super::{EngineWorker, Loaded};
use crate::protocol::{
    DataSettings, FromWorker, ImportFile, ImportedAdapter, ImportedCheckpoint, TrainPhase, TrainSettings,
};

/// Imported adapters' versions start here, apart from the runs' (which count from 0).
const IMPORTED_VERSIONS: u64 = 1 << 62;

/// An adapter's files, recognised by their names and first bytes.
fn read_adapter(files: &[ImportFile], model: &classtune::model::Config) -> Result<(Adapter, &'static str), String> {
    let named = |suffix: &str| files.iter().find(|f| f.name.to_ascii_lowercase().ends_with(suffix));
    if let Some(gguf) = files.iter().find(|f| f.bytes.starts_with(b"GGUF")) {
        return Ok((from_gguf_lora(&gguf.bytes, model).map_err(|e| format!("{}: {e}", gguf.name))?, "gguf-lora"));
    }
    if let Some(zip) = files.iter().find(|f| f.bytes.starts_with(b"PK\x03\x04")) {
        let (safetensors, config) = unzip_peft(&zip.bytes).map_err(|e| format!("{}: {e}", zip.name))?;
        return Ok((from_peft(&safetensors, &config, model).map_err(|e| format!("{}: {e}", zip.name))?, "peft"));
    }
    match (named(".safetensors"), named(".json")) {
        (Some(weights), Some(config)) => {
            let config = std::str::from_utf8(&config.bytes).map_err(|_| format!("{}: not UTF-8 text", config.name))?;
            Ok((from_peft(&weights.bytes, config, model).map_err(|e| format!("{}: {e}", weights.name))?, "peft"))
        }
        _ => Err(format!(
            "choose {SAFETENSORS_FILE} together with {CONFIG_FILE}, a zip of them, or a llama.cpp LoRA .gguf"
        )),
    }
}

/// `adapter_model.safetensors` and `adapter_config.json` from a PEFT zip (found in any
/// folder of it).
fn unzip_peft(bytes: &[u8]) -> Result<(Vec<u8>, String), String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("not a readable zip: {e}"))?;
    let mut entry = |wanted: &str| -> Result<Vec<u8>, String> {
        let name = zip
            .file_names()
            .find(|n| n.rsplit('/').next() == Some(wanted))
            .map(str::to_string)
            .ok_or_else(|| format!("no {wanted} in the zip"))?;
        let mut file = zip.by_name(&name).map_err(|e| format!("{name}: {e}"))?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).map_err(|e| format!("{name}: {e}"))?;
        Ok(out)
    };
    let safetensors = entry(SAFETENSORS_FILE)?;
    let config = String::from_utf8(entry(CONFIG_FILE)?).map_err(|_| format!("{CONFIG_FILE} is not UTF-8 text"))?;
    Ok((safetensors, config))
}

/// The settings a checkpoint's run was made with, as the page shows them.
fn checkpoint_settings(checkpoint: &Checkpoint) -> TrainSettings {
    let meta = &checkpoint.meta;
    TrainSettings {
        rank: meta.lora.rank as u32,
        alpha: meta.lora.alpha,
        lr: meta.optimizer.schedule.lr,
        epochs: meta.run.epochs as u32,
        max_steps: meta.run.max_steps.unwrap_or(0) as u32,
        seq_len: meta.seq_len as u32,
        batch: meta.run.batch as u32,
        targets: meta.lora.targets.iter().map(|t| t.short().to_string()).collect(),
        seed: meta.run.seed,
    }
}

impl EngineWorker {
    /// Reads an adapter for the loaded model and makes it the one the chat tries.
    pub(super) async fn import_adapter(&self, files: Vec<ImportFile>) -> Result<ImportedAdapter, String> {
        if self.training_active() {
            return Err("training is running: pause or cancel it before importing an adapter".into());
        }
        let loaded = self.model.borrow().clone().ok_or("load the adapter's base model first")?;
        let gpu = self.gpu().await.map_err(|e| format!("no GPU: {e}"))?;
        let config = loaded.model.borrow().config.clone();
        let (adapter, format) = read_adapter(&files, &config)?;
        let weights = LoraWeights::from_adapter(&gpu, &config, &adapter).map_err(|e| e.to_string())?;
        self.detach_adapter(&loaded)?;
        let version = self.imported.get().map_or(IMPORTED_VERSIONS, |v| v + 1);
        *self.spare.borrow_mut() = Some((version, weights));
        self.imported.set(Some(version));
        Ok(ImportedAdapter {
            source: files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(" + "),
            format: format.to_string(),
            base_name: adapter.base_name.clone(),
            rank: adapter.config.rank as u32,
            alpha: adapter.config.alpha,
            targets: adapter.config.targets.iter().map(|t| t.short().to_string()).collect(),
            parameters: adapter.pairs.iter().map(|p| (p.a.len() + p.b.len()) as u64).sum(),
        })
    }

    /// Puts the imported adapter (`version`, kept in `spare`) on the model.
    pub(super) fn attach_imported(&self, loaded: &Loaded, version: u64) -> Result<(), String> {
        if self.attached.get() == Some(version) {
            return Ok(());
        }
        self.detach_adapter(loaded)?;
        let spare = self.spare.borrow_mut().take();
        let Some((_, weights)) = spare.filter(|(v, _)| *v == version) else {
            self.imported.set(None);
            return Err("the imported adapter is gone: import it again".into());
        };
        let mut model =
            loaded.model.try_borrow_mut().map_err(|_| "another generation is running: wait for it to end")?;
        model.attach(Some(weights));
        self.attached.set(Some(version));
        Ok(())
    }

    /// Takes up a checkpoint's run on the current course, paused at its step.
    pub(super) async fn import_checkpoint(&self, file: ImportFile, data: &DataSettings) -> Result<(), String> {
        if self.training_active() {
            return Err("training is running: cancel it before importing a checkpoint".into());
        }
        let loaded = self.model.borrow().clone().ok_or("load the checkpoint's base model first")?;
        if self.course.borrow().is_empty() {
            return Err("add the course material the run trained on first".into());
        }
        let checkpoint = Checkpoint::from_bytes(&file.bytes).map_err(|e| format!("{}: {e}", file.name))?;
        let settings = checkpoint_settings(&checkpoint);
        let data = DataSettings { seq_len: settings.seq_len, ..data.clone() };
        let base = base_model(&loaded, model_sha256(&loaded).await?);
        let mut session = self.new_session(&loaded, &data, &settings)?;
        checkpoint
            .check_matches(&base, &session.data_sha256)
            .map_err(|e| format!("{} cannot continue here: {e}", file.name))?;
        let meta = checkpoint.meta;
        session.total_steps = meta.run.total_steps(session.data.train.len());
        session.lora_parameters = checkpoint.state.params.len() as u64;
        session.lora = meta.lora;
        session.optimizer = meta.optimizer;
        session.run = meta.run;
        session.best_val_loss = meta.best_val_loss;
        session.state = Some(checkpoint.state);
        session.phase = TrainPhase::Paused;
        self.detach_adapter(&loaded)?;
        self.forget_training();
        self.control.set(Control::Run);
        *self.session.borrow_mut() = Some(session);
        self.post(&FromWorker::CheckpointImported(ImportedCheckpoint {
            file: file.name,
            step: meta.step as u32,
            settings,
        }));
        self.post_plan();
        Ok(())
    }
}
