//! Errors and warnings of the data pipeline. Every error names the file and, where it
//! applies, the line, page or byte offset, and says what was expected.

use serde::{Deserialize, Serialize};

/// Why a file (or one line of it) could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("{file}: the file is empty")]
    Empty { file: String },
    #[error(
        "{file}: {what}; expected plain text (.txt), Markdown (.md), HTML, PDF, Word (.docx), \
         CSV/TSV with question and answer columns, or JSON/JSONL chat examples"
    )]
    Unsupported { file: String, what: String },
    #[error(
        "{file}: the PDF has no text layer on any of its {pages} page(s); it looks scanned — \
         run OCR on it or export the text from the original document"
    )]
    ScannedPdf { file: String, pages: usize },
    #[error("{file}: the PDF is encrypted (password-protected); save an unprotected copy and add that")]
    EncryptedPdf { file: String },
    #[error("{file}: the PDF cannot be read: {reason}")]
    BadPdf { file: String, reason: String },
    #[error("{file}, page {page}: the text of this page cannot be read: {reason}")]
    BadPdfPage { file: String, page: u32, reason: String },
    #[error("{file}: the Word document cannot be read: {reason}")]
    BadDocx { file: String, reason: String },
    #[error("{file}, line {line}: {what}")]
    BadJsonLine { file: String, line: usize, what: String },
    #[error("{file}: not valid JSON at line {line}, column {column}: {what}")]
    BadJson { file: String, line: usize, column: usize, what: String },
    #[error("{file}, line {line}: {what}")]
    BadCsv { file: String, line: u64, what: String },
    #[error(
        "{file}: no question/answer columns found (first row: {first_row:?}); expected a header row \
         with columns such as `question` and `answer` (or `prompt`/`response`, `q`/`a`), or exactly \
         two columns: question, then answer"
    )]
    NoQaColumns { file: String, first_row: Vec<String> },
    #[error("{file}: nothing usable in it: {what}")]
    NoContent { file: String, what: String },
    #[error("{file}: reading failed at byte {offset}: {reason}")]
    Io { file: String, offset: u64, reason: String },
    #[error("roster {file}, line {line}: {what}")]
    BadRoster { file: String, line: usize, what: String },
    #[error("{file}: tokenizing failed: {reason}")]
    Tokenizer { file: String, reason: String },
    #[error("bad data settings: {0}")]
    Config(String),
    #[error("writing the dataset failed: {0}")]
    Output(String),
}

impl DataError {
    /// The input file the error is about (empty for settings and output errors).
    pub fn file(&self) -> &str {
        match self {
            DataError::Empty { file }
            | DataError::Unsupported { file, .. }
            | DataError::ScannedPdf { file, .. }
            | DataError::EncryptedPdf { file }
            | DataError::BadPdf { file, .. }
            | DataError::BadPdfPage { file, .. }
            | DataError::BadDocx { file, .. }
            | DataError::BadJsonLine { file, .. }
            | DataError::BadJson { file, .. }
            | DataError::BadCsv { file, .. }
            | DataError::NoQaColumns { file, .. }
            | DataError::NoContent { file, .. }
            | DataError::Io { file, .. }
            | DataError::BadRoster { file, .. }
            | DataError::Tokenizer { file, .. } => file,
            DataError::Config(_) | DataError::Output(_) => "",
        }
    }
}

/// Something the teacher should know that did not stop a file from being used
/// (invalid UTF-8 replaced, rows skipped, examples truncated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub file: String,
    /// "line 12", "page 3", "byte 4096", or empty.
    pub location: String,
    pub message: String,
}

impl Warning {
    pub fn new(file: &str, location: impl Into<String>, message: impl Into<String>) -> Warning {
        Warning {
            file: file.to_string(),
            location: location.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}, {}: {}", self.file, self.location, self.message)
        }
    }
}
