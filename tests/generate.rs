//! Generation's bookkeeping (model/generate.rs): ending early by a stop token, a cancel
//! or a full context leaves the conversation exactly where an uninterrupted run would
//! be, and the repetition penalty sees the ids chosen, checked against a host-side
//! decoding loop.

mod reference;

use classtune::gguf::MappedFile;
use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::sample::penalize_cpu;
use classtune::model::{GenerateOptions, Generator, KvCache, Model, StopReason};
use reference::{ids, root, Reference};

const MAX: usize = 24;

async fn setup() -> (Gpu, Model, Vec<u32>) {
    let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
    let file = MappedFile::open(&root().join("fixtures/tiny/tiny-llama.gguf")).unwrap();
    let model = Model::load(&gpu, &file).await.unwrap();
    let reference = Reference::open(&root().join("fixtures/tiny/tiny-llama.ref.json"));
    let prompt = ids(&reference.json["greedy"]["prompt_ids"]);
    (gpu, model, prompt)
}

fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_tokens, temperature: 0.0, ..Default::default() }
}

#[test]
fn ending_early_then_going_on_equals_one_run() {
    pollster::block_on(async {
        let (gpu, model, prompt) = setup().await;
        let (full, reason) = Generator::new(&gpu, &model, 512).unwrap().generate(&gpu, &prompt, &greedy(MAX), |_| true).await.unwrap();
        assert_eq!((full.len(), reason), (MAX, StopReason::MaxTokens));

        // A stop token: returned, not yet fed; feeding it goes on as the run did.
        let stop = full[5];
        let at = full.iter().position(|&id| id == stop).unwrap();
        let mut generator = Generator::new(&gpu, &model, 512).unwrap();
        let options = GenerateOptions { stop: vec![stop], ..greedy(MAX) };
        let (head, reason) = generator.generate(&gpu, &prompt, &options, |_| true).await.unwrap();
        assert_eq!((head.as_slice(), reason), (&full[..=at], StopReason::StopToken));
        assert_eq!(generator.cache().len(), prompt.len() + at);
        let (tail, reason) = generator.generate(&gpu, &[stop], &greedy(MAX - at - 1), |_| true).await.unwrap();
        assert_eq!((tail.as_slice(), reason), (&full[at + 1..], StopReason::MaxTokens));

        // A cancel after three tokens.
        let mut generator = Generator::new(&gpu, &model, 512).unwrap();
        let mut seen = 0;
        let (head, reason) = generator
            .generate(&gpu, &prompt, &greedy(MAX), |_| {
                seen += 1;
                seen < 3
            })
            .await
            .unwrap();
        assert_eq!((head.as_slice(), reason), (&full[..3], StopReason::Cancelled));
        assert_eq!(generator.cache().len(), prompt.len() + 2);
        let (tail, _) = generator.generate(&gpu, &[full[2]], &greedy(MAX - 3), |_| true).await.unwrap();
        assert_eq!(tail, full[3..]);

        // A context with room for the prompt and four more tokens: the fifth chosen one
        // does not fit.
        let mut generator = Generator::new(&gpu, &model, prompt.len() + 4).unwrap();
        let (head, reason) = generator.generate(&gpu, &prompt, &greedy(MAX), |_| true).await.unwrap();
        assert_eq!((head.as_slice(), reason), (&full[..5], StopReason::ContextFull));
        assert_eq!(generator.cache().len(), prompt.len() + 4);

        // One token, then nothing ahead to undo.
        let mut generator = Generator::new(&gpu, &model, 512).unwrap();
        let (head, _) = generator.generate(&gpu, &prompt, &greedy(1), |_| true).await.unwrap();
        assert_eq!((head.as_slice(), generator.cache().len()), (&full[..1], prompt.len()));
    });
}

/// Greedy decoding with a repetition penalty against the same model's logits penalized
/// on the host over the prompt and every chosen id: a history missing the ids the GPU
/// wrote (or holding placeholders) picks other tokens.
#[test]
fn repetition_penalty_sees_the_chosen_ids() {
    pollster::block_on(async {
        let (gpu, model, prompt) = setup().await;
        let options = GenerateOptions { repetition_penalty: 1.5, ..greedy(MAX) };
        let (tokens, _) = Generator::new(&gpu, &model, 512).unwrap().generate(&gpu, &prompt, &options, |_| true).await.unwrap();
        assert_eq!(tokens.len(), MAX);
        let mut cache = KvCache::new(&gpu, &model.config, 512).unwrap();
        let mut history = prompt.clone();
        let mut input = prompt.clone();
        let vocab = model.config.vocab;
        let mut penalized_away = 0;
        for &chosen in &tokens {
            let logits = model.logits(&gpu, &mut cache, &input).await.unwrap();
            let last = &logits[logits.len() - vocab..];
            let penalized = penalize_cpu(last, &history, options.repetition_penalty);
            let best = penalized.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert!(penalized[chosen as usize] >= best - 1e-4, "chose {chosen} at {}, host's best {best}", penalized[chosen as usize]);
            penalized_away += usize::from(reference::argmax(last) != chosen as usize);
            history.push(chosen);
            input = vec![chosen];
        }
        // The penalty changed some choices, so the check above could tell.
        assert!(penalized_away > 0, "the penalty never changed a choice");
    });
}
