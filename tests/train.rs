//! The LoRA trainer on the tiny fixture models, checked against itself where an
//! independent path exists: the training forward against the inference forward with
//! the adapter attached, recomputation against kept activations, a seeded run against
//! its repeat; and every bad input it must refuse. (Gradients and loss curves against
//! PyTorch + PEFT are in tests/train_peft.rs.)

mod reference;

use classtune::adapter::{Adapter, LoraConfig, Target};
use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::adamw::AdamW;
use classtune::model::{KvCache, LoraWeights, Model};
use classtune::train::run::{self, Control, Dataset, RunOptions, Tokens};
use classtune::train::{Decay, OptimizerOptions, Schedule, Sequence, TrainError, Trainer};
use rand::{rngs::StdRng, Rng, SeedableRng};
use reference::root;

async fn setup(name: &str) -> (Gpu, Model) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let path = root().join("fixtures/tiny").join(format!("{name}.gguf"));
    let file = MappedFile::open(&path).unwrap();
    let model = Model::load(&gpu, &file).await.unwrap();
    (gpu, model)
}

fn options(lr: f32, total: usize) -> OptimizerOptions {
    OptimizerOptions {
        schedule: Schedule { lr, warmup: 2, total, decay: Decay::Cosine },
        adamw: AdamW { weight_decay: 0.01, ..AdamW::default() },
        max_grad_norm: 1.0,
        seed: 0,
    }
}

/// Random sequences over the model's vocabulary with a few masked tokens.
fn sequences(vocab: usize, lens: &[usize], seed: u64) -> Vec<Tokens> {
    let mut rng = StdRng::seed_from_u64(seed);
    lens.iter()
        .map(|&n| Tokens {
            ids: (0..n).map(|_| rng.random_range(0..vocab as u32)).collect(),
            mask: (0..n).map(|i| u8::from(i % 5 != 2)).collect(),
        })
        .collect()
}

/// An adapter with random A and B (B nonzero, unlike the initialisation).
fn random_adapter(model: &Model, config: LoraConfig, seed: u64) -> Adapter {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs = Vec::new();
    for layer in 0..model.config.n_layers {
        for &target in &config.targets {
            let (d_in, d_out) = target.dims(&model.config);
            let mut draw = |n: usize| (0..n).map(|_| rng.random_range(-0.1f32..0.1)).collect::<Vec<_>>();
            let a = draw(config.rank * d_in);
            let b = draw(config.rank * d_out);
            pairs.push(classtune::adapter::LoraPair { layer, target, d_in, d_out, a, b });
        }
    }
    Adapter { config, base_name: "tiny".into(), pairs }
}

fn seqs(tokens: &[Tokens]) -> Vec<Sequence<'_>> {
    tokens.iter().map(Tokens::sequence).collect()
}

