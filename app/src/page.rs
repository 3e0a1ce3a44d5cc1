//! The page: a WebGPU capability check, the engine worker's report of the adapter, and
//! a minimal model section (load a model from this site, generate a streamed answer).
//!
//! The full flow (model, course material, training, chat, export) grows from here as
//! one section per step; each talks to the engine only through the [`EngineLink`]
//! provided as context.

use leptos::prelude::*;

use crate::link::EngineLink;
use crate::protocol::{FromWorker, GenerateSettings, GpuReport, ModelReport, ModelSource, StopReason, ToWorker};

/// The default model, put under `dist/models/` by scripts/setup.sh.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What the page knows about the GPU.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuStatus {
    /// `navigator.gpu` is missing: this browser has no WebGPU (or it is switched off).
    NoWebGpu,
    /// The worker is starting and opening the GPU.
    Starting,
    Ready(GpuReport),
    /// WebGPU exists but gave no usable device.
    Unavailable(String),
}

/// The engine worker for components that need it (model loading, generation).
pub type Engine = StoredValue<EngineLink, LocalStorage>;

/// What the page knows about the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    None,
    Loading(String),
    Loaded(ModelReport),
    Failed(String),
}

/// The end of a generation, as reported by the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub tokens: u32,
    pub prompt_tokens: u32,
    pub tokens_per_second: f32,
    pub seconds: f32,
    pub stop: StopReason,
}

/// The model section's state, shared by the worker's replies and the controls.
#[derive(Clone, Copy)]
struct ModelState {
    status: RwSignal<ModelStatus>,
    /// The generation in progress (its id), if any.
    running: RwSignal<Option<u32>>,
    next_id: RwSignal<u32>,
    output: RwSignal<String>,
    finished: RwSignal<Option<Finished>>,
}

impl ModelState {
    fn new() -> ModelState {
        ModelState {
            status: RwSignal::new(ModelStatus::None),
            running: RwSignal::new(None),
            next_id: RwSignal::new(1),
            output: RwSignal::new(String::new()),
            finished: RwSignal::new(None),
        }
    }

    /// Applies one model-related reply; false if it was not one.
    fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::ModelLoaded(report) => self.status.set(ModelStatus::Loaded(report.clone())),
            FromWorker::Token { id, text } if self.running.get_untracked() == Some(*id) => {
                self.output.update(|out| out.push_str(text))
            }
            FromWorker::Done { id, tokens, prompt_tokens, tokens_per_second, seconds, stop }
                if self.running.get_untracked() == Some(*id) =>
            {
                self.finished.set(Some(Finished {
                    tokens: *tokens,
                    prompt_tokens: *prompt_tokens,
                    tokens_per_second: *tokens_per_second,
                    seconds: *seconds,
                    stop: *stop,
                }));
                self.running.set(None);
            }
            FromWorker::Error { request, message } if request == "load_model" => {
                self.status.set(ModelStatus::Failed(message.clone()))
            }
            FromWorker::Token { .. } | FromWorker::Done { .. } | FromWorker::Logits { .. } => {}
            _ => return false,
        }
        true
    }
}

#[component]
pub fn App() -> impl IntoView {
    let status = RwSignal::new(GpuStatus::Starting);
    let last_error = RwSignal::new(None::<String>);
    let model = ModelState::new();
    if has_webgpu() {
        let spawned = EngineLink::spawn(move |link, reply| {
            if model.on_reply(&reply) {
                return;
            }
            match reply {
                FromWorker::Ready => link.send(&ToWorker::Probe),
                FromWorker::Gpu(report) => status.set(GpuStatus::Ready(report)),
                FromWorker::GpuUnavailable { message } => status.set(GpuStatus::Unavailable(message)),
                FromWorker::Error { request, message } => last_error.set(Some(format!("{request}: {message}"))),
                _ => {}
            }
        });
        match spawned {
            Ok(link) => provide_context::<Engine>(StoredValue::new_local(link)),
            Err(message) => status.set(GpuStatus::Unavailable(message)),
        }
    } else {
        status.set(GpuStatus::NoWebGpu);
    }

    view! {
        <header>
            <h1>"ClassTune"</h1>
            <p class="tagline">
                "Fine-tune a small language model on your course material, privately: "
                "everything runs on this device and nothing is uploaded."
            </p>
        </header>
        <main>
            <section id="gpu" aria-labelledby="gpu-title">
                <h2 id="gpu-title">"Your device"</h2>
                <div aria-live="polite">{move || gpu_view(status.get())}</div>
                {move || last_error.get().map(|e| view! { <p class="error" role="alert" data-testid="engine-error">{e}</p> })}
            </section>
            {move || matches!(status.get(), GpuStatus::Ready(_)).then(|| model_section(model))}
        </main>
    }
}

