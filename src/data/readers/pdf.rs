//! PDF text layer, with [`lopdf`] (pure Rust, builds for wasm32). We walk each page's
//! content stream ourselves rather than call `extract_text`, to keep the font size of
//! every line: lines set clearly larger than the body text become headings (the
//! largest size is level 1), and vertical gaps between lines separate paragraphs.
//!
//! No text on any page means a scanned document ([`DataError::ScannedPdf`]); an
//! `/Encrypt` dictionary that the empty password does not open means
//! [`DataError::EncryptedPdf`]. A page whose content cannot be read is reported
//! ([`DataError::BadPdfPage`]) and the other pages are kept.

use std::collections::BTreeMap;

use lopdf::content::Content;
use lopdf::{Document, Encoding, Object};

use super::{push_heading, push_paragraph, Block, Issues};
use crate::data::error::DataError;

/// Most decompressed content one page may have.
const MAX_PAGE_CONTENT: usize = 64 << 20;
/// A line at least this much larger than the body text is a heading.
const HEADING_RATIO: f32 = 1.15;
/// Headings are short.
const MAX_HEADING_CHARS: usize = 150;

/// One line of text as set on a page.
#[derive(Debug, Clone)]
struct Line {
    page: u32,
    size: f32,
    y: f32,
    text: String,
}

/// The blocks of a PDF's text layer, each page preceded by [`Block::Page`].
pub fn read_pdf(file: &str, bytes: &[u8], issues: &mut Issues) -> Result<Vec<Block>, DataError> {
    let encrypted_marker = contains(bytes, b"/Encrypt");
    let doc = match Document::load_mem(bytes) {
        Ok(doc) => doc,
        Err(_) if encrypted_marker => return Err(DataError::EncryptedPdf { file: file.to_string() }),
        Err(e) => {
            return Err(DataError::BadPdf {
                file: file.to_string(),
                reason: e.to_string(),
            })
        }
    };
    if doc.is_encrypted() && doc.encryption_state.is_none() {
        return Err(DataError::EncryptedPdf { file: file.to_string() });
    }
    let pages = doc.get_pages();
    if pages.is_empty() {
        return Err(DataError::NoContent {
            file: file.to_string(),
            what: "the PDF has no pages".to_string(),
        });
    }
    let mut lines = Vec::new();
    for (&number, &id) in &pages {
        match page_lines(&doc, number, id) {
            Ok(mut page) => lines.append(&mut page),
            Err(reason) => issues.errors.push(DataError::BadPdfPage {
                file: file.to_string(),
                page: number,
                reason,
            }),
        }
    }
    if lines.iter().all(|l| l.text.trim().is_empty()) {
        if encrypted_marker && doc.encryption_state.is_none() {
            return Err(DataError::EncryptedPdf { file: file.to_string() });
        }
        return Err(DataError::ScannedPdf {
            file: file.to_string(),
            pages: pages.len(),
        });
    }
    Ok(to_blocks(&lines))
}

