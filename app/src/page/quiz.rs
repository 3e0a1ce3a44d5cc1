//! The quiz in "Try it": the held-out questions of the teacher's material, each
//! answered by the base model and by the adapter next to the answer the material
//! gives, with both models' validation loss on the same held-out examples.

use leptos::prelude::*;

use super::AppState;
use crate::protocol::{FromWorker, QuizReport, ToWorker};

#[derive(Clone, Copy)]
pub struct QuizState {
    pub report: RwSignal<Option<QuizReport>>,
    pub running: RwSignal<bool>,
    pub error: RwSignal<Option<String>>,
}

impl QuizState {
    pub fn new() -> QuizState {
        QuizState { report: RwSignal::new(None), running: RwSignal::new(false), error: RwSignal::new(None) }
    }

    pub fn busy(&self) -> bool {
        self.running.get()
    }

    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::Quiz(report) => {
                self.running.set(false);
                self.report.set(Some(report.clone()));
            }
            FromWorker::Error { request, message } if request == "quiz" => {
                self.running.set(false);
                self.error.set(Some(message.clone()));
            }
            _ => return false,
        }
        true
    }
}

fn loss(value: Option<f64>) -> String {
    value.map_or("–".to_string(), |v| format!("{v:.3}"))
}

pub fn section(app: AppState) -> impl IntoView {
    let quiz = app.quiz;
    let has_adapter = move || app.train.has_adapter() || app.import.has_adapter(app);
    let can_run = move || app.model.loaded() && has_adapter() && !app.chat.busy() && !quiz.busy();
    let run = move |_| {
        quiz.error.set(None);
        quiz.report.set(None);
        quiz.running.set(true);
        app.send(&ToWorker::Quiz { max_tokens: app.chat.max_tokens(), data: app.course.settings(app) });
    };
    view! {
        <div class="quiz">
            <h3>"Quiz: questions held out from training"</h3>
            <p>
                <button data-testid="quiz-run" on:click=run disabled=move || !can_run()>"Ask the held-out questions"</button>
                {move || quiz.running.get().then(|| view! { <span data-testid="quiz-busy">" Both models are answering…"</span> })}
                <span class="detail">" The model never trained on these; each is answered greedily by both."</span>
            </p>
            {move || quiz.error.get().map(|e| view! { <p class="error" role="alert" data-testid="quiz-error">{e}</p> })}
            {move || quiz.report.get().map(|r| view! {
                <p data-testid="quiz-losses">
                    {match r.adapter_val_loss {
                        Some(_) => format!(
                            "Validation loss on the held-out examples: base model {} · adapter {} (at step {}; lower is better).",
                            loss(r.base_val_loss), loss(r.adapter_val_loss), r.val_step
                        ),
                        None => "Validation loss: not measured for an imported adapter.".to_string(),
                    }}
                </p>
                <table class="quiz-table">
                    <thead><tr><th scope="col">"Question"</th><th scope="col">"Your material"</th>
                        <th scope="col">"Base model"</th><th scope="col">"With your adapter"</th></tr></thead>
                    <tbody>
                        {r.items.into_iter().map(|item| view! {
                            <tr data-testid="quiz-item">
                                <th scope="row">{item.question.prompt}</th>
                                <td data-testid="quiz-reference">{item.question.reference}</td>
                                <td data-testid="quiz-base">{item.base}</td>
                                <td data-testid="quiz-adapter">{item.adapter}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </div>
    }
}
