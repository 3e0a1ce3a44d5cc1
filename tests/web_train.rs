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
