//! Step 4, try it: one prompt answered by the base model and by the model with the
//! trained adapter, side by side, each streamed token by token. The worker runs one
//! generation at a time on the model (the adapter is swapped in and out), so the
//! adapter's answer starts when the base model's ends.
//!
//! In chat mode each column is its own conversation: the turns so far go with the
//! next prompt (ChatML), the base model's to the base model and the adapter's to the
//! adapter, until "New conversation".

use leptos::prelude::*;

use super::AppState;
use crate::link::EngineLink;
use crate::protocol::{FromWorker, GenerateSettings, StopReason, ToWorker, Turn};

/// The end of a generation, as reported by the worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub tokens: u32,
    pub prompt_tokens: u32,
    pub tokens_per_second: f32,
    pub seconds: f32,
    pub stop: StopReason,
}

/// One answer column.
#[derive(Clone, Copy)]
pub struct Pane {
    /// The generation streaming into it, if any.
    running: RwSignal<Option<u32>>,
    /// Waiting for the other column to finish first.
    queued: RwSignal<bool>,
    output: RwSignal<String>,
    finished: RwSignal<Option<Finished>>,
    error: RwSignal<Option<String>>,
    /// The chat message the output answers (None: plain text, no conversation).
    asking: RwSignal<Option<String>>,
    /// The conversation's earlier turns, oldest first.
    history: RwSignal<Vec<Turn>>,
}

impl Pane {
    fn new() -> Pane {
        Pane {
            running: RwSignal::new(None),
            queued: RwSignal::new(false),
            output: RwSignal::new(String::new()),
            finished: RwSignal::new(None),
            error: RwSignal::new(None),
            asking: RwSignal::new(None),
            history: RwSignal::new(Vec::new()),
        }
    }

    /// Ready for the next prompt: a chat turn that ended well joins the history (and
    /// goes with the next prompt); `asking` is the new one.
    fn next_turn(&self, asking: Option<String>) {
        let done = self.finished.get_untracked().is_some_and(|f| matches!(f.stop, StopReason::StopToken | StopReason::MaxTokens));
        match (self.asking.get_untracked(), done && asking.is_some()) {
            (Some(user), true) => self.history.update(|h| h.push(Turn { user, assistant: self.output.get_untracked() })),
            _ => self.history.set(Vec::new()),
        }
        self.asking.set(asking);
        self.output.set(String::new());
        self.finished.set(None);
        self.error.set(None);
        self.queued.set(false);
    }

    /// Forgets the conversation.
    fn clear(&self) {
        self.history.set(Vec::new());
        self.asking.set(None);
        self.output.set(String::new());
        self.finished.set(None);
        self.error.set(None);
    }

    fn busy(&self) -> bool {
        self.running.get().is_some() || self.queued.get()
    }
}

#[derive(Clone, Copy)]
pub struct ChatState {
    prompt: RwSignal<String>,
    max_tokens: RwSignal<u32>,
    chat: RwSignal<bool>,
    /// Also answer with the adapter, when there is one.
    compare: RwSignal<bool>,
    next_id: RwSignal<u32>,
    base: Pane,
    adapter: Pane,
    /// The request the adapter column runs once the base column is done.
    pending: StoredValue<Option<(String, GenerateSettings)>>,
}

impl ChatState {
    pub fn new() -> ChatState {
        ChatState {
            prompt: RwSignal::new("What is evaporation?".to_string()),
            max_tokens: RwSignal::new(64),
            chat: RwSignal::new(true),
            compare: RwSignal::new(true),
            next_id: RwSignal::new(1),
            base: Pane::new(),
            adapter: Pane::new(),
            pending: StoredValue::new(None),
        }
    }

    /// Forgets both conversations (also when the model or the adapter changes).
    pub fn new_conversation(&self) {
        self.base.clear();
        self.adapter.clear();
    }