/// Load a model from this site, then try it: a prompt, a streamed answer, its speed.
fn model_section(model: ModelState) -> impl IntoView {
    let path = RwSignal::new(DEFAULT_MODEL.to_string());
    let prompt = RwSignal::new("What is photosynthesis?".to_string());
    let max_tokens = RwSignal::new(64u32);
    let chat = RwSignal::new(true);
    let engine = use_context::<Engine>();
    let send = move |request: ToWorker| {
        if let Some(engine) = engine {
            engine.with_value(|link| link.send(&request));
        }
    };
    let load = move |_| {
        let path = path.get_untracked();
        model.status.set(ModelStatus::Loading(path.clone()));
        send(ToWorker::LoadModel { source: ModelSource::Url { path } });
    };
    let generate = move |_| {
        let id = model.next_id.get_untracked();
        model.next_id.set(id + 1);
        model.output.set(String::new());
        model.finished.set(None);
        model.running.set(Some(id));
        let settings = GenerateSettings { chat: chat.get_untracked(), max_tokens: max_tokens.get_untracked(), ..Default::default() };
        send(ToWorker::Generate { id, prompt: prompt.get_untracked(), settings });
    };
    let stop = move |_| {
        if let Some(id) = model.running.get_untracked() {
            send(ToWorker::Cancel { id });
        }
    };
    let loading = move || matches!(model.status.get(), ModelStatus::Loading(_));
    let loaded = move || matches!(model.status.get(), ModelStatus::Loaded(_));
    let busy = move || model.running.get().is_some();
    view! {
        <section id="model" aria-labelledby="model-title">
            <h2 id="model-title">"Model"</h2>
            <p>
                <label>"Model file on this site: "
                    <input type="text" size="48" data-testid="model-path"
                        prop:value=move || path.get()
                        on:input=move |ev| path.set(event_target_value(&ev)) />
                </label>
                " "
                <button data-testid="load-model" on:click=load disabled=move || loading() || busy()>"Load model"</button>
            </p>
            <div aria-live="polite">{move || model_status_view(model.status.get())}</div>
        </section>
        <section id="try" aria-labelledby="try-title">
            <h2 id="try-title">"Try it"</h2>
            <p>
                <label for="prompt">"Prompt"</label><br />
                <textarea id="prompt" rows="3" cols="60" data-testid="prompt"
                    prop:value=move || prompt.get()
                    on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
            </p>
            <p>
                <label>"Up to "
                    <input type="number" min="1" max="2048" data-testid="max-tokens"
                        prop:value=move || max_tokens.get().to_string()
                        on:input=move |ev| max_tokens.set(event_target_value(&ev).parse().unwrap_or(64)) />
                    " tokens"
                </label>
                " "
                <label>
                    <input type="checkbox" data-testid="chat"
                        prop:checked=move || chat.get()
                        on:change=move |ev| chat.set(event_target_checked(&ev)) />
                    " as a chat message"
                </label>
            </p>
            <p>
                <button data-testid="generate" on:click=generate disabled=move || !loaded() || busy()>"Generate"</button>
                " "
                <button data-testid="stop" on:click=stop disabled=move || !busy()>"Stop"</button>
            </p>
            <pre class="output" data-testid="output" aria-live="polite">{move || model.output.get()}</pre>
            {move || model.finished.get().map(|f| view! {
                <p class="detail" data-testid="generation-stats">
                    {format!(
                        "{} tokens after a {}-token prompt in {:.1} s: {:.2} tokens/s ({})",
                        f.tokens, f.prompt_tokens, f.seconds, f.tokens_per_second, stop_text(f.stop)
                    )}
                </p>
            })}
        </section>
    }
}

fn model_status_view(status: ModelStatus) -> AnyView {
    match status {
        ModelStatus::None => view! { <p data-testid="model-none">"No model loaded."</p> }.into_any(),
        ModelStatus::Loading(path) => view! { <p data-testid="model-loading">{format!("Loading {path}…")}</p> }.into_any(),
        ModelStatus::Failed(message) => view! {
            <p class="error" role="alert" data-testid="model-error">{format!("The model did not load: {message}")}</p>
        }
        .into_any(),
        ModelStatus::Loaded(report) => view! {
            <p data-testid="model-report">
                <strong data-testid="model-name">{report.name.clone()}</strong>
                {format!(
                    " ({}, {:.1} M parameters, {}): {} on the GPU, loaded in {:.1} s",
                    report.architecture,
                    report.parameters as f64 / 1e6,
                    report.quantization,
                    mib(report.gpu_bytes),
                    report.load_seconds
                )}
            </p>
        }
        .into_any(),
    }
}

