//! Messages between the page and the engine worker.
//!
//! The page never touches the GPU: it posts a [`ToWorker`] and renders the
//! [`FromWorker`] replies. Both travel as JSON strings through `postMessage`, so the
//! types here are plain serde data with no engine or wgpu types in them, and the
//! round trip is tested natively.
//!
//! [`ToWorker::Logits`] exists for the end-to-end test that compares the browser's
//! logits with the native CLI's (`tests/e2e/model.test.mjs`); the page never sends it.

use serde::{Deserialize, Serialize};

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
}

impl Default for GenerateSettings {
    fn default() -> Self {
        GenerateSettings { chat: true, max_tokens: 128, temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
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
    pub vocab: u32,
    pub context: u32,
    /// From the request to the model being ready (fetch, parse, upload).
    pub load_seconds: f32,
}

impl ToWorker {
    /// The JSON text posted to the worker.
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
        }
    }
}

impl FromWorker {
    /// The JSON text posted to the page.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let requests = [
            ToWorker::Probe,
            ToWorker::LoadModel { source: ModelSource::Url { path: "models/m.gguf".into() } },
            ToWorker::LoadModel { source: ModelSource::Opfs { name: "picked.gguf".into() } },
            ToWorker::Generate { id: 3, prompt: "Hi \"there\"\n".into(), settings: GenerateSettings::default() },
            ToWorker::Cancel { id: 3 },
            ToWorker::Logits { source: ModelSource::Url { path: "t/tiny.gguf".into() }, ids: vec![1, 2, 3] },
        ];
        for request in requests {
            assert_eq!(ToWorker::decode(&request.encode()).unwrap(), request);
        }
        assert_eq!(ToWorker::Probe.encode(), r#"{"type":"probe"}"#);
        // The shape the end-to-end tests post by hand.
        let logits = r#"{"type":"logits","source":{"kind":"url","path":"x.gguf"},"ids":[4,5]}"#;
        assert_eq!(
            ToWorker::decode(logits).unwrap(),
            ToWorker::Logits { source: ModelSource::Url { path: "x.gguf".into() }, ids: vec![4, 5] }
        );
    }

    #[test]
    fn replies_round_trip() {
        let limits = GpuLimits {
            max_storage_buffer_binding_size: 128 << 20,
            max_buffer_size: 256 << 20,
            max_compute_workgroup_storage_size: 16384,
            max_compute_invocations_per_workgroup: 256,
            max_storage_buffers_per_shader_stage: 8,
        };
        let replies = [
            FromWorker::Ready,
            FromWorker::Gpu(GpuReport {
                description: " (BrowserWebGpu, Cpu)".into(),
                vendor: "google".into(),
                architecture: "swiftshader".into(),
                software: true,
                subgroups: false,
                limits,
                self_test: true,
            }),
            FromWorker::GpuUnavailable { message: "no adapter".into() },
            FromWorker::Token { id: 1, text: "é🙂".into() },
            FromWorker::ModelLoaded(ModelReport {
                name: "SmolLM2".into(),
                architecture: "llama".into(),
                parameters: 134_515_008,
                quantization: "Q4_1".into(),
                gpu_bytes: 90 << 20,
                vocab: 49152,
                context: 8192,
                load_seconds: 1.5,
            }),
            FromWorker::Done {
                id: 1,
                tokens: 5,
                prompt_tokens: 30,
                tokens_per_second: 2.5,
                seconds: 3.0,
                stop: StopReason::MaxTokens,
            },
            FromWorker::Logits { vocab: 2, logits: vec![0.5, -1.25e-7, 3.0, f32::MAX] },
            FromWorker::Error { request: "generate".into(), message: "not yet".into() },
        ];
        for reply in replies {
            assert_eq!(FromWorker::decode(&reply.encode()).unwrap(), reply);
        }
    }

    #[test]
    fn unknown_messages_are_errors() {
        assert!(ToWorker::decode(r#"{"type":"format_disk"}"#).is_err());
        assert!(FromWorker::decode("not json").is_err());
    }
}
