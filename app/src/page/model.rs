//! Step 1, the model: load a GGUF model from this site into the worker.

use leptos::prelude::*;

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
            </p>
        }
        .into_any(),
    }
}
