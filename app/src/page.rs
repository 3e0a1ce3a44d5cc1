//! The page: a WebGPU capability check and the engine worker's report of the adapter.
//!
//! The full flow (model, course material, training, chat, export) grows from here as
//! one section per step; each talks to the engine only through the [`EngineLink`]
//! provided as context.

use leptos::prelude::*;

use crate::link::EngineLink;
use crate::protocol::{FromWorker, GpuReport, ToWorker};

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

#[component]
pub fn App() -> impl IntoView {
    let status = RwSignal::new(GpuStatus::Starting);
    let last_error = RwSignal::new(None::<String>);
    if has_webgpu() {
        let spawned = EngineLink::spawn(move |link, reply| match reply {
            FromWorker::Ready => link.send(&ToWorker::Probe),
            FromWorker::Gpu(report) => status.set(GpuStatus::Ready(report)),
            FromWorker::GpuUnavailable { message } => status.set(GpuStatus::Unavailable(message)),
            FromWorker::Error { request, message } => last_error.set(Some(format!("{request}: {message}"))),
            // Extension point: model and generation replies.
            FromWorker::ModelLoaded(_) | FromWorker::Token { .. } | FromWorker::Done { .. } => {}
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
    format!("{} MiB", bytes >> 20)
}

/// Whether `navigator.gpu` exists (WebGPU exposed to this page).
pub fn has_webgpu() -> bool {
    let Some(window) = web_sys::window() else { return false };
    js_sys::Reflect::get(&window.navigator(), &"gpu".into()).map(|gpu| !gpu.is_undefined() && !gpu.is_null()).unwrap_or(false)
}
