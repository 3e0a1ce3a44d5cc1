//! The training flow's messages: course files and their preparation, training
//! settings and the presets that size them for the device, progress, exports.

use serde::{Deserialize, Serialize};

use super::examples::{DeletedExample, ExamplePage};

/// LoRA targets by their short names, in the engine's canonical order.
pub const TARGETS: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// The engine's largest LoRA rank (`kernels::lora::MAX_RANK`).
pub const MAX_RANK: u32 = 64;

/// The shortest example the data pipeline accepts.
pub const MIN_SEQ_LEN: u32 = 32;

/// A course file the teacher added. Its bytes are the message's payload, not JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseFile {
    pub name: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
}

/// What the adapter should become: the data pipeline's preset (system prompt, and
/// how Q&A sheets turn into conversations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    TeachingAssistant,
    SocraticTutor,
    ResourceGenerator,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::TeachingAssistant, Role::SocraticTutor, Role::ResourceGenerator];

    /// The engine's preset name (`data::Preset::from_name` reads it).
    pub fn name(self) -> &'static str {
        match self {
            Role::TeachingAssistant => "teaching-assistant",
            Role::SocraticTutor => "socratic-tutor",
            Role::ResourceGenerator => "resource-generator",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::TeachingAssistant => "Teaching assistant: answers from the course",
            Role::SocraticTutor => "Socratic tutor: guides with questions",
            Role::ResourceGenerator => "Resource generator: writes quizzes and exercises",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// How course files become training examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSettings {
    pub role: Role,
    /// Replace personal data (emails, phone numbers, IDs, roster names) by placeholders.
    pub redact: bool,
    /// Tokens per example (the training's sequence length).
    pub seq_len: u32,
    /// The teacher's own system prompt, in place of the role's; None keeps the role's.
    /// (Absent from runs saved before it existed.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
}

impl Default for DataSettings {
    fn default() -> DataSettings {
        DataSettings { role: Role::TeachingAssistant, redact: true, seq_len: 256, system_prompt: None }
    }
}

/// One course file as the pipeline saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReport {
    pub name: String,
    /// The format it was read as (`markdown`, `pdf`, `csv`, …); empty if unreadable.
    pub format: String,
    pub bytes: u64,
    pub examples: u32,
    pub tokens: u64,
    /// Personal data found in it (redacted or not, see [`CourseReport::redacted`]).
    pub personal_data: u32,
    /// Notes about parts that were skipped or changed.
    pub warnings: Vec<String>,
    /// Why the file gave nothing, if it failed.
    pub error: Option<String>,
}

/// The course as prepared for training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CourseReport {
    pub files: Vec<FileReport>,
    pub train_examples: u32,
    pub validation_examples: u32,
    pub tokens: u64,
    /// Tokens the model learns to predict (loss mask 1).
    pub trained_tokens: u64,
    pub truncated_examples: u32,
    pub duplicates_removed: u32,
    pub seq_len: u32,
    pub role: Role,
    /// The system prompt of the chat examples (the page sends it with prompts too).
    pub system_prompt: String,
    /// Personal data found across the course.
    pub personal_data: u32,
    pub redacted: bool,
    /// Personal data was found and kept: the adapter may memorize it.
    pub unredacted_personal_data: bool,
    /// The page of examples the teacher looks at, exactly as the model sees them.
    pub page: ExamplePage,
    /// Examples the teacher changed (and the changes apply to).
    pub edited: u32,
    /// Examples the teacher deleted, to restore.
    pub deleted: Vec<DeletedExample>,
    /// Changes to examples these settings do not make (text windows of another
    /// length): they apply again with the settings they were made with.
    pub unused_edits: u32,
}

/// The three ways to train, sized for the device by [`TrainPreset::settings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainPreset {
    Quick,
    Balanced,
    Thorough,
}

impl TrainPreset {
    pub const ALL: [TrainPreset; 3] = [TrainPreset::Quick, TrainPreset::Balanced, TrainPreset::Thorough];

    pub fn name(self) -> &'static str {
        match self {
            TrainPreset::Quick => "quick",
            TrainPreset::Balanced => "balanced",
            TrainPreset::Thorough => "thorough",
        }
    }

    pub fn from_name(name: &str) -> Option<TrainPreset> {
        TrainPreset::ALL.into_iter().find(|p| p.name() == name)
    }

    pub fn label(self) -> &'static str {
        match self {
            TrainPreset::Quick => "Quick: a first look in minutes",
            TrainPreset::Balanced => "Balanced: a useful adapter",
            TrainPreset::Thorough => "Thorough: longer examples, more steps",
        }
    }

    /// The settings of this preset on a device: a software adapter (the CPU doing a
    /// GPU's work) gets shorter examples, lower ranks and fewer steps; no example is
    /// longer than the model's `context`.
    pub fn settings(self, software: bool, context: u32) -> TrainSettings {
        // (rank, seq_len, epochs, batch, max_steps, lr)
        let (rank, seq_len, epochs, batch, max_steps, lr) = match (self, software) {
            (TrainPreset::Quick, false) => (8, 256, 1, 4, 60, 3e-4),
            (TrainPreset::Balanced, false) => (16, 512, 2, 4, 300, 2e-4),
            (TrainPreset::Thorough, false) => (32, 1024, 3, 8, 0, 1e-4),
            (TrainPreset::Quick, true) => (4, 128, 1, 2, 30, 5e-4),
            (TrainPreset::Balanced, true) => (8, 256, 1, 2, 100, 3e-4),
            (TrainPreset::Thorough, true) => (16, 512, 2, 4, 300, 2e-4),
        };
        TrainSettings {
            rank,
            alpha: 2.0 * rank as f32,
            lr,
            epochs,
            max_steps,
            seq_len: seq_len.min(context.max(MIN_SEQ_LEN)),
            batch,
            targets: TARGETS.iter().map(|t| t.to_string()).collect(),
            seed: 0,
        }
    }
}

