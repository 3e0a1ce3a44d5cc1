//! The dataset summary (`summary.json`) and the preview of the first examples exactly
//! as the model sees them (`preview.txt`).

use serde::{Deserialize, Serialize};

use super::error::Warning;
use super::examples::Example;
use super::privacy::PiiCounts;
use super::split::Split;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Per-input-file results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FileSummary {
    pub file: String,
    /// Detected format (`markdown`, `pdf`, …), empty when it could not be read.
    pub format: String,
    pub bytes: u64,
    /// Headings + paragraphs (text) or conversations (Q&A, chat).
    pub units: usize,
    pub examples: usize,
    pub tokens: usize,
    pub duplicates_removed: usize,
    pub truncated: usize,
    pub personal_data: PiiCounts,
    /// Why the file was not used (whole file); None when it was.
    pub error: Option<String>,
}

/// An error recorded for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEntry {
    pub file: String,
    pub message: String,
}

/// Everything about a prepared dataset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Input files read successfully (at least partly).
    pub documents: usize,
    pub files_failed: usize,
    pub examples: usize,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub text_examples: usize,
    pub chat_examples: usize,
    /// All tokens of the kept examples.
    pub tokens: usize,
    /// Tokens with loss (mask 1).
    pub trained_tokens: usize,
    pub train_tokens: usize,
    pub validation_tokens: usize,
    pub truncated_examples: usize,
    pub duplicates_removed: usize,
    /// Paragraphs longer than a window, cut between tokens.
    pub hard_cuts: usize,
    /// Kept examples the teacher changed, and examples they deleted
    /// ([`super::DataOptions::edits`]).
    #[serde(default)]
    pub examples_edited: usize,
    #[serde(default)]
    pub examples_deleted: usize,
    /// Edits whose example these settings and files do not make (a text window of
    /// another length, an example of a file no longer given).
    #[serde(default)]
    pub edits_unused: usize,
    pub seq_len: usize,
    pub overlap: usize,
    pub validation_fraction: f64,
    pub seed: u64,
    pub preset: Option<String>,
    pub system_prompt: String,
    /// Personal data found, by kind.
    pub personal_data: PiiCounts,
    /// Whether the found personal data was replaced by placeholders.
    pub redacted: bool,
    /// True when personal data found in the material is still in the dataset
    /// (redaction turned off): the export step must warn before training or sharing.
    pub unredacted_personal_data: bool,
    /// SHA-256 (hex) over every kept example: split, token ids and mask.
    pub content_hash: String,
    pub files: Vec<FileSummary>,
    pub errors: Vec<ErrorEntry>,
    pub warnings: Vec<Warning>,
}

/// Marks around the tokens the model is trained on, in the preview.
pub const TRAIN_OPEN: &str = "⟦";
pub const TRAIN_CLOSE: &str = "⟧";

/// The examples decoded from their token ids, with trained spans inside ⟦ ⟧.
pub fn render_preview(tok: &Tokenizer, examples: &[(Split, Example)]) -> Result<String, TokenizerError> {
    let mut out = String::new();
    out.push_str(&format!(
        "# Preview: the first {} example(s) exactly as the model sees them (decoded token ids).\n\
         # Text between {TRAIN_OPEN} and {TRAIN_CLOSE} is what the model is trained to predict (loss mask 1);\n\
         # the rest is context only.\n",
        examples.len()
    ));
    for (i, (split, ex)) in examples.iter().enumerate() {
        let split = match split {
            Split::Train => "train",
            Split::Validation => "validation",
        };
        let loc = if ex.location.is_empty() { String::new() } else { format!(", {}", ex.location) };
        out.push_str(&format!(
            "\n===== example {} ({split}, {:?}, {}{loc}): {} tokens, {} trained{} =====\n",
            i + 1,
            ex.kind,
            ex.source,
            ex.input_ids.len(),
            ex.trained_tokens(),
            if ex.truncated { ", TRUNCATED" } else { "" }
        ));
        out.push_str(&marked_text(tok, &ex.input_ids, &ex.loss_mask)?);
        out.push('\n');
    }
    Ok(out)
}

/// `ids` decoded, each run of mask-1 tokens inside ⟦ ⟧.
pub fn marked_text(tok: &Tokenizer, ids: &[u32], mask: &[u8]) -> Result<String, TokenizerError> {
    let mut out = String::new();
    let mut start = 0;
    while start < ids.len() {
        let m = mask.get(start).copied().unwrap_or(0);
        let mut end = start + 1;
        while end < ids.len() && mask.get(end).copied().unwrap_or(0) == m {
            end += 1;
        }
        let text = tok.decode(&ids[start..end])?;
        if m != 0 {
            out.push_str(TRAIN_OPEN);
            out.push_str(&text);
            out.push_str(TRAIN_CLOSE);
        } else {
            out.push_str(&text);
        }
        start = end;
    }
    Ok(out)
}
