//! Step 1, the model: load a GGUF model from this site into the worker, or one the
//! teacher picks or drops (the `File` goes to the worker by reference and is read in
//! slices, never copied whole).

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DragEvent, File, HtmlInputElement};

use super::{mib, AppState};
use crate::protocol::{FromWorker, ModelReport, ModelSource, ToWorker};

/// The default model, put under `dist/models/` by scripts/setup.sh.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// What the page knows about the model.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    None,
    Loading(String),
    Loaded(ModelReport),
    Failed(String),
}

#[derive(Clone, Copy)]
pub struct ModelState {
    pub status: RwSignal<ModelStatus>,
}

impl ModelState {
    pub fn new() -> ModelState {
        ModelState { status: RwSignal::new(ModelStatus::None) }
    }

    /// The loaded model's context length, if one is loaded.
    pub fn context(&self) -> Option<u32> {
        match self.status.get() {
            ModelStatus::Loaded(report) => Some(report.context),
            _ => None,
        }
    }

    pub fn loaded(&self) -> bool {
        matches!(self.status.get(), ModelStatus::Loaded(_))
    }

    /// Applies one model-related reply; false if it was not one.
    pub fn on_reply(&self, app: AppState, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::ModelLoaded(report) => {
                self.status.set(ModelStatus::Loaded(report.clone()));
                // Presets depend on the model's context; a new model also means a new run.
                app.train.model_changed(app.software(), report.context);
                app.export.clear();
                app.chat.new_conversation();
                app.course.model_changed(app);
            }
            FromWorker::Error { request, message } if request == "load_model" => {
                self.status.set(ModelStatus::Failed(message.clone()))
            }
            _ => return false,
        }
        true
    }
}

pub fn section(app: AppState) -> impl IntoView {
    let model = app.model;
    let path = RwSignal::new(DEFAULT_MODEL.to_string());
    let load = move |_| {
        let path = path.get_untracked();
        model.status.set(ModelStatus::Loading(path.clone()));
        app.send(&ToWorker::LoadModel { source: ModelSource::Url { path } });
    };
    let loading = move || matches!(model.status.get(), ModelStatus::Loading(_));
    let busy = move || app.chat.busy() || app.train.active();
    let load_file = move |file: File| {
        if loading() || busy() {
            return;
        }
        let request = ToWorker::LoadModel { source: ModelSource::File { name: file.name(), size: file.size() as u64 } };
        model.status.set(ModelStatus::Loading(file.name()));
        app.engine.with_value(|link| {
            if let Some(link) = link {
                link.send_with_blob(&request, &file);
            }
        });
    };
    let on_pick = move |ev: leptos::ev::Event| {
        let input = ev.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok());
        if let Some(file) = input.as_ref().and_then(|i| i.files()).and_then(|files| files.get(0)) {
            load_file(file);
        }
        // Picking the same file again loads it again.
        if let Some(input) = input {
            input.set_value("");
        }
    };
    let on_drop = move |ev: DragEvent| {
        ev.prevent_default();
        if let Some(file) = ev.data_transfer().and_then(|d| d.files()).and_then(|files| files.get(0)) {
            load_file(file);
        }
    };
    view! {
        <section id="model" aria-labelledby="model-title">
            <h2 id="model-title">"1. Model"</h2>
            <p>
                <label>"Model file on this site: "
                    <input type="text" size="48" data-testid="model-path"
                        prop:value=move || path.get()
                        on:input=move |ev| path.set(event_target_value(&ev)) />
                </label>
                " "
                <button data-testid="load-model" on:click=load disabled=move || loading() || busy()>"Load model"</button>
            </p>
            <p class="dropzone model-drop" on:dragover=|ev: DragEvent| ev.prevent_default() on:drop=on_drop>
                <label>"Or a GGUF model from this computer: "
                    <input type="file" accept=".gguf" data-testid="model-file" on:change=on_pick
                        disabled=move || loading() || busy() />
                </label>
                <span class="detail">" (or drop it here; it is read where it is, not uploaded)"</span>
            </p>
            <div aria-live="polite">{move || status_view(model.status.get())}</div>
        </section>
    }
}

fn status_view(status: ModelStatus) -> AnyView {
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
                    " ({}, {:.1} M parameters, {}, context {}): {} on the GPU, loaded in {:.1} s",
                    report.architecture,
                    report.parameters as f64 / 1e6,
                    report.quantization,
                    report.context,
                    mib(report.gpu_bytes),
                    report.load_seconds
                )}
                {(report.kv_positions > 0).then(|| view! {
                    <br />
                    <span data-testid="model-memory">{format!(
                        "GPU memory it needs: about {} ({} weights, kept quantized, + {} KV cache for {} tokens), \
                         more while training.",
                        mib(report.gpu_bytes + report.kv_cache_bytes),
                        mib(report.gpu_bytes),
                        mib(report.kv_cache_bytes),
                        report.kv_positions
                    )}</span>
                })}
            </p>
        }
        .into_any(),
    }
}
