//! ClassTune engine: GGUF models on our own WGSL kernels, natively (wgpu on Vulkan)
//! and in the browser (wgpu on WebGPU).
//!
//! Modules by concern: `gguf` (file format, dequantization), `tokenizer` and `chat`
//! (text in and out), `gpu` (device, buffers, pipelines), `kernels` (one module per
//! WGSL file with its CPU reference), `model` (config, weights, forward pass,
//! generation).

pub mod adapter;
pub mod chat;
pub mod data;
pub mod gguf;
pub mod gpu;
pub mod kernels;
pub mod model;
#[cfg(not(target_arch = "wasm32"))]
pub mod paths;
pub mod tokenizer;
pub mod train;
