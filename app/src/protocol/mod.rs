//! Messages between the page and the engine worker.
//!
//! The page never touches the GPU: it posts a [`ToWorker`] and renders the
//! [`FromWorker`] replies. Both travel as JSON text through `postMessage`, so the
//! types here are plain serde data with no engine or wgpu types in them, and the
//! round trip is tested natively. Bulk bytes (course files in, exported adapters out)
//! are not JSON: they travel beside the text as transferred `ArrayBuffer`s, in the
//! order [`ToWorker::payloads`] / [`FromWorker::payloads`] list them, and are put
//! back with `attach` (a message is a JS array `[text, buffer...]` then, otherwise
//! just the text). Files too large to copy (a model the teacher picked, a merged model)
//! travel as a `Blob` by reference, `[text, blob]` (`ModelSource::File`,
//! [`FromWorker::ExportedBlob`]); the link handles those (`link::wire_blob`).
//!
//! [`ToWorker::Logits`] exists for the end-to-end test that compares the browser's
//! logits with the native CLI's (`tests/e2e/model.test.mjs`), and
//! [`ToWorker::LoseDevice`] for the one that loses the GPU mid-training
//! (`tests/e2e/persist.test.mjs`); the page never sends them.

mod examples;
mod files;
mod persist;
mod probe;
mod train;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_examples;

use serde::{Deserialize, Serialize};

pub use examples::{
    ChatMessage, DeletedExample, ExampleChange, ExampleContent, ExampleEdit, ExampleId, ExamplePage, ExampleView,
    Speaker, EXAMPLES_PER_PAGE,
};
pub use persist::SavedRun;
pub use files::{ImportFile, ImportedAdapter, ImportedCheckpoint, Turn};
pub use probe::{Calibration, ProbeAnswer, ProbeReport, Question, QuizItem, QuizReport};
pub use train::{
    CourseFile, CourseReport, DataSettings, ExportFormat, FileReport, Role, StepProgress, TrainPhase, TrainPreset,
    TrainSettings, TrainingPlan, TARGETS,
};

/// A request from the page to the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Open the GPU (once) and report it with [`FromWorker::Gpu`].
    Probe,
    /// Load a GGUF model; answered with [`FromWorker::ModelLoaded`] or an error.
    LoadModel { source: ModelSource },
    /// Generate a completion for `prompt`, streamed as [`FromWorker::Token`]s and
    /// closed by [`FromWorker::Done`], all carrying the same `id`.
    Generate { id: u32, prompt: String, settings: GenerateSettings },
    /// Stop the generation `id` early; it still ends with [`FromWorker::Done`].
    Cancel { id: u32 },
    /// Test hook: every position's logits for `ids` (one forward pass from an empty
    /// cache) with the model at `source` (loaded unless it is the current one);
    /// answered with [`FromWorker::Logits`].
    Logits { source: ModelSource, ids: Vec<u32> },
    /// Add course files (a file of the same name is replaced) and prepare the whole
    /// course with `data`; answered with [`FromWorker::Course`].
    AddCourseFiles { files: Vec<CourseFile>, data: DataSettings },
    /// Drop a course file and prepare the rest again.
    RemoveCourseFile { name: String, data: DataSettings },
    /// Prepare the course again with other settings (role, redaction, length).
    PrepareCourse { data: DataSettings },
    /// Page `page` of the prepared examples: [`FromWorker::CourseExamples`].
    CourseExamples { page: u32 },
    /// Edit, delete, restore or revert one prepared example and prepare the course
    /// again with `data`; answered with [`FromWorker::Course`].
    ChangeExample { id: ExampleId, change: ExampleChange, data: DataSettings },
    /// Train a new adapter from scratch on the course: [`FromWorker::Training`] as it
    /// moves through its phases and one [`FromWorker::Progress`] per step.
    StartTraining { data: DataSettings, train: TrainSettings },
    /// Stop after the current step, keeping everything needed to resume.
    PauseTraining,
    /// Continue a paused run where it stopped.
    ResumeTraining,
    /// End the run after the current step; the adapter keeps what it learned so far.
    CancelTraining,
    /// The trained adapter (or the run's checkpoint) as a file: [`FromWorker::Exported`].
    Export { format: ExportFormat },
    /// The held-out questions answered by the base model and the adapter:
    /// [`FromWorker::Quiz`]. The last run's questions; without a run (an imported
    /// adapter), those of the course as `data` prepares it.
    Quiz { max_tokens: u32, data: DataSettings },
    /// Read an adapter (PEFT `adapter_model.safetensors` + `adapter_config.json`, a
    /// PEFT zip, or a llama.cpp LoRA GGUF) to try it: [`FromWorker::AdapterImported`].
    ImportAdapter { files: Vec<ImportFile> },
    /// Take up a checkpoint's run on the current course prepared with `data` (its
    /// length replaced by the checkpoint's): [`FromWorker::CheckpointImported`], then
    /// [`FromWorker::Training`] paused at its step. Refused for another model or data.
    ImportCheckpoint { file: ImportFile, data: DataSettings },
    /// Bring back the run saved on this device (its model, course files, settings and
    /// checkpoint): [`FromWorker::RunRestored`], then training goes on where it was saved.
    ResumeSavedRun,
    /// Delete the run saved on this device; answered with an empty [`FromWorker::SavedRun`].
    DiscardSavedRun,
    /// Test hook: destroy the GPU device (`GPUDevice.destroy()`), as a driver reset
    /// would lose it, so the end-to-end test can watch the worker recover.
    LoseDevice,
}

