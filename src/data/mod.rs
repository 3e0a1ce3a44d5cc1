//! Course material in, training data out — on the device, natively and in wasm32.
//!
//! `readers` turn files (txt, md, html, pdf, docx, csv/tsv, ChatML/alpaca/prompt-completion
//! JSON(L)) into headings and paragraphs or conversations, after `sniff` has recognised
//! the format by content and `normalize` has cleaned the text (NFC, control characters,
//! whitespace, lossy UTF-8 with a warning). `privacy` redacts personal data. `chunk`
//! packs text into token windows with a context line; `examples` builds ChatML examples
//! with assistant-only loss masks and the system-prompt presets; `edits` are the
//! teacher's changes to single examples. `split` splits by
//! document, removes exact duplicates and hashes the content; `summary` and `export`
//! write what the teacher and other engines read. `pipeline` runs it all. Formats are
//! documented in docs/data.md.

pub mod chunk;
pub mod edits;
pub mod error;
pub mod examples;
pub mod export;
pub mod normalize;
pub mod pipeline;
pub mod privacy;
pub mod readers;
pub mod sniff;
pub mod split;
pub mod summary;

pub use edits::{Edit, Edits, ExampleKey};
pub use error::{DataError, Warning};
pub use examples::{Example, ExampleKind, Preset};
pub use pipeline::{DataOptions, ExampleSink, Pipeline};
pub use split::Split;
pub use summary::{FileSummary, Summary};
