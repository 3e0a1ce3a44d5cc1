//! Streaming detokenization: text comes out as soon as it is complete UTF-8, so a
//! character split over several byte-level tokens (emoji, CJK) is never cut in half.

use super::{Tokenizer, TokenizerError};

/// Turns generated ids into text one id at a time. The concatenation of everything
/// [`push`](Self::push) and [`finish`](Self::finish) return equals
/// [`Tokenizer::decode`] of all the ids.
#[derive(Debug, Clone)]
pub struct StreamDecoder {
    tokenizer: Tokenizer,
    /// Bytes of an incomplete UTF-8 sequence at the end (at most 3).
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new(tokenizer: &Tokenizer) -> StreamDecoder {
        StreamDecoder {
            tokenizer: tokenizer.clone(),
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.tokenizer.append_token_bytes(id, &mut self.pending)?;
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe slice: `valid_up_to` bytes are valid UTF-8.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // A sequence that may still be completed by the next token.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // Bytes that can never be valid: one U+FFFD, as `from_utf8_lossy` does.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Ends the stream: whatever incomplete sequence is left, as U+FFFD.
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        Some(out)
    }
}
