//! The page: one section per step of the teacher's flow: the device check, then
//! 1 Model, 2 Course material, 3 Train, 4 Try it, 5 Export.
//!
//! Every section keeps its state in signals ([`AppState`]) and talks to the engine
//! only through the worker ([`EngineLink`]); the worker's replies are routed to the
//! section they concern by [`AppState::on_reply`].

mod chat;
mod course;
mod examples;
mod export;
mod import;
mod model;
mod quiz;
mod saved;
mod train;

use leptos::prelude::*;

use crate::link::EngineLink;
use crate::protocol::{FromWorker, GpuReport, ToWorker};

pub use model::{ModelStatus, DEFAULT_MODEL};

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

/// The page's state: one part per section, all `Copy` handles on signals.
#[derive(Clone, Copy)]
pub struct AppState {
    engine: StoredValue<Option<EngineLink>, LocalStorage>,
    pub gpu: RwSignal<GpuStatus>,
    /// An engine error no section claimed.
    pub last_error: RwSignal<Option<String>>,
    pub model: model::ModelState,
    pub course: course::CourseState,
    pub train: train::TrainState,
    pub chat: chat::ChatState,
    pub quiz: quiz::QuizState,
    pub export: export::ExportState,
    pub import: import::ImportState,
    pub saved: saved::SavedState,
}

impl AppState {
    fn new() -> AppState {
        AppState {
            engine: StoredValue::new_local(None),
            gpu: RwSignal::new(GpuStatus::Starting),
            last_error: RwSignal::new(None),
            model: model::ModelState::new(),
            course: course::CourseState::new(),
            train: train::TrainState::new(),
            chat: chat::ChatState::new(),
            quiz: quiz::QuizState::new(),
            export: export::ExportState::new(),
            import: import::ImportState::new(),
            saved: saved::SavedState::new(),
        }
    }

    /// Posts a request to the engine worker (dropped if there is none).
    pub fn send(&self, request: &ToWorker) {
        self.engine.with_value(|link| {
            if let Some(link) = link {
                link.send(request);
            }
        });
    }

    /// The device runs on the CPU (presets are sized down).
    pub fn software(&self) -> bool {
        matches!(self.gpu.get(), GpuStatus::Ready(report) if report.software)
    }

    fn on_reply(&self, link: &EngineLink, reply: FromWorker) {
        // The imports watch some replies other sections also need (they return false
        // for those), so they come first.
        if self.import.on_reply(&reply)
            || self.quiz.on_reply(&reply)
            || self.saved.on_reply(*self, &reply)
            || self.model.on_reply(*self, &reply)
            || self.course.on_reply(&reply)
            || self.train.on_reply(&reply)
            || self.chat.on_reply(*self, link, &reply)
            || self.export.on_reply(&reply)
        {
            return;
        }
        match reply {
            FromWorker::Ready => link.send(&ToWorker::Probe),
            FromWorker::Gpu(report) => self.gpu.set(GpuStatus::Ready(report)),
            FromWorker::GpuUnavailable { message } => self.gpu.set(GpuStatus::Unavailable(message)),
            FromWorker::Error { request, message } => self.last_error.set(Some(format!("{request}: {message}"))),
            _ => {}
        }
    }
}

#[component]
pub fn App() -> impl IntoView {
    let state = AppState::new();
    if has_webgpu() {
        match EngineLink::spawn(move |link, reply| state.on_reply(link, reply)) {
            Ok(link) => state.engine.set_value(Some(link)),
            Err(message) => state.gpu.set(GpuStatus::Unavailable(message)),
        }
    } else {
        state.gpu.set(GpuStatus::NoWebGpu);
    }
    saved::listen_to_service_worker(state);
    let ready = move || matches!(state.gpu.get(), GpuStatus::Ready(_));

    view! {
        <header>
            <h1>"ClassTune"</h1>
            <p class="tagline">
                "Fine-tune a small language model on your course material, privately: "
                "everything runs on this device and nothing is uploaded."
            </p>
            <nav aria-label="Steps">
                <ol class="steps">
                    <li><a href="#model">"Model"</a></li>
                    <li><a href="#course">"Course material"</a></li>
                    <li><a href="#train">"Train"</a></li>
                    <li><a href="#try">"Try it"</a></li>
                    <li><a href="#export">"Export"</a></li>
                </ol>
            </nav>
        </header>
        <main>
            <section id="gpu" aria-labelledby="gpu-title">
                <h2 id="gpu-title">"Your device"</h2>
                <div aria-live="polite">{move || gpu_view(state.gpu.get())}</div>
                {move || state.last_error.get().map(|e| view! { <p class="error" role="alert" data-testid="engine-error">{e}</p> })}
            </section>
            <Show when=ready>
                {saved::banner(state)}
                {model::section(state)}
                {course::section(state)}
                {train::section(state)}
                {chat::section(state)}
                {export::section(state)}
            </Show>
        </main>
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
                    {format!(
                        "Your browser is running WebGPU on the CPU ({}); training will be slow. Use the Quick preset.",
                        software_name(&report)
                    )}
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

/// The software rasterizer's name for the warning: SwiftShader where the browser says
/// so (Chrome's fallback adapter), else what it calls itself.
fn software_name(report: &GpuReport) -> String {
    let text = format!("{} {} {}", report.vendor, report.architecture, report.description).to_lowercase();
    match ["swiftshader", "lavapipe", "llvmpipe", "warp"].into_iter().find(|n| text.contains(n)) {
        Some("swiftshader") => "SwiftShader".into(),
        Some(other) => other.into(),
        None => "a software adapter".into(),
    }
}

/// "google swiftshader", falling back to the engine's description.
fn adapter_name(report: &GpuReport) -> String {
    let name = format!("{} {}", report.vendor, report.architecture).trim().to_string();
    if name.is_empty() { "unnamed adapter".to_string() } else { name }
}

/// Bytes as MiB, with two decimals below 10 MiB.
pub fn mib(bytes: u64) -> String {
    if bytes >= 10 << 20 { format!("{} MiB", bytes >> 20) } else { format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64) }
}

/// Seconds as `m:ss` or `h:mm:ss`.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 { format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) } else { format!("{}:{:02}", s / 60, s % 60) }
}

/// Whether `navigator.gpu` exists (WebGPU exposed to this page).
pub fn has_webgpu() -> bool {
    let Some(window) = web_sys::window() else { return false };
    js_sys::Reflect::get(&window.navigator(), &"gpu".into()).map(|gpu| !gpu.is_undefined() && !gpu.is_null()).unwrap_or(false)
}