/// Mean next-token cross-entropy from full logits, in f64.
fn mean_loss(logits: &[f32], t: &Tokens, vocab: usize) -> (f64, usize) {
    let (mut sum, mut count) = (0.0, 0);
    for pos in 1..t.ids.len() {
        if t.mask[pos] == 0 {
            continue;
        }
        let row = &logits[(pos - 1) * vocab..pos * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
        let lse = max + row.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>().ln();
        sum += lse - row[t.ids[pos] as usize] as f64;
        count += 1;
    }
    (sum, count)
}

#[test]
fn training_forward_equals_inference_forward_with_the_adapter() {
    pollster::block_on(async {
        for name in ["tiny-llama", "tiny-qwen2"] {
            let (gpu, mut model) = setup(name).await;
            let config = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
            let adapter = random_adapter(&model, config, 7);
            let data = sequences(model.config.vocab, &[23, 41], 3);
            let (mut sum, mut count) = (0.0, 0);
            model.attach(Some(LoraWeights::from_adapter(&gpu, &model.config, &adapter).unwrap()));
            for t in &data {
                let mut cache = KvCache::new(&gpu, &model.config, t.ids.len()).unwrap();
                let logits = model.logits(&gpu, &mut cache, &t.ids).await.unwrap();
                let (s, c) = mean_loss(&logits, t, model.config.vocab);
                sum += s;
                count += c;
            }
            let inference = sum / count as f64;
            let weights = model.attach(None).unwrap();
            let trainer = Trainer::new(&gpu, &model, weights, options(1e-3, 10), 64, true).unwrap();
            let training = trainer.evaluate(&gpu, &seqs(&data)).await.unwrap().unwrap();
            assert!((training - inference).abs() < 1e-4 * inference.abs(), "{name}: training {training} vs inference {inference}");
            // The adapter matters: the base model's loss differs.
            let mut cache = KvCache::new(&gpu, &model.config, 64).unwrap();
            let base = model.logits(&gpu, &mut cache, &data[0].ids).await.unwrap();
            let (s, c) = mean_loss(&base, &data[0], model.config.vocab);
            assert!((s / c as f64 - training).abs() > 1e-3, "{name}: the adapter changed nothing");
        }
    });
}

#[test]
fn initial_adapter_is_the_base_model() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let data = sequences(model.config.vocab, &[30], 5);
        let mut cache = KvCache::new(&gpu, &model.config, 64).unwrap();
        let logits = model.logits(&gpu, &mut cache, &data[0].ids).await.unwrap();
        let (s, c) = mean_loss(&logits, &data[0], model.config.vocab);
        let lora = LoraWeights::init(&gpu, &model.config, &LoraConfig::default(), 1).unwrap();
        let trainer = Trainer::new(&gpu, &model, lora, options(1e-3, 10), 64, false).unwrap();
        let loss = trainer.evaluate(&gpu, &seqs(&data)).await.unwrap().unwrap();
        assert!((loss - s / c as f64).abs() < 1e-4, "{loss} vs {}", s / c as f64);
    });
}

#[test]
fn recomputation_gives_the_same_gradients_with_and_without_dropout() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-qwen2").await;
        let data = sequences(model.config.vocab, &[37, 20, 64], 9);
        let total: usize = seqs(&data).iter().map(Sequence::targets).sum();
        let mut by_dropout = Vec::new();
        for dropout in [0.0, 0.2] {
            let config = LoraConfig { rank: 8, alpha: 16.0, rslora: true, dropout, ..LoraConfig::default() };
            let adapter = random_adapter(&model, config, 11);
            let mut grads = Vec::new();
            for recompute in [false, true] {
                let lora = LoraWeights::from_adapter(&gpu, &model.config, &adapter).unwrap();
                let trainer = Trainer::new(&gpu, &model, lora, options(1e-3, 10), 64, recompute).unwrap();
                trainer.accumulate(&gpu, &seqs(&data), total).await.unwrap();
                grads.push(trainer.lora().gradients(&gpu).await.unwrap());
            }
            assert_eq!(grads[0], grads[1], "dropout {dropout}: recomputation changed the gradients");
            let norm: f64 = grads[0].pairs.iter().flat_map(|p| p.a.iter().chain(&p.b)).map(|&g| (g as f64).powi(2)).sum();
            assert!(norm > 1e-8, "all gradients are zero");
            by_dropout.push(grads.swap_remove(0));
        }
        let (a, b) = (&by_dropout[0].pairs[0].a, &by_dropout[1].pairs[0].a);
        assert!(a.iter().zip(b).any(|(x, y)| x != y), "dropout changed no gradient");
    });
}

#[test]
fn measuring_passes_cleared_by_zero_grad_leave_the_step_unchanged() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let data = sequences(model.config.vocab, &[40, 33], 5);
        let config = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
        let mut stats = Vec::new();
        let mut weights = Vec::new();
        for measure in [false, true] {
            let lora = LoraWeights::init(&gpu, &model.config, &config, 3).unwrap();
            let mut trainer = Trainer::new(&gpu, &model, lora, options(1e-2, 4), 64, false).unwrap();
            if measure {
                // What the app does before a run: two timed passes, then nothing kept.
                let one = &seqs(&data)[..1];
                for _ in 0..2 {
                    trainer.accumulate(&gpu, one, one[0].targets()).await.unwrap();
                }
                trainer.zero_grad(&gpu).unwrap();
                let cleared = trainer.lora().gradients(&gpu).await.unwrap();
                assert!(cleared.pairs.iter().all(|p| p.a.iter().chain(&p.b).all(|&g| g == 0.0)));
            }
            stats.push(trainer.step(&gpu, &seqs(&data)).await.unwrap().loss);
            weights.push(trainer.lora().to_adapter(&gpu, "tiny").await.unwrap());
        }
        assert_eq!(stats[0], stats[1]);
        assert_eq!(weights[0], weights[1], "the measuring passes changed the step");
    });
}

