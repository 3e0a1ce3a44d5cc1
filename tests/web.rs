//! The engine under WebGPU, in headless Chromium (SwiftShader):
//! `cargo test --target wasm32-unknown-unknown --test web` (scripts/test.sh sets up
//! the browser; see .cargo/config.toml and webdriver.json). The GPU runtime (as
//! gpu_runtime.rs natively), and the tiny models' logits against the PyTorch
//! references (as model.rs natively). A test that gets no adapter fails: it never skips.
#![cfg(target_arch = "wasm32")]

mod runtime_checks;

use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::{KvCache, Model};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

async fn open() -> Gpu {
    match Gpu::new(GpuOptions::default()).await {
        Ok(gpu) => gpu,
        Err(e) => panic!("no WebGPU device in this browser (check the flags in webdriver.json): {e}"),
    }
}

#[wasm_bindgen_test]
async fn adapter_is_webgpu_within_default_limits() {
    let gpu = open().await;
    assert_eq!(gpu.info().backend, wgpu::Backend::BrowserWebGpu, "{}", gpu.describe());
    assert!(gpu.limits().max_storage_buffer_binding_size <= 128 << 20);
    assert!(gpu.limits().max_buffer_size <= 256 << 20);
    // SwiftShader: a fallback adapter with an empty name, which describe() fills in.
    assert!(gpu.is_software(), "{}", gpu.describe());
    assert!(!gpu.describe().starts_with(' ') && !gpu.describe().starts_with('('), "{}", gpu.describe());
    web_sys_log(&format!("adapter: {}", gpu.describe()));
}

#[wasm_bindgen_test]
async fn dispatch_copy_and_readback() {
    let gpu = open().await;
    if let Err(e) = runtime_checks::dispatch_copy_and_readback(&gpu).await {
        panic!("{e}");
    }
}

#[wasm_bindgen_test]
async fn shader_error_is_an_error() {
    runtime_checks::errors_are_errors(&open().await).await;
}

/// The native tests' bound for the tiny f32 models (they measure about 5e-5).
const TINY_TOLERANCE: f32 = 1e-3;

/// Every logit of every reference sequence (docs/fixtures.md, `classtune-ref-v1`).
async fn check_tiny(name: &str, gguf: &[u8], reference_json: &str, reference_bin: &[u8]) {
    let gpu = open().await;
    let model = Model::load(&gpu, gguf).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    let reference: serde_json::Value = serde_json::from_str(reference_json).unwrap();
    let vocab = model.config.vocab;
    let (mut positions, mut worst) = (0usize, 0f32);
    for seq in reference["sequences"].as_array().unwrap() {
        let ids: Vec<u32> = seq["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let desc = &seq["logits"];
        assert_eq!(desc["dtype"], "f32");
        let shape: Vec<usize> = desc["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(shape, vec![ids.len(), vocab], "{name} {}", seq["name"]);
        let offset = desc["offset"].as_u64().unwrap() as usize;
        let expected: Vec<f32> = reference_bin[offset..offset + 4 * ids.len() * vocab]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut cache = KvCache::new(&gpu, &model.config, ids.len()).unwrap();
        let ours = model.logits(&gpu, &mut cache, &ids).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.len(), expected.len());
        for (i, (x, y)) in ours.iter().zip(&expected).enumerate() {
            let d = (x - y).abs();
            worst = worst.max(d);
            assert!(d <= TINY_TOLERANCE, "{name} {} position {} token {}: ours {x}, reference {y}", seq["name"], i / vocab, i % vocab);
        }
        positions += ids.len();
    }
    web_sys_log(&format!("{name}: {positions} positions in the browser, max |diff| {worst:.2e} vs PyTorch"));
    assert!(positions >= 256);
}

#[wasm_bindgen_test]
async fn tiny_llama_logits_match_pytorch() {
    check_tiny(
        "tiny-llama",
        include_bytes!("../fixtures/tiny/tiny-llama.gguf"),
        include_str!("../fixtures/tiny/tiny-llama.ref.json"),
        include_bytes!("../fixtures/tiny/tiny-llama.ref.bin"),
    )
    .await;
}

#[wasm_bindgen_test]
async fn tiny_qwen2_logits_match_pytorch() {
    check_tiny(
        "tiny-qwen2",
        include_bytes!("../fixtures/tiny/tiny-qwen2.gguf"),
        include_str!("../fixtures/tiny/tiny-qwen2.ref.json"),
        include_bytes!("../fixtures/tiny/tiny-qwen2.ref.bin"),
    )
    .await;
}

fn web_sys_log(message: &str) {
    wasm_bindgen_test::console_log!("{message}");
}
