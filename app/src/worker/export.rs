//! Exports of the trained adapter, built in the worker from the session's weights on
//! the CPU: PEFT files in a zip, a llama.cpp LoRA GGUF, the run's checkpoint (merged
//! models are built in parts by `merged`).

use std::io::{Cursor, Write};

use classtune::adapter::{model_card, to_gguf_lora, to_peft, Adapter, TrainingFacts, CONFIG_FILE, SAFETENSORS_FILE};
use classtune::gguf::TensorSource;
use classtune::model::adapter_from_flat;
use classtune::train::checkpoint::{self, BaseModel, Checkpoint, CheckpointMeta, TrainState};
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::training::Session;
use super::{EngineWorker, Loaded};
use crate::protocol::{ExportFormat, FromWorker};

/// Bytes of the model file hashed per read.
const HASH_CHUNK: u64 = 8 << 20;

impl EngineWorker {
    pub(super) async fn export(&self, format: ExportFormat) -> Result<FromWorker, String> {
        let loaded = self.model.borrow().clone().ok_or("no model is loaded")?;
        // The base model's digest goes into a checkpoint; reading the file awaits, so
        // it comes before the session is borrowed.
        let base_sha256 = match format {
            ExportFormat::Checkpoint => Some(model_sha256(&loaded).await?),
            _ => None,
        };
        let session = self.session.borrow();
        let session = session.as_ref().ok_or("no adapter yet: train one first")?;
        if session.phase.is_active() {
            return Err("training is running: pause it before exporting".into());
        }
        let state = session.state.as_ref().filter(|s| s.step > 0).ok_or("no adapter yet: train one first")?;
        let base_name = model_name(&loaded);
        let config = loaded.model.borrow().config.clone();
        let adapter = adapter_from_flat(&config, &session.lora, &state.params, &base_name).map_err(|e| e.to_string())?;
        let stem = format!("classtune-{}-step{}", slug(&base_name), state.step);
        let (file_name, mime, bytes) = match format {
            ExportFormat::Peft => {
                let facts = TrainingFacts {
                    steps: state.step,
                    epochs: session.run.epochs,
                    learning_rate: session.optimizer.schedule.lr,
                    seq_len: session.settings.seq_len as usize,
                    batch: session.run.batch,
                    grad_accum: session.run.grad_accum,
                    base_val_loss: session.base_val_loss,
                    val_loss: session.val_loss,
                };
                let card = model_card(&adapter, &facts, &session.summary);
                (format!("{stem}-peft.zip"), "application/zip", peft_zip(&adapter, &config, &card)?)
            }
            ExportFormat::GgufLora => {
                let bytes = to_gguf_lora(&adapter, &loaded.gguf).map_err(|e| e.to_string())?;
                (format!("{stem}-lora.gguf"), "application/octet-stream", bytes)
            }
            ExportFormat::Checkpoint => {
                let checkpoint = session_checkpoint(session, &loaded, base_sha256.unwrap_or_default(), state.clone());
                let bytes = checkpoint.to_bytes().map_err(|e| e.to_string())?;
                (format!("{stem}-checkpoint.safetensors"), "application/octet-stream", bytes)
            }
            // Too large for one buffer: `merged` builds these as a Blob.
            ExportFormat::MergedF16 | ExportFormat::MergedQ8 => return Err("a merged model is exported in parts".into()),
        };
        Ok(FromWorker::Exported { format, file_name, mime: mime.to_string(), bytes })
    }
}

/// `adapter_model.safetensors`, `adapter_config.json` and the model card, zipped.
fn peft_zip(adapter: &Adapter, config: &classtune::model::Config, card: &str) -> Result<Vec<u8>, String> {
    let files = to_peft(adapter, config).map_err(|e| e.to_string())?;
    let now = js_sys::Date::new_0();
    let stamp = DateTime::from_date_and_time(
        now.get_full_year() as u16,
        now.get_month() as u8 + 1,
        now.get_date() as u8,
        now.get_hours() as u8,
        now.get_minutes() as u8,
        now.get_seconds() as u8,
    )
    .unwrap_or_default();
    let zip_error = |e: zip::result::ZipError| format!("writing the zip: {e}");
    let io_error = |e: std::io::Error| format!("writing the zip: {e}");
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    // Floats hardly compress: store the weights, deflate the text.
    let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).last_modified_time(stamp);
    let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).last_modified_time(stamp);
    zip.start_file(SAFETENSORS_FILE, stored).map_err(zip_error)?;
    zip.write_all(&files.safetensors).map_err(io_error)?;
    zip.start_file(CONFIG_FILE, deflated).map_err(zip_error)?;
    zip.write_all(files.config_json.as_bytes()).map_err(io_error)?;
    zip.start_file("README.md", deflated).map_err(zip_error)?;
    zip.write_all(card.as_bytes()).map_err(io_error)?;
    Ok(zip.finish().map_err(zip_error)?.into_inner())
}

/// The run's checkpoint at `state` (exported, and autosaved by `persist`).
pub(super) fn session_checkpoint(session: &Session, loaded: &Loaded, base_sha256: String, state: TrainState) -> Checkpoint {
    let meta = CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        step: state.step,
        lora: session.lora.clone(),
        optimizer: session.optimizer.clone(),
        run: session.run.clone(),
        seq_len: session.settings.seq_len as usize,
        base: base_model(loaded, base_sha256),
        data_sha256: session.data_sha256.clone(),
        train_examples: session.data.train.len(),
        best_val_loss: session.best_val_loss,
    };
    Checkpoint { meta, state }
}

/// The base model as a checkpoint names it.
pub(super) fn base_model(loaded: &Loaded, sha256: String) -> BaseModel {
    BaseModel { name: model_name(loaded), architecture: loaded.model.borrow().config.arch.name().to_string(), sha256 }
}

pub(super) fn model_name(loaded: &Loaded) -> String {
    loaded.gguf.get_str("general.name").map(str::to_string).unwrap_or_else(|_| loaded.model.borrow().config.name.clone())
}

/// `SmolLM2 135M Instruct` → `smollm2-135m-instruct`.
pub(super) fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "model".into() } else { out }
}

/// SHA-256 of the model file (as `checkpoint::sha256_hex` gives it), read in pieces
/// and kept for the next export.
pub(super) async fn model_sha256(loaded: &Loaded) -> Result<String, String> {
    if let Some(hex) = loaded.sha256.borrow().clone() {
        return Ok(hex);
    }
    let mut hash = Sha256::new();
    let len = loaded.file.len();
    let mut offset = 0;
    while offset < len {
        let n = HASH_CHUNK.min(len - offset);
        let bytes = loaded.file.read(offset, n).await.map_err(|e| format!("hashing the model: {e}"))?;
        hash.update(&bytes);
        offset += n;
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    *loaded.sha256.borrow_mut() = Some(hex.clone());
    Ok(hex)
}