    /// The answer length the teacher chose.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens.get_untracked()
    }

    /// A generation is running or waiting.
    pub fn busy(&self) -> bool {
        self.base.busy() || self.adapter.busy()
    }

    fn id(&self) -> u32 {
        let id = self.next_id.get_untracked();
        self.next_id.set(id + 1);
        id
    }

    fn pane_of(&self, id: u32) -> Option<Pane> {
        [self.base, self.adapter].into_iter().find(|p| p.running.get_untracked() == Some(id))
    }

    pub fn on_reply(&self, _app: AppState, link: &EngineLink, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::Token { id, text } => {
                if let Some(pane) = self.pane_of(*id) {
                    pane.output.update(|out| out.push_str(text));
                }
            }
            FromWorker::Done { id, tokens, prompt_tokens, tokens_per_second, seconds, stop } => {
                let Some(pane) = self.pane_of(*id) else { return true };
                pane.finished.set(Some(Finished {
                    tokens: *tokens,
                    prompt_tokens: *prompt_tokens,
                    tokens_per_second: *tokens_per_second,
                    seconds: *seconds,
                    stop: *stop,
                }));
                pane.running.set(None);
                // The base column is done: the adapter's turn.
                if let Some((prompt, settings)) = self.pending.try_update_value(Option::take).flatten() {
                    let id = self.id();
                    self.adapter.queued.set(false);
                    self.adapter.running.set(Some(id));
                    link.send(&ToWorker::Generate { id, prompt, settings });
                }
            }
            FromWorker::Error { request, message } if request == "generate" => {
                let pane = if self.adapter.running.get_untracked().is_some() { self.adapter } else { self.base };
                pane.error.set(Some(message.clone()));
            }
            FromWorker::Logits { .. } => {}
            _ => return false,
        }
        true
    }
}

