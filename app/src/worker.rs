//! The engine worker: owns the [`Gpu`] and answers [`ToWorker`] requests.
//!
//! Requests are handled one at a time in arrival order on the worker's event loop;
//! GPU work is async (readback through `map_async`), so nothing here blocks.
//! Model loading and generation are the next requests to wire in (`handle`).

use std::cell::RefCell;
use std::rc::Rc;

use classtune::gpu::{batch::grid, Gpu, GpuError, GpuOptions, Kernel};
use wasm_bindgen::prelude::*;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent};

use crate::protocol::{FromWorker, GpuLimits, GpuReport, ToWorker};

/// Scales a vector; the worker runs it once to prove dispatch and readback work.
const SELF_TEST: &str = r#"
struct Params { n: u32, factor: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn self_test(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = group_index(wid, nwg) * 64u + lid;
    if (i < p.n) { y[i] = x[i] * p.factor; }
}
"#;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SelfTestParams {
    n: u32,
    factor: f32,
}

struct EngineWorker {
    scope: DedicatedWorkerGlobalScope,
    gpu: RefCell<Option<Rc<Gpu>>>,
}

/// Installs the message handler and announces [`FromWorker::Ready`].
pub fn start() {
    let scope: DedicatedWorkerGlobalScope = js_sys::global().unchecked_into();
    let worker = Rc::new(EngineWorker { scope: scope.clone(), gpu: RefCell::new(None) });
    let handler_worker = worker.clone();
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let worker = handler_worker.clone();
        let text = event.data().as_string().unwrap_or_default();
        wasm_bindgen_futures::spawn_local(async move { worker.handle(&text).await });
    });
    scope.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    worker.post(&FromWorker::Ready);
}

impl EngineWorker {
    fn post(&self, reply: &FromWorker) {
        if let Err(e) = self.scope.post_message(&JsValue::from_str(&reply.encode())) {
            web_sys::console::error_2(&"worker: posting a reply failed".into(), &e);
        }
    }

    async fn handle(&self, text: &str) {
        let request = match ToWorker::decode(text) {
            Ok(request) => request,
            Err(e) => {
                self.post(&FromWorker::Error { request: "decode".into(), message: e.to_string() });
                return;
            }
        };
        match request {
            ToWorker::Probe => self.probe().await,
            // Extension point: load the GGUF (`ModelSource`) into the engine and reply
            // `ModelLoaded`; stream `Token`s then `Done` for `Generate`.
            other @ (ToWorker::LoadModel { .. } | ToWorker::Generate { .. } | ToWorker::Cancel { .. }) => {
                self.post(&FromWorker::Error {
                    request: other.name().into(),
                    message: "not available yet: the model API is not wired into the worker".into(),
                })
            }
        }
    }

    /// The device, opened on first use and kept for the worker's lifetime.
    async fn gpu(&self) -> Result<Rc<Gpu>, GpuError> {
        let existing = self.gpu.borrow().clone();
        if let Some(gpu) = existing {
            return Ok(gpu);
        }
        let gpu = Rc::new(Gpu::new(GpuOptions::default()).await?);
        *self.gpu.borrow_mut() = Some(gpu.clone());
        Ok(gpu)
    }

    async fn probe(&self) {
        let gpu = match self.gpu().await {
            Ok(gpu) => gpu,
            Err(e) => {
                self.post(&FromWorker::GpuUnavailable { message: e.to_string() });
                return;
            }
        };
        let self_test = match self_test(&gpu).await {
            Ok(()) => true,
            Err(e) => {
                self.post(&FromWorker::Error { request: "probe".into(), message: format!("GPU self-test: {e}") });
                false
            }
        };
        let limits = gpu.limits();
        let (vendor, architecture) = browser_adapter_info().await.unwrap_or_default();
        self.post(&FromWorker::Gpu(GpuReport {
            description: gpu.describe(),
            vendor,
            architecture,
            // wgpu maps WebGPU's `isFallbackAdapter` to a CPU device type.
            software: format!("{:?}", gpu.info().device_type) == "Cpu",
            subgroups: gpu.has_subgroups(),
            limits: GpuLimits {
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_buffer_size: limits.max_buffer_size,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            },
            self_test,
        }));
    }
}

/// `vendor` and `architecture` of the browser's own `GPUAdapterInfo`, which wgpu does
/// not map. A second `requestAdapter()` is cheap and leaves the engine's device alone.
async fn browser_adapter_info() -> Option<(String, String)> {
    let get = |target: &JsValue, key: &str| js_sys::Reflect::get(target, &key.into()).ok();
    let gpu = get(&get(&js_sys::global(), "navigator")?, "gpu")?;
    let request: js_sys::Function = get(&gpu, "requestAdapter")?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = wasm_bindgen_futures::JsFuture::from(promise).await.ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return None;
    }
    let info = get(&adapter, "info")?;
    let text = |key: &str| get(&info, key).and_then(|v| v.as_string()).unwrap_or_default();
    Some((text("vendor"), text("architecture")))
}

/// One dispatch and readback of 1000 values through the engine's runtime.
async fn self_test(gpu: &Gpu) -> Result<(), GpuError> {
    let n = 1000u32;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let xb = gpu.upload("self_test.x", bytemuck::cast_slice(&x))?;
    let yb = gpu.scratch("self_test.y", 4 * n as u64)?;
    let pipeline = gpu.pipeline(&Kernel::new("self_test", SELF_TEST, "self_test")).await?;
    let mut batch = gpu.batch();
    batch.dispatch(&pipeline, &SelfTestParams { n, factor: 2.0 }, &[(&xb).into(), (&yb).into()], grid(n.div_ceil(64)))?;
    batch.submit()?;
    let y = gpu.read_f32_prefix(&yb, n as usize).await?;
    match y.iter().enumerate().find(|(i, v)| **v != 2.0 * *i as f32) {
        None => Ok(()),
        Some((i, v)) => Err(GpuError::Validation(format!("self-test value {i} is {v}, expected {}", 2 * i))),
    }
}
