//! The trainer against PyTorch + PEFT (fixtures/lora, made by
//! scripts/fixtures/make_lora.py from the tiny GGUF models): whole-model LoRA
//! gradients of one batch, and a 50-step AdamW run with clipping and a cosine
//! schedule, for a tiny llama (Q/K permuted between the two spaces) and a tiny qwen2
//! (biases, rsLoRA).

mod reference;

use std::path::PathBuf;

use classtune::adapter::{from_peft, read_peft_dir, Adapter};
use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::adamw::AdamW;
use classtune::model::{LoraWeights, Model};
use classtune::train::{Decay, OptimizerOptions, Schedule, Sequence, Trainer};
use reference::root;
use serde_json::Value;

/// The bound on gradients.
const GRAD_TOLERANCE: f64 = 1e-3;
/// The bound on the loss curve: 1% at every step.
const CURVE_TOLERANCE: f64 = 1e-2;

struct Fixture {
    dir: PathBuf,
    json: Value,
}

impl Fixture {
    fn open(name: &str) -> Fixture {
        let dir = root().join("fixtures/lora").join(name);
        let json = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        Fixture { dir, json }
    }

    fn sequences(&self, part: &str) -> Vec<(Vec<u32>, Vec<u8>)> {
        self.json[part]["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ids = s["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
                let mask = s["mask"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
                (ids, mask)
            })
            .collect()
    }

    fn floats(&self, path: &[&str]) -> Vec<f64> {
        let mut v = &self.json;
        for key in path {
            v = &v[*key];
        }
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }
}

async fn load(name: &str) -> (Gpu, Model) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let file = MappedFile::open(&root().join("fixtures/tiny").join(format!("{name}.gguf"))).unwrap();
    let model = Model::load(&gpu, &file).await.unwrap();
    (gpu, model)
}

fn as_seqs(data: &[(Vec<u32>, Vec<u8>)]) -> Vec<Sequence<'_>> {
    data.iter().map(|(ids, mask)| Sequence { ids, mask }).collect()
}

/// ‖got − want‖ / ‖want‖ over one tensor, in f64.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

async fn gradients_match(name: &str) {
    let (gpu, model) = load(name).await;
    let f = Fixture::open(name);
    let adapter = read_peft_dir(&f.dir.join("grad"), &model.config).unwrap();
    let config_json = std::fs::read_to_string(f.dir.join("grad/adapter_config.json")).unwrap();
    // The gradients carry PEFT's key names, so the adapter reader brings them into
    // GGUF space (Q/K rows permuted for llama) exactly as it does the weights.
    let grads_bytes = std::fs::read(f.dir.join("grad/grads.safetensors")).unwrap();
    let want: Adapter = from_peft(&grads_bytes, &config_json, &model.config).unwrap();
    let lora = LoraWeights::from_adapter(&gpu, &model.config, &adapter).unwrap();
    let options = OptimizerOptions {
        schedule: Schedule { lr: 0.0, warmup: 0, total: 1, decay: Decay::Constant },
        adamw: AdamW::default(),
        max_grad_norm: 0.0,
        seed: 0,
    };
    let data = f.sequences("grad");
    let longest = data.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let seqs = as_seqs(&data);
    let total: usize = seqs.iter().map(Sequence::targets).sum();
    assert_eq!(total as u64, f.json["grad"]["n_targets"].as_u64().unwrap());
    let trainer = Trainer::new(&gpu, &model, lora, options, longest, true).unwrap();
    let loss_sum = trainer.accumulate(&gpu, &seqs, total).await.unwrap();
    let want_loss = f.json["grad"]["loss"].as_f64().unwrap();
    let loss = loss_sum / total as f64;
    assert!((loss - want_loss).abs() < 1e-4 * want_loss.abs(), "{name}: loss {loss} vs PyTorch {want_loss}");
    let got = trainer.lora().gradients(&gpu).await.unwrap();
    let mut worst = (0.0f64, String::new());
    for (g, w) in got.pairs.iter().zip(&want.pairs) {
        assert_eq!((g.layer, g.target), (w.layer, w.target));
        for (which, gv, wv) in [("A", &g.a, &w.a), ("B", &g.b, &w.b)] {
            let e = relative_error(gv, wv);
            if e > worst.0 {
                worst = (e, format!("layer {} {} {which}", g.layer, g.target.short()));
            }
        }
    }
    eprintln!("{name}: loss {loss:.6} (PyTorch {want_loss:.6}); worst gradient relative error {:.2e} at {}", worst.0, worst.1);
    assert!(worst.0 <= GRAD_TOLERANCE, "{name}: gradient relative error {:.3e} at {}", worst.0, worst.1);
}

