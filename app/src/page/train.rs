//! Step 3, training: a preset sized for the device (and the settings behind it under
//! "Advanced"), start / pause / resume / cancel, progress, and the loss chart.

use std::str::FromStr;

use leptos::prelude::*;

use super::{clock, mib, AppState};
use crate::chart;
use crate::protocol::{
    Calibration, FromWorker, ProbeReport, StepProgress, ToWorker, TrainPhase, TrainPreset, TrainSettings, TrainingPlan,
    TARGETS,
};

#[derive(Clone, Copy)]
pub struct TrainState {
    pub preset: RwSignal<TrainPreset>,
    pub settings: RwSignal<TrainSettings>,
    /// The model's context (caps the sequence length).
    pub context: RwSignal<u32>,
    pub plan: RwSignal<Option<TrainingPlan>>,
    pub progress: RwSignal<Option<StepProgress>>,
    /// (step, loss) of every step, and of every validation (step 0: the base model).
    pub losses: RwSignal<Vec<(u32, f64)>>,
    pub val_losses: RwSignal<Vec<(u32, f64)>>,
    /// Start or resume was sent and the worker has not answered yet.
    pub starting: RwSignal<bool>,
    /// A pause or cancel was sent and the run has not stopped yet.
    pub stopping: RwSignal<bool>,
    pub error: RwSignal<Option<String>>,
    /// The run's duration as measured before its first step.
    pub calibration: RwSignal<Option<Calibration>>,
    /// The probe answers so far, oldest first.
    pub probes: RwSignal<Vec<ProbeReport>>,
}

impl TrainState {
    pub fn new() -> TrainState {
        TrainState {
            preset: RwSignal::new(TrainPreset::Quick),
            settings: RwSignal::new(TrainPreset::Quick.settings(true, 2048)),
            context: RwSignal::new(2048),
            plan: RwSignal::new(None),
            progress: RwSignal::new(None),
            losses: RwSignal::new(Vec::new()),
            val_losses: RwSignal::new(Vec::new()),
            starting: RwSignal::new(false),
            stopping: RwSignal::new(false),
            error: RwSignal::new(None),
            calibration: RwSignal::new(None),
            probes: RwSignal::new(Vec::new()),
        }
    }

    fn phase(&self) -> Option<TrainPhase> {
        self.plan.get().map(|p| p.phase)
    }

    /// A run is starting or going on (it holds the model).
    pub fn active(&self) -> bool {
        self.starting.get() || self.phase().is_some_and(TrainPhase::is_active)
    }

    /// A trained adapter can be tried and exported (no run holds it).
    pub fn has_adapter(&self) -> bool {
        !self.active() && self.plan.get().is_some_and(|p| p.has_adapter)
    }

    /// A new model: presets sized for it, and no run.
    pub fn model_changed(&self, software: bool, context: u32) {
        self.context.set(context);
        self.settings.set(self.preset.get_untracked().settings(software, context));
        self.plan.set(None);
        self.progress.set(None);
        self.losses.set(Vec::new());
        self.val_losses.set(Vec::new());
        self.error.set(None);
        self.calibration.set(None);
        self.probes.set(Vec::new());
    }

    pub fn on_reply(&self, reply: &FromWorker) -> bool {
        match reply {
            FromWorker::Training(plan) => {
                if let Some(base) = plan.base_val_loss {
                    self.val_losses.update(|v| {
                        if v.first().is_none_or(|p| p.0 != 0) {
                            v.insert(0, (0, base));
                        }
                    });
                }
                if !plan.phase.is_active() {
                    self.stopping.set(false);
                }
                self.starting.set(false);
                self.plan.set(Some(plan.clone()));
            }
            FromWorker::Progress(p) => {
                self.losses.update(|l| l.push((p.step, p.loss)));
                if let Some(v) = p.val_loss {
                    self.val_losses.update(|l| l.push((p.step, v)));
                }
                self.progress.set(Some(p.clone()));
            }
            FromWorker::Calibration(c) => self.calibration.set(Some(c.clone())),
            FromWorker::Probe(p) => self.probes.update(|all| all.push(p.clone())),
            FromWorker::CheckpointImported(c) => {
                // A run taken up from a file: its settings, and a chart from its step on.
                self.settings.set(c.settings.clone());
                self.losses.set(Vec::new());
                self.val_losses.set(Vec::new());
                self.progress.set(None);
                self.calibration.set(None);
                self.probes.set(Vec::new());
                self.error.set(None);
            }
            FromWorker::Error { request, message } if matches!(request.as_str(), "start_training" | "resume_training") => {
                self.starting.set(false);
                self.error.set(Some(message.clone()));
            }
            _ => return false,
        }
        true
    }
}

