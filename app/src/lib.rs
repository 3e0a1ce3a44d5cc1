//! The ClassTune web app: a Leptos page (`page`) and a Web Worker (`worker`) that owns
//! the engine, talking through the typed messages in `protocol`.
//!
//! The page holds no GPU or engine types: everything that touches the GPU runs in the
//! worker, so long GPU work never freezes the page.

pub mod chart;
pub mod edits;
pub mod protocol;
pub mod storage;

#[cfg(target_arch = "wasm32")]
pub mod link;
#[cfg(target_arch = "wasm32")]
pub mod page;
#[cfg(target_arch = "wasm32")]
pub mod worker;
