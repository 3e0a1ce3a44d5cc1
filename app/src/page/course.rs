//! Step 2, course material: files in (picker, drag and drop, or the bundled sample
//! course), read by the worker's data pipeline; per-file status, counts, personal
//! data, and every prepared example exactly as the model will see it, to edit or
//! delete (`examples`).

use leptos::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, FileList, HtmlInputElement};

use super::examples::{self, ExamplesState};
use super::AppState;
use crate::protocol::{CourseFile, CourseReport, DataSettings, FileReport, FromWorker, Role, ToWorker};

/// The formats the data pipeline reads (the picker's filter; drops are not filtered).
const ACCEPT: &str = ".txt,.md,.markdown,.html,.htm,.pdf,.docx,.csv,.tsv,.json,.jsonl";
/// Where scripts/setup.sh puts the sample course, with its file list.
const SAMPLE_COURSE: &str = "sample-course/";

#[derive(Clone, Copy)]
pub struct CourseState {
    /// Files sent to the worker, by name.
    pub names: RwSignal<Vec<String>>,
    pub report: RwSignal<Option<CourseReport>>,
    /// Reading files or waiting for the worker's report.
    pub busy: RwSignal<bool>,
    pub error: RwSignal<Option<String>>,
    pub role: RwSignal<Role>,
    /// The teacher's own system prompt; None: the role's.
    pub system_prompt: RwSignal<Option<String>>,
    pub redact: RwSignal<bool>,
    /// The prepared examples the teacher browses and edits.
    pub examples: ExamplesState,
}

impl CourseState {
    pub fn new() -> CourseState {
        CourseState {
            names: RwSignal::new(Vec::new()),
            report: RwSignal::new(None),
            busy: RwSignal::new(false),
            error: RwSignal::new(None),
            role: RwSignal::new(Role::TeachingAssistant),
            system_prompt: RwSignal::new(None),
            redact: RwSignal::new(true),
            examples: ExamplesState::new(),
        }
    }

    /// The data settings as the page's controls have them.
    pub fn settings(&self, app: AppState) -> DataSettings {
        DataSettings {
            role: self.role.get_untracked(),
            redact: self.redact.get_untracked(),
            seq_len: app.train.settings.get_untracked().seq_len,
            system_prompt: self.system_prompt.get_untracked(),
        }
    }

    /// Training examples in the last report.
    pub fn train_examples(&self) -> u32 {
        self.report.get().map_or(0, |r| r.train_examples)
    }

    /// Prepares the course again (new settings or a new model's tokenizer).
    pub fn refresh(&self, app: AppState) {
        if !self.names.get_untracked().is_empty() {
            self.busy.set(true);
            app.send(&ToWorker::PrepareCourse { data: self.settings(app) });
        }
    }

    pub fn model_changed(&self, app: AppState) {
        self.refresh(app);
    }

    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        if self.examples.on_reply(reply) {
            return true;
        }
        match reply {
            FromWorker::Course(report) => {
                self.report.set(Some(report.clone()));
                self.error.set(None);
                self.busy.set(false);
            }
            FromWorker::Error { request, message }
                if matches!(request.as_str(), "add_course_files" | "remove_course_file" | "prepare_course") =>
            {
                self.error.set(Some(message.clone()));
                self.busy.set(false);
            }
            // (Shown by the examples, beside the editor.)
            FromWorker::Error { request, .. } if matches!(request.as_str(), "change_example" | "course_examples") => {
                self.busy.set(false)
            }
            _ => return false,
        }
        true
    }

    fn send_files(&self, app: AppState, files: Vec<CourseFile>) {
        if files.is_empty() {
            self.busy.set(false);
            return;
        }
        self.names.update(|names| {
            for f in &files {
                if !names.contains(&f.name) {
                    names.push(f.name.clone());
                }
            }
        });
        self.busy.set(true);
        app.send(&ToWorker::AddCourseFiles { files, data: self.settings(app) });
    }

    /// Reads the picked or dropped files and sends them.
    fn add(&self, app: AppState, list: Option<FileList>) {
        let files: Vec<File> = list.map(|l| (0..l.length()).filter_map(|i| l.get(i)).collect()).unwrap_or_default();
        if files.is_empty() {
            return;
        }
        let state = *self;
        state.busy.set(true);
        wasm_bindgen_futures::spawn_local(async move {
            let mut read = Vec::new();
            for file in files {
                match JsFuture::from(file.array_buffer()).await {
                    Ok(buffer) => read.push(CourseFile { name: file.name(), bytes: js_sys::Uint8Array::new(&buffer).to_vec() }),
                    Err(e) => state.error.set(Some(format!("{}: could not be read ({e:?})", file.name()))),
                }
            }
            state.send_files(app, read);
        });
    }

    /// Fetches the sample course from this site and sends it.
    fn add_sample(&self, app: AppState) {
        let state = *self;
        state.busy.set(true);
        wasm_bindgen_futures::spawn_local(async move {
            match fetch_sample().await {
                Ok(files) => state.send_files(app, files),
                Err(message) => {
                    state.error.set(Some(format!("the sample course: {message}")));
                    state.busy.set(false);
                }
            }
        });
    }
}

