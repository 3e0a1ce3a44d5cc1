//! Text ↔ token ids, built from a GGUF's `tokenizer.ggml.*` metadata the way llama.cpp
//! reads it (`src/llama-vocab.cpp`).
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers in
//! [`PreType`]. Encoding runs on the `tokenizers` crate (same `fancy-regex` engine natively
//! and in wasm32); decoding maps ids back to bytes ourselves, so it also works id by id
//! ([`StreamDecoder`]).
//!
//! Token types (`tokenizer.ggml.token_type`): control tokens (3, e.g. `<|im_start|>`) are
//! matched in the text only when `encode(.., special = true)`; user-defined tokens (4) are
//! always matched whole, as llama.cpp does. Both decode to their own text.

pub mod byte_level;
mod pre;
mod stream;

use std::sync::Arc;

use tokenizers::models::bpe::{BpeTrainer, Vocab, BPE};
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, TokenizerImpl,
};

use crate::gguf::{Gguf, GgufError};

pub use pre::PreType;
pub use stream::StreamDecoder;

/// Errors building a tokenizer from GGUF metadata, or using it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("the model has no tokenizer: metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("bad tokenizer metadata: {0}")]
    Metadata(GgufError),
    #[error(
        "unsupported tokenizer model `{model}` (tokenizer.ggml.model); supported: `gpt2` (byte-level BPE) \
         — SentencePiece (`llama`) vocabularies are not supported yet"
    )]
    UnsupportedModel { model: String },
    #[error("unsupported pre-tokenizer `{pre}` (tokenizer.ggml.pre); supported: {supported}")]
    UnsupportedPre { pre: String, supported: String },
    #[error("`{key}` has {found} entries but there are {expected} tokens")]
    LengthMismatch {
        key: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("token {id} has invalid type {value} in tokenizer.ggml.token_type (expected 0 to 6)")]
    BadTokenType { id: usize, value: i64 },
    #[error("merge {index} `{merge}` in tokenizer.ggml.merges is invalid: {why}")]
    BadMerge {
        index: usize,
        merge: String,
        why: String,
    },
    #[error("`{key}` = {id} is outside the {vocab_size}-token vocabulary")]
    BadSpecialId {
        key: &'static str,
        id: u32,
        vocab_size: usize,
    },
    #[error("tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing")]
    AddBosWithoutBos,
    #[error("token id {id} is outside the {vocab_size}-token vocabulary")]
    IdOutOfRange { id: u32, vocab_size: usize },
    #[error("building the tokenizer failed: {0}")]
    Build(String),
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl From<GgufError> for TokenizerError {
    fn from(e: GgufError) -> Self {
        match e {
            GgufError::MissingKey { key } => TokenizerError::MissingKey { key },
            other => TokenizerError::Metadata(other),
        }
    }
}

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_value(id: usize, value: i64) -> Result<TokenKind, TokenizerError> {
        Ok(match value {
            0 | 1 => TokenKind::Normal, // 0 is llama.cpp's "undefined", read as normal
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => return Err(TokenizerError::BadTokenType { id, value }),
        })
    }
    /// Written as raw text rather than in the byte-level alphabet.
    fn is_raw_text(self) -> bool {
        matches!(
            self,
            TokenKind::Unknown | TokenKind::Control | TokenKind::UserDefined
        )
    }
}

/// A BPE model shared by the two encoders (special tokens parsed or not), so the
/// vocabulary and merges are held once.
#[derive(Clone)]
struct SharedBpe(Arc<BPE>);

impl Model for SharedBpe {
    type Trainer = BpeTrainer;
    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<tokenizers::Token>> {
        self.0.tokenize(sequence)
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }
    fn id_to_token(&self, id: u32) -> Option<String> {
        self.0.id_to_token(id)
    }
    fn get_vocab(&self) -> std::collections::HashMap<String, u32> {
        self.0.get_vocab()
    }
    fn get_vocab_size(&self) -> usize {
        self.0.get_vocab_size()
    }
    fn save(
        &self,
        folder: &std::path::Path,
        prefix: Option<&str>,
    ) -> tokenizers::Result<Vec<std::path::PathBuf>> {
        self.0.save(folder, prefix)
    }
    fn get_trainer(&self) -> BpeTrainer {
        self.0.get_trainer()
    }
}