async fn curve_matches(name: &str) {
    let (gpu, model) = load(name).await;
    let f = Fixture::open(name);
    let curve = &f.json["curve"];
    let opt = &curve["optimizer"];
    let init = read_peft_dir(&f.dir.join("curve/init"), &model.config).unwrap();
    let lora = LoraWeights::from_adapter(&gpu, &model.config, &init).unwrap();
    let steps = curve["steps"].as_u64().unwrap() as usize;
    let options = OptimizerOptions {
        schedule: Schedule {
            lr: opt["lr"].as_f64().unwrap() as f32,
            warmup: curve["schedule"]["warmup_steps"].as_u64().unwrap() as usize,
            total: curve["schedule"]["total_steps"].as_u64().unwrap() as usize,
            decay: Decay::Cosine,
        },
        adamw: AdamW {
            beta1: opt["betas"][0].as_f64().unwrap() as f32,
            beta2: opt["betas"][1].as_f64().unwrap() as f32,
            eps: opt["eps"].as_f64().unwrap() as f32,
            weight_decay: opt["weight_decay"].as_f64().unwrap() as f32,
        },
        max_grad_norm: curve["clip_max_norm"].as_f64().unwrap() as f32,
        seed: 0,
    };
    let data = f.sequences("curve");
    let longest = data.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let mut trainer = Trainer::new(&gpu, &model, lora, options, longest, false).unwrap();
    let (losses, lrs, norms) = (f.floats(&["curve", "losses"]), f.floats(&["curve", "lrs"]), f.floats(&["curve", "grad_norms"]));
    let mut worst = 0f64;
    for s in 0..steps {
        let batch: Vec<(Vec<u32>, Vec<u8>)> =
            curve["batches"][s].as_array().unwrap().iter().map(|i| data[i.as_u64().unwrap() as usize].clone()).collect();
        let stats = trainer.step(&gpu, &as_seqs(&batch)).await.unwrap();
        let rel = (stats.loss - losses[s]).abs() / losses[s].abs();
        worst = worst.max(rel);
        assert!(rel <= CURVE_TOLERANCE, "{name} step {}: loss {} vs PyTorch {}", s + 1, stats.loss, losses[s]);
        assert!((stats.lr as f64 - lrs[s]).abs() <= 1e-7 + 1e-6 * lrs[s], "{name} step {}: lr {} vs {}", s + 1, stats.lr, lrs[s]);
        assert!((stats.grad_norm - norms[s]).abs() <= 1e-2 * norms[s], "{name} step {}: grad norm {} vs {}", s + 1, stats.grad_norm, norms[s]);
    }
    let last = (losses[0], losses[steps - 1]);
    eprintln!("{name}: 50 steps, loss {:.4} → {:.4}, worst per-step relative difference to PyTorch {worst:.2e}", last.0, last.1);
    assert!(last.1 < last.0, "{name}: the reference loss did not fall, the fixture tests nothing");
    // The trained adapter equals PEFT's after 50 steps.
    let want = read_peft_dir(&f.dir.join("curve/final"), &model.config).unwrap();
    let got = trainer.lora().to_adapter(&gpu, "").await.unwrap();
    for (g, w) in got.pairs.iter().zip(&want.pairs) {
        for (gv, wv) in [(&g.a, &w.a), (&g.b, &w.b)] {
            let e = relative_error(gv, wv);
            assert!(e < 1e-2, "{name}: layer {} {} differs from PEFT's final adapter by {e:.3e}", g.layer, g.target.short());
        }
    }
}

#[test]
fn llama_gradients_match_peft() {
    pollster::block_on(gradients_match("tiny-llama"));
}

#[test]
fn qwen2_gradients_match_peft() {
    pollster::block_on(gradients_match("tiny-qwen2"));
}

#[test]
fn llama_loss_curve_matches_peft() {
    pollster::block_on(curve_matches("tiny-llama"));
}

#[test]
fn qwen2_loss_curve_matches_peft() {
    pollster::block_on(curve_matches("tiny-qwen2"));
}
