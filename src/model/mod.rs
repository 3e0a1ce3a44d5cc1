//! The transformer graph on our kernels: configuration from GGUF metadata, weights kept
//! quantized on the GPU, the forward pass with a KV cache, and token generation.

mod config;
mod forward;
mod generate;
mod lora;
mod weights;

pub use config::{Arch, Config};
pub use forward::KvCache;
pub use generate::{GenerateOptions, Generator, StopReason};
pub use lora::{adapter_from_flat, LoraWeights};
pub use weights::Model;

use crate::gguf::GgufError;
use crate::gpu::GpuError;

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error("architecture `{arch}` is not supported (supported: llama, qwen2)")]
    UnsupportedArch { arch: String },
    #[error("tensor `{name}` has shape {found:?}, expected {expected}")]
    Shape { name: String, expected: String, found: Vec<u64> },
    #[error("unsupported model configuration: {0}")]
    BadConfig(String),
    #[error("{tokens} tokens do not fit the {capacity}-token context (already holding {used})")]
    ContextFull { tokens: usize, used: usize, capacity: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("nothing to run: the input has no tokens")]
    Empty,
}

impl ModelError {
    fn shape(name: &str, expected: &str, found: &[u64]) -> Self {
        ModelError::Shape { name: name.to_string(), expected: expected.to_string(), found: found.to_vec() }
    }
}