/// Sequences packed into one pass (each attending to itself alone, positions from 0)
/// train exactly as they do one pass each: the same losses, gradient norms and weights
/// over several steps, with and without recomputation, on both architectures. The
/// unpacked path is checked against PyTorch + PEFT in tests/train_peft.rs.
#[test]
fn packed_sequences_train_as_separate_passes() {
    pollster::block_on(async {
        for name in ["tiny-llama", "tiny-qwen2"] {
            let (gpu, model) = setup(name).await;
            let data = sequences(model.config.vocab, &[9, 30, 30, 5, 17, 26], 8);
            let config = LoraConfig { rank: 4, alpha: 8.0, ..LoraConfig::default() };
            let mut runs = Vec::new();
            // One pass per sequence; [30, 9, 5], [30], [26, 17]; [30, 30, 26] (the two of
            // 30 in one attention dispatch) and [17, 9, 5]; all in one pass.
            for (pass_tokens, recompute) in [(30, false), (44, true), (87, false), (117, true)] {
                let lora = LoraWeights::init(&gpu, &model.config, &config, 3).unwrap();
                let mut trainer = Trainer::new(&gpu, &model, lora, options(1e-2, 4), pass_tokens, recompute).unwrap();
                let mut stats = Vec::new();
                for _ in 0..3 {
                    let s = trainer.step(&gpu, &seqs(&data)).await.unwrap();
                    stats.push((s.loss, s.grad_norm));
                }
                let val = trainer.evaluate(&gpu, &seqs(&data)).await.unwrap().unwrap();
                let weights = trainer.lora().to_adapter(&gpu, "tiny").await.unwrap();
                runs.push((pass_tokens, stats, val, weights));
            }
            let (_, want, want_val, want_weights) = &runs[0];
            for (pass_tokens, stats, val, weights) in &runs[1..] {
                for (step, (got, want)) in stats.iter().zip(want).enumerate() {
                    assert!((got.0 - want.0).abs() <= 1e-5 * want.0, "{name}, {pass_tokens}, step {step}: loss {got:?} vs {want:?}");
                    assert!((got.1 - want.1).abs() <= 1e-4 * want.1, "{name}, {pass_tokens}, step {step}: norm {got:?} vs {want:?}");
                }
                assert!((val - want_val).abs() <= 1e-5 * want_val, "{name}, {pass_tokens}: validation {val} vs {want_val}");
                for (g, w) in weights.pairs.iter().zip(&want_weights.pairs) {
                    // Summation order differs between the layouts, and AdamW's first steps
                    // amplify it where a gradient is near zero: compare whole tensors.
                    for (gv, wv) in [(&g.a, &w.a), (&g.b, &w.b)] {
                        let e = relative(gv, wv);
                        assert!(e <= 1e-4, "{name}, {pass_tokens}: layer {} {} differs by {e:.2e}", g.layer, g.target.short());
                    }
                }
            }
            // The steps moved the weights: the comparison above compares something.
            assert!(want[2].0 < want[0].0, "{name}: loss did not fall: {want:?}");

            // The gradients themselves, from an adapter with B nonzero.
            let adapter = random_adapter(&model, config.clone(), 9);
            let all = seqs(&data);
            let total: usize = all.iter().map(Sequence::targets).sum();
            let mut grads = Vec::new();
            for pass_tokens in [30, 87] {
                let lora = LoraWeights::from_adapter(&gpu, &model.config, &adapter).unwrap();
                let trainer = Trainer::new(&gpu, &model, lora, options(1e-2, 4), pass_tokens, false).unwrap();
                trainer.accumulate(&gpu, &all, total).await.unwrap();
                grads.push(trainer.lora().gradients(&gpu).await.unwrap());
            }
            for (g, w) in grads[1].pairs.iter().zip(&grads[0].pairs) {
                for (gv, wv) in [(&g.a, &w.a), (&g.b, &w.b)] {
                    let e = relative(gv, wv);
                    assert!(e <= 1e-5, "{name}: packed gradient of layer {} {} differs by {e:.2e}", g.layer, g.target.short());
                }
            }
        }
    });
}