pub fn section(app: AppState) -> impl IntoView {
    let chat = app.chat;
    let has_adapter = move || app.train.has_adapter() || app.import.has_adapter(app);
    let generate = move |_| {
        let as_chat = chat.chat.get_untracked();
        let system = app.course.report.get_untracked().map(|r| r.system_prompt).filter(|_| as_chat);
        let settings =
            GenerateSettings { chat: as_chat, max_tokens: chat.max_tokens.get_untracked(), system, ..Default::default() };
        let prompt = chat.prompt.get_untracked();
        let asking = as_chat.then(|| prompt.clone());
        chat.base.next_turn(asking.clone());
        let settings = GenerateSettings { history: chat.base.history.get_untracked(), ..settings };
        if has_adapter() && chat.compare.get_untracked() {
            chat.adapter.next_turn(asking);
            chat.adapter.queued.set(true);
            let history = chat.adapter.history.get_untracked();
            chat.pending.set_value(Some((prompt.clone(), GenerateSettings { adapter: true, history, ..settings.clone() })));
        } else {
            chat.adapter.next_turn(None);
        }
        let id = chat.id();
        chat.base.running.set(Some(id));
        app.send(&ToWorker::Generate { id, prompt, settings });
    };
    let stop = move |_| {
        chat.pending.set_value(None);
        chat.adapter.queued.set(false);
        for pane in [chat.base, chat.adapter] {
            if let Some(id) = pane.running.get_untracked() {
                app.send(&ToWorker::Cancel { id });
            }
        }
    };
    let can_generate = move || app.model.loaded() && !chat.busy() && !app.train.active() && !app.quiz.busy();
    let new_conversation = move |_| chat.new_conversation();
    let in_conversation = move || !chat.base.history.get().is_empty() || chat.base.asking.get().is_some();
    view! {
        <section id="try" aria-labelledby="try-title">
            <h2 id="try-title">"4. Try it"</h2>
            <p>
                <label for="prompt">"Prompt"</label><br />
                <textarea id="prompt" rows="3" data-testid="prompt"
                    prop:value=move || chat.prompt.get()
                    on:input=move |ev| chat.prompt.set(event_target_value(&ev))></textarea>
            </p>
            <p class="row">
                <label>"Up to "
                    <input type="number" min="1" max="2048" data-testid="max-tokens"
                        prop:value=move || chat.max_tokens.get().to_string()
                        on:input=move |ev| chat.max_tokens.set(event_target_value(&ev).parse().unwrap_or(64)) />
                    " tokens"
                </label>
                <label>
                    <input type="checkbox" data-testid="chat"
                        prop:checked=move || chat.chat.get()
                        on:change=move |ev| chat.chat.set(event_target_checked(&ev)) />
                    " as a chat message"
                </label>
                <label>
                    <input type="checkbox" data-testid="compare"
                        prop:checked=move || chat.compare.get()
                        on:change=move |ev| chat.compare.set(event_target_checked(&ev)) />
                    " also answer with the adapter"
                </label>
            </p>
            <p>
                <button data-testid="generate" on:click=generate disabled=move || !can_generate()>"Generate"</button>
                " "
                <button data-testid="stop" on:click=stop disabled=move || !chat.busy()>"Stop"</button>
                " "
                <button data-testid="new-conversation" on:click=new_conversation
                    disabled=move || chat.busy() || !in_conversation()>"New conversation"</button>
                {move || app.train.active().then(|| view! { <span class="detail">" (paused while training runs)"</span> })}
            </p>
            {move || (chat.chat.get() && app.course.report.get().is_some()).then(|| view! {
                <p class="detail">"Both answer with the instructions of the role chosen for the course material."</p>
            })}
            <div class="columns">
                <div class="column">
                    <h3>"Base model"</h3>
                    {pane_view(chat.base, "", None)}
                </div>
                <div class="column">
                    <h3>"With your adapter"</h3>
                    {move || app.import.adapter.get().filter(|_| app.import.has_adapter(app)).map(|a| view! {
                        <p class="detail">{format!("Imported from {}", a.source)}</p>
                    })}
                    {pane_view(chat.adapter, "-adapter", Some(Signal::derive(has_adapter)))}
                </div>
            </div>
            {super::quiz::section(app)}
        </section>
    }
}

/// An answer column; `suffix` tells the test ids apart (the base column keeps the
/// original `output` and `generation-stats`).
fn pane_view(pane: Pane, suffix: &'static str, available: Option<Signal<bool>>) -> impl IntoView {
    let note = move || match available {
        Some(available) if !available.get() && pane.output.get().is_empty() => {
            Some("Train an adapter (or pause the training) to compare its answer here.")
        }
        _ if pane.queued.get() => Some("Waiting for the base model to finish…"),
        _ => None,
    };
    view! {
        {move || note().map(|n| view! { <p class="hint">{n}</p> })}
        <div class="conversation">
            {move || pane.history.get().into_iter().map(|turn| view! {
                <div class="turn" data-testid=format!("turn{suffix}")>
                    <p class="you">{turn.user}</p>
                    <pre class="output">{turn.assistant}</pre>
                </div>
            }).collect_view()}
            {move || pane.asking.get().map(|asking| view! { <p class="you" data-testid=format!("asking{suffix}")>{asking}</p> })}
        </div>
        <pre class="output" data-testid=format!("output{suffix}") aria-live="polite">{move || pane.output.get()}</pre>
        {move || pane.error.get().map(|e| view! { <p class="error" role="alert" data-testid=format!("generation-error{suffix}")>{e}</p> })}
        {move || pane.finished.get().map(|f| view! {
            <p class="detail" data-testid=format!("generation-stats{suffix}")>
                {format!(
                    "{} tokens after a {}-token prompt in {:.1} s: {:.2} tokens/s ({})",
                    f.tokens, f.prompt_tokens, f.seconds, f.tokens_per_second, stop_text(f.stop)
                )}
            </p>
        })}
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