/// Groups lines into headings and paragraphs.
fn to_blocks(lines: &[Line]) -> Vec<Block> {
    let body = body_size(lines);
    // Heading sizes, largest first: their rank is the heading level.
    let mut sizes: Vec<f32> = lines
        .iter()
        .filter(|l| is_heading(l, body))
        .map(|l| quantize(l.size))
        .collect();
    sizes.sort_by(|a, b| b.total_cmp(a));
    sizes.dedup();
    let level_of = |size: f32| {
        let rank = sizes.iter().position(|&s| s == quantize(size)).unwrap_or(0);
        (rank + 1).min(6) as u8
    };

    let mut blocks = Vec::new();
    let mut para = String::new();
    let mut heading: Option<(u8, String)> = None;
    let mut page = 0;
    let mut prev: Option<&Line> = None;
    for line in lines {
        let text = line.text.trim();
        if line.page != page {
            flush_para(&mut blocks, &mut para);
            flush_heading(&mut blocks, &mut heading);
            page = line.page;
            blocks.push(Block::Page(page));
            prev = None;
        }
        if text.is_empty() {
            continue;
        }
        if is_heading(line, body) {
            flush_para(&mut blocks, &mut para);
            let level = level_of(line.size);
            match &mut heading {
                Some((l, h)) if *l == level && prev.is_some_and(|p| close_below(p, line)) => {
                    h.push(' ');
                    h.push_str(text);
                }
                _ => {
                    flush_heading(&mut blocks, &mut heading);
                    heading = Some((level, text.to_string()));
                }
            }
        } else {
            flush_heading(&mut blocks, &mut heading);
            if prev.is_some_and(|p| !close_below(p, line)) {
                flush_para(&mut blocks, &mut para);
            }
            if !para.is_empty() {
                // A word hyphenated across lines is joined again; list items keep their line.
                if list_item(text) {
                    para.push('\n');
                } else if para.ends_with('-') && !para.ends_with(" -") {
                    para.pop();
                } else {
                    para.push(' ');
                }
            }
            para.push_str(text);
        }
        prev = Some(line);
    }
    flush_para(&mut blocks, &mut para);
    flush_heading(&mut blocks, &mut heading);
    blocks
}

/// `- item`, `• item`, `1. item`, `2) item`.
fn list_item(line: &str) -> bool {
    if line.starts_with(['-', '•', '*', '–']) {
        return true;
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    digits > 0 && digits < 4 && matches!(line[digits..].chars().next(), Some('.') | Some(')'))
}

fn flush_para(blocks: &mut Vec<Block>, para: &mut String) {
    push_paragraph(blocks, para);
    para.clear();
}

fn flush_heading(blocks: &mut Vec<Block>, heading: &mut Option<(u8, String)>) {
    if let Some((level, text)) = heading.take() {
        push_heading(blocks, level, &text);
    }
}

/// The next line of the same paragraph: below `prev` by at most about 1.6 lines.
fn close_below(prev: &Line, line: &Line) -> bool {
    let gap = prev.y - line.y;
    let height = prev.size.max(line.size).max(1.0);
    gap >= 0.0 && gap <= height * 1.6
}

fn is_heading(line: &Line, body: f32) -> bool {
    line.size >= body * HEADING_RATIO && line.text.trim().chars().count() <= MAX_HEADING_CHARS
}

fn quantize(size: f32) -> f32 {
    (size * 2.0).round() / 2.0
}

/// The size most of the text is set in (by characters).
fn body_size(lines: &[Line]) -> f32 {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for l in lines {
        *counts.entry((quantize(l.size) * 2.0) as i64).or_default() += l.text.chars().count();
    }
    counts
        .into_iter()
        .max_by_key(|&(size, n)| (n, -size))
        .map_or(12.0, |(size, _)| size as f32 / 2.0)
}

/// Text state while walking a content stream.
struct Walker<'a> {
    page: u32,
    encodings: BTreeMap<Vec<u8>, Encoding<'a>>,
    font: Option<Vec<u8>>,
    font_size: f32,
    scale: f32,
    leading: f32,
    y: f32,
    line_y: f32,
    /// Largest font size shown on the current line.
    line_size: f32,
    current: String,
    lines: Vec<Line>,
}

