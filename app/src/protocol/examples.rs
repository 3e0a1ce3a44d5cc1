//! The prepared examples as the teacher browses and edits them: a page of examples
//! exactly as the model sees them, and the changes the teacher makes to one.

use serde::{Deserialize, Serialize};

/// Examples on one page of the course step.
pub const EXAMPLES_PER_PAGE: u32 = 10;

/// Which example, as the course material makes it (the engine's `data::ExampleKey`):
/// its file and place in it, and for a text window a digest of its text. Edits are
/// keyed by it, so they outlive a preparation with other settings or files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExampleId {
    pub source: String,
    pub location: String,
    #[serde(default)]
    pub window: String,
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    System,
    User,
    Assistant,
}

impl Speaker {
    /// The message's name on the page (and in messages about it).
    pub fn label(self) -> &'static str {
        match self {
            Speaker::System => "system prompt",
            Speaker::User => "student's message",
            Speaker::Assistant => "assistant's answer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Speaker,
    pub content: String,
}

/// What the teacher can edit in an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExampleContent {
    /// A conversation, system prompt first.
    Chat { messages: Vec<ChatMessage> },
    /// A text window: its context line (read by the model, not learned) and its body.
    Text { context: String, body: String },
}

/// One prepared example on a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleView {
    pub id: ExampleId,
    /// Its place among all the course's examples, from 1.
    pub number: u32,
    /// On the validation side (measures progress; not trained on).
    pub held_out: bool,
    pub tokens: u32,
    pub trained_tokens: u32,
    /// Cut to the example length.
    pub truncated: bool,
    /// The teacher changed it.
    pub edited: bool,
    /// Exactly as the model sees it: its token ids decoded, trained spans inside ⟦ ⟧.
    pub rendered: String,
    pub content: ExampleContent,
}

impl ExampleView {
    /// "qa.csv, line 3: What is evaporation?" (its file, place and opening words).
    pub fn label(&self) -> String {
        const OPENING: usize = 60;
        let opening = match &self.content {
            ExampleContent::Chat { messages } => {
                messages.iter().find(|m| m.role == Speaker::User).map_or("", |m| m.content.as_str())
            }
            ExampleContent::Text { body, .. } => body.as_str(),
        };
        let opening = opening.split_whitespace().collect::<Vec<_>>().join(" ");
        let clipped: String = opening.chars().take(OPENING).collect();
        let clipped = if clipped.len() < opening.len() { format!("{}…", clipped.trim_end()) } else { clipped };
        let place = match self.id.location.as_str() {
            "" => self.id.source.clone(),
            location => format!("{}, {location}", self.id.source),
        };
        format!("{place}: {clipped}")
    }
}

/// A page of the course's prepared examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExamplePage {
    /// From 0.
    pub page: u32,
    pub pages: u32,
    /// Examples in the course, train and held out.
    pub total: u32,
    pub examples: Vec<ExampleView>,
}

/// A change to one example ([`super::ToWorker::ChangeExample`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExampleChange {
    /// The chat's messages as edited, one content per message, in order.
    Chat { contents: Vec<String> },
    /// The text window's body as edited (its context line stays).
    Text { body: String },
    /// Leave it out of training and validation.
    Delete,
    /// Bring a deleted example back.
    Restore,
    /// Drop the edits: back to the example as the material makes it.
    Revert,
}

/// What the teacher changed in one example, as the worker keeps it (and a saved run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleEdit {
    pub id: ExampleId,
    #[serde(default)]
    pub deleted: bool,
    /// Chats: new contents by message position (0 is the system prompt); the other
    /// messages follow the settings.
    #[serde(default)]
    pub messages: Vec<(u32, String)>,
    /// Text windows: the new body.
    #[serde(default)]
    pub body: Option<String>,
    /// How the page names it once deleted ([`ExampleView::label`]).
    #[serde(default)]
    pub label: String,
}

/// A deleted example, which the page offers to restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletedExample {
    pub id: ExampleId,
    pub label: String,
}