pub fn section(app: AppState) -> impl IntoView {
    let train = app.train;
    let phase = move || train.phase();
    let can_start = move || {
        app.model.loaded() && app.course.train_examples() > 0 && !app.course.busy.get() && !train.active() && !app.chat.busy()
    };
    let start = move |_| {
        train.error.set(None);
        train.losses.set(Vec::new());
        train.val_losses.set(Vec::new());
        train.progress.set(None);
        train.calibration.set(None);
        train.probes.set(Vec::new());
        train.starting.set(true);
        app.export.clear();
        app.chat.new_conversation();
        app.send(&ToWorker::StartTraining { data: app.course.settings(app), train: train.settings.get_untracked() });
    };
    let pause = move |_| {
        train.stopping.set(true);
        app.send(&ToWorker::PauseTraining);
    };
    let resume = move |_| {
        train.error.set(None);
        train.starting.set(true);
        app.send(&ToWorker::ResumeTraining);
    };
    let cancel = move |_| {
        train.stopping.set(true);
        app.send(&ToWorker::CancelTraining);
    };
    let on_preset = move |ev: leptos::ev::Event| {
        if let Some(preset) = TrainPreset::from_name(&event_target_value(&ev)) {
            train.preset.set(preset);
            train.settings.set(preset.settings(app.software(), train.context.get_untracked()));
            app.course.refresh(app);
        }
    };
    let locked = Signal::derive(move || train.active());
    view! {
        <section id="train" aria-labelledby="train-title">
            <h2 id="train-title">"3. Train"</h2>
            <div class="row">
                <label>"Preset "
                    <select data-testid="preset" on:change=on_preset disabled=move || train.active()>
                        {TrainPreset::ALL.into_iter().map(|p| view! {
                            <option value=p.name() selected=move || train.preset.get() == p>{p.label()}</option>
                        }).collect_view()}
                    </select>
                </label>
                <span class="detail" data-testid="preset-summary">{move || settings_summary(&train.settings.get(), app.software())}</span>
            </div>
            {advanced(app, locked)}
            <div class="row buttons">
                <button data-testid="train-start" on:click=start disabled=move || !can_start()>
                    {move || if train.plan.get().is_some_and(|p| p.has_adapter) { "Start over" } else { "Start training" }}
                </button>
                <button data-testid="train-pause" on:click=pause
                    disabled=move || !phase().is_some_and(TrainPhase::is_active) || train.stopping.get()>"Pause"</button>
                <button data-testid="train-resume" on:click=resume
                    disabled=move || phase() != Some(TrainPhase::Paused) || train.starting.get() || app.chat.busy()>"Resume"</button>
                <button data-testid="train-cancel" on:click=cancel
                    disabled=move || !(train.active() || phase() == Some(TrainPhase::Paused)) || train.stopping.get()>"Cancel"</button>
            </div>
            {move || (!app.model.loaded() || app.course.train_examples() == 0).then(|| view! {
                <p class="hint">"Load a model and add course material to start."</p>
            })}
            {move || train.error.get().map(|e| view! { <p class="error" role="alert" data-testid="train-error">{e}</p> })}
            {progress_view(train)}
            {super::saved::train_notes(app)}
            {calibration_view(train)}
            {loss_chart(train)}
            {probes_view(train)}
        </section>
    }
}

/// "rank 4, 128 tokens per example, batch 2, up to 30 steps".
fn settings_summary(s: &TrainSettings, software: bool) -> String {
    let steps = match s.max_steps {
        0 => format!("{} epoch(s)", s.epochs),
        n => format!("up to {n} steps"),
    };
    let device = if software { " (sized for a software GPU)" } else { "" };
    format!("rank {}, {} tokens per example, batch {}, {steps}{device}", s.rank, s.seq_len, s.batch)
}

/// A number input bound to one field of the settings.
fn number<T>(
    app: AppState,
    label: &'static str,
    testid: &'static str,
    step: &'static str,
    get: fn(&TrainSettings) -> T,
    set: fn(&mut TrainSettings, T),
    locked: Signal<bool>,
) -> impl IntoView
where
    T: ToString + FromStr + Send + Sync + 'static,
{
    let settings = app.train.settings;
    let on_change = move |ev: leptos::ev::Event| {
        if let Ok(value) = event_target_value(&ev).trim().parse::<T>() {
            settings.update(|s| set(s, value));
            if testid == "seq-len" {
                app.course.refresh(app);
            }
        } else {
            // Not a number: show the value in force again.
            settings.update(|_| {});
        }
    };
    view! {
        <label class="field">{label}
            <input type="number" step=step min="0" data-testid=testid disabled=move || locked.get()
                prop:value=move || get(&settings.get()).to_string() on:change=on_change />
        </label>
    }
}

