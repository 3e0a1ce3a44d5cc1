//! The whole model against PyTorch/transformers references (scripts/fixtures):
//! logits of tiny random llama/qwen2 models covering every tensor type, llama3 RoPE
//! scaling, biases and untied heads; greedy generation; KV-cache decoding equal to a
//! full prefill.

mod reference;

use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::{GenerateOptions, Generator, KvCache, Model, StopReason};
use reference::{argmax, ids, root, Reference};

/// The bound for SmolLM2; we measure about 1e-4.
const TOLERANCE: f32 = 2e-2;
/// Tiny f32 models: independent loaders agree with the references to about 3e-5.
const TINY_TOLERANCE: f32 = 1e-3;
/// Greedy tokens are compared up to the first step whose top-two logit gap in the
/// reference is below this: past a near-tie two correct f32 engines may diverge.
const TIE: f64 = 1e-3;

/// How many leading greedy tokens are decided by a clear margin.
fn decided_prefix(greedy: &serde_json::Value) -> usize {
    let margins = greedy["top2_margins"].as_array().unwrap();
    margins.iter().position(|m| m.as_f64().unwrap() < TIE).unwrap_or(margins.len())
}

async fn load(gpu: &Gpu, name: &str) -> Model {
    let path = root().join("fixtures/tiny").join(format!("{name}.gguf"));
    let file = MappedFile::open(&path).unwrap();
    Model::load(gpu, &file).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn check_tiny(name: &str) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let model = load(&gpu, name).await;
    let reference = Reference::open(&root().join("fixtures/tiny").join(format!("{name}.ref.json")));
    let vocab = model.config.vocab;
    let (mut positions, mut agree, mut worst) = (0, 0, 0f32);
    for seq in reference.json["sequences"].as_array().unwrap() {
        let tokens = ids(&seq["ids"]);
        let (expected, shape) = reference.f32s(&seq["logits"]);
        assert_eq!(shape, vec![tokens.len(), vocab]);
        let mut cache = KvCache::new(&gpu, &model.config, 512).unwrap();
        let ours = model.logits(&gpu, &mut cache, &tokens).await.unwrap();
        for (p, (a, b)) in ours.chunks(vocab).zip(expected.chunks(vocab)).enumerate() {
            for (v, (x, y)) in a.iter().zip(b).enumerate() {
                let d = (x - y).abs();
                worst = worst.max(d);
                assert!(d <= TINY_TOLERANCE, "{name} {} position {p} token {v}: ours {x}, reference {y}", seq["name"]);
            }
            positions += 1;
            agree += usize::from(argmax(a) == argmax(b));
        }
    }
    eprintln!("{name}: {positions} positions, max |diff| {worst:.2e}, argmax agrees at {agree}");
    assert!(positions >= 256);
    assert!(agree * 100 >= positions * 99, "{name}: argmax agrees at only {agree} of {positions}");

    let greedy = &reference.json["greedy"];
    let prompt = ids(&greedy["prompt_ids"]);
    let expected = ids(&greedy["new_ids"]);
    let mut generator = Generator::new(&gpu, &model, 512).unwrap();
    let options = GenerateOptions { max_tokens: expected.len(), temperature: 0.0, ..Default::default() };
    let (tokens, reason) = generator.generate(&gpu, &prompt, &options, |_| true).await.unwrap();
    assert_eq!(reason, StopReason::MaxTokens);
    let n = decided_prefix(greedy);
    assert_eq!(tokens[..n], expected[..n], "{name}: greedy generation differs");
}

#[test]
fn tiny_llama_matches_transformers() {
    pollster::block_on(check_tiny("tiny-llama"));
}

#[test]
fn tiny_llama3_rope_scaling_matches_transformers() {
    pollster::block_on(check_tiny("tiny-llama-rope3"));
}

#[test]
fn tiny_qwen2_matches_transformers() {
    pollster::block_on(check_tiny("tiny-qwen2"));
}

