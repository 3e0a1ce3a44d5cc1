//! Plain text and Markdown, streamed line by line. Markdown headings (`# Title`, and
//! underlined `Title` / `=====`) become [`Block::Heading`]; blank lines end paragraphs.

use std::io::BufRead;

use super::{Block, Issues, MAX_PARAGRAPH_BYTES};
use crate::data::error::DataError;
use crate::data::normalize::{clean_line, LineReader};

/// Reads `input` and hands each block to `emit`. Returns the number of blocks.
pub fn read_text<R: BufRead>(
    file: &str,
    input: R,
    markdown: bool,
    issues: &mut Issues,
    emit: &mut dyn FnMut(Block) -> Result<(), DataError>,
) -> Result<usize, DataError> {
    let mut reader = LineReader::new(input, MAX_PARAGRAPH_BYTES);
    let mut raw = Vec::new();
    let mut para = Paragraph::default();
    let mut count = 0;
    let mut bad_utf8 = (0usize, 0usize); // (lines, first line)
    let mut cuts = 0usize;
    let mut in_fence = false;
    while let Some(cut) = reader.next_line_of(file, &mut raw)? {
        cuts += usize::from(cut);
        let line = match std::str::from_utf8(&raw) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => {
                if bad_utf8.0 == 0 {
                    bad_utf8.1 = reader.line;
                }
                bad_utf8.0 += 1;
                String::from_utf8_lossy(&raw)
            }
        };
        let trimmed = line.trim_start();
        if markdown && (trimmed.starts_with("```") || trimmed.starts_with("~~~")) {
            // A code block is a paragraph of its own.
            count += para.flush(emit)?;
            in_fence = !in_fence;
            continue;
        }
        let clean = clean_line(&line);
        if clean.is_empty() && !in_fence {
            count += para.flush(emit)?;
            continue;
        }
        if markdown && !in_fence {
            if let Some((level, text)) = atx_heading(&clean) {
                count += para.flush(emit)?;
                if !text.is_empty() {
                    emit(Block::Heading { level, text })?;
                    count += 1;
                }
                continue;
            }
            if let Some(level) = setext_underline(&clean) {
                if para.lines == 1 {
                    let text = std::mem::take(&mut para.text);
                    para.lines = 0;
                    emit(Block::Heading { level, text })?;
                    count += 1;
                    continue;
                }
            }
        }
        if para.text.len() + clean.len() > MAX_PARAGRAPH_BYTES {
            count += para.flush(emit)?;
        }
        para.push(&clean, in_fence || cut);
    }
    count += para.flush(emit)?;
    if bad_utf8.0 > 0 {
        issues.warn(
            file,
            format!("line {}", bad_utf8.1),
            format!(
                "{} line(s) are not valid UTF-8; the bad bytes were replaced with U+FFFD (save the file as UTF-8 to fix)",
                bad_utf8.0
            ),
        );
    }
    if cuts > 0 {
        issues.warn(file, "", format!("{cuts} over-long line(s) were split"));
    }
    Ok(count)
}

#[derive(Default)]
struct Paragraph {
    text: String,
    lines: usize,
}

impl Paragraph {
    fn push(&mut self, line: &str, verbatim: bool) {
        if !self.text.is_empty() {
            let sep = if verbatim || starts_structured(line) { '\n' } else { ' ' };
            self.text.push(sep);
        }
        self.text.push_str(line);
        self.lines += 1;
    }
    fn flush(&mut self, emit: &mut dyn FnMut(Block) -> Result<(), DataError>) -> Result<usize, DataError> {
        self.lines = 0;
        if self.text.is_empty() {
            return Ok(0);
        }
        emit(Block::Paragraph(std::mem::take(&mut self.text)))?;
        Ok(1)
    }
}

/// List items, quotes and table rows keep their own line.
fn starts_structured(line: &str) -> bool {
    let first = line.chars().next().unwrap_or(' ');
    if matches!(first, '-' | '*' | '+' | '>' | '|' | '•') {
        return true;
    }
    let digits = line.chars().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && matches!(line[digits..].chars().next(), Some('.') | Some(')'))
}

/// `## Title ##` → (2, "Title").
fn atx_heading(line: &str) -> Option<(u8, String)> {
    let hashes = line.chars().take_while(|&c| c == '#').count();
    if hashes == 0 || hashes > 6 {
        return None;
    }
    let rest = &line[hashes..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    Some((hashes as u8, text.to_string()))
}

/// `====` (level 1) or `----` (level 2) under a one-line paragraph.
fn setext_underline(line: &str) -> Option<u8> {
    if line.len() >= 3 && line.chars().all(|c| c == '=') {
        Some(1)
    } else if line.len() >= 3 && line.chars().all(|c| c == '-') {
        Some(2)
    } else {
        None
    }
}