fn advanced(app: AppState, locked: Signal<bool>) -> impl IntoView {
    let settings = app.train.settings;
    view! {
        <details class="advanced" data-testid="advanced">
            <summary>"Advanced settings"</summary>
            <div class="fields">
                {number(app, "LoRA rank", "rank", "1", |s| s.rank, |s, v| s.rank = v, locked)}
                {number(app, "Alpha", "alpha", "any", |s| s.alpha, |s, v| s.alpha = v, locked)}
                {number(app, "Learning rate", "lr", "any", |s| s.lr, |s, v| s.lr = v, locked)}
                {number(app, "Epochs", "epochs", "1", |s| s.epochs, |s, v| s.epochs = v, locked)}
                {number(app, "Stop after steps (0: no limit)", "max-steps", "1", |s| s.max_steps, |s, v| s.max_steps = v, locked)}
                {number(app, "Tokens per example", "seq-len", "1", |s| s.seq_len, |s, v| s.seq_len = v, locked)}
                {number(app, "Examples per step", "batch", "1", |s| s.batch, |s, v| s.batch = v, locked)}
            </div>
            <fieldset>
                <legend>"Adapted projections"</legend>
                {TARGETS.into_iter().map(|t| view! {
                    <label class="target">
                        <input type="checkbox" data-testid=format!("target-{t}") disabled=move || locked.get()
                            prop:checked=move || settings.get().targets.iter().any(|x| x == t)
                            on:change=move |ev| {
                                let on = event_target_checked(&ev);
                                settings.update(|s| {
                                    s.targets.retain(|x| x != t);
                                    if on {
                                        s.targets.push(t.to_string());
                                        s.targets.sort_by_key(|x| TARGETS.iter().position(|y| y == x));
                                    }
                                });
                            } />
                        {format!(" {t}")}
                    </label>
                }).collect_view()}
            </fieldset>
            {move || settings.get().check(app.train.context.get()).err().map(|e| view! {
                <p class="warn" data-testid="settings-problem">{e}</p>
            })}
        </details>
    }
}

fn progress_view(train: TrainState) -> impl IntoView {
    let status = move || {
        let plan = train.plan.get()?;
        let text = match plan.phase {
            TrainPhase::Preparing if plan.step == 0 => "Preparing: setting up and measuring the model before training…".to_string(),
            TrainPhase::Preparing => format!("Resuming at step {}…", plan.step),
            TrainPhase::Running if train.stopping.get() => "Stopping after this step…".to_string(),
            TrainPhase::Running => format!(
                "Training on {} examples ({} held out), {} adapter values.",
                plan.train_examples, plan.validation_examples, plan.lora_parameters
            ),
            TrainPhase::Paused => format!("Paused after step {} of {}. Try the adapter below, or resume.", plan.step, plan.total_steps),
            TrainPhase::Finished => format!(
                "Done: {} steps.{}",
                plan.step,
                plan.message.as_ref().map(|m| format!(" Stopped early: {m}.")).unwrap_or_default()
            ),
            TrainPhase::Stopped => format!("Cancelled after step {}; the adapter keeps what it learned.", plan.step),
            TrainPhase::Failed => format!(
                "Training stopped with an error after step {}: {}",
                plan.step,
                plan.message.clone().unwrap_or_default()
            ),
        };
        Some(text)
    };
    let result = move || {
        let plan = train.plan.get().filter(|p| !p.phase.is_active())?;
        let last = train.val_losses.get().last().copied().filter(|v| v.0 > 0)?;
        Some(format!(
            "Validation loss: base model {} → adapter {:.3} (lower is better).",
            plan.base_val_loss.map_or("–".to_string(), |v| format!("{v:.3}")),
            last.1
        ))
    };
    let stats = move || {
        let p = train.progress.get()?;
        let val = train.val_losses.get().last().map(|v| format!(" · validation {:.3}", v.1)).unwrap_or_default();
        Some(format!(
            "Step {} of {} · loss {:.3}{val} · {} tokens/s · about {} left · GPU memory {} (peak {})",
            p.step,
            p.total_steps,
            p.loss,
            if p.tokens_per_second < 10.0 { format!("{:.1}", p.tokens_per_second) } else { format!("{:.0}", p.tokens_per_second) },
            clock(p.eta_seconds),
            mib(p.gpu_bytes),
            mib(p.gpu_peak_bytes)
        ))
    };
    let (value, max) = (
        move || train.progress.get().map_or(0, |p| p.step).to_string(),
        move || train.plan.get().map_or(1, |p| p.total_steps.max(1)).to_string(),
    );
    view! {
        <div class="progress" aria-live="polite">
            <p data-testid="train-status" class=move || if train.phase() == Some(TrainPhase::Failed) { "error" } else { "" }>
                {move || status().unwrap_or_else(|| "Not started.".to_string())}
            </p>
            <label class="bar">"Progress "
                <progress data-testid="train-progress" max=max value=value></progress>
            </label>
            <p class="detail stats" data-testid="train-stats">{move || stats().unwrap_or_else(|| "\u{a0}".to_string())}</p>
            {move || result().map(|r| view! { <p data-testid="train-result">{r}</p> })}
        </div>
    }
}

