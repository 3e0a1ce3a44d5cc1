//! `tokenizer.ggml.pre`: how text is split into words before BPE, as llama.cpp does it
//! (`llm_tokenizer_bpe` in `src/llama-vocab.cpp`).
//!
//! llama.cpp applies a list of regexes one after the other: each splits every piece the
//! previous one produced, keeping both the matches and the text between them. That is a
//! `tokenizers` `Split(regex, Isolated)` per regex, followed by the byte-level mapping
//! (`ByteLevel` with its own GPT-2 regex turned off).

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use super::TokenizerError;

/// GPT-2's word regex, as llama.cpp writes it (no trailing `|\s+`: the text between
/// matches is kept as its own piece anyway).
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's regex, with llama.cpp's case-insensitive contractions spelled out.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's regex: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer families we support, named after llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreType {
    /// `default` (and a file without `tokenizer.ggml.pre`).
    Default,
    /// `gpt-2` and the vocabularies that reuse GPT-2's regex.
    Gpt2,
    /// `smollm`, `starcoder`, …: every digit on its own, then GPT-2's regex.
    Smollm,
    /// `qwen2`, …
    Qwen2,
    /// `llama3` / `llama-bpe`, …: whole words found in the vocabulary skip the merges.
    Llama3,
}

impl PreType {
    /// The names of `tokenizer.ggml.pre` we accept, with their family.
    pub const NAMES: &'static [(&'static str, PreType)] = &[
        ("default", PreType::Default),
        ("gpt-2", PreType::Gpt2),
        ("phi-2", PreType::Gpt2),
        ("mpt", PreType::Gpt2),
        ("olmo", PreType::Gpt2),
        ("smollm", PreType::Smollm),
        ("starcoder", PreType::Smollm),
        ("refact", PreType::Smollm),
        ("command-r", PreType::Smollm),
        ("codeshell", PreType::Smollm),
        ("qwen2", PreType::Qwen2),
        ("stablelm2", PreType::Qwen2),
        ("deepseek-r1-qwen", PreType::Qwen2),
        ("llama3", PreType::Llama3),
        ("llama-v3", PreType::Llama3),
        ("llama-bpe", PreType::Llama3),
        ("falcon3", PreType::Llama3),
        ("falcon-h1", PreType::Llama3),
        ("pixtral", PreType::Llama3),
    ];

    pub fn from_name(name: &str) -> Result<PreType, TokenizerError> {
        PreType::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, t)| t)
            .ok_or_else(|| TokenizerError::UnsupportedPre {
                pre: name.to_string(),
                supported: PreType::NAMES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// llama.cpp's regexes for this family, applied in order.
    pub fn regexes(self) -> &'static [&'static str] {
        match self {
            PreType::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            PreType::Gpt2 => &[GPT2],
            PreType::Smollm => &[r"\p{N}", GPT2],
            PreType::Qwen2 => &[QWEN2],
            PreType::Llama3 => &[LLAMA3],
        }
    }

    /// Whether a word that is itself a token skips BPE (llama.cpp's `ignore_merges`).
    pub fn ignore_merges(self) -> bool {
        self == PreType::Llama3
    }

    /// llama.cpp's `add_bos` default when the file has no `tokenizer.ggml.add_bos_token`.
    pub fn default_add_bos(self) -> bool {
        self == PreType::Llama3
    }

    /// The `tokenizers` pre-tokenizer: one isolating split per regex, then byte-level.
    pub fn build(self) -> Result<PreTokenizerWrapper, TokenizerError> {
        let mut steps = Vec::new();
        for &regex in self.regexes() {
            let split = Split::new(
                SplitPattern::Regex(regex.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::Build(format!("pre-tokenizer regex `{regex}`: {e}")))?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));
        Ok(PreTokenizerWrapper::Sequence(Sequence::new(steps)))
    }
}