fn stop_text(stop: StopReason) -> &'static str {
    match stop {
        StopReason::StopToken => "end of answer",
        StopReason::MaxTokens => "token limit",
        StopReason::ContextFull => "context full",
        StopReason::Cancelled => "stopped",
        StopReason::Error => "failed",
    }
}

fn gpu_view(status: GpuStatus) -> AnyView {
    match status {
        GpuStatus::Starting => view! { <p data-testid="gpu-starting">"Checking WebGPU…"</p> }.into_any(),
        GpuStatus::NoWebGpu => view! {
            <div class="error" data-testid="no-webgpu" role="alert">
                <p><strong>"This browser has no WebGPU, which ClassTune needs to train on your device."</strong></p>
                <p>
                    "Use a current Google Chrome or Microsoft Edge (version 113 or later) on Windows, macOS "
                    "or ChromeOS. On Linux, start Chrome or Chromium with "
                    <code>"--enable-unsafe-webgpu --enable-features=Vulkan"</code>
                    " (or turn on chrome://flags/#enable-unsafe-webgpu)."
                </p>
            </div>
        }
        .into_any(),
        GpuStatus::Unavailable(message) => view! {
            <div class="error" data-testid="no-adapter" role="alert">
                <p><strong>"WebGPU is present but offered no usable GPU."</strong></p>
                <p>
                    "Make sure hardware acceleration is on in the browser settings. On Linux, or where "
                    "WebGPU is still behind a flag, start Chrome or Chromium with "
                    <code>"--enable-unsafe-webgpu --enable-features=Vulkan"</code>
                    " (or turn on chrome://flags/#enable-unsafe-webgpu)."
                </p>
                <p class="detail">{message}</p>
            </div>
        }
        .into_any(),
        GpuStatus::Ready(report) => adapter_view(report).into_any(),
    }
}

fn adapter_view(report: GpuReport) -> impl IntoView {
    let limits = report.limits.clone();
    let rows = [
        ("Largest storage binding", mib(limits.max_storage_buffer_binding_size)),
        ("Largest buffer", mib(limits.max_buffer_size)),
        ("Workgroup memory", format!("{} KiB", limits.max_compute_workgroup_storage_size / 1024)),
        ("Invocations per workgroup", limits.max_compute_invocations_per_workgroup.to_string()),
        ("Storage buffers per shader", limits.max_storage_buffers_per_shader_stage.to_string()),
        ("Subgroups", if report.subgroups { "yes" } else { "no" }.to_string()),
    ];
    view! {
        <div data-testid="adapter-report">
            <p>
                "WebGPU adapter: "
                <strong data-testid="adapter-name">{adapter_name(&report)}</strong>
                " "
                <span class="detail" data-testid="adapter">{report.description.trim().to_string()}</span>
            </p>
            {report.software.then(|| view! {
                <p class="warn" data-testid="software-adapter">
                    "This is a software fallback adapter (no usable GPU was found), "
                    "so training will be slow: choose the Quick preset."
                </p>
            })}
            <table class="limits">
                <caption>"Limits the engine works within"</caption>
                <tbody>
                    {rows.into_iter().map(|(name, value)| view! { <tr><th scope="row">{name}</th><td>{value}</td></tr> }).collect_view()}
                </tbody>
            </table>
            <p data-testid="self-test">
                {if report.self_test { "GPU self-test passed." } else { "GPU self-test failed." }}
            </p>
        </div>
    }
}

/// "google swiftshader", falling back to the engine's description.
fn adapter_name(report: &GpuReport) -> String {
    let name = format!("{} {}", report.vendor, report.architecture).trim().to_string();
    if name.is_empty() { "unnamed adapter".to_string() } else { name }
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 20 { format!("{} MiB", bytes >> 20) } else { format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64) }
}

/// Whether `navigator.gpu` exists (WebGPU exposed to this page).
pub fn has_webgpu() -> bool {
    let Some(window) = web_sys::window() else { return false };
    js_sys::Reflect::get(&window.navigator(), &"gpu".into()).map(|gpu| !gpu.is_undefined() && !gpu.is_null()).unwrap_or(false)
}
