//! HTML: the visible text, with `h1`–`h6` as headings and block elements as paragraph
//! breaks. `script`, `style`, `noscript`, `template`, `svg` and the `head` (except its
//! `title`) are skipped, as are comments. A small tolerant scanner, not a full HTML5
//! parser: unclosed tags and stray `<` are read as well as they can be.

use super::{push_heading, push_paragraph, Block};

const SKIP: &[&str] = &["script", "style", "noscript", "template", "svg", "head", "iframe", "object"];
const BREAKS: &[&str] = &[
    "p", "div", "section", "article", "main", "header", "footer", "nav", "aside", "ul", "ol",
    "li", "table", "tr", "blockquote", "pre", "dl", "dt", "dd", "figure", "figcaption", "form",
    "hr", "body", "html", "title",
];

/// The blocks of an HTML document.
pub fn read_html(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut buf = String::new();
    let mut heading: Option<u8> = None;
    let mut title: Option<String> = None;
    let mut in_title = false;
    let mut title_in_head = false;
    let mut skip_until: Option<String> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if skip_until.is_none() {
                buf.push_str(&decode_entities(rest));
            }
            break;
        };
        if skip_until.is_none() && lt > 0 {
            buf.push_str(&decode_entities(&rest[..lt]));
        }
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = tag_end(rest) else {
            // A stray `<` with no tag after it: text.
            if skip_until.is_none() {
                buf.push('<');
            }
            rest = &rest[1..];
            continue;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if name.is_empty() {
            continue; // <!doctype>, <?xml?>, stray `</ >`
        }
        if let Some(until) = &skip_until {
            if closing && &name == until {
                skip_until = None;
            } else if name == "title" && !closing && until == "head" {
                in_title = true;
                title_in_head = true;
                buf.clear();
                skip_until = None;
            }
            continue;
        }
        if SKIP.contains(&name.as_str()) && !closing && !tag.ends_with('/') {
            flush(&mut blocks, &mut buf, heading);
            skip_until = Some(name);
            continue;
        }
        if name == "title" {
            if closing && in_title {
                let t = super::super::normalize::clean_line(&buf);
                if !t.is_empty() {
                    title = Some(t);
                }
                buf.clear();
                in_title = false;
                if std::mem::take(&mut title_in_head) {
                    skip_until = Some("head".to_string());
                }
            } else {
                in_title = !closing;
            }
            continue;
        }
        let level = heading_level(&name);
        if let Some(level) = level {
            flush(&mut blocks, &mut buf, heading);
            heading = if closing { None } else { Some(level) };
        } else if name == "br" {
            buf.push('\n');
        } else if BREAKS.contains(&name.as_str()) {
            flush(&mut blocks, &mut buf, heading);
            if name == "li" && !closing {
                buf.push_str("- ");
            }
        } else if matches!(name.as_str(), "td" | "th") && closing {
            buf.push_str(" | ");
        }
    }
    flush(&mut blocks, &mut buf, heading);
    if let Some(title) = title {
        let has_h1 = blocks.iter().any(|b| matches!(b, Block::Heading { level: 1, .. }));
        if !has_h1 {
            blocks.insert(0, Block::Heading { level: 1, text: title });
        }
    }
    blocks
}

fn flush(blocks: &mut Vec<Block>, buf: &mut String, heading: Option<u8>) {
    let text = buf.trim().trim_end_matches('|').trim();
    match heading {
        Some(level) => push_heading(blocks, level, text),
        None => push_paragraph(blocks, text),
    }
    buf.clear();
}

fn heading_level(name: &str) -> Option<u8> {
    match name.as_bytes() {
        [b'h', d @ b'1'..=b'6'] => Some(d - b'0'),
        _ => None,
    }
}

/// The `>` that closes the tag starting at `s[0] == '<'`, skipping quoted attribute
/// values; `None` when this `<` does not start a tag.
fn tag_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    match bytes.get(1) {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, b'/' | b'!' | b'?') => {}
        _ => return None,
    }
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return Some(i),
            None => {}
        }
    }
    None
}

/// `&amp;`, `&#233;`, `&#xE9;` and the common named entities.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let end = rest[1..].find(';').map(|i| i + 1).filter(|&i| i <= 10);
        let decoded = end.and_then(|end| entity(&rest[1..end]).map(|c| (c, end)));
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "copy" => '©',
        "deg" => '°',
        "times" => '×',
        "divide" => '÷',
        "middot" => '·',
        "bull" => '•',
        "rarr" => '→',
        "larr" => '←',
        "eacute" => 'é',
        "egrave" => 'è',
        "aacute" => 'á',
        "agrave" => 'à',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "auml" => 'ä',
        "szlig" => 'ß',
        "ccedil" => 'ç',
        "ntilde" => 'ñ',
        "sup2" => '²',
        "sup3" => '³',
        "frac12" => '½',
        "plusmn" => '±',
        "micro" => 'µ',
        _ => return None,
    })
}