/// Where a model comes from. Files the teacher picks are first written to OPFS by
/// the page, so the worker only ever reads from its own origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// A path on the app's own origin, e.g. `models/SmolLM2-135M-Instruct.Q4_1.gguf`.
    Url { path: String },
    /// A file in the origin private file system.
    Opfs { name: String },
    /// A file the teacher picked or dropped: the `File` travels beside the message (by
    /// reference, never copied whole) and the worker reads it in slices.
    File { name: String, size: u64 },
}

/// Sampling settings; temperature 0 means greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateSettings {
    pub chat: bool,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub seed: u64,
    /// Generate with the trained adapter applied (false: the base model).
    #[serde(default)]
    pub adapter: bool,
    /// A system message before the prompt (chat only), e.g. the role's prompt the
    /// adapter was trained with.
    #[serde(default)]
    pub system: Option<String>,
    /// The conversation so far (chat only), oldest first; the prompt is the next turn.
    #[serde(default)]
    pub history: Vec<Turn>,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        GenerateSettings {
            chat: true,
            max_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            adapter: false,
            system: None,
            history: Vec::new(),
        }
    }
}

/// A message from the worker to the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's wasm is running and accepts requests.
    Ready,
    /// The GPU opened; what it is and what it allows.
    Gpu(GpuReport),
    /// No usable GPU in this worker (no adapter, device refused, self-test failed).
    GpuUnavailable { message: String },
    /// A model is loaded and ready to generate.
    ModelLoaded(ModelReport),
    /// The next piece of text of generation `id`.
    Token { id: u32, text: String },
    /// Generation `id` ended: `tokens` generated after `prompt_tokens`, decoding at
    /// `tokens_per_second` (after the first token), `seconds` in all.
    Done { id: u32, tokens: u32, prompt_tokens: u32, tokens_per_second: f32, seconds: f32, stop: StopReason },
    /// Answer to [`ToWorker::Logits`]: `logits` is [ids × vocab], row-major.
    Logits { vocab: u32, logits: Vec<f32> },
    /// The course as prepared for training: per-file status, counts, the page of
    /// examples the teacher looks at.
    Course(CourseReport),
    /// A page of the prepared examples.
    CourseExamples(ExamplePage),
    /// The training run changed phase.
    Training(TrainingPlan),
    /// One optimizer step of the running training.
    Progress(StepProgress),
    /// An exported file; its bytes travel as the message's payload.
    Exported {
        format: ExportFormat,
        file_name: String,
        mime: String,
        #[serde(skip)]
        bytes: Vec<u8>,
    },
    /// The run saved on this device, if any (sent after [`FromWorker::Gpu`] and after a
    /// discard): the page offers to resume it.
    SavedRun { run: Option<SavedRun> },
    /// The saved run is back: its model is loaded and its course files are in the
    /// worker; the page takes its settings and chart from here.
    RunRestored(SavedRun),
    /// The running training was saved on this device at `step` (`saved_at`: ms since 1970).
    Saved { step: u32, saved_at: f64 },
    /// The GPU device was lost; the worker reopened it, reloaded the model and goes on
    /// from the checkpoint at `step`.
    DeviceLost { message: String, step: u32 },
    /// A large exported file (a merged model), built in the worker as a `Blob` from
    /// parts; the `Blob` travels beside the message and the page's link gives it `url`.
    ExportedBlob {
        format: ExportFormat,
        file_name: String,
        size: u64,
        #[serde(skip)]
        url: String,
    },
    /// The run's duration, estimated before its first step.
    Calibration(Calibration),
    /// Answers to the probe questions during training.
    Probe(ProbeReport),
    /// Answers to [`ToWorker::Quiz`].
    Quiz(QuizReport),
    /// An adapter was read and can be tried (`GenerateSettings::adapter`).
    AdapterImported(ImportedAdapter),
    CheckpointImported(ImportedCheckpoint),
    /// A request failed; `request` names which one.
    Error { request: String, message: String },
}

/// The adapter as the engine sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReport {
    /// `Gpu::describe()`: adapter name, backend, device type, subgroups.
    pub description: String,
    /// The browser's `GPUAdapterInfo.vendor` and `.architecture` (wgpu only maps the
    /// description, which Chrome often leaves empty); empty where unknown.
    pub vendor: String,
    pub architecture: String,
    /// The adapter runs on the CPU (SwiftShader, lavapipe): expect it to be slow.
    pub software: bool,
    pub subgroups: bool,
    pub limits: GpuLimits,
    /// A small dispatch and readback ran and gave the expected numbers.
    pub self_test: bool,
}

