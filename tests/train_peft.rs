//! The trainer against PyTorch + PEFT (fixtures/lora, made by
//! scripts/fixtures/make_lora.py from the tiny GGUF models): whole-model LoRA
//! gradients of one batch, and a 50-step AdamW run with clipping and a cosine
//! schedule, for a tiny llama (Q/K permuted between the two spaces) and a tiny qwen2
//! (biases, rsLoRA). tests/web_train.rs runs the same checks in the browser.

mod lora_reference;
mod reference;

use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::Model;
use lora_reference::{check_curve, check_gradients, LoraFixture, PeftFiles};
use reference::root;

struct Files {
    json: String,
    grad: (Vec<u8>, String),
    grads: Vec<u8>,
    init: (Vec<u8>, String),
    last: (Vec<u8>, String),
}

fn files(name: &str) -> Files {
    let dir = root().join("fixtures/lora").join(name);
    let peft = |sub: &str| {
        let d = dir.join(sub);
        (std::fs::read(d.join("adapter_model.safetensors")).unwrap(), std::fs::read_to_string(d.join("adapter_config.json")).unwrap())
    };
    Files {
        json: std::fs::read_to_string(dir.join("reference.json")).unwrap(),
        grad: peft("grad"),
        grads: std::fs::read(dir.join("grad/grads.safetensors")).unwrap(),
        init: peft("curve/init"),
        last: peft("curve/final"),
    }
}

fn fixture<'a>(name: &'a str, f: &'a Files) -> LoraFixture<'a> {
    let peft = |(s, c): &'a (Vec<u8>, String)| PeftFiles { safetensors: s, config: c };
    LoraFixture {
        name,
        json: serde_json::from_str(&f.json).unwrap(),
        grad_adapter: peft(&f.grad),
        grads: &f.grads,
        curve_init: peft(&f.init),
        curve_final: peft(&f.last),
    }
}

async fn load(name: &str) -> (Gpu, Model) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let file = MappedFile::open(&root().join("fixtures/tiny").join(format!("{name}.gguf"))).unwrap();
    let model = Model::load(&gpu, &file).await.unwrap();
    (gpu, model)
}

async fn gradients(name: &str) {
    let (gpu, model) = load(name).await;
    let f = files(name);
    let worst = check_gradients(&gpu, &model, &fixture(name, &f)).await;
    eprintln!("{name}: worst gradient relative error {worst:.2e}");
}

async fn curve(name: &str) {
    let (gpu, model) = load(name).await;
    let f = files(name);
    let worst = check_curve(&gpu, &model, &fixture(name, &f), usize::MAX).await;
    eprintln!("{name}: 50 steps, worst per-step relative loss difference to PyTorch {worst:.2e}");
}

#[test]
fn llama_gradients_match_peft() {
    pollster::block_on(gradients("tiny-llama"));
}

#[test]
fn qwen2_gradients_match_peft() {
    pollster::block_on(gradients("tiny-qwen2"));
}

#[test]
fn llama_loss_curve_matches_peft() {
    pollster::block_on(curve("tiny-llama"));
}

#[test]
fn qwen2_loss_curve_matches_peft() {
    pollster::block_on(curve("tiny-qwen2"));
}
