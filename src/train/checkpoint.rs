//! Checkpoints: everything a run needs to continue exactly where it stopped, in one
//! safetensors file. The tensors are the flat LoRA weights and the two AdamW moments;
//! the metadata (`classtune` key, JSON) holds the step, every setting that shapes the
//! run (LoRA, optimizer and schedule, batching, data order seed, sequence length) and
//! the digests of the base model and the training data, so a resume against other
//! data or another model is refused instead of silently diverging. The data order,
//! the schedule and the dropout masks are functions of (seed, step), so no other RNG
//! state exists to save.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::adapter::LoraConfig;

use super::run::{Dataset, RunOptions};
use super::{OptimizerOptions, TrainError};

/// The `format` of checkpoints this version writes and reads.
pub const FORMAT: &str = "classtune-checkpoint-v1";

/// The base model a checkpoint belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    pub name: String,
    pub architecture: String,
    /// SHA-256 of the GGUF file, hex.
    pub sha256: String,
}

/// A run's settings and position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    pub format: String,
    /// Optimizer steps done.
    pub step: usize,
    pub lora: LoraConfig,
    pub optimizer: OptimizerOptions,
    pub run: RunOptions,
    pub seq_len: usize,
    pub base: BaseModel,
    /// [`data_digest`] of the dataset the run trains on.
    pub data_sha256: String,
    pub train_examples: usize,
    /// The best validation loss so far (early stopping continues from it).
    pub best_val_loss: Option<f64>,
}

/// The optimizer state of a run: step, LoRA weights and AdamW moments (each flat, in
/// the layout of `model::LoraWeights`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub step: usize,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// A checkpoint file's contents.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub state: TrainState,
}

const TENSORS: [&str; 3] = ["lora.params", "adamw.m", "adamw.v"];

impl Checkpoint {
    pub fn to_bytes(&self) -> Result<Vec<u8>, TrainError> {
        let s = &self.state;
        let bytes: Vec<Vec<u8>> = [&s.params, &s.m, &s.v].iter().map(|v| bytemuck::cast_slice::<f32, u8>(v).to_vec()).collect();
        let views = TENSORS
            .iter()
            .zip(&bytes)
            .map(|(name, b)| Ok((*name, TensorView::new(Dtype::F32, vec![b.len() / 4], b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| TrainError::Checkpoint(format!("cannot serialize: {e}")))?;
        let meta = serde_json::to_string(&self.meta).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
        let metadata = HashMap::from([("classtune".to_string(), meta)]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| TrainError::Checkpoint(format!("cannot serialize: {e}")))
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, TrainError> {
        let bad = |m: String| TrainError::Checkpoint(m);
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("classtune"))
            .ok_or_else(|| bad("a safetensors file but not a ClassTune checkpoint (no `classtune` metadata)".into()))?;
        let meta: CheckpointMeta = serde_json::from_str(meta).map_err(|e| bad(format!("unreadable settings: {e}")))?;
        if meta.format != FORMAT {
            return Err(bad(format!("format `{}`, this version reads `{FORMAT}`", meta.format)));
        }
        let file = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("corrupt tensor data: {e}")))?;
        let mut values: [Vec<f32>; 3] = Default::default();
        for (slot, name) in values.iter_mut().zip(TENSORS) {
            let t = file.tensor(name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape().len() != 1 {
                return Err(bad(format!("tensor `{name}` is {:?} {:?}, expected a flat F32 vector", t.dtype(), t.shape())));
            }
            *slot = bytemuck::pod_collect_to_vec::<u8, f32>(t.data());
        }
        let [params, m, v] = values;
        if m.len() != params.len() || v.len() != params.len() {
            return Err(bad(format!("weights hold {} values but the moments {} and {}", params.len(), m.len(), v.len())));
        }
        Ok(Checkpoint { state: TrainState { step: meta.step, params, m, v }, meta })
    }

    /// Refuses to continue on another base model or other data.
    pub fn check_matches(&self, base: &BaseModel, data_sha256: &str) -> Result<(), TrainError> {
        if self.meta.base.sha256 != base.sha256 {
            return Err(TrainError::Checkpoint(format!(
                "made with base model `{}` (sha256 {}…), not this one `{}` (sha256 {}…)",
                self.meta.base.name,
                &self.meta.base.sha256[..12.min(self.meta.base.sha256.len())],
                base.name,
                &base.sha256[..12.min(base.sha256.len())]
            )));
        }
        if self.meta.data_sha256 != data_sha256 {
            return Err(TrainError::Checkpoint(
                "the training data differs from the run's (same files and data settings are needed to resume)".into(),
            ));
        }
        Ok(())
    }
}

/// SHA-256 over the token ids and masks of both splits, in order: what the run sees.
pub fn data_digest(data: &Dataset) -> String {
    let mut h = Sha256::new();
    for (tag, split) in [(b'T', &data.train), (b'V', &data.validation)] {
        for t in split {
            h.update([tag]);
            h.update((t.ids.len() as u64).to_le_bytes());
            h.update(bytemuck::cast_slice::<u32, u8>(&t.ids));
            h.update(&t.mask);
        }
    }
    hex(&h.finalize())
}

/// Hex SHA-256 of a byte stream given in pieces (a model file read in slices).
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one:
/// a temporary file next to it, synced, then renamed over it.
#[cfg(not(target_arch = "wasm32"))]
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
