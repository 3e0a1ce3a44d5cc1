//! The PyTorch + PEFT references of fixtures/lora (scripts/fixtures/make_lora.py) and
//! the checks against them, one body for the native run (tests/train_peft.rs) and the
//! browser run (tests/web_train.rs): whole-model LoRA gradients of one batch, and an
//! AdamW run with clipping and a cosine schedule.

use classtune::adapter::{from_peft, Adapter};
use classtune::gpu::Gpu;
use classtune::kernels::adamw::AdamW;
use classtune::model::{LoraWeights, Model};
use classtune::train::{Decay, OptimizerOptions, Schedule, Sequence, Trainer};
use serde_json::Value;

/// The bound on gradients.
pub const GRAD_TOLERANCE: f64 = 1e-3;
/// The bound on the loss curve: 1% at every step.
pub const CURVE_TOLERANCE: f64 = 1e-2;

/// A PEFT adapter as its two files.
pub struct PeftFiles<'a> {
    pub safetensors: &'a [u8],
    pub config: &'a str,
}

/// One model's fixture files.
pub struct LoraFixture<'a> {
    pub name: &'a str,
    pub json: Value,
    pub grad_adapter: PeftFiles<'a>,
    pub grads: &'a [u8],
    pub curve_init: PeftFiles<'a>,
    pub curve_final: PeftFiles<'a>,
}

impl LoraFixture<'_> {
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

    fn floats(&self, key: &str) -> Vec<f64> {
        self.json["curve"][key].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }
}

fn as_seqs(data: &[(Vec<u32>, Vec<u8>)]) -> Vec<Sequence<'_>> {
    data.iter().map(|(ids, mask)| Sequence { ids, mask }).collect()
}

fn read(files: &PeftFiles<'_>, model: &Model) -> Adapter {
    from_peft(files.safetensors, files.config, &model.config).unwrap()
}

/// ‖got − want‖ / ‖want‖ over one tensor, in f64.
fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Loss and every dA, dB of one batch against PyTorch's; returns the worst relative
/// gradient error (asserted ≤ [`GRAD_TOLERANCE`]).
pub async fn check_gradients(gpu: &Gpu, model: &Model, f: &LoraFixture<'_>) -> f64 {
    let name = f.name;
    let adapter = read(&f.grad_adapter, model);
    // The gradients carry PEFT's key names, so the adapter reader brings them into
    // GGUF space (Q/K rows permuted for llama) exactly as it does the weights.
    let want = from_peft(f.grads, f.grad_adapter.config, &model.config).unwrap();
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
    // One pass per sequence, then all of them packed into one pass.
    let packed = data.iter().map(|(ids, _)| ids.len()).sum();
    let mut worst = (0.0f64, String::new());
    for pass_tokens in [longest, packed] {
        let lora = LoraWeights::from_adapter(gpu, &model.config, &adapter).unwrap();
        let trainer = Trainer::new(gpu, model, lora, options.clone(), pass_tokens, true).unwrap();
        let loss = trainer.accumulate(gpu, &seqs, total).await.unwrap() / total as f64;
        let want_loss = f.json["grad"]["loss"].as_f64().unwrap();
        assert!(
            (loss - want_loss).abs() < 1e-4 * want_loss.abs(),
            "{name}, passes of {pass_tokens} tokens: loss {loss} vs PyTorch {want_loss}"
        );
        let got = trainer.lora().gradients(gpu).await.unwrap();
        for (g, w) in got.pairs.iter().zip(&want.pairs) {
            assert_eq!((g.layer, g.target), (w.layer, w.target));
            for (which, gv, wv) in [("A", &g.a, &w.a), ("B", &g.b, &w.b)] {
                let e = relative_error(gv, wv);
                if e > worst.0 {
                    worst = (e, format!("layer {} {} {which}, passes of {pass_tokens} tokens", g.layer, g.target.short()));
                }
            }
        }
    }
    assert!(worst.0 <= GRAD_TOLERANCE, "{name}: gradient relative error {:.3e} at {}", worst.0, worst.1);
    worst.0
}

/// The first `steps` optimizer steps of the fixture's run against PyTorch's losses,
/// learning rates and gradient norms; after all of them, the adapter against PEFT's.
/// Returns the worst relative loss difference (asserted ≤ [`CURVE_TOLERANCE`]).
pub async fn check_curve(gpu: &Gpu, model: &Model, f: &LoraFixture<'_>, steps: usize) -> f64 {
    let name = f.name;
    let curve = &f.json["curve"];
    let opt = &curve["optimizer"];
    let lora = LoraWeights::from_adapter(gpu, &model.config, &read(&f.curve_init, model)).unwrap();
    let all = curve["steps"].as_u64().unwrap() as usize;
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
    // Passes of two longest sequences: the shorter ones of a batch are packed together.
    let longest = data.iter().map(|(ids, _)| ids.len()).max().unwrap();
    let mut trainer = Trainer::new(gpu, model, lora, options, 2 * longest, false).unwrap();
    let (losses, lrs, norms) = (f.floats("losses"), f.floats("lrs"), f.floats("grad_norms"));
    let mut worst = 0f64;
    for s in 0..steps.min(all) {
        let batch: Vec<(Vec<u32>, Vec<u8>)> =
            curve["batches"][s].as_array().unwrap().iter().map(|i| data[i.as_u64().unwrap() as usize].clone()).collect();
        let stats = trainer.step(gpu, &as_seqs(&batch)).await.unwrap();
        let rel = (stats.loss - losses[s]).abs() / losses[s].abs();
        worst = worst.max(rel);
        assert!(rel <= CURVE_TOLERANCE, "{name} step {}: loss {} vs PyTorch {}", s + 1, stats.loss, losses[s]);
        assert!((stats.lr as f64 - lrs[s]).abs() <= 1e-7 + 1e-6 * lrs[s], "{name} step {}: lr {} vs {}", s + 1, stats.lr, lrs[s]);
        assert!((stats.grad_norm - norms[s]).abs() <= 1e-2 * norms[s], "{name} step {}: grad norm {} vs {}", s + 1, stats.grad_norm, norms[s]);
    }
    if steps >= all {
        assert!(losses[all - 1] < losses[0], "{name}: the reference loss did not fall, the fixture tests nothing");
        let want = read(&f.curve_final, model);
        let got = trainer.lora().to_adapter(gpu, "").await.unwrap();
        for (g, w) in got.pairs.iter().zip(&want.pairs) {
            for (gv, wv) in [(&g.a, &w.a), (&g.b, &w.b)] {
                let e = relative_error(gv, wv);
                assert!(e < 1e-2, "{name}: layer {} {} differs from PEFT's final adapter by {e:.3e}", g.layer, g.target.short());
            }
        }
    }
    worst
}