/// A training run's settings (a preset's, possibly changed under "Advanced").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub rank: u32,
    pub alpha: f32,
    /// Peak learning rate (linear warmup, cosine decay).
    pub lr: f32,
    pub epochs: u32,
    /// Stop after this many optimizer steps even if epochs remain (0: no limit).
    pub max_steps: u32,
    /// Tokens per example.
    pub seq_len: u32,
    /// Examples per optimizer step.
    pub batch: u32,
    /// Adapted projections, from [`TARGETS`].
    pub targets: Vec<String>,
    /// Seeds the LoRA initialisation, the data order and the validation split.
    pub seed: u64,
}

impl TrainSettings {
    /// Refuses settings the engine cannot run, with a message for the teacher.
    pub fn check(&self, context: u32) -> Result<(), String> {
        if self.rank == 0 || self.rank > MAX_RANK {
            return Err(format!("rank must be between 1 and {MAX_RANK}"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err("alpha must be a positive number".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr < 1.0) {
            return Err("the learning rate must be between 0 and 1".into());
        }
        if self.epochs == 0 {
            return Err("train for at least one epoch".into());
        }
        if self.batch == 0 {
            return Err("the batch needs at least one example".into());
        }
        if self.seq_len < MIN_SEQ_LEN || self.seq_len > context {
            return Err(format!("the sequence length must be between {MIN_SEQ_LEN} and the model's context, {context}"));
        }
        if self.targets.is_empty() {
            return Err("choose at least one projection to adapt".into());
        }
        if let Some(t) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            return Err(format!("unknown projection {t:?}"));
        }
        Ok(())
    }
}

/// Where a training run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainPhase {
    /// Preparing the data, allocating the workspace, measuring the base model.
    Preparing,
    Running,
    /// Stopped between steps; can resume.
    Paused,
    /// The plan ran to its end (or early stopping ended it).
    Finished,
    /// Cancelled; the adapter keeps what it learned.
    Stopped,
    /// A step failed; the adapter keeps the last good step.
    Failed,
}

impl TrainPhase {
    /// A run is going on (its loop holds the model).
    pub fn is_active(self) -> bool {
        matches!(self, TrainPhase::Preparing | TrainPhase::Running)
    }
}

/// A training run: its phase and plan, sent at every phase change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingPlan {
    pub phase: TrainPhase,
    /// Steps done.
    pub step: u32,
    pub total_steps: u32,
    pub train_examples: u32,
    pub validation_examples: u32,
    /// Trainable LoRA values.
    pub lora_parameters: u64,
    /// Validation loss of the base model, before the first step.
    pub base_val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    /// The adapter's weights exist (a step was taken): it can be tried and exported.
    pub has_adapter: bool,
    /// Personal data the run's course held and kept (not redacted): the adapter may
    /// have memorized it.
    pub unredacted_personal_data: u32,
    /// Why it failed or ended early.
    pub message: Option<String>,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepProgress {
    pub step: u32,
    pub total_steps: u32,
    /// Epochs done, fractional.
    pub epoch: f64,
    /// Mean training loss of the step's examples.
    pub loss: f64,
    /// Validation loss, on the steps that compute it.
    pub val_loss: Option<f64>,
    pub lr: f32,
    /// Tokens processed per second since the run (re)started.
    pub tokens_per_second: f64,
    /// Seconds to the end of the plan at that pace.
    pub eta_seconds: f64,
    /// GPU memory the engine holds now, and its peak.
    pub gpu_bytes: u64,
    pub gpu_peak_bytes: u64,
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// A zip of `adapter_model.safetensors`, `adapter_config.json` and a model card
    /// (PEFT, for Hugging Face transformers).
    Peft,
    /// A llama.cpp LoRA adapter (`llama-cli --lora`).
    GgufLora,
    /// The run's checkpoint (weights and optimizer state, to continue training).
    Checkpoint,
    /// The base model with the adapter merged in, adapted weights in F16 (a whole
    /// model for llama.cpp, Ollama, LM Studio).
    MergedF16,
    /// The same with the adapted weights in Q8_0 (half the size).
    MergedQ8,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 5] = [
        ExportFormat::Peft,
        ExportFormat::GgufLora,
        ExportFormat::Checkpoint,
        ExportFormat::MergedF16,
        ExportFormat::MergedQ8,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Peft => "peft",
            ExportFormat::GgufLora => "gguf-lora",
            ExportFormat::Checkpoint => "checkpoint",
            ExportFormat::MergedF16 => "merged-f16",
            ExportFormat::MergedQ8 => "merged-q8",
        }
    }
}
