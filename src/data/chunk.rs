//! Raw text → token windows for continued pre-training on the course text.
//!
//! Blocks (headings, paragraphs) are tokenized one by one and packed into windows of at
//! most `seq_len` tokens. A window is cut between paragraphs where possible, and before
//! a heading once it is at least half full; a paragraph longer than a window is cut
//! between tokens. Consecutive windows of the same section share up to `overlap` tokens
//! (whole trailing paragraphs when they fit, else the last tokens). Every window starts
//! with a context line — document title and heading path, `notes.md › Water › Evaporation`
//! — which the model reads but is not trained on (mask 0); the body is trained on.

use super::examples::{Example, ExampleKind};
use super::readers::Block;
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Tokens per window, context line included.
    pub seq_len: usize,
    /// Tokens shared by consecutive windows of one section.
    pub overlap: usize,
}

/// One tokenized block inside a window.
#[derive(Debug, Clone)]
struct Piece {
    ids: Vec<u32>,
    /// Continues the previous piece (the next slice of a cut paragraph): no separator.
    glue: bool,
}

/// Packs the blocks of one document into windows.
pub struct Chunker<'t> {
    tok: &'t Tokenizer,
    opts: ChunkOptions,
    source: String,
    title: String,
    headings: Vec<(u8, String)>,
    sep: Vec<u32>,
    /// Context ids of the window being filled.
    context: Vec<u32>,
    /// The headings or page changed since `context` and `location` were made: most
    /// windows reuse them rather than tokenize the same context line again.
    context_stale: bool,
    /// Bytes of the token ids decoded so far, for the windows' text (see `decode`).
    decoded: Vec<u8>,
    /// Per token id: (start, length) in `decoded`; length `u32::MAX` when not decoded yet.
    decoded_spans: Vec<(u32, u32)>,
    pieces: Vec<Piece>,
    /// The window holds at least one paragraph (not only headings or overlap).
    has_new_text: bool,
    /// Pieces at the start of the window carried over from the previous one.
    carried: usize,
    location: String,
    page: Option<u32>,
    /// Paragraphs cut between tokens because they were longer than a window.
    pub hard_cuts: usize,
}

