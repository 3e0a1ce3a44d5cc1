//! The prepared examples in the course step: every one of them, a page at a time,
//! exactly as the model sees it, with Edit (each message of a chat, or the body of a
//! text window) and Delete, and the deleted ones offered back. The worker keeps the
//! changes and prepares the course again with them, so the counts above update.

use leptos::html::Textarea;
use leptos::prelude::*;

use super::AppState;
use crate::protocol::{
    DeletedExample, ExampleChange, ExampleContent, ExampleId, ExamplePage, ExampleView, FromWorker, ToWorker,
};

#[derive(Clone, Copy)]
pub struct ExamplesState {
    pub page: RwSignal<ExamplePage>,
    /// The example open in the editor.
    editing: RwSignal<Option<ExampleId>>,
    /// Its texts as edited so far: each message of a chat, or a text's body.
    drafts: RwSignal<Vec<String>>,
    /// A change was sent: the course's next report closes the editor.
    saving: RwSignal<bool>,
    /// Why the last change or page was refused.
    error: RwSignal<Option<String>>,
}

impl ExamplesState {
    pub fn new() -> ExamplesState {
        ExamplesState {
            page: RwSignal::new(ExamplePage::default()),
            editing: RwSignal::new(None),
            drafts: RwSignal::new(Vec::new()),
            saving: RwSignal::new(false),
            error: RwSignal::new(None),
        }
    }

    /// Takes the examples of a course report or a page; a refused change keeps the
    /// editor open with the teacher's text.
    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::Course(report) => {
                self.page.set(report.page.clone());
                if self.saving.get_untracked() {
                    self.saving.set(false);
                    self.editing.set(None);
                }
                self.error.set(None);
                // The course section takes the report too.
                return false;
            }
            FromWorker::CourseExamples(page) => {
                self.page.set(page.clone());
                self.error.set(None);
            }
            FromWorker::Error { request, message } if matches!(request.as_str(), "change_example" | "course_examples") => {
                self.saving.set(false);
                self.error.set(Some(message.clone()));
                // The course section stops its busy note too.
                return false;
            }
            _ => return false,
        }
        true
    }
}

fn send_change(app: AppState, id: ExampleId, change: ExampleChange) {
    let course = app.course;
    course.examples.saving.set(true);
    course.busy.set(true);
    app.send(&ToWorker::ChangeExample { id, change, data: course.settings(app) });
}

/// The examples' part of the course step: edits so far, the page, the deleted ones.
pub fn section(app: AppState) -> impl IntoView {
    let state = app.course.examples;
    let locked = move || app.course.busy.get() || app.train.active();
    let go = move |page: u32| app.send(&ToWorker::CourseExamples { page });
    let nav = move || {
        let p = state.page.get();
        let first = p.page * crate::protocol::EXAMPLES_PER_PAGE + 1;
        let last = (first + p.examples.len() as u32).saturating_sub(1);
        view! {
            <nav class="row" aria-label="Pages of examples">
                <button type="button" class="small" data-testid="examples-previous"
                    disabled={p.page == 0} on:click=move |_| go(p.page.saturating_sub(1))>"Previous"</button>
                <span data-testid="examples-range">{format!("Examples {first}–{last} of {}", p.total)}</span>
                <button type="button" class="small" data-testid="examples-next"
                    disabled={p.page + 1 >= p.pages} on:click=move |_| go(p.page + 1)>"Next"</button>
            </nav>
        }
    };
    view! {
        <h3 id="examples-title">"The examples, exactly as the model sees them"</h3>
        <p class="detail">
            "Text between ⟦ and ⟧ is what the model learns to write; the rest is context. Edit or delete any "
            "example: your changes stay when you change the settings above or the files."
        </p>
        {move || app.course.report.get().map(|r| edits_note(r.edited, r.deleted.len(), r.unused_edits))}
        {move || state.error.get().map(|e| view! { <p class="error" role="alert" data-testid="example-error">{e}</p> })}
        {move || (state.page.get().total > 0).then(nav)}
        <ol class="examples" data-testid="course-preview" aria-labelledby="examples-title">
            {move || state.page.get().examples.into_iter().map(|ex| example_view(app, ex, locked)).collect_view()}
        </ol>
        {move || app.course.report.get().map(|r| deleted_view(app, r.deleted, locked))}
    }
}

fn edits_note(edited: u32, deleted: usize, unused: u32) -> Option<impl IntoView> {
    if edited == 0 && deleted == 0 && unused == 0 {
        return None;
    }
    let unused = (unused > 0).then(|| {
        format!(
            " {unused} of your changes are to examples these settings do not make (text cut at another length, \
             for instance): they apply again with the settings they were made with."
        )
    });
    Some(view! {
        <p data-testid="course-edits">
            {format!("Your changes: {edited} example(s) edited, {deleted} deleted.")}
            {unused}
        </p>
    })
}

