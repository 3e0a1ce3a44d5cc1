//! Token generation: prefill, then one token at a time chosen on the GPU, streamed to
//! the caller, until a stop token, the token budget or the context runs out.

use crate::gpu::{Buffer, Gpu};
use crate::kernels::sample;

use super::{KvCache, Model, ModelError};

/// How to choose tokens. `temperature == 0` is greedy decoding.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = off, at most 64).
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f32,
    /// > 1 discourages the last 1024 tokens of the prompt and answer (1.0 = off).
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Token ids that end generation (eos, `<|im_end|>`).
    pub stop: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 256,
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.0,
            seed: 0,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StopReason {
    StopToken,
    MaxTokens,
    ContextFull,
    /// The caller's callback asked to stop.
    Cancelled,
}

/// Generation state for one conversation on one model.
pub struct Generator<'m> {
    model: &'m Model,
    cache: KvCache,
    logits: Buffer,
    history: Buffer,
    choice: Buffer,
    /// Every token the model has seen, for the repetition penalty.
    seen: Vec<u32>,
}

impl<'m> Generator<'m> {
    /// A generator with room for `context` tokens (capped at the model's context).
    pub fn new(gpu: &Gpu, model: &'m Model, context: usize) -> Result<Generator<'m>, ModelError> {
        let cache = KvCache::new(gpu, &model.config, context)?;
        Ok(Generator {
            model,
            logits: gpu.buffer("logits", (model.config.vocab * 4) as u64)?,
            history: gpu.buffer("history", (cache.capacity() * 4) as u64)?,
            choice: gpu.buffer("choice", 4)?,
            cache,
            seen: Vec::new(),
        })
    }

    /// Forgets the conversation.
    pub fn reset(&mut self) {
        self.cache.truncate(0);
        self.seen.clear();
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Appends `prompt` and generates up to `options.max_tokens` tokens, calling
    /// `on_token` with each one as soon as it is chosen; `on_token` returns false to stop.
    pub async fn generate(
        &mut self,
        gpu: &Gpu,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<(Vec<u32>, StopReason), ModelError> {
        let mut rng = SplitMix64(options.seed);
        let mut out = Vec::new();
        let mut next: Vec<u32> = prompt.to_vec();
        loop {
            if out.len() >= options.max_tokens {
                return Ok((out, StopReason::MaxTokens));
            }
            if self.cache.len() + next.len() > self.cache.capacity() {
                return Ok((out, StopReason::ContextFull));
            }
            let mut batch = gpu.batch();
            self.model.last_logits(&mut batch, &mut self.cache, &next, &self.logits).await?;
            let start = self.seen.len();
            self.seen.extend_from_slice(&next);
            gpu.write(&self.history, (start * 4) as u64, bytemuck::cast_slice(&next))?;
            let config = sample::SamplerConfig {
                temperature: options.temperature,
                top_k: options.top_k,
                top_p: options.top_p,
                repetition_penalty: options.repetition_penalty,
            };
            let history_len = self.seen.len().min(sample::MAX_HISTORY as usize);
            let shape = sample::SampleShape {
                vocab: self.model.config.vocab as u32,
                row: 0,
                history_start: (self.seen.len() - history_len) as u32,
                history_len: history_len as u32,
                out_index: 0,
            };
            sample::sample_forward(&mut batch, &self.logits, &self.history, &self.choice, shape, &config, rng.next_uniform())
                .await?;
            batch.submit()?;
            let id = gpu.read_u32_prefix(&self.choice, 1).await?[0];
            out.push(id);
            if !on_token(id) {
                return Ok((out, StopReason::Cancelled));
            }
            if options.stop.contains(&id) {
                return Ok((out, StopReason::StopToken));
            }
            next = vec![id];
        }
    }
}

/// A small seeded generator for the sampling draws: same seed, same text.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 bits, exactly representable in f32.
    fn next_uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
