//! The teacher's changes to prepared examples: one deleted, a message of a chat or the
//! body of a text window rewritten.
//!
//! An edit is keyed by the identity of the example the course material makes
//! ([`ExampleKey`]), not by its position, so it still applies when the course is
//! prepared again with another role, redaction setting or length, or with other files
//! beside it. A chat is one conversation of its file whatever the settings, so its
//! file and location name it. A text window is not: the windows of a section change
//! with the length, so a window is named by a digest of its text as well, and an edit
//! of it only applies where that same window is made.
//!
//! The pipeline applies the edits ([`super::DataOptions::edits`]) before duplicate
//! removal, the split and the counts, so the dataset, its summary and its content hash
//! are those of the edited examples. An edited example is tokenized as the pipeline
//! tokenizes one it made ([`chat_example`], [`text_example`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::examples::{chat_example, text_example, Example, ExampleKind};
use crate::chat::{ChatTemplate, Message};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Hex digits of a text window's digest in its key.
const WINDOW_DIGEST_HEX: usize = 16;

/// The identity of an example as the course material makes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExampleKey {
    pub source: String,
    pub location: String,
    /// Text windows: the start of the hex SHA-256 of the window's text (a section
    /// holds several windows). Empty for chats.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub window: String,
}

impl ExampleKey {
    /// The key of `ex` as the pipeline made it (before any edit).
    pub fn of(ex: &Example) -> ExampleKey {
        let window = match ex.kind {
            ExampleKind::Chat => String::new(),
            ExampleKind::Text => {
                let digest = Sha256::digest(ex.text.as_bytes());
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                hex[..WINDOW_DIGEST_HEX].to_string()
            }
        };
        ExampleKey { source: ex.source.clone(), location: ex.location.clone(), window }
    }
}

/// What the teacher changed in one example.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// Left out of training and validation.
    #[serde(default)]
    pub deleted: bool,
    /// Chats: new contents of messages by position (0 is the system prompt); the
    /// other messages follow the settings (the role's system prompt, redaction).
    #[serde(default)]
    pub messages: Vec<(usize, String)>,
    /// Text windows: the new text after the context line.
    #[serde(default)]
    pub body: Option<String>,
}

/// Edits by the key of the example they change.
pub type Edits = BTreeMap<ExampleKey, Edit>;

impl Edit {
    /// Changes nothing (an example whose changes were all undone).
    pub fn is_empty(&self) -> bool {
        !self.deleted && self.messages.is_empty() && self.body.is_none()
    }

    /// `ex` with the new contents, tokenized again (the same chat template and masks,
    /// cut to `seq_len`); `clean` prepares each new text as the pipeline prepares the
    /// material's (redaction). Deletion is the caller's: this only rewrites.
    pub fn apply(
        &self,
        ex: Example,
        tok: &Tokenizer,
        template: &ChatTemplate,
        seq_len: usize,
        clean: impl Fn(&str) -> String,
    ) -> Result<Example, TokenizerError> {
        let key = ExampleKey::of(&ex);
        let mut edited = match (ex.kind, &self.body) {
            (ExampleKind::Chat, _) if !self.messages.is_empty() => {
                let mut messages: Vec<Message> = ex.messages;
                for (at, content) in &self.messages {
                    if let Some(m) = messages.get_mut(*at) {
                        m.content = clean(content);
                    }
                }
                chat_example(tok, template, &ex.source, &ex.location, messages, seq_len)?
            }
            (ExampleKind::Text, Some(body)) => {
                let context = &ex.input_ids[..ex.context_len()];
                text_example(tok, &ex.source, &ex.location, context, &clean(body), seq_len)?
            }
            _ => return Ok(ex),
        };
        edited.edited = Some(key);
        Ok(edited)
    }
}
