//! What the app keeps on this device, as the page shows it: the offer to resume a run
//! saved before a reload, the last autosave, a lost GPU the worker recovered from,
//! and storage problems the service worker reports.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, ServiceWorkerContainer};

use super::AppState;
use crate::protocol::{FromWorker, SavedRun, ToWorker};

#[derive(Clone, Copy)]
pub struct SavedState {
    /// The run saved on this device, offered until it is resumed, discarded or
    /// replaced by a new run.
    pub offer: RwSignal<Option<SavedRun>>,
    /// Resume was pressed and the run is not back yet.
    pub restoring: RwSignal<bool>,
    /// Storage problems and a failed resume, each once, newest last.
    pub errors: RwSignal<Vec<String>>,
    /// The running training's last autosave: step and time (ms since 1970).
    pub last_save: RwSignal<Option<(u32, f64)>>,
    /// The GPU was lost and the training went on from a save: what to tell the teacher.
    pub recovered: RwSignal<Option<String>>,
}

impl SavedState {
    pub fn new() -> SavedState {
        SavedState {
            offer: RwSignal::new(None),
            restoring: RwSignal::new(false),
            errors: RwSignal::new(Vec::new()),
            last_save: RwSignal::new(None),
            recovered: RwSignal::new(None),
        }
    }

    fn add_error(&self, message: &str) {
        self.errors.update(|errors| {
            if !errors.iter().any(|e| e == message) {
                errors.push(message.to_string());
            }
        });
    }

    pub fn on_reply(&self, app: AppState, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::SavedRun { run } => self.offer.set(run.clone()),
            FromWorker::RunRestored(run) => {
                // After the model's ModelLoaded, which reset the training section.
                app.train.settings.set(run.train.clone());
                app.train.losses.set(run.losses.clone());
                app.train.val_losses.set(run.val_losses.clone());
                app.train.progress.set(None);
                app.course.role.set(run.data.role);
                app.course.system_prompt.set(run.data.system_prompt.clone());
                app.course.redact.set(run.data.redact);
                app.course.names.set(run.files.clone());
                self.last_save.set(Some((run.step, run.saved_at)));
                self.offer.set(None);
                self.restoring.set(false);
            }
            FromWorker::Saved { step, saved_at } => self.last_save.set(Some((*step, *saved_at))),
            FromWorker::DeviceLost { message, step } => {
                // The steps after the save are done again: the chart drops them.
                app.train.losses.update(|l| l.retain(|p| p.0 <= *step));
                app.train.val_losses.update(|l| l.retain(|p| p.0 <= *step));
                self.recovered.set(Some(format!(
                    "The GPU stopped working ({message}). ClassTune opened it again, reloaded the model and went on \
                     from the save at step {step}: nothing was lost."
                )));
            }
            FromWorker::Error { request, message } if request == "resume_saved_run" => {
                self.restoring.set(false);
                app.train.starting.set(false);
                self.add_error(message);
            }
            FromWorker::Error { request, message }
                if matches!(request.as_str(), "autosave" | "storage") =>
            {
                self.add_error(message)
            }
            // A new run replaces the saved one; the train section handles it too.
            FromWorker::Training(plan) => {
                self.offer.set(None);
                if plan.step == 0 {
                    self.last_save.set(None);
                    self.recovered.set(None);
                }
                return false;
            }
            _ => return false,
        }
        true
    }
}

/// The offer to resume a saved run, and storage problems.
pub fn banner(app: AppState) -> impl IntoView {
    let saved = app.saved;
    let resume = move |_| {
        saved.errors.set(Vec::new());
        saved.restoring.set(true);
        app.train.starting.set(true);
        app.send(&ToWorker::ResumeSavedRun);
    };
    let discard = move |_| app.send(&ToWorker::DiscardSavedRun);
    let busy = move || saved.restoring.get() || app.train.active() || app.chat.busy();
    view! {
        {move || saved.offer.get().map(|run| {
            let date = js_sys::Date::new(&JsValue::from_f64(run.saved_at));
            let date: String = date.to_locale_string("default", &JsValue::UNDEFINED).into();
            view! {
                <section id="saved-run" aria-labelledby="saved-run-title" data-testid="saved-run">
                    <h2 id="saved-run-title">"Saved on this device"</h2>
                    <p data-testid="saved-run-offer">
                        {run.offer(&date)}
                        " "
                        <span class="detail">{format!("{}, {} course file(s).", run.model_name, run.files.len())}</span>
                    </p>
                    <p class="row buttons">
                        <button data-testid="saved-resume" on:click=resume disabled=busy>"Resume"</button>
                        <button data-testid="saved-discard" on:click=discard disabled=busy>"Discard"</button>
                    </p>
                    {move || saved.restoring.get().then(|| view! {
                        <p data-testid="saved-restoring">"Loading the model, the course files and the checkpoint…"</p>
                    })}
                </section>
            }
        })}
        {move || saved.errors.get().into_iter().map(|e| view! {
            <p class="error" role="alert" data-testid="storage-error">{e}</p>
        }).collect_view()}
    }
}

/// Under the training's progress: the last autosave and a recovered GPU.
pub fn train_notes(app: AppState) -> impl IntoView {
    let saved = app.saved;
    view! {
        {move || saved.last_save.get().map(|(step, at)| {
            let time: String = js_sys::Date::new(&JsValue::from_f64(at))
                .to_locale_time_string("default")
                .into();
            view! { <p class="detail" data-testid="train-saved">{format!("Saved on this device at step {step} ({time}).")}</p> }
        })}
        {move || saved.recovered.get().map(|m| view! { <p class="warn" role="status" data-testid="device-lost">{m}</p> })}
    }
}

/// Shows what the service worker says about storage (a full quota while caching the
/// app's files for offline use).
pub fn listen_to_service_worker(app: AppState) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let Ok(container) = js_sys::Reflect::get(&window.navigator(), &"serviceWorker".into()) else {
        return;
    };
    let Ok(container) = container.dyn_into::<ServiceWorkerContainer>() else {
        return;
    };
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let field = |key: &str| {
            js_sys::Reflect::get(&event.data(), &key.into())
                .ok()
                .and_then(|v| v.as_string())
        };
        if field("type").as_deref() == Some("storage") {
            if let Some(message) = field("message") {
                app.saved.add_error(&message);
            }
        }
    });
    container.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
}