impl Walker<'_> {
    fn size(&self) -> f32 {
        (self.font_size * self.scale).abs()
    }
    fn end_line(&mut self) {
        if !self.current.trim().is_empty() {
            let text = std::mem::take(&mut self.current);
            let size = self.line_size;
            self.lines.push(Line {
                page: self.page,
                size,
                y: self.line_y,
                text,
            });
        }
        self.current.clear();
        self.line_y = self.y;
        self.line_size = 0.0;
    }
    /// Moves the text position; a vertical move starts a new line.
    fn move_to(&mut self, y: f32, horizontal: bool) {
        if (y - self.y).abs() > 0.01 {
            self.y = y;
            self.end_line();
        } else if horizontal && !self.current.is_empty() && !self.current.ends_with(' ') {
            self.current.push(' ');
        }
        self.y = y;
    }
    fn show(&mut self, bytes: &[u8]) {
        if self.current.is_empty() {
            self.line_y = self.y;
        }
        self.line_size = self.line_size.max(self.size());
        let decoded = self.font.as_ref().and_then(|f| self.encodings.get(f)).and_then(|enc| {
            let mut s = String::new();
            enc.write_to_string(bytes, &mut s).ok().map(|_| s)
        });
        match decoded {
            Some(s) => self.current.push_str(&s),
            None => self.current.extend(bytes.iter().map(|&b| b as char)),
        }
    }
}

fn page_lines(doc: &Document, page: u32, id: lopdf::ObjectId) -> Result<Vec<Line>, String> {
    let fonts = doc.get_page_fonts(id).map_err(|e| e.to_string())?;
    let encodings = fonts
        .into_iter()
        .filter_map(|(name, font)| font.get_font_encoding_with_limit(doc, MAX_PAGE_CONTENT).ok().map(|e| (name, e)))
        .collect();
    let data = doc
        .get_page_content_with_limit(id, MAX_PAGE_CONTENT)
        .map_err(|e| e.to_string())?;
    let content = Content::decode(&data).map_err(|e| e.to_string())?;
    let mut w = Walker {
        page,
        encodings,
        font: None,
        font_size: 12.0,
        scale: 1.0,
        leading: 0.0,
        y: 0.0,
        line_y: 0.0,
        line_size: 0.0,
        current: String::new(),
        lines: Vec::new(),
    };
    for op in &content.operations {
        let num = |i: usize| op.operands.get(i).and_then(number);
        match op.operator.as_str() {
            "BT" => {
                // A text object starts with the identity text matrix.
                w.end_line();
                w.scale = 1.0;
                w.y = 0.0;
                w.line_y = 0.0;
            }
            "ET" => w.end_line(),
            "Tf" => {
                w.font = op.operands.first().and_then(|o| o.as_name().ok()).map(<[u8]>::to_vec);
                w.font_size = num(1).unwrap_or(w.font_size);
            }
            "TL" => w.leading = num(0).unwrap_or(w.leading),
            "Td" | "TD" => {
                let ty = num(1).unwrap_or(0.0) * w.scale;
                if op.operator == "TD" {
                    w.leading = -ty;
                }
                w.move_to(w.y + ty, num(0).unwrap_or(0.0) != 0.0);
            }
            "Tm" => {
                let (c, d) = (num(2).unwrap_or(0.0), num(3).unwrap_or(1.0));
                let scale = (c * c + d * d).sqrt();
                w.scale = if scale > 0.0 { scale } else { 1.0 };
                w.move_to(num(5).unwrap_or(w.y), true);
            }
            "T*" => {
                let y = w.y - w.leading.max(w.size());
                w.move_to(y, false);
            }
            "Tj" => {
                if let Some(Object::String(bytes, _)) = op.operands.first() {
                    w.show(bytes);
                }
            }
            "'" | "\"" => {
                let y = w.y - w.leading.max(w.size());
                w.move_to(y, false);
                if let Some(Object::String(bytes, _)) = op.operands.last() {
                    w.show(bytes);
                }
            }
            "TJ" => {
                if let Some(Object::Array(items)) = op.operands.first() {
                    for item in items {
                        match item {
                            Object::String(bytes, _) => w.show(bytes),
                            other => {
                                if number(other).is_some_and(|n| n < -200.0) && !w.current.ends_with(' ') {
                                    w.current.push(' ');
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    w.end_line();
    Ok(w.lines)
}

fn number(o: &Object) -> Option<f32> {
    match o {
        Object::Integer(i) => Some(*i as f32),
        Object::Real(r) => Some(*r),
        _ => None,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