type Encoder = TokenizerImpl<
    SharedBpe,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

struct Inner {
    /// Control tokens in the text are parsed as such.
    special: Encoder,
    /// Control tokens in the text are plain text.
    plain: Encoder,
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    pre: PreType,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
}

/// A byte-level BPE tokenizer read from GGUF metadata. Cheap to clone (shared).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("pre", &self.inner.pre)
            .field("bos", &self.inner.bos)
            .field("eos", &self.inner.eos)
            .field("add_bos", &self.inner.add_bos)
            .finish_non_exhaustive()
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";

impl Tokenizer {
    /// Builds the tokenizer a GGUF header describes.
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer, TokenizerError> {
        let model = gguf.get_str(KEY_MODEL)?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel {
                model: model.to_string(),
            });
        }
        let tokens: Vec<String> = gguf
            .get_strings(KEY_TOKENS)?
            .into_iter()
            .map(str::to_string)
            .collect();
        let n = tokens.len();
        let kinds = match gguf.get(KEY_TYPES) {
            None => vec![TokenKind::Normal; n],
            Some(_) => {
                let values = gguf.get_array(KEY_TYPES)?;
                if values.len() != n {
                    return Err(TokenizerError::LengthMismatch {
                        key: KEY_TYPES,
                        found: values.len(),
                        expected: n,
                    });
                }
                values
                    .iter()
                    .enumerate()
                    .map(|(id, v)| match v.as_i64() {
                        Some(x) => TokenKind::from_value(id, x),
                        None => Err(TokenizerError::Metadata(GgufError::WrongType {
                            key: KEY_TYPES.to_string(),
                            expected: "an array of integers",
                            found: v.type_name(),
                        })),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let merges = gguf.get_strings(KEY_MERGES)?;
        let pre = match gguf.get(KEY_PRE) {
            Some(_) => PreType::from_name(gguf.get_str(KEY_PRE)?)?,
            None => {
                log::warn!("{KEY_PRE} is missing: using llama.cpp's `default` pre-tokenizer (quality may suffer)");
                PreType::Default
            }
        };
        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            if gguf.get(key).is_none() {
                return Ok(None);
            }
            let id = gguf.get_u32(key)?;
            if id as usize >= n {
                return Err(TokenizerError::BadSpecialId {
                    key,
                    id,
                    vocab_size: n,
                });
            }
            Ok(Some(id))
        };
        let (bos, eos, pad) = (id(KEY_BOS)?, id(KEY_EOS)?, id(KEY_PAD)?);
        let add_bos = match gguf.get(KEY_ADD_BOS) {
            Some(_) => gguf.get_bool(KEY_ADD_BOS)?,
            None => pre.default_add_bos(),
        };
        if add_bos && bos.is_none() {
            return Err(TokenizerError::AddBosWithoutBos);
        }
        Tokenizer::build(tokens, kinds, &merges, pre, bos, eos, pad, add_bos)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        merges: &[&str],
        pre: PreType,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
        add_bos: bool,
    ) -> Result<Tokenizer, TokenizerError> {
        // Later duplicates win, as in llama.cpp's token_to_id.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, merge)| parse_merge(index, merge, &vocab))
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(pre.ignore_merges())
            .build()
            .map_err(|e| TokenizerError::Build(format!("BPE model: {e}")))?;
        let bpe = SharedBpe(Arc::new(bpe));

        let mut special = Encoder::new(bpe);
        special.with_pre_tokenizer(Some(pre.build()?));
        special.with_decoder(Some(DecoderWrapper::ByteLevel(
            tokenizers::pre_tokenizers::byte_level::ByteLevel::default(),
        )));
        let added = |want: fn(TokenKind) -> bool, is_special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&kinds)
                .filter(|(t, k)| want(**k) && !t.is_empty())
                .map(|(t, _)| AddedToken::from(t.clone(), is_special).normalized(false))
                .collect()
        };
        special
            .add_special_tokens(added(
                |k| matches!(k, TokenKind::Control | TokenKind::Unknown),
                true,
            ))
            .map_err(|e| TokenizerError::Build(format!("control tokens: {e}")))?;
        special
            .add_tokens(added(|k| k == TokenKind::UserDefined, false))
            .map_err(|e| TokenizerError::Build(format!("user-defined tokens: {e}")))?;
        let mut plain = special.clone();
        plain.set_encode_special_tokens(true);

        Ok(Tokenizer {
            inner: Arc::new(Inner {
                special,
                plain,
                tokens,
                kinds,
                pre,
                bos,
                eos,
                pad,
                add_bos,
            }),
        })
    }

    /// Token ids for `text`. With `special`, control tokens written in the text
    /// (`<|im_start|>`) become their ids; without, they are encoded as plain text.
    /// Never adds BOS: see [`Self::add_bos`].
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, TokenizerError> {
        let encoder = if special {
            &self.inner.special
        } else {
            &self.inner.plain
        };
        let encoding = encoder
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The raw bytes of `ids`.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            self.append_token_bytes(id, &mut out)?;
        }
        Ok(out)
    }

    pub(crate) fn append_token_bytes(
        &self,
        id: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), TokenizerError> {
        let (token, kind) = self.entry(id)?;
        if kind.is_raw_text() {
            out.extend_from_slice(token.as_bytes());
        } else {
            byte_level::token_bytes(token, out);
        }
        Ok(())
    }

    fn entry(&self, id: u32) -> Result<(&str, TokenKind), TokenizerError> {
        let i = id as usize;
        match (self.inner.tokens.get(i), self.inner.kinds.get(i)) {
            (Some(t), Some(&k)) => Ok((t, k)),
            _ => Err(TokenizerError::IdOutOfRange {
                id,
                vocab_size: self.vocab_size(),
            }),
        }
    }

    /// A streaming decoder over this tokenizer.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new(self)
    }

    /// Number of tokens in the vocabulary (`tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> usize {
        self.inner.tokens.len()
    }
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.bos
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.eos
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.inner.pad
    }
    /// Whether prompts should start with BOS (`tokenizer.ggml.add_bos_token`, else
    /// llama.cpp's default for the pre-tokenizer).
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }
    pub fn pre_type(&self) -> PreType {
        self.inner.pre
    }
    /// The id of a vocabulary entry as the GGUF spells it (`<|im_end|>`, `Ġthe`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.special.token_to_id(token)
    }
    /// The vocabulary entry of `id` as the GGUF spells it.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.inner.tokens.get(id as usize).map(String::as_str)
    }
    pub fn token_kind(&self, id: u32) -> Option<TokenKind> {
        self.inner.kinds.get(id as usize).copied()
    }
    /// Whether `id` is a control token (`<|im_start|>`, `<|endoftext|>`).
    pub fn is_control(&self, id: u32) -> bool {
        self.token_kind(id) == Some(TokenKind::Control)
    }
}

/// "a b" → ("a", "b"), split at the first space after the first byte (llama.cpp).
fn parse_merge(
    index: usize,
    merge: &str,
    vocab: &Vocab,
) -> Result<(String, String), TokenizerError> {
    let bad = |why: String| TokenizerError::BadMerge {
        index,
        merge: merge.to_string(),
        why,
    };
    let pos = merge
        .char_indices()
        .skip(1)
        .find(|&(_, c)| c == ' ')
        .map(|(i, _)| i)
        .ok_or_else(|| bad("expected two tokens separated by a space".into()))?;
    let (left, right) = (&merge[..pos], &merge[pos + 1..]);
    for part in [left, right, &format!("{left}{right}")] {
        if !vocab.contains_key(part) {
            return Err(bad(format!("`{part}` is not in the vocabulary")));
        }
    }
    Ok((left.to_string(), right.to_string()))
}
