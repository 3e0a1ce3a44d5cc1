//! Files the teacher brings in besides course material: an adapter to try, a
//! checkpoint to continue, and one turn of a conversation kept for the next.

use serde::{Deserialize, Serialize};

use super::TrainSettings;

/// A file going to the worker; its bytes are the message's payload, not JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportFile {
    pub name: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// An adapter read from PEFT files or a llama.cpp LoRA GGUF, ready to try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedAdapter {
    /// The file(s) it came from.
    pub source: String,
    /// `peft` or `gguf-lora`.
    pub format: String,
    /// The base model the file names (may differ from the loaded one's name).
    pub base_name: String,
    pub rank: u32,
    pub alpha: f32,
    pub targets: Vec<String>,
    pub parameters: u64,
}

/// A checkpoint taken up: the run is paused at `step`, to resume with these settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedCheckpoint {
    pub file: String,
    pub step: u32,
    pub settings: TrainSettings,
}

/// One exchange of a conversation, sent back with the next prompt (chat only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}
