//! The engine under WebGPU, in headless Chromium (SwiftShader):
//! `cargo test --target wasm32-unknown-unknown --test web` (scripts/test.sh sets up
//! the browser; see .cargo/config.toml and webdriver.json). The GPU runtime (as
//! gpu_runtime.rs natively), and the tiny models' logits against the PyTorch
//! references (as model.rs natively). A test that gets no adapter fails: it never skips.
#![cfg(target_arch = "wasm32")]

use classtune::gpu::{batch::grid, Gpu, GpuError, GpuOptions, Kernel};
use classtune::model::{KvCache, Model};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

const SCALE: &str = r#"
struct Params { n: u32, factor: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    if (i < p.n) { y[i] = x[i] * p.factor; }
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    factor: f32,
}

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
    if let Err(e) = run_scale(&gpu).await {
        panic!("{e}");
    }
}

async fn run_scale(gpu: &Gpu) -> Result<(), GpuError> {
    let n = 70_000u32; // 1094 workgroups, and not a multiple of the workgroup size
    let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let xb = gpu.upload("x", bytemuck::cast_slice(&x))?;
    let yb = gpu.buffer("y", 4 * n as u64)?;
    let zb = gpu.scratch("z", 4 * n as u64)?;
    let pipeline = gpu.pipeline(&Kernel::new("test", SCALE, "scale")).await?;
    let mut batch = gpu.batch();
    batch.dispatch(&pipeline, &Params { n, factor: 3.0 }, &[(&xb).into(), (&yb).into()], grid(n.div_ceil(64)))?;
    batch.copy(&yb, 0, &zb, 0, 4 * n as u64)?;
    batch.dispatch(&pipeline, &Params { n, factor: 2.0 }, &[(&yb).into(), (&zb).into()], grid(n.div_ceil(64)))?;
    batch.submit()?;
    let z = gpu.read_f32_prefix(&zb, n as usize).await?;
    for (i, v) in z.iter().enumerate() {
        assert_eq!(*v, x[i] * 6.0, "index {i}");
    }
    // A second, offset readback: the async map path works more than once.
    let tail = gpu.read(&zb, 4 * (n as u64 - 4), 16).await?;
    let tail: Vec<f32> = bytemuck::pod_collect_to_vec(&tail);
    assert_eq!(tail, x[n as usize - 4..].iter().map(|v| v * 6.0).collect::<Vec<_>>());
    gpu.finish().await
}

#[wasm_bindgen_test]
async fn shader_error_is_an_error() {
    let gpu = open().await;
    let broken = Kernel::new("broken", "fn main( {", "main");
    match gpu.pipeline(&broken).await {
        Err(GpuError::Shader { kernel, .. }) => assert!(kernel.contains("broken")),
        other => panic!("expected a shader error, got {other:?}"),
    }
    let too_big = gpu.buffer("huge", 300 << 20);
    assert!(matches!(too_big, Err(GpuError::TooLarge { .. })), "{too_big:?}");
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
