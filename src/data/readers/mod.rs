//! Readers: each turns one file into document structure ([`Block`]s of headings and
//! paragraphs) or into conversations ([`Conversation`]). They clean the text
//! ([`super::normalize`]) but do not tokenize, redact or split; the pipeline does.
//!
//! Text-like formats (txt, md, csv/tsv, jsonl) are read line by line from a `BufRead`
//! and hand their output to a callback, so memory stays bounded whatever the file size.
//! PDF, DOCX, HTML and JSON need the whole file and return a `Vec`.

pub mod docx;
pub mod html;
pub mod jsonl;
pub mod pdf;
pub mod table;
pub mod text;

use serde::{Deserialize, Serialize};

use super::error::{DataError, Warning};
use crate::chat::Message;

/// Longest line or paragraph (bytes) a reader hands on; longer ones are cut.
pub const MAX_PARAGRAPH_BYTES: usize = 16 * 1024;

/// A piece of document structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Block {
    /// A heading, level 1 (title) to 6.
    Heading { level: u8, text: String },
    /// A paragraph, list or table: cleaned text, possibly several lines.
    Paragraph(String),
    /// Start of a PDF page (for locating text in messages).
    Page(u32),
}

/// A conversation from a Q&A sheet or a chat file, before the system prompt is added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// Where in the file: "line 4", "row 7", "item 3".
    pub location: String,
    /// A question/answer pair (from a sheet, alpaca or prompt/completion), which the
    /// presets may reshape; false for full chats, which are kept as written.
    pub qa: bool,
    /// A guiding question for the Socratic preset (Q&A sheets with a `hint` column).
    pub hint: Option<String>,
}

/// Where readers put non-fatal problems: warnings, and errors of single lines that were
/// skipped (a malformed JSONL line) while the rest of the file was used.
#[derive(Debug, Default)]
pub struct Issues {
    pub warnings: Vec<Warning>,
    pub errors: Vec<DataError>,
}

impl Issues {
    pub fn warn(&mut self, file: &str, location: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning::new(file, location, message));
    }
}

/// Blocks from whole-file readers; empty paragraphs dropped.
pub(crate) fn push_paragraph(blocks: &mut Vec<Block>, text: &str) {
    let text = super::normalize::clean_text(text);
    if !text.is_empty() {
        blocks.push(Block::Paragraph(text));
    }
}

/// A heading from whole-file readers; empty headings dropped.
pub(crate) fn push_heading(blocks: &mut Vec<Block>, level: u8, text: &str) {
    let text = super::normalize::clean_line(text);
    if !text.is_empty() {
        blocks.push(Block::Heading {
            level: level.clamp(1, 6),
            text,
        });
    }
}
