//! Word documents (.docx): `word/document.xml` from the ZIP container, read with
//! quick-xml. Paragraph styles `Title` and `Heading1`…`Heading6` become headings; table
//! cells are separated by ` | `, rows by line breaks.

use std::io::Read;

use quick_xml::events::Event;
use quick_xml::Reader;

use super::{push_heading, push_paragraph, Block};
use crate::data::error::DataError;

/// Largest `document.xml` we inflate (a guard against ZIP bombs).
const MAX_XML: u64 = 128 << 20;

/// The blocks of a .docx file.
pub fn read_docx(file: &str, bytes: &[u8]) -> Result<Vec<Block>, DataError> {
    let bad = |reason: String| DataError::BadDocx {
        file: file.to_string(),
        reason,
    };
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| bad(format!("not a readable ZIP container: {e}")))?;
    let mut entry = archive
        .by_name("word/document.xml")
        .map_err(|_| bad("it has no word/document.xml (is it really a Word document?)".to_string()))?;
    if entry.encrypted() {
        return Err(bad("it is password-protected".to_string()));
    }
    let mut xml = Vec::new();
    (&mut entry)
        .take(MAX_XML + 1)
        .read_to_end(&mut xml)
        .map_err(|e| bad(format!("word/document.xml cannot be unpacked: {e}")))?;
    if xml.len() as u64 > MAX_XML {
        return Err(bad(format!("word/document.xml is larger than {} MiB", MAX_XML >> 20)));
    }
    parse_document_xml(&xml).map_err(bad)
}

/// The blocks of a WordprocessingML `document.xml`.
pub fn parse_document_xml(xml: &[u8]) -> Result<Vec<Block>, String> {
    let mut reader = Reader::from_reader(xml);
    let mut blocks = Vec::new();
    let mut buf = Vec::new();
    let mut para = String::new();
    let mut style: Option<u8> = None;
    let mut in_text = false;
    let mut table_depth = 0usize;
    let mut row = String::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("bad XML in word/document.xml at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                match e.local_name().as_ref() {
                    b"p" => {
                        para.clear();
                        style = None;
                    }
                    b"t" => in_text = true,
                    b"tab" => para.push(' '),
                    b"br" | b"cr" => para.push('\n'),
                    b"pStyle" => {
                        for attr in e.attributes().flatten() {
                            if attr.key.local_name().as_ref() == b"val" {
                                style = heading_style(&String::from_utf8_lossy(&attr.value));
                            }
                        }
                    }
                    b"tbl" => table_depth += 1,
                    b"tr" => row.clear(),
                    _ => {}
                }
            }
            Event::Text(t) if in_text => {
                let text = t.unescape().map_err(|e| format!("bad text in word/document.xml: {e}"))?;
                para.push_str(&text);
            }
            Event::CData(t) if in_text => para.push_str(&String::from_utf8_lossy(&t)),
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    if table_depth > 0 {
                        if !row.is_empty() && !para.trim().is_empty() {
                            row.push(' ');
                        }
                        row.push_str(para.trim());
                    } else {
                        match style {
                            Some(level) => push_heading(&mut blocks, level, &para),
                            None => push_paragraph(&mut blocks, &para),
                        }
                    }
                    para.clear();
                }
                b"tc" if table_depth > 0 => row.push_str(" | "),
                b"tr" if table_depth > 0 => {
                    let line = row.trim().trim_end_matches('|').trim().to_string();
                    push_paragraph(&mut blocks, &line);
                    row.clear();
                }
                b"tbl" => table_depth = table_depth.saturating_sub(1),
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(blocks)
}

/// `Title` → 1, `Heading2` / `heading 2` → 2.
fn heading_style(val: &str) -> Option<u8> {
    let v = val.to_ascii_lowercase().replace([' ', '_', '-'], "");
    if v == "title" {
        return Some(1);
    }
    let digits = v.strip_prefix("heading")?;
    digits.parse::<u8>().ok().map(|d| d.clamp(1, 6))
}