/// ‖got − want‖ / ‖want‖ in f64.
fn relative(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got.iter().zip(want).map(|(&g, &w)| (g as f64 - w as f64).powi(2)).sum();
    let norm: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

#[test]
fn seeded_runs_repeat_and_the_loss_falls() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let data = Dataset {
            train: sequences(model.config.vocab, &[40, 33, 25, 48], 21),
            validation: sequences(model.config.vocab, &[30], 22),
        };
        let opts = RunOptions { epochs: 10, batch: 2, eval_every: 5, seed: 4, ..RunOptions::default() };
        let total = opts.total_steps(data.train.len());
        let mut curves = Vec::new();
        for _ in 0..2 {
            let config = LoraConfig { rank: 8, alpha: 16.0, ..LoraConfig::default() };
            let lora = LoraWeights::init(&gpu, &model.config, &config, 4).unwrap();
            let mut trainer = Trainer::new(&gpu, &model, lora, options(5e-3, total), 64, true).unwrap();
            let mut losses = Vec::new();
            let summary = run::run(&mut trainer, &gpu, &data, &opts, |r| {
                losses.push(r.stats.loss);
                Control::Continue
            })
            .await
            .unwrap();
            assert_eq!(summary.steps, total);
            assert!(summary.val_loss.is_some() && summary.base_val_loss.is_some());
            curves.push(losses);
        }
        assert_eq!(curves[0], curves[1], "same seed, different losses");
        let c = &curves[0];
        assert!(c[c.len() - 1] < c[0] * 0.9, "loss did not fall: {c:?}");
    });
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let c = &model.config;
        let too_big = LoraConfig { rank: c.n_kv_heads * c.head_dim + 1, ..LoraConfig::default() };
        let err = LoraWeights::init(&gpu, c, &too_big, 0).err().unwrap().to_string();
        assert!(err.contains("rank") && err.contains("k projection"), "{err}");
        let none = LoraConfig { targets: vec![], ..LoraConfig::default() };
        assert!(LoraWeights::init(&gpu, c, &none, 0).is_err());

        let lora = LoraWeights::init(&gpu, c, &LoraConfig { rank: 2, ..LoraConfig::default() }, 0).unwrap();
        let mut trainer = Trainer::new(&gpu, &model, lora, options(1e-3, 10), 16, true).unwrap();
        let long = sequences(c.vocab, &[17], 1);
        assert!(matches!(trainer.step(&gpu, &seqs(&long)).await, Err(TrainError::TooLong { tokens: 17, max: 16 })));
        let masked = [Tokens { ids: vec![1, 2, 3], mask: vec![0, 0, 0] }];
        assert!(matches!(trainer.step(&gpu, &seqs(&masked)).await, Err(TrainError::EmptyData(_))));
        let outside = [Tokens { ids: vec![1, c.vocab as u32], mask: vec![1, 1] }];
        let err = trainer.step(&gpu, &seqs(&outside)).await.err().unwrap().to_string();
        assert!(err.contains("outside the vocabulary"), "{err}");
        let empty = Dataset::default();
        let r = run::run(&mut trainer, &gpu, &empty, &RunOptions::default(), |_| Control::Continue).await;
        assert!(matches!(r, Err(TrainError::EmptyData(_))));
        // A pass may pack more tokens than the context holds; one sequence may not.
        let lora = LoraWeights::init(&gpu, c, &LoraConfig::default(), 0).unwrap();
        let mut wide = Trainer::new(&gpu, &model, lora, options(1e-3, 1), c.context + 1, true).unwrap();
        let past = sequences(c.vocab, &[c.context + 1], 1);
        let err = wide.step(&gpu, &seqs(&past)).await.err().unwrap().to_string();
        assert!(err.contains(&format!("context of {}", c.context)), "{err}");
    });
}