/// Decoding token by token through the KV cache gives the logits of one prefill.
#[test]
fn kv_cache_decoding_equals_prefill() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        let model = load(&gpu, "tiny-qwen2").await;
        let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % model.config.vocab as u32).collect();
        let vocab = model.config.vocab;
        let mut cache = KvCache::new(&gpu, &model.config, 64).unwrap();
        let full = model.logits(&gpu, &mut cache, &tokens).await.unwrap();
        let mut cache = KvCache::new(&gpu, &model.config, 64).unwrap();
        // A prefill of 13, then single tokens, then a chunk of 7: every path of attention.
        let mut steps: Vec<&[u32]> = vec![&tokens[..13]];
        steps.extend(tokens[13..33].chunks(1));
        steps.push(&tokens[33..]);
        let mut at = 0;
        for step in steps {
            let part = model.logits(&gpu, &mut cache, step).await.unwrap();
            for (i, (x, y)) in part.iter().zip(&full[at * vocab..]).enumerate() {
                assert!((x - y).abs() <= 1e-3, "position {} token {}: step {x}, prefill {y}", at + i / vocab, i % vocab);
            }
            at += step.len();
        }
        assert_eq!(cache.len(), tokens.len());
        let overflow = model.logits(&gpu, &mut cache, &[1; 30]).await;
        assert!(matches!(overflow, Err(classtune::model::ModelError::ContextFull { .. })), "{overflow:?}");
        let bad = model.logits(&gpu, &mut KvCache::new(&gpu, &model.config, 8).unwrap(), &[vocab as u32]).await;
        assert!(matches!(bad, Err(classtune::model::ModelError::BadToken { .. })), "{bad:?}");
    });
}

/// The real SmolLM2-135M-Instruct Q4_1 against transformers' own GGUF loader.
#[test]
fn smollm2_matches_transformers() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        let file = MappedFile::open(&reference::default_model()).unwrap();
        let model = Model::load(&gpu, &file).await.unwrap();
        let reference = Reference::open(&root().join("fixtures/smollm2/smollm2-135m-instruct-q4_1.ref.json"));
        let vocab = model.config.vocab;
        let probes = ids(&reference.json["probe_ids"]);
        let (mut positions, mut agree, mut worst) = (0, 0, 0f32);
        for seq in reference.json["sequences"].as_array().unwrap() {
            let tokens = ids(&seq["ids"]);
            let mut cache = KvCache::new(&gpu, &model.config, 512).unwrap();
            let ours = model.logits(&gpu, &mut cache, &tokens).await.unwrap();
            let (argmaxes, _) = reference.i32s(&seq["argmax"]);
            let (top_ids, _) = reference.i32s(&seq["top_ids"]);
            let (top_logits, _) = reference.f32s(&seq["top_logits"]);
            let (probe_logits, _) = reference.f32s(&seq["probe_logits"]);
            for (p, row) in ours.chunks(vocab).enumerate() {
                let checks = top_ids[p * 16..(p + 1) * 16]
                    .iter()
                    .map(|&i| i as u32)
                    .zip(top_logits[p * 16..(p + 1) * 16].iter().copied())
                    .chain(probes.iter().copied().zip(probe_logits[p * 64..(p + 1) * 64].iter().copied()));
                for (id, expected) in checks {
                    let d = (row[id as usize] - expected).abs();
                    worst = worst.max(d);
                    assert!(d <= TOLERANCE, "{} position {p} token {id}: ours {}, reference {expected}", seq["name"], row[id as usize]);
                }
                positions += 1;
                agree += usize::from(argmax(row) == argmaxes[p] as usize);
            }
        }
        eprintln!("smollm2: {positions} positions, max |diff| {worst:.2e}, argmax agrees at {agree}");
        assert!(positions >= 256);
        assert!(agree * 100 >= positions * 99, "argmax agrees at only {agree} of {positions}");

        let sequences = reference.json["sequences"].as_array().unwrap();
        for greedy in reference.json["greedy"].as_array().unwrap() {
            let prompt_name = greedy["prompt"].as_str().unwrap();
            let seq = sequences.iter().find(|s| s["name"] == prompt_name).unwrap();
            let expected = ids(&greedy["new_ids"]);
            let mut generator = Generator::new(&gpu, &model, 512).unwrap();
            let options = GenerateOptions { max_tokens: 64, temperature: 0.0, stop: vec![2], ..Default::default() };
            let (tokens, _) = generator.generate(&gpu, &ids(&seq["ids"]), &options, |_| true).await.unwrap();
            let n = decided_prefix(greedy);
            assert!(n == expected.len(), "{prompt_name}: the reference has a near-tie at step {n}");
            assert_eq!(tokens, expected, "greedy continuation of {prompt_name} differs");
        }
    });
}
