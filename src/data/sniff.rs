//! What kind of file this is, from its first bytes first and its name second: a PDF
//! named `.txt` is read as a PDF, an image named `.md` is refused.

/// The formats the readers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Csv,
    Tsv,
    /// One JSON object per line: ChatML messages, alpaca or prompt/completion.
    Jsonl,
    /// A JSON array of such objects (or one object).
    Json,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Jsonl => "jsonl",
            Format::Json => "json",
        }
    }
    /// Plain text read line by line (bounded memory whatever the file size).
    pub fn is_streamed(self) -> bool {
        matches!(self, Format::Text | Format::Markdown | Format::Jsonl | Format::Csv | Format::Tsv)
    }
}

/// Bytes of the file's start that [`sniff`] looks at.
pub const SNIFF_LEN: usize = 8192;

/// Binary signatures we can name in an error message.
const MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG", "a PNG image"),
    (b"\xFF\xD8\xFF", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"GGUF", "a GGUF model file"),
    (b"\x7FELF", "a program (ELF)"),
    (b"MZ", "a Windows program"),
    (b"\x1F\x8B", "a gzip archive"),
    (b"7z\xBC\xAF", "a 7-Zip archive"),
    (b"Rar!", "a RAR archive"),
    (b"\xD0\xCF\x11\xE0", "an old Office file (.doc/.xls/.ppt); save it as .docx, .csv or PDF"),
    (b"%!PS", "a PostScript file; save it as PDF"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg media file"),
    (b"\x00\x00\x01\x00", "an icon file"),
    (b"{\\rtf", "an RTF document; save it as .docx or text"),
];

/// The format of a file named `name` whose first bytes are `head` (up to [`SNIFF_LEN`]),
/// or a description of what it is when it is not something we read.
pub fn sniff(name: &str, head: &[u8]) -> Result<Format, String> {
    let ext = extension(name);
    let trimmed = skip_bom_and_space(head);
    if head.windows(5).take(1024).any(|w| w == b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if ext == "pdf" {
        return Err("named .pdf but it is not a PDF (no %PDF- header)".to_string());
    }
    if head.starts_with(b"PK\x03\x04") {
        return match ext.as_str() {
            "docx" => Ok(Format::Docx),
            "xlsx" => Err("an Excel workbook; save the sheet as CSV".to_string()),
            "pptx" => Err("a PowerPoint file; export it as PDF".to_string()),
            "odt" => Err("an OpenDocument text; save it as .docx".to_string()),
            _ if contains(head, b"word/") => Ok(Format::Docx),
            _ => Err("a ZIP archive that is not a Word document".to_string()),
        };
    }
    for (magic, what) in MAGIC {
        if head.starts_with(magic) {
            return Err(format!("binary content: {what}"));
        }
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return Err("UTF-16 text; save it as UTF-8".to_string());
    }
    if looks_binary(head) {
        return Err("binary content of an unknown type".to_string());
    }
    if ext == "docx" {
        return Err("named .docx but it is not a Word document (not a ZIP archive)".to_string());
    }
    Ok(match ext.as_str() {
        "md" | "markdown" | "mdown" => Format::Markdown,
        "html" | "htm" | "xhtml" => Format::Html,
        "csv" => Format::Csv,
        "tsv" | "tab" => Format::Tsv,
        "jsonl" | "ndjson" => Format::Jsonl,
        "json" => Format::Json,
        _ => sniff_text(trimmed),
    })
}

/// Text of an unknown or `.txt` name: HTML, JSON(L) or Markdown by content, else plain text.
fn sniff_text(head: &[u8]) -> Format {
    let lower: Vec<u8> = head.iter().take(256).map(|b| b.to_ascii_lowercase()).collect();
    if lower.starts_with(b"<!doctype html") || lower.starts_with(b"<html") {
        return Format::Html;
    }
    if head.starts_with(b"[") {
        return Format::Json;
    }
    if head.starts_with(b"{") {
        let first_line = head.split(|&b| b == b'\n').next().unwrap_or(head);
        let is_object = serde_json::from_slice::<serde_json::Value>(first_line)
            .map(|v| v.is_object())
            .unwrap_or(false);
        return if is_object { Format::Jsonl } else { Format::Json };
    }
    let markdown = head
        .split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"# ") || line.starts_with(b"## ") || line.starts_with(b"### "));
    if markdown {
        Format::Markdown
    } else {
        Format::Text
    }
}

/// NUL bytes, or many control characters: not text in any encoding we read.
fn looks_binary(head: &[u8]) -> bool {
    if head.contains(&0) {
        return true;
    }
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C))
        .count();
    !head.is_empty() && controls * 20 > head.len()
}

fn skip_bom_and_space(head: &[u8]) -> &[u8] {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(head.len());
    &head[start..]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The lowercased extension of a file name ("" when none).
pub fn extension(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}