fn example_view(app: AppState, ex: ExampleView, locked: impl Fn() -> bool + Copy + Send + Sync + 'static) -> impl IntoView {
    let state = app.course.examples;
    let name = format!("example {} ({}{})", ex.number, ex.id.source, place(&ex.id.location));
    let facts = format!(
        "{} · {} tokens, {} learned{}{}",
        if ex.held_out { "held out" } else { "training" },
        ex.tokens,
        ex.trained_tokens,
        if ex.truncated { " · cut to fit" } else { "" },
        if ex.edited { " · edited by you" } else { "" },
    );
    let open = {
        let (id, content) = (ex.id.clone(), ex.content.clone());
        move |_| {
            state.drafts.set(match &content {
                ExampleContent::Chat { messages } => messages.iter().map(|m| m.content.clone()).collect(),
                ExampleContent::Text { body, .. } => vec![body.clone()],
            });
            state.error.set(None);
            state.editing.set(Some(id.clone()));
        }
    };
    let delete_id = ex.id.clone();
    let revert_id = ex.id.clone();
    let editing = {
        let id = ex.id.clone();
        Memo::new(move |_| state.editing.get().as_ref() == Some(&id))
    };
    let editor_ex = ex.clone();
    view! {
        <li data-testid="example">
            <p class="row">
                <strong>{format!("Example {}", ex.number)}</strong>
                <span class="detail">{format!("{}{}", ex.id.source, place(&ex.id.location))}</span>
                <span class="detail" data-testid="example-facts">{facts}</span>
            </p>
            <pre class="output preview-text" data-testid="example-text" tabindex="0" aria-label=format!("{name} as the model sees it")>
                {ex.rendered.clone()}
            </pre>
            <p class="row">
                <button type="button" class="small" aria-label=format!("Edit {name}") data-testid="example-edit"
                    aria-expanded=move || editing.get().to_string() disabled=locked on:click=open>"Edit"</button>
                <button type="button" class="small" aria-label=format!("Delete {name}") data-testid="example-delete"
                    disabled=locked on:click=move |_| send_change(app, delete_id.clone(), ExampleChange::Delete)>"Delete"</button>
                {ex.edited.then(|| view! {
                    <button type="button" class="small" aria-label=format!("Undo your edits of {name}")
                        disabled=locked on:click=move |_| send_change(app, revert_id.clone(), ExampleChange::Revert)>
                        "Undo edits"
                    </button>
                })}
            </p>
            {move || editing.get().then(|| editor(app, editor_ex.clone(), locked))}
        </li>
    }
}

/// The editor of one example: a labelled text area per message (or for the text),
/// Save and Cancel.
fn editor(app: AppState, ex: ExampleView, locked: impl Fn() -> bool + Copy + Send + Sync + 'static) -> impl IntoView {
    let state = app.course.examples;
    let first = NodeRef::<Textarea>::new();
    // Keyboard users land in the first text area.
    Effect::new(move || {
        if let Some(area) = first.get() {
            let _ = area.focus();
        }
    });
    let drafts = state.drafts.get_untracked();
    let fields: Vec<(String, String)> = match &ex.content {
        ExampleContent::Chat { messages } => messages
            .iter()
            .map(|m| {
                let mut label = m.role.label().to_string();
                label[..1].make_ascii_uppercase();
                (label, m.content.clone())
            })
            .collect(),
        ExampleContent::Text { body, .. } => vec![("Text".to_string(), body.clone())],
    };
    let context = match &ex.content {
        ExampleContent::Text { context, .. } => Some(view! {
            <p class="detail">"Context line (read by the model, not learned): " <code>{context.trim_end().to_string()}</code></p>
        }),
        ExampleContent::Chat { .. } => None,
    };
    let areas = fields
        .into_iter()
        .enumerate()
        .map(|(i, (label, original))| {
            let value = drafts.get(i).cloned().unwrap_or(original);
            let rows = (value.len() / 70 + value.lines().count()).clamp(2, 12);
            let node = if i == 0 { first } else { NodeRef::new() };
            view! {
                <label class="field">{label}
                    <textarea rows=rows data-testid="example-field" node_ref=node prop:value=value
                        on:input=move |ev| state.drafts.update(|d| if let Some(slot) = d.get_mut(i) { *slot = event_target_value(&ev) })>
                    </textarea>
                </label>
            }
        })
        .collect_view();
    let id = ex.id.clone();
    let save = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let drafts = state.drafts.get_untracked();
        let change = match &ex.content {
            ExampleContent::Chat { .. } => ExampleChange::Chat { contents: drafts },
            ExampleContent::Text { .. } => ExampleChange::Text { body: drafts.into_iter().next().unwrap_or_default() },
        };
        send_change(app, id.clone(), change);
    };
    view! {
        <form class="editor" data-testid="example-editor" on:submit=save>
            {context}
            {areas}
            <p class="row">
                <button type="submit" data-testid="example-save" disabled=locked>"Save"</button>
                <button type="button" data-testid="example-cancel" on:click=move |_| state.editing.set(None)>"Cancel"</button>
            </p>
        </form>
    }
}

fn deleted_view(app: AppState, deleted: Vec<DeletedExample>, locked: impl Fn() -> bool + Copy + Send + Sync + 'static) -> Option<impl IntoView> {
    if deleted.is_empty() {
        return None;
    }
    let count = deleted.len();
    let rows = deleted
        .into_iter()
        .map(|d| {
            let label = format!("Restore {}", d.label);
            view! {
                <li data-testid="deleted-example">
                    {d.label.clone()} " "
                    <button type="button" class="small" aria-label=label disabled=locked
                        on:click=move |_| send_change(app, d.id.clone(), ExampleChange::Restore)>"Restore"</button>
                </li>
            }
        })
        .collect_view();
    Some(view! {
        <details class="deleted" data-testid="deleted-examples">
            <summary>{format!("Deleted examples ({count}), left out of training")}</summary>
            <ul>{rows}</ul>
        </details>
    })
}

/// ", line 3" after a file name, or nothing.
fn place(location: &str) -> String {
    if location.is_empty() { String::new() } else { format!(", {location}") }
}