impl<'t> Chunker<'t> {
    pub fn new(tok: &'t Tokenizer, opts: ChunkOptions, source: &str) -> Result<Chunker<'t>, TokenizerError> {
        let title = source.rsplit(['/', '\\']).next().unwrap_or(source).to_string();
        let sep = tok.encode("\n\n", false)?;
        let opts = ChunkOptions {
            seq_len: opts.seq_len.max(16),
            overlap: opts.overlap.min(opts.seq_len / 2),
        };
        let mut c = Chunker {
            tok,
            opts,
            source: source.to_string(),
            title,
            headings: Vec::new(),
            sep,
            context: Vec::new(),
            context_stale: true,
            decoded: Vec::new(),
            decoded_spans: Vec::new(),
            pieces: Vec::new(),
            has_new_text: false,
            carried: 0,
            location: String::new(),
            page: None,
            hard_cuts: 0,
        };
        c.start_window()?;
        Ok(c)
    }

    /// The context line for the current heading path.
    pub fn context_line(&self) -> String {
        let mut line = self.title.clone();
        for (_, h) in &self.headings {
            line.push_str(" › ");
            line.push_str(h);
        }
        line.push_str("\n\n");
        line
    }

    fn start_window(&mut self) -> Result<(), TokenizerError> {
        if !self.context_stale {
            return Ok(());
        }
        let mut ctx = Vec::new();
        if self.tok.add_bos() {
            ctx.extend(self.tok.bos_id());
        }
        ctx.extend(self.tok.encode(&self.context_line(), false)?);
        // A context line may take at most a quarter of the window.
        let cap = self.opts.seq_len / 4;
        if ctx.len() > cap {
            ctx.truncate(cap.saturating_sub(self.sep.len()));
            ctx.extend_from_slice(&self.sep);
        }
        self.context = ctx;
        self.location = match self.page {
            Some(p) => format!("page {p}"),
            None => String::new(),
        };
        if let Some((_, h)) = self.headings.last() {
            if !self.location.is_empty() {
                self.location.push_str(", ");
            }
            self.location.push_str(&format!("section {h:?}"));
        }
        self.context_stale = false;
        Ok(())
    }

    /// The text of `ids` exactly as [`Tokenizer::decode`] writes it, from a table of the
    /// bytes of each token id seen (decoding token by token is most of the cost of a
    /// window otherwise).
    fn decode(&mut self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let i = id as usize;
            let (start, len) = match self.decoded_spans.get(i) {
                Some(&(start, len)) if len != u32::MAX => (start as usize, len as usize),
                _ => {
                    let bytes = self.tok.decode_bytes(&[id])?;
                    let (Ok(start), Ok(len)) = (u32::try_from(self.decoded.len()), u32::try_from(bytes.len())) else {
                        // Cannot happen with real vocabularies; decode directly.
                        out.extend_from_slice(&bytes);
                        continue;
                    };
                    if self.decoded_spans.len() <= i {
                        self.decoded_spans.resize(i + 1, (0, u32::MAX));
                    }
                    self.decoded_spans[i] = (start, len);
                    self.decoded.extend_from_slice(&bytes);
                    (start as usize, len as usize)
                }
            };
            out.extend_from_slice(&self.decoded[start..start + len]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn budget(&self) -> usize {
        self.opts.seq_len.saturating_sub(self.context.len()).max(1)
    }

    fn body_len(&self) -> usize {
        let seps = self.pieces.iter().skip(1).filter(|p| !p.glue).count();
        let sum: usize = self.pieces.iter().map(|p| p.ids.len()).sum();
        sum + self.sep.len() * seps
    }

    /// Adds a block; finished windows go to `out`.
    pub fn push(&mut self, block: &Block, out: &mut Vec<Example>) -> Result<(), TokenizerError> {
        match block {
            Block::Page(p) => {
                self.page = Some(*p);
                self.context_stale = true;
                if self.pieces.is_empty() {
                    self.start_window()?;
                }
            }
            Block::Heading { level, text } => {
                let half = self.body_len() * 2 >= self.budget();
                if half && self.has_new_text {
                    self.flush(out, false)?;
                }
                while self.headings.last().is_some_and(|(l, _)| l >= level) {
                    self.headings.pop();
                }
                self.headings.push((*level, text.clone()));
                self.context_stale = true;
                if self.pieces.is_empty() {
                    self.start_window()?;
                }
                let marks = "#".repeat(usize::from((*level).clamp(1, 6)));
                let ids = self.tok.encode(&format!("{marks} {text}"), false)?;
                self.add(ids, out, false)?;
            }
            Block::Paragraph(text) => {
                let ids = self.tok.encode(text, false)?;
                self.add(ids, out, true)?;
            }
        }
        Ok(())
    }

    fn add(&mut self, ids: Vec<u32>, out: &mut Vec<Example>, text: bool) -> Result<(), TokenizerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sep = if self.pieces.is_empty() { 0 } else { self.sep.len() };
        if self.body_len() + sep + ids.len() <= self.budget() {
            self.pieces.push(Piece { ids, glue: false });
            self.has_new_text |= text;
            return Ok(());
        }
        if !self.pieces.is_empty() && !self.has_new_text {
            // Only carried overlap (and headings) and the paragraph does not fit beside
            // it: drop the overlap rather than cut the paragraph.
            let carried = self.carried.min(self.pieces.len());
            self.pieces.drain(..carried);
            self.carried = 0;
            if let Some(first) = self.pieces.first_mut() {
                first.glue = false;
            }
            let sep = if self.pieces.is_empty() { 0 } else { self.sep.len() };
            if self.body_len() + sep + ids.len() <= self.budget() {
                self.pieces.push(Piece { ids, glue: false });
                self.has_new_text |= text;
                return Ok(());
            }
        }
        if !self.pieces.is_empty() && self.has_new_text {
            self.flush(out, true)?;
            let sep = if self.pieces.is_empty() { 0 } else { self.sep.len() };
            if self.body_len() + sep + ids.len() <= self.budget() {
                self.pieces.push(Piece { ids, glue: false });
                self.has_new_text |= text;
                return Ok(());
            }
        }
        // Longer than what is left of a window: fill windows with slices of it.
        self.hard_cuts += 1;
        let mut rest = &ids[..];
        let mut glue = false;
        while !rest.is_empty() {
            let sep = if self.pieces.is_empty() || glue { 0 } else { self.sep.len() };
            let room = self.budget().saturating_sub(self.body_len() + sep);
            if room == 0 {
                self.flush(out, true)?;
                if self.budget() <= self.body_len() + self.sep.len() {
                    self.pieces.clear(); // overlap too large for the context: drop it
                }
                continue;
            }
            let take = room.min(rest.len());
            self.pieces.push(Piece {
                ids: rest[..take].to_vec(),
                glue: glue && !self.pieces.is_empty(),
            });
            glue = true;
            self.has_new_text |= text;
            rest = &rest[take..];
            if !rest.is_empty() {
                self.flush(out, true)?;
            }
        }
        Ok(())
    }

    /// Emits the current window; with `overlap`, its tail starts the next one.
    fn flush(&mut self, out: &mut Vec<Example>, overlap: bool) -> Result<(), TokenizerError> {
        if !self.has_new_text {
            self.pieces.clear();
            self.carried = 0;
            self.start_window()?;
            return Ok(());
        }
        let mut input_ids = self.context.clone();
        let mut loss_mask = vec![0u8; input_ids.len()];
        for (i, p) in self.pieces.iter().enumerate() {
            if i > 0 && !p.glue {
                input_ids.extend_from_slice(&self.sep);
            }
            input_ids.extend_from_slice(&p.ids);
        }
        loss_mask.resize(input_ids.len(), 1);
        let text = self.decode(&input_ids)?;
        out.push(Example {
            kind: ExampleKind::Text,
            source: self.source.clone(),
            location: self.location.clone(),
            messages: Vec::new(),
            text,
            input_ids,
            loss_mask,
            truncated: false,
            edited: None,
        });
        let carried = if overlap { self.tail() } else { Vec::new() };
        self.carried = carried.len();
        self.pieces = carried;
        self.has_new_text = false;
        self.start_window()?;
        Ok(())
    }

    /// Trailing pieces that fit in `overlap` tokens (never all of them), or the last
    /// `overlap` tokens of the last piece.
    fn tail(&self) -> Vec<Piece> {
        let n = self.opts.overlap;
        if n == 0 || self.pieces.is_empty() {
            return Vec::new();
        }
        let mut total = 0;
        let mut start = self.pieces.len();
        while start > 1 {
            let add = self.pieces[start - 1].ids.len() + if total > 0 && !self.pieces[start].glue { self.sep.len() } else { 0 };
            if total + add > n {
                break;
            }
            total += add;
            start -= 1;
        }
        if start < self.pieces.len() {
            let mut tail = self.pieces[start..].to_vec();
            tail[0].glue = false;
            return tail;
        }
        let last = &self.pieces[self.pieces.len() - 1].ids;
        let from = last.len().saturating_sub(n);
        vec![Piece {
            ids: last[from..].to_vec(),
            glue: false,
        }]
    }

    /// Emits the last window.
    pub fn finish(&mut self, out: &mut Vec<Example>) -> Result<(), TokenizerError> {
        self.flush(out, false)
    }
}
