//! LoRA training under WebGPU in headless Chromium (SwiftShader: no subgroups, so the
//! portable kernels): the same PyTorch + PEFT checks as tests/train_peft.rs, on the
//! gradients of one batch and the first steps of the AdamW run.
#![cfg(target_arch = "wasm32")]

mod lora_reference;

use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::Model;
use lora_reference::{check_curve, check_gradients, LoraFixture, PeftFiles};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($name:literal) => {
        LoraFixture {
            name: $name,
            json: serde_json::from_str(include_str!(concat!("../fixtures/lora/", $name, "/reference.json"))).unwrap(),
            grad_adapter: PeftFiles {
                safetensors: include_bytes!(concat!("../fixtures/lora/", $name, "/grad/adapter_model.safetensors")),
                config: include_str!(concat!("../fixtures/lora/", $name, "/grad/adapter_config.json")),
            },
            grads: include_bytes!(concat!("../fixtures/lora/", $name, "/grad/grads.safetensors")),
            curve_init: PeftFiles {
                safetensors: include_bytes!(concat!("../fixtures/lora/", $name, "/curve/init/adapter_model.safetensors")),
                config: include_str!(concat!("../fixtures/lora/", $name, "/curve/init/adapter_config.json")),
            },
            curve_final: PeftFiles {
                safetensors: include_bytes!(concat!("../fixtures/lora/", $name, "/curve/final/adapter_model.safetensors")),
                config: include_str!(concat!("../fixtures/lora/", $name, "/curve/final/adapter_config.json")),
            },
        }
    };
}

async fn model(gguf: &[u8]) -> (Gpu, Model) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let model = Model::load(&gpu, gguf).await.unwrap();
    (gpu, model)
}

#[wasm_bindgen_test]
async fn tiny_llama_trains_as_peft_in_the_browser() {
    let (gpu, model) = model(include_bytes!("../fixtures/tiny/tiny-llama.gguf")).await;
    let f = fixture!("tiny-llama");
    let g = check_gradients(&gpu, &model, &f).await;
    let c = check_curve(&gpu, &model, &f, 10).await;
    console_log!("tiny-llama in the browser: gradient error {g:.2e}, 10-step loss difference {c:.2e}");
}

#[wasm_bindgen_test]
async fn tiny_qwen2_trains_as_peft_in_the_browser() {
    let (gpu, model) = model(include_bytes!("../fixtures/tiny/tiny-qwen2.gguf")).await;
    let f = fixture!("tiny-qwen2");
    let g = check_gradients(&gpu, &model, &f).await;
    let c = check_curve(&gpu, &model, &f, 10).await;
    console_log!("tiny-qwen2 in the browser: gradient error {g:.2e}, 10-step loss difference {c:.2e}");
}

/// Every input-gradient kernel under Tint, GPU ones included: SwiftShader is a software
/// adapter, so training there never picks the split kernel that real GPUs in Chrome get.
/// 1000 rows × 20 tokens split into segments, against the CPU reference.
#[wasm_bindgen_test]
async fn every_input_grad_kernel_compiles_and_agrees_in_the_browser() {
    use classtune::gguf::{dequant, GgmlType};
    use classtune::kernels::matmul::{matmul_input_grad_cpu, matmul_input_grad_with, InputGradKernel, Weight};
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let (n, k, tokens) = (1000, 64, 20);
    let wave = |i: usize, m: usize| ((i * m % 1000) as f32 - 500.0) / 2500.0;
    let bytes = dequant::quantize(GgmlType::Q4_1, &(0..n * k).map(|i| wave(i, 7919)).collect::<Vec<_>>()).unwrap();
    let values = dequant::dequantize(GgmlType::Q4_1, &bytes, n * k).unwrap();
    let w = Weight::upload(&gpu, "w", GgmlType::Q4_1, n, k, &bytes).unwrap();
    let dy: Vec<f32> = (0..tokens * n).map(|i| wave(i, 104_729)).collect();
    let dx0: Vec<f32> = (0..tokens * k).map(|i| wave(i, 31)).collect();
    let want = matmul_input_grad_cpu(&dy, n, &values, k, 3..n, tokens, Some(&dx0));
    let dyb = gpu.upload("dy", bytemuck::cast_slice(&dy)).unwrap();
    for kernel in [InputGradKernel::Uniform, InputGradKernel::Storage, InputGradKernel::Split] {
        let dx = gpu.upload("dx", bytemuck::cast_slice(&dx0)).unwrap();
        let mut batch = gpu.batch();
        matmul_input_grad_with(&mut batch, kernel, &dyb, n as u32, &w, 3..n, &dx, tokens as u32, true).await.unwrap();
        batch.submit().unwrap();
        let got = gpu.read_f32_prefix(&dx, tokens * k).await.unwrap();
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / (1.0 + w.abs())).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{kernel:?}: worst relative difference {worst:e}");
    }
}
