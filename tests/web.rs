//! The engine's GPU runtime under WebGPU, in headless Chromium (SwiftShader):
//! `cargo test --target wasm32-unknown-unknown --test web` (scripts/test.sh sets up
//! the browser; see .cargo/config.toml and webdriver.json). Mirrors gpu_runtime.rs.
//! A test that gets no adapter fails: it never skips.
#![cfg(target_arch = "wasm32")]

use classtune::gpu::{batch::grid, Gpu, GpuError, GpuOptions, Kernel};
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

fn web_sys_log(message: &str) {
    wasm_bindgen_test::console_log!("{message}");
}
