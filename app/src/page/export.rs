//! Step 5, export: the adapter as PEFT files (zip), as a llama.cpp LoRA GGUF, or the
//! run's checkpoint, built by the worker and saved through a Blob URL (nothing is
//! uploaded). If the course held personal data that was kept, the page says plainly
//! that an adapter can memorize its training text.

use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Blob, BlobPropertyBag, HtmlAnchorElement, Url};

use super::{mib, AppState};
use crate::protocol::{ExportFormat, FromWorker, ToWorker};

/// A file ready to save.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub format: ExportFormat,
    pub file_name: String,
    pub url: String,
    pub bytes: u64,
}

#[derive(Clone, Copy)]
pub struct ExportState {
    pub saved: RwSignal<Vec<Saved>>,
    /// The export being built.
    pub busy: RwSignal<Option<ExportFormat>>,
    pub error: RwSignal<Option<String>>,
}

impl ExportState {
    pub fn new() -> ExportState {
        ExportState { saved: RwSignal::new(Vec::new()), busy: RwSignal::new(None), error: RwSignal::new(None) }
    }

    /// Forgets the files of an earlier adapter (and frees their memory).
    pub fn clear(&self) {
        for s in self.saved.get_untracked() {
            let _ = Url::revoke_object_url(&s.url);
        }
        self.saved.set(Vec::new());
        self.error.set(None);
    }

    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::Exported { format, file_name, mime, bytes } => {
                self.busy.set(None);
                match blob_url(bytes, mime) {
                    Ok(url) => {
                        save(&url, file_name);
                        let saved = Saved { format: *format, file_name: file_name.clone(), url, bytes: bytes.len() as u64 };
                        self.saved.update(|all| {
                            if let Some(old) = all.iter().position(|s| s.format == *format) {
                                let _ = Url::revoke_object_url(&all.remove(old).url);
                            }
                            all.push(saved);
                        });
                    }
                    Err(e) => self.error.set(Some(format!("{file_name}: could not be saved ({e:?})"))),
                }
            }
            FromWorker::ExportedBlob { format, file_name, size, url } => {
                self.busy.set(None);
                save(url, file_name);
                let saved = Saved { format: *format, file_name: file_name.clone(), url: url.clone(), bytes: *size };
                self.saved.update(|all| {
                    if let Some(old) = all.iter().position(|s| s.format == *format) {
                        let _ = Url::revoke_object_url(&all.remove(old).url);
                    }
                    all.push(saved);
                });
            }
            FromWorker::Error { request, message } if request == "export" => {
                self.busy.set(None);
                self.error.set(Some(message.clone()));
            }
            _ => return false,
        }
        true
    }
}

fn blob_url(bytes: &[u8], mime: &str) -> Result<String, JsValue> {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let options = BlobPropertyBag::new();
    options.set_type(mime);
    let blob = Blob::new_with_u8_array_sequence_and_options(&parts, &options)?;
    Url::create_object_url_with_blob(&blob)
}

/// Starts the download (the link stays on the page to save it again).
fn save(url: &str, file_name: &str) {
    let anchor = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.create_element("a").ok())
        .and_then(|a| a.dyn_into::<HtmlAnchorElement>().ok());
    if let Some(a) = anchor {
        a.set_href(url);
        a.set_download(file_name);
        a.click();
    }
}

fn describe(format: ExportFormat) -> (&'static str, &'static str) {
    match format {
        ExportFormat::Peft => (
            "PEFT adapter (.zip)",
            "adapter_model.safetensors, adapter_config.json and a model card, for Hugging Face transformers and PEFT.",
        ),
        ExportFormat::GgufLora => ("llama.cpp LoRA (.gguf)", "For llama.cpp and the tools built on it: llama-cli --lora."),
        ExportFormat::Checkpoint => (
            "Training checkpoint (.safetensors)",
            "The weights and optimizer state, with the run's settings, to continue training later.",
        ),
        ExportFormat::MergedF16 => (
            "Merged model, F16 (.gguf)",
            "The base model with the adapter built in (adapted weights in F16): one file for llama.cpp, Ollama or LM Studio.",
        ),
        ExportFormat::MergedQ8 => (
            "Merged model, Q8_0 (.gguf)",
            "The same with the adapted weights in Q8_0: about half the size of F16, nearly the same answers.",
        ),
    }
}

pub fn section(app: AppState) -> impl IntoView {
    let export = app.export;
    // What the adapter was trained on, not the course's current settings.
    let unredacted = move || app.train.plan.get().map(|p| p.unredacted_personal_data).filter(|&n| n > 0);
    view! {
        <section id="export" aria-labelledby="export-title">
            <h2 id="export-title">"5. Export"</h2>
            {move || unredacted().map(|n| view! {
                <div class="warn" role="alert" data-testid="memorize-warning">
                    <p><strong>"The course material this adapter was trained on contained personal data "
                        {format!("that was not replaced ({n} found).")}</strong></p>
                    <p>
                        "Adapters can memorize training text: someone using this adapter may get it to repeat "
                        "names, email addresses or other details from your files. Keep it to yourself, or turn "
                        "\u{201c}Replace personal data\u{201d} back on and train again before sharing it."
                    </p>
                </div>
            })}
            {move || (!app.train.has_adapter()).then(|| view! {
                <p class="hint">"Train an adapter first (a paused run can be exported too)."</p>
            })}
            <ul class="exports">
                {ExportFormat::ALL.into_iter().map(|format| {
                    let (label, detail) = describe(format);
                    let click = move |_| {
                        export.error.set(None);
                        export.busy.set(Some(format));
                        app.send(&ToWorker::Export { format });
                    };
                    let saved = move || export.saved.get().into_iter().find(|s| s.format == format);
                    view! {
                        <li>
                            <button data-testid=format!("export-{}", format.name()) on:click=click
                                disabled=move || !app.train.has_adapter() || export.busy.get().is_some()>
                                {label}
                            </button>
                            " "
                            <span class="detail">{detail}</span>
                            {move || (export.busy.get() == Some(format)).then(|| view! { <span>" Preparing…"</span> })}
                            {move || saved().map(|s| view! {
                                <br />
                                <a href=s.url.clone() download=s.file_name.clone() data-testid=format!("download-{}", format.name())>
                                    {format!("Save {} again", s.file_name)}
                                </a>
                                <span class="detail">{format!(" ({})", mib(s.bytes))}</span>
                            })}
                        </li>
                    }
                }).collect_view()}
            </ul>
            {move || export.error.get().map(|e| view! { <p class="error" role="alert" data-testid="export-error">{e}</p> })}
            {super::import::section(app)}
        </section>
    }
}