/// A GPU memory budget too small for the training workspace: setting up fails at once
/// with an error that names the buffer and says what to change, and nothing leaks.
#[test]
fn running_out_of_gpu_memory_says_what_to_change() {
    pollster::block_on(async {
        let path = root().join("fixtures/tiny/tiny-llama.gguf");
        let file = MappedFile::open(&path).unwrap();
        // What the model and a rank-4 adapter take, measured on a device of its own.
        let (gpu, model) = setup("tiny-llama").await;
        let config = LoraConfig { rank: 4, ..LoraConfig::default() };
        let lora = LoraWeights::init(&gpu, &model.config, &config, 0).unwrap();
        // The optimizer's gradients and moments fit too, the workspace does not.
        let needed = gpu.memory().live_bytes() + 3 * 4 * lora.len() as u64;
        drop((lora, model));

        let limit = needed + 4096;
        let gpu = Gpu::new(GpuOptions { memory_limit: Some(limit), ..GpuOptions::default() }).await.unwrap();
        let model = Model::load(&gpu, &file).await.unwrap();
        let lora = LoraWeights::init(&gpu, &model.config, &config, 0).unwrap();
        let err = Trainer::new(&gpu, &model, lora, options(1e-3, 10), 64, false).err().unwrap();
        let text = err.to_string();
        assert!(text.contains("out of GPU memory") && text.contains("train.") && text.contains("fewer sequences"), "{text}");
        assert!(gpu.memory().live_bytes() <= limit, "the failed set-up kept its buffers");
    });
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_weights() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let data = sequences(model.config.vocab, &[20, 20], 2);
        let lora = LoraWeights::init(&gpu, &model.config, &LoraConfig { rank: 4, ..LoraConfig::default() }, 0).unwrap();
        let mut opts = options(1e30, 100);
        opts.schedule.warmup = 0;
        let mut trainer = Trainer::new(&gpu, &model, lora, opts, 32, true).unwrap();
        let mut last = None;
        for _ in 0..5 {
            match trainer.step(&gpu, &seqs(&data)).await {
                Ok(s) => last = Some((s.step, trainer.lora().to_adapter(&gpu, "").await.unwrap())),
                Err(TrainError::NonFinite { step, last_good, .. }) => {
                    let (good_step, good) = last.expect("the first step already failed");
                    assert_eq!((step, last_good), (good_step + 1, good_step));
                    assert_eq!(trainer.lora().to_adapter(&gpu, "").await.unwrap(), good, "weights changed by the failed step");
                    assert_eq!(trainer.steps_done(), good_step);
                    return;
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("a learning rate of 1e30 never produced a non-finite loss");
    });
}

#[test]
fn every_target_subset_trains() {
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-qwen2").await;
        let data = sequences(model.config.vocab, &[25], 8);
        for targets in [vec![Target::Q], vec![Target::V, Target::Down], vec![Target::Up], Target::ALL.to_vec()] {
            let config = LoraConfig { rank: 2, alpha: 4.0, targets: targets.clone(), ..LoraConfig::default() };
            let adapter = random_adapter(&model, config, 3);
            let lora = LoraWeights::from_adapter(&gpu, &model.config, &adapter).unwrap();
            let trainer = Trainer::new(&gpu, &model, lora, options(1e-3, 10), 32, false).unwrap();
            let total = data[0].sequence().targets();
            trainer.accumulate(&gpu, &seqs(&data), total).await.unwrap();
            let g = trainer.lora().gradients(&gpu).await.unwrap();
            assert_eq!(g.pairs.len(), model.config.n_layers * targets.len());
            for p in &g.pairs {
                assert!(p.a.iter().chain(&p.b).any(|&v| v != 0.0), "{targets:?}: layer {} {:?} has no gradient", p.layer, p.target);
            }
        }
    });
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    use classtune::train::checkpoint::{BaseModel, Checkpoint, CheckpointMeta, FORMAT};
    pollster::block_on(async {
        let (gpu, model) = setup("tiny-llama").await;
        let data = Dataset {
            train: sequences(model.config.vocab, &[40, 33, 25, 48, 30], 31),
            validation: sequences(model.config.vocab, &[30], 32),
        };
        let opts = RunOptions { epochs: 2, batch: 2, eval_every: 2, seed: 9, ..RunOptions::default() };
        let total = opts.total_steps(data.train.len());
        let config = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, ..LoraConfig::default() };
        let optimizer = options(5e-3, total);
        let losses = |events: &mut Vec<f64>, r: &run::Report| events.push(r.stats.loss);
        let mut straight = Vec::new();
        let lora = LoraWeights::init(&gpu, &model.config, &config, 9).unwrap();
        let mut trainer = Trainer::new(&gpu, &model, lora, optimizer.clone(), 64, true).unwrap();
        run::run(&mut trainer, &gpu, &data, &opts, |e| {
            losses(&mut straight, e);
            Control::Continue
        })
        .await
        .unwrap();
        let want = trainer.lora().to_adapter(&gpu, "").await.unwrap();

        // Stop after 3 steps, go through the checkpoint bytes, continue.
        let mut resumed = Vec::new();
        let lora = LoraWeights::init(&gpu, &model.config, &config, 9).unwrap();
        let mut first = Trainer::new(&gpu, &model, lora, optimizer.clone(), 64, true).unwrap();
        let summary = run::run(&mut first, &gpu, &data, &opts, |e| {
            losses(&mut resumed, e);
            if resumed.len() == 3 {
                Control::Stop
            } else {
                Control::Continue
            }
        })
        .await
        .unwrap();
        assert!(summary.interrupted && summary.steps == 3);
        let base = BaseModel { name: "tiny".into(), architecture: "llama".into(), sha256: "ab".repeat(32) };
        let data_sha256 = classtune::train::checkpoint::data_digest(&data);
        let meta = CheckpointMeta {
            format: FORMAT.into(),
            step: 3,
            lora: config.clone(),
            optimizer: optimizer.clone(),
            run: opts.clone(),
            seq_len: 64,
            base: base.clone(),
            data_sha256: data_sha256.clone(),
            train_examples: data.train.len(),
            best_val_loss: summary.best_val_loss,
        };
        let bytes = Checkpoint { meta, state: first.state(&gpu).await.unwrap() }.to_bytes().unwrap();
        drop(first);
        let ckpt = Checkpoint::from_bytes(&bytes).unwrap();
        ckpt.check_matches(&base, &data_sha256).unwrap();
        let mut second = Trainer::restore(&gpu, &model, &ckpt.meta.lora, ckpt.meta.optimizer.clone(), &ckpt.state, 64, false).unwrap();
        run::run(&mut second, &gpu, &data, &ckpt.meta.run, |e| {
            losses(&mut resumed, e);
            Control::Continue
        })
        .await
        .unwrap();
        assert_eq!(resumed.len(), straight.len());
        for (s, (a, b)) in straight.iter().zip(&resumed).enumerate() {
            assert!((a - b).abs() <= 1e-6, "step {}: uninterrupted {a} vs resumed {b}", s + 1);
        }
        assert_eq!(second.lora().to_adapter(&gpu, "").await.unwrap(), want);

        // A checkpoint for other data or another model is refused; damaged bytes too.
        let other = BaseModel { sha256: "cd".repeat(32), ..base.clone() };
        assert!(ckpt.check_matches(&other, &data_sha256).unwrap_err().to_string().contains("base model"));
        assert!(ckpt.check_matches(&base, "00").is_err());
        for cut in [0, 7, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(Checkpoint::from_bytes(&bytes[..cut]), Err(TrainError::Checkpoint(_))), "cut at {cut}");
        }
    });
}
