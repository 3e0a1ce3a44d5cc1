//! The forward pass: embedding, blocks of (RMSNorm, attention with RoPE and a KV
//! cache, residual, RMSNorm, SwiGLU MLP, residual), final norm, lm_head in vocab chunks.

use crate::gpu::{Batch, Buffer, Gpu};
use crate::adapter::Target;
use crate::kernels::lora::{lora_forward, View};
use crate::kernels::{attention, matmul, rmsnorm, rope, swiglu};

use super::{Arch, Config, LoraWeights, Model, ModelError};

/// Past keys and values of every layer, f32 [capacity, kv_dim] each.
pub struct KvCache {
    k: Vec<Buffer>,
    v: Vec<Buffer>,
    capacity: usize,
    len: usize,
}

impl KvCache {
    pub fn new(gpu: &Gpu, config: &Config, capacity: usize) -> Result<KvCache, ModelError> {
        let capacity = capacity.min(config.context).max(1);
        let bytes = (capacity * config.kv_dim() * 4) as u64;
        let mut k = Vec::with_capacity(config.n_layers);
        let mut v = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            k.push(gpu.buffer(&format!("kv.{i}.k"), bytes)?);
            v.push(gpu.buffer(&format!("kv.{i}.v"), bytes)?);
        }
        Ok(KvCache { k, v, capacity, len: 0 })
    }
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Forgets everything after the first `len` tokens (e.g. to start a new prompt).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Scratch activations for one call over `tokens` positions.
struct Activations {
    tokens: u32,
    x: Buffer,
    xn: Buffer,
    q: Buffer,
    att: Buffer,
    gate: Buffer,
    act: Buffer,
    rstd: Buffer,
    lse: Buffer,
    ids: Buffer,
    pos: Buffer,
    /// `x · Aᵀ` of the attached adapter, [tokens, rank].
    lora_u: Option<Buffer>,
    /// The up projection before gating, when an adapter must add to it first.
    up: Option<Buffer>,
}

impl Activations {
    fn into_buffers(self) -> impl Iterator<Item = Buffer> {
        let a = self;
        [a.x, a.xn, a.q, a.att, a.gate, a.act, a.rstd, a.lse, a.ids, a.pos].into_iter().chain(a.lora_u).chain(a.up)
    }

    fn new(gpu: &Gpu, c: &Config, t: usize, adapter: Option<&LoraWeights>) -> Result<Activations, ModelError> {
        let f = |label: &str, n: usize| gpu.scratch(label, (n * 4) as u64);
        let lora_up = adapter.is_some_and(|a| a.config.targets.contains(&Target::Up));
        Ok(Activations {
            tokens: t as u32,
            x: f("x", t * c.hidden)?,
            xn: f("xn", t * c.hidden)?,
            q: f("q", t * c.q_dim())?,
            att: f("att", t * c.q_dim())?,
            gate: f("gate", t * c.ffn)?,
            act: f("act", t * c.ffn)?,
            rstd: f("rstd", t)?,
            lse: f("lse", t * c.n_heads)?,
            ids: f("ids", t)?,
            pos: f("pos", t)?,
            lora_u: adapter.map(|a| f("lora_u", t * a.config.rank)).transpose()?,
            up: if lora_up { Some(f("up", t * c.ffn)?) } else { None },
        })
    }
}

impl Model {
    pub(crate) fn rope_style(&self) -> rope::RopeStyle {
        match self.config.arch {
            Arch::Llama => rope::RopeStyle::Interleaved,
            Arch::Qwen2 => rope::RopeStyle::Neox,
        }
    }

