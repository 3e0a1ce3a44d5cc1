//! What the teacher sees the model learn: the calibration that sizes a run before it
//! starts, the probe answers generated while it trains, and the quiz of held-out
//! questions answered by the base model and the adapter.

use serde::{Deserialize, Serialize};

/// A run's duration, estimated before its first step from one timed training pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Tokens of the example that was timed (the first of the first batch).
    pub tokens: u32,
    /// A pass over its first few tokens, which compiles the shaders (not counted).
    pub warmup_seconds: f64,
    /// The whole example's forward and backward pass: what the estimate scales.
    pub seconds: f64,
    pub total_steps: u32,
    /// Examples per step.
    pub batch: u32,
    /// The whole run: every step's examples at the measured pace per token, plus the
    /// validation passes.
    pub estimate_seconds: f64,
}

/// A held-out question from the course, with the answer the course gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// The student's message (chat) or the opening of a held-out text (continued as is).
    pub prompt: String,
    pub reference: String,
    /// Asked as a chat message with the course's system prompt; else continued as text.
    pub chat: bool,
}

/// Greedy answers to the probe questions with the adapter as it is at `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub step: u32,
    pub total_steps: u32,
    pub answers: Vec<ProbeAnswer>,
    /// Seconds the probe took (training waits meanwhile).
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub question: Question,
    pub answer: String,
}

/// The held-out questions answered by the base model and by the adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuizReport {
    pub items: Vec<QuizItem>,
    /// Validation loss of the base model and of the adapter (the run's last
    /// measurement, at `val_step`), on the same held-out examples.
    pub base_val_loss: Option<f64>,
    pub adapter_val_loss: Option<f64>,
    pub val_step: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuizItem {
    pub question: Question,
    pub base: String,
    pub adapter: String,
}
