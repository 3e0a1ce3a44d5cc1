//! Text clean-up shared by every reader: UTF-8 (lossy, with a warning), Unicode NFC,
//! control characters removed, whitespace normalized; and a bounded line reader so a
//! huge text file is never held in memory whole.

use std::io::BufRead;

use unicode_normalization::UnicodeNormalization;

/// `bytes` as text; invalid UTF-8 sequences become U+FFFD and the second value is true.
pub fn decode_lossy(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    }
}

/// One line cleaned: NFC, control and format characters removed (tabs become spaces),
/// runs of spaces collapsed, ends trimmed.
pub fn clean_line(line: &str) -> String {
    if line.is_ascii() {
        return clean_ascii_line(line.as_bytes());
    }
    let mut out = String::with_capacity(line.len());
    let mut space = false;
    for c in line.nfc() {
        let c = match c {
            '\t' | '\u{A0}' | '\u{2007}' | '\u{202F}' | '\u{3000}' => ' ',
            c if c.is_whitespace() => ' ',
            '\u{FEFF}' | '\u{200B}' | '\u{00AD}' => continue,
            c if c.is_control() => continue,
            c => c,
        };
        if c == ' ' {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// [`clean_line`] for ASCII text, which NFC leaves as it is: whitespace (tab, line
/// and form feeds, carriage return, space) is a space, other control characters go.
fn clean_ascii_line(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut space = false;
    for &b in line {
        match b {
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => {
                space = !out.is_empty();
                continue;
            }
            0..=0x1F | 0x7F => continue,
            _ => {}
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(char::from(b));
    }
    out
}

/// Multi-line text cleaned: every line as [`clean_line`], line breaks normalized to `\n`,
/// at most one blank line in a row, no blank lines at either end.
pub fn clean_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = false;
    for line in text.split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{0B}', '\u{0C}']) {
        let line = clean_line(line);
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank { "\n\n" } else { "\n" });
        }
        blank = false;
        out.push_str(&line);
    }
    out
}

/// Reads lines of at most `max` bytes: a longer line is cut (at a space where
/// possible, never inside a UTF-8 sequence) and continues as the next line.
pub struct LineReader<R> {
    inner: R,
    max: usize,
    carry: Vec<u8>,
    /// Bytes consumed from the input so far (for error offsets).
    pub offset: u64,
    /// Line number of the last line returned (1-based; the pieces of a cut line keep its number).
    pub line: usize,
    pending_cut: bool,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max: usize) -> LineReader<R> {
        LineReader {
            inner,
            max: max.max(16),
            carry: Vec::new(),
            offset: 0,
            line: 0,
            pending_cut: false,
        }
    }

    /// [`Self::next_line`] with a read failure reported against `file` and its offset.
    pub fn next_line_of(&mut self, file: &str, buf: &mut Vec<u8>) -> Result<Option<bool>, crate::data::DataError> {
        self.next_line(buf).map_err(|e| crate::data::DataError::Io {
            file: file.to_string(),
            offset: self.offset,
            reason: e.to_string(),
        })
    }

    /// The next line without its `\n` (and `\r`) into `buf`, or `None` at the end. The
    /// flag is true when the line was cut because it was longer than the limit.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
        buf.clear();
        buf.append(&mut self.carry);
        if !self.pending_cut {
            self.line += 1;
        }
        self.pending_cut = false;
        loop {
            let available = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(if buf.is_empty() { None } else { Some(false) });
            }
            let room = self.max.saturating_sub(buf.len());
            let take = available.len().min(room);
            if let Some(pos) = available[..take].iter().position(|&b| b == b'\n') {
                buf.extend_from_slice(&available[..pos]);
                self.inner.consume(pos + 1);
                self.offset += pos as u64 + 1;
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
                return Ok(Some(false));
            }
            buf.extend_from_slice(&available[..take]);
            self.inner.consume(take);
            self.offset += take as u64;
            if buf.len() >= self.max {
                let keep = cut_point(buf);
                self.carry = buf.split_off(keep);
                self.pending_cut = true;
                return Ok(Some(true));
            }
        }
    }
}

/// Where to cut an over-long line: after its last space in the second half, else at
/// the last UTF-8 character boundary. Always at least 1.
fn cut_point(buf: &[u8]) -> usize {
    let half = buf.len() / 2;
    if let Some(pos) = buf[half..].iter().rposition(|&b| b == b' ') {
        return half + pos + 1;
    }
    let mut end = buf.len();
    while end > 1 && end + 4 > buf.len() && (buf[end - 1] & 0xC0) == 0x80 {
        end -= 1;
    }
    // `end - 1` is now a lead byte (or ASCII): cut before it unless it is ASCII.
    if end > 1 && buf[end - 1] >= 0xC0 {
        end -= 1;
    }
    end.max(1)
}