/// The device limits the engine requested (capped at the WebGPU defaults it relies on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuLimits {
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end token (eos, `<|im_end|>`).
    StopToken,
    MaxTokens,
    ContextFull,
    Cancelled,
    /// Decoding failed; an [`FromWorker::Error`] says why.
    Error,
}

/// What the page shows about a loaded model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub name: String,
    pub architecture: String,
    pub parameters: u64,
    /// The tensor type holding most of the weights' bytes, e.g. `Q4_1`.
    pub quantization: String,
    /// Weights resident on the GPU (`Model::weight_bytes`).
    pub gpu_bytes: u64,
    /// The KV cache for `kv_positions` tokens, what generation adds (as `classtune info`
    /// counts it).
    #[serde(default)]
    pub kv_cache_bytes: u64,
    #[serde(default)]
    pub kv_positions: u32,
    pub vocab: u32,
    pub context: u32,
    /// From the request to the model being ready (fetch, parse, upload).
    pub load_seconds: f32,
}

impl ToWorker {
    /// The JSON text posted to the worker (payloads go beside it).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
    /// A short name for error reports.
    pub fn name(&self) -> &'static str {
        match self {
            ToWorker::Probe => "probe",
            ToWorker::LoadModel { .. } => "load_model",
            ToWorker::Generate { .. } => "generate",
            ToWorker::Cancel { .. } => "cancel",
            ToWorker::Logits { .. } => "logits",
            ToWorker::AddCourseFiles { .. } => "add_course_files",
            ToWorker::RemoveCourseFile { .. } => "remove_course_file",
            ToWorker::PrepareCourse { .. } => "prepare_course",
            ToWorker::CourseExamples { .. } => "course_examples",
            ToWorker::ChangeExample { .. } => "change_example",
            ToWorker::StartTraining { .. } => "start_training",
            ToWorker::PauseTraining => "pause_training",
            ToWorker::ResumeTraining => "resume_training",
            ToWorker::CancelTraining => "cancel_training",
            ToWorker::Export { .. } => "export",
            ToWorker::Quiz { .. } => "quiz",
            ToWorker::ImportAdapter { .. } => "import_adapter",
            ToWorker::ImportCheckpoint { .. } => "import_checkpoint",
            ToWorker::ResumeSavedRun => "resume_saved_run",
            ToWorker::DiscardSavedRun => "discard_saved_run",
            ToWorker::LoseDevice => "lose_device",
        }
    }
    /// The bytes that travel beside the JSON text, in order.
    pub fn payloads(&self) -> Vec<&[u8]> {
        match self {
            ToWorker::AddCourseFiles { files, .. } => files.iter().map(|f| f.bytes.as_slice()).collect(),
            ToWorker::ImportAdapter { files } => files.iter().map(|f| f.bytes.as_slice()).collect(),
            ToWorker::ImportCheckpoint { file, .. } => vec![file.bytes.as_slice()],
            _ => Vec::new(),
        }
    }
    /// Puts the payloads back after [`ToWorker::decode`].
    pub fn attach(&mut self, payloads: Vec<Vec<u8>>) -> Result<(), String> {
        match self {
            ToWorker::AddCourseFiles { files, .. } if files.len() == payloads.len() => {
                for (file, bytes) in files.iter_mut().zip(payloads) {
                    file.bytes = bytes;
                }
                Ok(())
            }
            ToWorker::AddCourseFiles { files, .. } => {
                Err(format!("{} course files but {} payloads", files.len(), payloads.len()))
            }
            ToWorker::ImportAdapter { files } if files.len() == payloads.len() => {
                for (file, bytes) in files.iter_mut().zip(payloads) {
                    file.bytes = bytes;
                }
                Ok(())
            }
            ToWorker::ImportCheckpoint { file, .. } if payloads.len() == 1 => {
                file.bytes = payloads.into_iter().next().unwrap_or_default();
                Ok(())
            }
            ToWorker::ImportAdapter { .. } | ToWorker::ImportCheckpoint { .. } => {
                Err(format!("{}: the files and the {} payloads differ", self.name(), payloads.len()))
            }
            _ if payloads.is_empty() => Ok(()),
            other => Err(format!("{} carries no payload, got {}", other.name(), payloads.len())),
        }
    }
}

impl FromWorker {
    /// The JSON text posted to the page (payloads go beside it).
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
    /// The bytes that travel beside the JSON text, in order.
    pub fn payloads(&self) -> Vec<&[u8]> {
        match self {
            FromWorker::Exported { bytes, .. } => vec![bytes.as_slice()],
            _ => Vec::new(),
        }
    }
    /// Puts the payloads back after [`FromWorker::decode`].
    pub fn attach(&mut self, mut payloads: Vec<Vec<u8>>) -> Result<(), String> {
        match self {
            FromWorker::Exported { bytes, .. } if payloads.len() == 1 => {
                *bytes = payloads.remove(0);
                Ok(())
            }
            FromWorker::Exported { .. } => Err(format!("an export needs 1 payload, got {}", payloads.len())),
            _ if payloads.is_empty() => Ok(()),
            _ => Err(format!("a reply without payload got {}", payloads.len())),
        }
    }
}
