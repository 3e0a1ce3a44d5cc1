//! Files brought back, in the Export step: an adapter (PEFT files, a PEFT zip or a
//! llama.cpp LoRA GGUF) to try in "Try it", and a checkpoint to continue its run. The
//! bytes go to the worker beside the request; a checkpoint made with another model
//! or other course material is refused there, and the reason is shown here.

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, HtmlInputElement};

use super::AppState;
use crate::protocol::{FromWorker, ImportFile, ImportedAdapter, ImportedCheckpoint, ToWorker};

#[derive(Clone, Copy)]
pub struct ImportState {
    /// The imported adapter the chat tries, until a run starts or resumes.
    pub adapter: RwSignal<Option<ImportedAdapter>>,
    pub checkpoint: RwSignal<Option<ImportedCheckpoint>>,
    /// The import being read ("adapter" or "checkpoint").
    pub busy: RwSignal<Option<&'static str>>,
    pub error: RwSignal<Option<String>>,
}

impl ImportState {
    pub fn new() -> ImportState {
        ImportState {
            adapter: RwSignal::new(None),
            checkpoint: RwSignal::new(None),
            busy: RwSignal::new(None),
            error: RwSignal::new(None),
        }
    }

    /// An imported adapter can be tried (no run holds the model).
    pub fn has_adapter(&self, app: AppState) -> bool {
        self.adapter.get().is_some() && !app.train.active()
    }

    /// Applies an import reply (true), or notes one that ends an imported adapter and
    /// lets the other sections have it (false).
    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::AdapterImported(adapter) => {
                self.busy.set(None);
                self.adapter.set(Some(adapter.clone()));
                return true;
            }
            FromWorker::Error { request, message } if request == "import_adapter" || request == "import_checkpoint" => {
                self.busy.set(None);
                self.error.set(Some(message.clone()));
                return true;
            }
            // The worker forgets an imported adapter when a run starts or resumes, or a
            // checkpoint or model replaces the run.
            FromWorker::CheckpointImported(checkpoint) => {
                self.busy.set(None);
                self.adapter.set(None);
                self.checkpoint.set(Some(checkpoint.clone()));
            }
            FromWorker::Training(plan) if plan.phase.is_active() => self.adapter.set(None),
            FromWorker::ModelLoaded(_) => {
                self.adapter.set(None);
                self.checkpoint.set(None);
            }
            _ => {}
        }
        false
    }
}

/// The files of a file input, read.
async fn read_files(files: Vec<File>) -> Result<Vec<ImportFile>, String> {
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let buffer = JsFuture::from(file.array_buffer()).await.map_err(|e| format!("{}: {e:?}", file.name()))?;
        out.push(ImportFile { name: file.name(), bytes: js_sys::Uint8Array::new(&buffer).to_vec() });
    }
    Ok(out)
}

/// The files picked in the input of `ev`, which is emptied so the same file can be
/// picked again.
fn picked(ev: &leptos::ev::Event) -> Vec<File> {
    let Some(input) = ev.target().and_then(|t| t.dyn_into::<HtmlInputElement>().ok()) else { return Vec::new() };
    let files = input.files().map(|list| (0..list.length()).filter_map(|i| list.get(i)).collect()).unwrap_or_default();
    input.set_value("");
    files
}

pub fn section(app: AppState) -> impl IntoView {
    let import = app.import;
    let idle = move || app.model.loaded() && !app.train.active() && !app.chat.busy() && import.busy.get().is_none();
    let start = move |what: &'static str, files: Vec<File>, send: fn(AppState, Vec<ImportFile>) -> ToWorker| {
        if files.is_empty() {
            return;
        }
        import.error.set(None);
        import.busy.set(Some(what));
        wasm_bindgen_futures::spawn_local(async move {
            match read_files(files).await {
                Ok(files) => app.send(&send(app, files)),
                Err(message) => {
                    import.busy.set(None);
                    import.error.set(Some(message));
                }
            }
        });
    };
    let on_adapter = move |ev: leptos::ev::Event| {
        start("adapter", picked(&ev), |_, files| ToWorker::ImportAdapter { files });
    };
    let on_checkpoint = move |ev: leptos::ev::Event| {
        start("checkpoint", picked(&ev), |app, mut files| ToWorker::ImportCheckpoint {
            file: files.swap_remove(0),
            data: app.course.settings(app),
        });
    };
    view! {
        <div class="imports">
            <h3>"Bring files back"</h3>
            <p>
                <label>"An adapter to try: "
                    <input type="file" multiple accept=".safetensors,.json,.zip,.gguf" data-testid="import-adapter"
                        on:change=on_adapter disabled=move || !idle() />
                </label>
                <span class="detail">
                    " adapter_model.safetensors with adapter_config.json, a PEFT zip, or a llama.cpp LoRA .gguf, "
                    "made for the loaded model; it answers in \u{201c}Try it\u{201d}."
                </span>
            </p>
            <p>
                <label>"A checkpoint to continue: "
                    <input type="file" accept=".safetensors" data-testid="import-checkpoint"
                        on:change=on_checkpoint disabled=move || !idle() />
                </label>
                <span class="detail">" Needs the same model and course material (and settings) as its run."</span>
            </p>
            {move || import.busy.get().map(|what| view! { <p data-testid="import-busy">{format!("Reading the {what}…")}</p> })}
            {move || import.adapter.get().map(|a| view! {
                <p data-testid="imported-adapter">{format!(
                    "Adapter imported from {} ({}, for {}): rank {}, alpha {}, {} on {}; try it in \u{201c}Try it\u{201d}.",
                    a.source, a.format, if a.base_name.is_empty() { "an unnamed base" } else { a.base_name.as_str() },
                    a.rank, a.alpha, a.parameters, a.targets.join(", ")
                )}</p>
            })}
            {move || import.checkpoint.get().map(|c| view! {
                <p data-testid="imported-checkpoint">{format!(
                    "Checkpoint {} taken up at step {}: press Resume in \u{201c}Train\u{201d} to continue.",
                    c.file, c.step
                )}</p>
            })}
            {move || import.error.get().map(|e| view! { <p class="error" role="alert" data-testid="import-error">{e}</p> })}
        </div>
    }
}