/// What the calibration measured and the duration it gives.
fn calibration_view(train: TrainState) -> impl IntoView {
    move || {
        train.calibration.get().map(|c| {
            let minutes = (c.estimate_seconds / 60.0).ceil().max(1.0);
            view! {
                <p class="detail" data-testid="train-eta">
                    {format!(
                        "Estimate: about {minutes:.0} min for {} steps. Measured before the first step: one example of {} \
                         tokens took {:.2} s to train (after {:.1} s of shader compilation, not counted), scaled to {} \
                         examples per step and the validation passes.",
                        c.total_steps, c.tokens, c.seconds, c.warmup_seconds, c.batch
                    )}
                </p>
            }
        })
    }
}

/// The probe answers: a few held-out questions answered greedily by the adapter as
/// it trains, newest first.
fn probes_view(train: TrainState) -> impl IntoView {
    move || {
        let probes = train.probes.get();
        (!probes.is_empty()).then(|| view! {
            <div class="probes" data-testid="probes">
                <h3>"What the adapter answers as it learns"</h3>
                {probes.into_iter().rev().map(|p| view! {
                    <div class="probe" data-testid="probe">
                        <p class="detail">{format!("After step {} of {} ({:.1} s):", p.step, p.total_steps, p.seconds)}</p>
                        <dl>
                            {p.answers.into_iter().map(|a| view! {
                                <dt>{a.question.prompt}</dt>
                                <dd data-testid="probe-answer">{if a.answer.is_empty() { "(no answer)".to_string() } else { a.answer }}</dd>
                            }).collect_view()}
                        </dl>
                    </div>
                }).collect_view()}
            </div>
        })
    }
}

fn loss_chart(train: TrainState) -> impl IntoView {
    let layout = Memo::new(move |_| {
        let total = train.plan.get().map_or(0, |p| p.total_steps);
        chart::layout(&train.losses.get(), &train.val_losses.get(), total)
    });
    let (x0, y0, x1, y1) = layout.get_untracked().area;
    view! {
        <figure class="chart">
            <svg data-testid="loss-chart" width=chart::WIDTH height=chart::HEIGHT
                viewBox=format!("0 0 {} {}", chart::WIDTH, chart::HEIGHT) role="img"
                aria-label="Training loss and validation loss by step">
                <rect x=x0 y=y0 width=x1 - x0 height=y1 - y0 class="plot" />
                {move || layout.get().y_ticks.into_iter().map(|(y, label)| view! {
                    <line x1=x0 x2=x1 y1=y y2=y class="grid" />
                    <text x=x0 - 6.0 y=y + 4.0 text-anchor="end" class="tick">{label}</text>
                }).collect_view()}
                {move || layout.get().x_ticks.into_iter().map(|(x, label)| view! {
                    <text x=x y=y1 + 18.0 text-anchor="middle" class="tick">{label}</text>
                }).collect_view()}
                <polyline data-testid="train-line" class="train-line" points=move || layout.get().train />
                <polyline data-testid="val-line" class="val-line" points=move || layout.get().val />
                {move || layout.get().val_dots.into_iter().map(|(x, y)| view! {
                    <circle cx=x cy=y r="3" class="val-dot" />
                }).collect_view()}
            </svg>
            <figcaption class="legend">
                <span class="key train-key"></span>" training loss (each step) "
                <span class="key val-key"></span>" validation loss (held-out examples; step 0 is the base model)"
            </figcaption>
        </figure>
    }
}