async fn fetch_bytes(path: &str) -> Result<Vec<u8>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let response: web_sys::Response = JsFuture::from(window.fetch_with_str(path))
        .await
        .map_err(|e| format!("{path}: {e:?}"))?
        .dyn_into()
        .map_err(|_| format!("{path}: no response"))?;
    if !response.ok() {
        return Err(format!("{path}: HTTP {}", response.status()));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(|e| format!("{path}: {e:?}"))?)
        .await
        .map_err(|e| format!("{path}: {e:?}"))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

async fn fetch_sample() -> Result<Vec<CourseFile>, String> {
    let list = fetch_bytes(&format!("{SAMPLE_COURSE}files.json")).await?;
    let names: Vec<String> = serde_json::from_slice(&list).map_err(|e| format!("files.json: {e}"))?;
    let mut files = Vec::new();
    for name in names {
        let bytes = fetch_bytes(&format!("{SAMPLE_COURSE}{name}")).await?;
        files.push(CourseFile { name, bytes });
    }
    Ok(files)
}

pub fn section(app: AppState) -> impl IntoView {
    let course = app.course;
    let over = RwSignal::new(false);
    let disabled = move || !app.model.loaded() || course.busy.get() || app.train.active();
    // The examples' part stays put while reports come and go (an open editor keeps focus).
    let prepared = Memo::new(move |_| course.report.with(Option::is_some));
    let on_pick = move |ev: leptos::ev::Event| {
        let input: HtmlInputElement = event_target(&ev);
        course.add(app, input.files());
        input.set_value("");
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        over.set(false);
        if !disabled() {
            course.add(app, ev.data_transfer().and_then(|dt| dt.files()));
        }
    };
    let on_role = move |ev: leptos::ev::Event| {
        if let Some(role) = Role::from_name(&event_target_value(&ev)) {
            // A role comes with its own system prompt.
            course.role.set(role);
            course.system_prompt.set(None);
            course.refresh(app);
        }
    };
    let on_system = move |ev: leptos::ev::Event| {
        let text = event_target_value(&ev);
        let role_prompt = course.report.get_untracked().map(|r| r.system_prompt).filter(|_| course.system_prompt.get_untracked().is_none());
        // Emptied, or left as the role has it: the role's prompt.
        let own = Some(text.trim().to_string()).filter(|t| !t.is_empty() && Some(t.as_str()) != role_prompt.as_deref());
        if own != course.system_prompt.get_untracked() {
            course.system_prompt.set(own);
            course.refresh(app);
        }
    };
    let use_role_prompt = move |_| {
        course.system_prompt.set(None);
        course.refresh(app);
    };
    let on_redact = move |ev: leptos::ev::Event| {
        course.redact.set(event_target_checked(&ev));
        course.refresh(app);
    };
    view! {
        <section id="course" aria-labelledby="course-title">
            <h2 id="course-title">"2. Course material"</h2>
            <p class="detail">
                "Notes, handouts, question-and-answer sheets: the files are read here, on this device."
            </p>
            {move || (!app.model.loaded()).then(|| view! { <p class="hint">"Load a model first: its tokenizer prepares the material."</p> })}
            <div class="dropzone" class:dragover=move || over.get()
                on:dragover=move |ev: leptos::ev::DragEvent| { ev.prevent_default(); over.set(true); }
                on:dragleave=move |_| over.set(false)
                on:drop=on_drop>
                <label for="course-files">"Add course files: "</label>
                <input id="course-files" type="file" multiple accept=ACCEPT data-testid="course-files"
                    disabled=disabled on:change=on_pick />
                " "
                <button type="button" data-testid="sample-course" disabled=disabled on:click=move |_| course.add_sample(app)>
                    "Use the sample course"
                </button>
                <p class="detail">"…or drop files here (text, Markdown, HTML, PDF, Word, CSV, JSON)."</p>
            </div>
            <div class="row">
                <label>"The adapter should act as a "
                    <select data-testid="role" on:change=on_role disabled=move || app.train.active()>
                        {Role::ALL.into_iter().map(|r| view! {
                            <option value=r.name() selected=move || course.role.get() == r>{r.label()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <label>
                    <input type="checkbox" data-testid="redact" prop:checked=move || course.redact.get()
                        disabled=move || app.train.active() on:change=on_redact />
                    " Replace personal data (emails, phone numbers, ID numbers) with placeholders"
                </label>
            </div>
            {move || course.report.get().map(|r| view! {
                <div class="system-prompt">
                    <label for="system-prompt">
                        "System prompt: what the adapter is told before every question (the role's, or write your own)"
                    </label>
                    <textarea id="system-prompt" data-testid="system-prompt" rows="3" prop:value=r.system_prompt
                        disabled=move || app.train.active() on:change=on_system></textarea>
                    {move || course.system_prompt.get().is_some().then(|| view! {
                        <button type="button" data-testid="system-prompt-reset" disabled=move || app.train.active()
                            on:click=use_role_prompt>"Use the role's prompt"</button>
                    })}
                </div>
            })}
            <div aria-live="polite">
                {move || course.busy.get().then(|| view! { <p data-testid="course-busy">"Preparing the course…"</p> })}
                {move || course.error.get().map(|e| view! { <p class="error" role="alert" data-testid="course-error">{e}</p> })}
            </div>
            {move || files_view(app, course.names.get(), course.report.get())}
            {move || course.report.get().map(report_view)}
            {move || prepared.get().then(|| examples::section(app))}
        </section>
    }
}

fn files_view(app: AppState, names: Vec<String>, report: Option<CourseReport>) -> Option<impl IntoView> {
    if names.is_empty() {
        return None;
    }
    let rows = names
        .into_iter()
        .map(|name| {
            let file = report.as_ref().and_then(|r| r.files.iter().find(|f| f.name == name).cloned());
            let remove_name = name.clone();
            let remove = move |_| {
                let course = app.course;
                course.names.update(|names| names.retain(|n| *n != remove_name));
                course.busy.set(true);
                app.send(&ToWorker::RemoveCourseFile { name: remove_name.clone(), data: course.settings(app) });
            };
            view! {
                <tr data-testid="course-file">
                    <th scope="row">{name.clone()}</th>
                    {file_cells(file)}
                    <td>
                        <button type="button" class="small" aria-label=format!("Remove {name}")
                            disabled=move || app.course.busy.get() || app.train.active() on:click=remove>"Remove"</button>
                    </td>
                </tr>
            }
        })
        .collect_view();
    Some(view! {
        <table class="files" data-testid="course-files-table">
            <caption class="sr-only">"Course files"</caption>
            <thead>
                <tr><th scope="col">"File"</th><th scope="col">"Read as"</th><th scope="col">"Size"</th>
                    <th scope="col">"Examples"</th><th scope="col">"Tokens"</th><th scope="col">"Status"</th><th scope="col"></th></tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    })
}

fn file_cells(file: Option<FileReport>) -> AnyView {
    let Some(f) = file else {
        return view! { <td></td><td></td><td></td><td></td><td data-testid="file-status">"Preparing…"</td> }.into_any();
    };
    let status = match (&f.error, f.warnings.len()) {
        (Some(error), _) => view! { <span class="bad">{format!("Not used: {error}")}</span> }.into_any(),
        (None, 0) if f.examples == 0 => view! { <span class="bad">"Not used: no text found"</span> }.into_any(),
        (None, 0) => view! { <span class="good">"Ready"</span> }.into_any(),
        (None, n) => view! {
            <details>
                <summary class=if f.examples == 0 { "bad" } else { "" }>
                    {format!(
                        "{}, {n} note{}",
                        if f.examples == 0 { "Not used" } else { "Ready" },
                        if n == 1 { "" } else { "s" }
                    )}
                </summary>
                <ul class="notes">{f.warnings.iter().map(|w| view! { <li>{w.clone()}</li> }).collect_view()}</ul>
            </details>
        }
        .into_any(),
    };
    view! {
        <td>{f.format.clone()}</td>
        <td class="num">{kib(f.bytes)}</td>
        <td class="num">{f.examples}</td>
        <td class="num">{f.tokens}</td>
        <td data-testid="file-status">{status}</td>
    }
    .into_any()
}

fn report_view(r: CourseReport) -> impl IntoView {
    let pii = match (r.personal_data, r.redacted) {
        (0, _) => None,
        (n, true) => Some(view! {
            <p data-testid="course-pii">{format!("{n} piece(s) of personal data were found and replaced by placeholders.")}</p>
        }
        .into_any()),
        (n, false) => Some(view! {
            <p class="warn" data-testid="course-pii">
                {format!("{n} piece(s) of personal data were found and kept, because replacing them is switched off. ")}
                "The adapter can learn them by heart."
            </p>
        }
        .into_any()),
    };
    view! {
        <p data-testid="course-summary">
            {format!(
                "{} training examples and {} held out to measure progress; {} tokens, {} of them the text the model learns to write (examples of up to {} tokens).",
                r.train_examples, r.validation_examples, r.tokens, r.trained_tokens, r.seq_len
            )}
            {(r.truncated_examples > 0).then(|| format!(" {} example(s) were cut to fit.", r.truncated_examples))}
            {(r.duplicates_removed > 0).then(|| format!(" {} duplicate(s) removed.", r.duplicates_removed))}
        </p>
        {pii}
    }
}

fn kib(bytes: u64) -> String {
    if bytes >= 1 << 20 { format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64) } else { format!("{:.1} KiB", bytes as f64 / 1024.0) }
}