    /// Records the graph for `tokens` after the cache's contents into `batch`: appends
    /// their keys and values and leaves the final-normed hidden states [tokens, hidden]
    /// in the returned `xn`. The caller submits.
    async fn encode(&self, batch: &mut Batch<'_>, cache: &mut KvCache, tokens: &[u32]) -> Result<Activations, ModelError> {
        let gpu = batch.gpu();
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::Empty);
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return Err(ModelError::BadToken { id, vocab: c.vocab });
        }
        let past = cache.len;
        if past + t > cache.capacity {
            return Err(ModelError::ContextFull { tokens: t, used: past, capacity: cache.capacity });
        }
        let a = Activations::new(gpu, c, t, self.adapter.as_ref())?;
        let positions: Vec<u32> = (past..past + t).map(|p| p as u32).collect();
        gpu.write(&a.ids, 0, bytemuck::cast_slice(tokens))?;
        gpu.write(&a.pos, 0, bytemuck::cast_slice(&positions))?;
        let (tt, d) = (t as u32, c.hidden as u32);
        let batch = &mut *batch;
        matmul::embedding(batch, &self.embed, &a.ids, &a.x, tt).await?;
        for (i, l) in self.layers.iter().enumerate() {
            // The norms stay dispatches of their own: folding RMSNorm into the matvec's x
            // loads measured slower per projection on llvmpipe than the dispatch it saves.
            rmsnorm::rmsnorm_forward(batch, &a.x, &l.attn_norm, &a.xn, &a.rstd, tt, d, c.rms_eps).await?;
            matmul::matmul(batch, &a.xn, &l.wq, l.bq.as_ref(), &a.q, tt).await?;
            self.adapt(batch, &a, i, Target::Q, &a.xn, (&a.q).into()).await?;
            // Keys and values go straight into their cache rows; RoPE turns q and the
            // new keys in one dispatch.
            let row = (past * c.kv_dim()) as u32;
            matmul::matmul_at(batch, &a.xn, &l.wk, l.bk.as_ref(), &cache.k[i], past as u32, tt).await?;
            self.adapt(batch, &a, i, Target::K, &a.xn, View::at(&cache.k[i], row)).await?;
            matmul::matmul_at(batch, &a.xn, &l.wv, l.bv.as_ref(), &cache.v[i], past as u32, tt).await?;
            self.adapt(batch, &a, i, Target::V, &a.xn, View::at(&cache.v[i], row)).await?;
            let keys = rope::KeyRows { heads: c.n_kv_heads as u32, offset: row };
            rope::rope_forward_qk(batch, &a.q, &cache.k[i], keys, &a.pos, &self.inv_freq, tt, c.n_heads as u32, c.head_dim as u32, self.rope_style())
                .await?;
            attention::attention_forward(
                batch,
                &a.q,
                &cache.k[i],
                &cache.v[i],
                &a.att,
                &a.lse,
                attention::AttentionShape::new(
                    tt,
                    past as u32,
                    c.n_heads as u32,
                    c.n_kv_heads as u32,
                    c.head_dim as u32,
                ),
            )
            .await?;
            matmul::matmul_add(batch, &a.att, &l.wo, None, &a.x, tt).await?;
            self.adapt(batch, &a, i, Target::O, &a.att, (&a.x).into()).await?;
            rmsnorm::rmsnorm_forward(batch, &a.x, &l.ffn_norm, &a.xn, &a.rstd, tt, d, c.rms_eps).await?;
            matmul::matmul(batch, &a.xn, &l.gate, None, &a.gate, tt).await?;
            self.adapt(batch, &a, i, Target::Gate, &a.xn, (&a.gate).into()).await?;
            match &a.up {
                // The adapter adds to the up projection before the gating.
                Some(up) => {
                    matmul::matmul(batch, &a.xn, &l.up, None, up, tt).await?;
                    self.adapt(batch, &a, i, Target::Up, &a.xn, up.into()).await?;
                    swiglu::swiglu_forward(batch, &a.gate, up, &a.act, tt * c.ffn as u32).await?;
                }
                // act = silu(gate) · up, the gating in the up projection's epilogue.
                None => matmul::matmul_swiglu(batch, &a.xn, &l.up, &a.gate, &a.act, tt).await?,
            }
            matmul::matmul_add(batch, &a.act, &l.down, None, &a.x, tt).await?;
            self.adapt(batch, &a, i, Target::Down, &a.act, (&a.x).into()).await?;
        }
        rmsnorm::rmsnorm_forward(batch, &a.x, &self.output_norm, &a.xn, &a.rstd, tt, d, c.rms_eps).await?;
        cache.len = past + t;
        Ok(a)
    }

    /// Adds the attached adapter's `scale · (x Aᵀ) Bᵀ` for (layer, target) onto `y`.
    async fn adapt(&self, batch: &mut Batch<'_>, a: &Activations, layer: usize, target: Target, x: &Buffer, y: View<'_>) -> Result<(), ModelError> {
        let (Some(lora), Some(u)) = (&self.adapter, &a.lora_u) else {
            return Ok(());
        };
        if let Some(slot) = lora.slot(layer, target) {
            lora_forward(batch, x, lora.a(slot), lora.b(slot), u, y, lora.shape(slot, a.tokens)).await?;
        }
        Ok(())
    }

    /// Vocabulary rows per lm_head dispatch so that [tokens, chunk] logits stay within
    /// one binding.
    fn vocab_chunk(&self, gpu: &Gpu, tokens: usize) -> usize {
        let limit = gpu.limits().max_storage_buffer_binding_size as usize / 4;
        (limit / tokens.max(1)).clamp(1, 16384).min(self.config.vocab)
    }

    /// Logits of every position, [tokens × vocab] row-major, computed in vocab chunks so
    /// no [tokens × vocab] tensor ever exists on the GPU.
    pub async fn logits(&self, gpu: &Gpu, cache: &mut KvCache, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut batch = gpu.batch();
        let a = self.encode(&mut batch, cache, tokens).await?;
        batch.submit()?;
        let (t, vocab) = (tokens.len(), self.config.vocab);
        let chunk = self.vocab_chunk(gpu, t);
        let out = gpu.scratch("logits.chunk", (t * chunk * 4) as u64)?;
        let mut logits = vec![0f32; t * vocab];
        for start in (0..vocab).step_by(chunk) {
            let rows = chunk.min(vocab - start);
            let mut batch = gpu.batch();
            matmul::matmul_rows(&mut batch, &a.xn, self.lm_head(), start, rows, &out, rows as u32, t as u32).await?;
            batch.submit()?;
            let part = gpu.read_f32_prefix(&out, t * rows).await?;
            for (row, values) in part.chunks_exact(rows).enumerate() {
                logits[row * vocab + start..row * vocab + start + rows].copy_from_slice(values);
            }
        }
        Ok(logits)
    }

    /// Records the graph for `tokens` and the last position's logits [vocab] into
    /// `out`; the caller submits (so sampling can join the same submit).
    pub async fn last_logits(&self, batch: &mut Batch<'_>, cache: &mut KvCache, tokens: &[u32], out: &Buffer) -> Result<(), ModelError> {
        let a = self.encode(batch, cache, tokens).await?;
        let (t, d) = (tokens.len(), self.config.hidden);
        let last = batch.gpu().scratch("last", (d * 4) as u64)?;
        batch.copy(&a.xn, ((t - 1) * d * 4) as u64, &last, 0, (d * 4) as u64)?;
        // One row of logits is small; the weight's own row chunks bound each binding.
        matmul::matmul(batch, &last, self.lm_head(), None, out, 1).await?;
        batch.retain(a.into_buffers());
        batch.retain([last]);
        Ok(())
    }
}
