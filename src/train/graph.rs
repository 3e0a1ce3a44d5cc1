//! One pass through the model with LoRA, over one sequence or several packed one after
//! another (each attends to its own tokens alone and its positions start at 0): the
//! forward pass that keeps what the backward needs, the causal-LM loss with the lm_head
//! in vocabulary chunks, and the backward pass that accumulates the LoRA gradients. The
//! frozen base weights stay quantized; their input gradients dequantize in the shader.
//!
//! Activation recomputation: with it, only each layer's input is kept and a layer's
//! forward runs again just before its backward (one more forward pass, about a third
//! more time, for a fraction of the memory); without it every layer keeps its
//! intermediates.

use crate::adapter::Target;
use crate::gpu::{Batch, Buffer, Gpu};
use crate::kernels::attention::{self, AttentionShape};
use crate::kernels::cross_entropy::{self, VocabChunk};
use crate::kernels::{dropout, gather, lora};
use crate::kernels::matmul::{self, Weight};
use crate::kernels::{rmsnorm, rope, swiglu};
use crate::model::{Config, LoraWeights, Model};

use super::{Sequence, TrainError};

/// Largest vocabulary chunk of the lm_head per dispatch (the cross-entropy kernels' limit).
const MAX_VOCAB_CHUNK: usize = 16384;

/// The intermediates of one layer's forward that its backward reads.
struct LayerActs {
    xn1: Buffer,
    rstd1: Buffer,
    /// q and k after RoPE.
    q: Buffer,
    k: Buffer,
    v: Buffer,
    att: Buffer,
    lse: Buffer,
    /// The residual stream after attention.
    h1: Buffer,
    xn2: Buffer,
    rstd2: Buffer,
    gate: Buffer,
    up: Buffer,
    act: Buffer,
    /// `x · Aᵀ` per adapted target, in [`Target::ALL`] order.
    u: [Option<Buffer>; 7],
}

impl LayerActs {
    fn new(gpu: &Gpu, c: &Config, lora: &LoraWeights, layer: usize, t: usize) -> Result<LayerActs, TrainError> {
        let f = |label: &str, n: usize| gpu.buffer(&format!("train.{layer}.{label}"), (n.max(1) * 4) as u64);
        let (d, qd, kvd) = (c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let mut u: [Option<Buffer>; 7] = Default::default();
        for target in Target::ALL {
            if lora.slot(layer, target).is_some() {
                u[target as usize] = Some(f(&format!("u.{}", target.short()), t * lora.config.rank)?);
            }
        }
        Ok(LayerActs {
            xn1: f("xn1", t * d)?,
            rstd1: f("rstd1", t)?,
            q: f("q", t * qd)?,
            k: f("k", t * kvd)?,
            v: f("v", t * kvd)?,
            att: f("att", t * qd)?,
            lse: f("lse", t * c.n_heads)?,
            h1: f("h1", t * d)?,
            xn2: f("xn2", t * d)?,
            rstd2: f("rstd2", t)?,
            gate: f("gate", t * c.ffn)?,
            up: f("up", t * c.ffn)?,
            act: f("act", t * c.ffn)?,
            u,
        })
    }

    fn u(&self, target: Target) -> Result<&Buffer, TrainError> {
        self.u[target as usize]
            .as_ref()
            .ok_or_else(|| TrainError::Config(format!("no LoRA activations for {}", target.short())))
    }
}

/// Gradient buffers of one layer's backward, shared by all layers.
struct Grads {
    dh: Buffer,
    dxn: Buffer,
    /// The gradient of `xt`.
    dxt: Buffer,
    datt: Buffer,
    dq: Buffer,
    dk: Buffer,
    dv: Buffer,
    dact: Buffer,
    dgate: Buffer,
    dup: Buffer,
    du: Buffer,
    /// LoRA dropout: the dropped input and the adapter's unmasked input gradient,
    /// [tokens, widest projection input] (None without dropout).
    dropped: Option<(Buffer, Buffer)>,
}

/// Every buffer of a training pass over up to `max_tokens` tokens.
pub(crate) struct Workspace {
    max_tokens: usize,
    ids: Buffer,
    pos: Buffer,
    /// Next-token targets of the scored positions, and their loss mask (all set).
    targets: Buffer,
    mask: Buffer,
    /// The scored positions (gather index into `xnf`), and each position's row among
    /// them or `gather::NONE` (the index that spreads their gradient back).
    scored: Buffer,
    slots: Buffer,
    /// The residual stream.
    x: Buffer,
    /// Each layer's input.
    inputs: Vec<Buffer>,
    /// One set per layer, or a single set reused with recomputation.
    acts: Vec<LayerActs>,
    xnf: Buffer,
    /// The rows of `xnf` at the scored positions: the lm_head's input.
    xt: Buffer,
    rstdf: Buffer,
    logits: Buffer,
    vocab_chunk: usize,
    ce_state: Buffer,
    /// Per scored row, exp(old max − new max) after each vocabulary chunk.
    ce_factor: Buffer,
    /// The lm_head's rows at the targets, W[target].
    target_rows: Buffer,
    ce_lse: Buffer,
    ce_loss: Buffer,
    totals: Buffer,
    grads: Grads,
}

impl Workspace {
    pub(crate) fn new(
        gpu: &Gpu,
        model: &Model,
        lora: &LoraWeights,
        max_tokens: usize,
        recompute: bool,
    ) -> Result<Workspace, TrainError> {
        let c = &model.config;
        let t = max_tokens.max(1);
        let f = |label: &str, n: usize| gpu.buffer(label, (n.max(1) * 4) as u64);
        let (d, qd, kvd) = (c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let limit = gpu.limits().max_storage_buffer_binding_size as usize / 4;
        let vocab_chunk = (limit / t).clamp(1, MAX_VOCAB_CHUNK).min(c.vocab);
        let sets = if recompute { 1 } else { c.n_layers };
        let acts = (0..sets).map(|i| LayerActs::new(gpu, c, lora, i, t)).collect::<Result<Vec<_>, _>>()?;
        let inputs = (0..c.n_layers).map(|i| f(&format!("train.{i}.input"), t * d)).collect::<Result<Vec<_>, _>>()?;
        Ok(Workspace {
            max_tokens: t,
            ids: f("train.ids", t)?,
            pos: f("train.pos", t)?,
            targets: f("train.targets", t)?,
            // Every gathered row is scored: the cross-entropy kernels' mask is all ones.
            mask: gpu.upload("train.mask", bytemuck::cast_slice(&vec![1u32; t]))?,
            scored: f("train.scored", t)?,
            slots: f("train.slots", t)?,
            x: f("train.x", t * d)?,
            inputs,
            acts,
            xnf: f("train.xnf", t * d)?,
            xt: f("train.xt", t * d)?,
            rstdf: f("train.rstdf", t)?,
            logits: f("train.logits", t * vocab_chunk)?,
            vocab_chunk,
            ce_state: f("train.ce_state", 4 * t)?,
            ce_factor: f("train.ce_factor", t)?,
            target_rows: f("train.target_rows", t * d)?,
            ce_lse: f("train.ce_lse", t)?,
            ce_loss: f("train.ce_loss", t)?,
            totals: f("train.totals", 4)?,
            grads: Grads {
                dh: f("train.dh", t * d)?,
                dxn: f("train.dxn", t * d)?,
                dxt: f("train.dxt", t * d)?,
                datt: f("train.datt", t * qd)?,
                dq: f("train.dq", t * qd)?,
                dk: f("train.dk", t * kvd)?,
                dv: f("train.dv", t * kvd)?,
                dact: f("train.dact", t * c.ffn)?,
                dgate: f("train.dgate", t * c.ffn)?,
                dup: f("train.dup", t * c.ffn)?,
                du: f("train.du", t * lora.config.rank)?,
                dropped: match lora.config.dropout > 0.0 {
                    true => {
                        let widest = d.max(qd).max(c.ffn);
                        Some((f("train.dropped_x", t * widest)?, f("train.dropped_dx", t * widest)?))
                    }
                    false => None,
                },
            },
        })
    }

    pub(crate) fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The `[sum of loss, count]` pair the last [`Pass::loss`] left in `totals`.
    pub(crate) fn totals(&self) -> &Buffer {
        &self.totals
    }
}

/// One pass: the model, its adapter, the workspace and the packed sequences' lengths.
pub(crate) struct Pass<'a> {
    pub model: &'a Model,
    pub lora: &'a LoraWeights,
    pub ws: &'a Workspace,
    /// The lengths of the sequences packed into the pass, in order.
    pub lengths: Vec<usize>,
    /// Their sum.
    pub tokens: usize,
    /// Positions with a target (the loss is computed on these alone).
    pub scored: usize,
    /// Seeds this pass's LoRA dropout masks; None evaluates without dropout.
    pub dropout_seed: Option<u32>,
}

impl Pass<'_> {
    /// Writes the packed sequences' token ids, positions and next-token targets: in each
    /// sequence position t predicts ids[t + 1] where `mask[t + 1]` is set (its last
    /// position predicts nothing). Only those positions are scored: the lm_head and the
    /// loss run on their rows alone.
    pub(crate) fn upload(&self, gpu: &Gpu, seqs: &[Sequence<'_>]) -> Result<(), TrainError> {
        let c = &self.model.config;
        let (mut ids, mut positions, mut keep) = (Vec::new(), Vec::new(), Vec::new());
        for seq in seqs {
            if let Some(&id) = seq.ids.iter().find(|&&id| id as usize >= c.vocab) {
                return Err(TrainError::Config(format!("token id {id} is outside the vocabulary of {}", c.vocab)));
            }
            let n = seq.ids.len();
            ids.extend_from_slice(seq.ids);
            positions.extend(0..n as u32);
            keep.extend((0..n).map(|t| t + 1 < n && seq.mask[t + 1] != 0));
        }
        if ids.len() != self.tokens {
            return Err(TrainError::Config(format!("{} tokens, the pass expects {}", ids.len(), self.tokens)));
        }
        let (scored, slots) = gather::gather_rows_index(keep);
        if scored.len() != self.scored {
            return Err(TrainError::Config(format!("{} scored positions, the pass expects {}", scored.len(), self.scored)));
        }
        let targets: Vec<u32> = scored.iter().map(|&t| ids[t as usize + 1]).collect();
        gpu.write(&self.ws.ids, 0, bytemuck::cast_slice(&ids))?;
        gpu.write(&self.ws.pos, 0, bytemuck::cast_slice(&positions))?;
        gpu.write(&self.ws.scored, 0, bytemuck::cast_slice(&scored))?;
        gpu.write(&self.ws.slots, 0, bytemuck::cast_slice(&slots))?;
        gpu.write(&self.ws.targets, 0, bytemuck::cast_slice(&targets))?;
        Ok(())
    }

    fn grads(&self) -> Result<&Buffer, TrainError> {
        let state = self.lora.optimizer_state();
        state.map(|s| &s.grads).ok_or_else(|| TrainError::Config("the adapter has no gradient buffer".into()))
    }

    fn acts(&self, layer: usize) -> &LayerActs {
        &self.ws.acts[layer.min(self.ws.acts.len() - 1)]
    }

    fn recompute(&self) -> bool {
        self.ws.acts.len() < self.model.config.n_layers
    }

    /// The forward pass up to the final norm (`xnf`), keeping what the backward needs.
    pub(crate) async fn forward(&self, batch: &mut Batch<'_>) -> Result<(), TrainError> {
        let (c, ws, t) = (&self.model.config, self.ws, self.tokens as u32);
        matmul::embedding(batch, &self.model.embed, &ws.ids, &ws.x, t).await?;
        for i in 0..c.n_layers {
            batch.copy(&ws.x, 0, &ws.inputs[i], 0, (self.tokens * c.hidden * 4) as u64)?;
            self.layer_forward(batch, i).await?;
            batch.flush()?;
        }
        rmsnorm::rmsnorm_forward(batch, &ws.x, &self.model.output_norm, &ws.xnf, &ws.rstdf, t, c.hidden as u32, c.rms_eps)
            .await?;
        Ok(())
    }

    /// y = x Wᵀ (+ bias) (+ scale · (x Aᵀ) Bᵀ); `add` adds onto y (a residual).
    #[allow(clippy::too_many_arguments)]
    async fn project(
        &self,
        batch: &mut Batch<'_>,
        layer: usize,
        target: Target,
        x: &Buffer,
        w: &Weight,
        bias: Option<&Buffer>,
        y: &Buffer,
        add: bool,
    ) -> Result<(), TrainError> {
        let t = self.tokens as u32;
        let Some(slot) = self.lora.slot(layer, target) else {
            if add {
                matmul::matmul_add(batch, x, w, bias, y, t).await?;
            } else {
                matmul::matmul(batch, x, w, bias, y, t).await?;
            }
            return Ok(());
        };
        let (u, shape) = (self.acts(layer).u(target)?, self.lora.shape(slot, t));
        let xd = self.dropped(batch, layer, target, x, slot.d_in).await?.unwrap_or(x);
        lora::lora_forward_down(batch, xd, self.lora.a(slot), u, shape).await?;
        let up = matmul::LoraUp { u, b: self.lora.b(slot), shape };
        matmul::matmul_lora(batch, x, w, bias, y, t, add, up).await?;
        Ok(())
    }

    /// The seed of (layer, target)'s dropout mask in this pass, if dropout is on.
    fn dropout(&self, layer: usize, target: Target) -> Option<(f32, u32)> {
        let p = self.lora.config.dropout;
        let seed = self.dropout_seed?;
        (p > 0.0).then(|| (p, seed.wrapping_add((layer * Target::ALL.len() + target as usize) as u32).wrapping_mul(0x9E37_79B9)))
    }

    /// With dropout on, writes the adapter's dropped input (PEFT: `lora_A(dropout(x))`)
    /// and returns it; the mask comes from the seed, so the backward regenerates it.
    async fn dropped(
        &self,
        batch: &mut Batch<'_>,
        layer: usize,
        target: Target,
        x: &Buffer,
        d_in: usize,
    ) -> Result<Option<&Buffer>, TrainError> {
        let (Some((p, seed)), Some((xd, _))) = (self.dropout(layer, target), &self.ws.grads.dropped) else {
            return Ok(None);
        };
        dropout::dropout_forward(batch, x, xd, (self.tokens * d_in) as u32, p, seed, false).await?;
        Ok(Some(xd))
    }

    /// Layer `i` on the residual stream `ws.x` (in place), its intermediates into its
    /// activation set.
    async fn layer_forward(&self, batch: &mut Batch<'_>, i: usize) -> Result<(), TrainError> {
        let (c, ws, t) = (&self.model.config, self.ws, self.tokens as u32);
        let l = &self.model.layers[i];
        let a = self.acts(i);
        let d = c.hidden as u32;
        rmsnorm::rmsnorm_forward(batch, &ws.x, &l.attn_norm, &a.xn1, &a.rstd1, t, d, c.rms_eps).await?;
        self.project(batch, i, Target::Q, &a.xn1, &l.wq, l.bq.as_ref(), &a.q, false).await?;
        self.project(batch, i, Target::K, &a.xn1, &l.wk, l.bk.as_ref(), &a.k, false).await?;
        self.project(batch, i, Target::V, &a.xn1, &l.wv, l.bv.as_ref(), &a.v, false).await?;
        let keys = rope::KeyRows { heads: c.n_kv_heads as u32, offset: 0 };
        let (heads, hd) = (c.n_heads as u32, c.head_dim as u32);
        rope::rope_forward_qk(batch, &a.q, &a.k, keys, &ws.pos, &self.model.inv_freq, t, heads, hd, self.model.rope_style()).await?;
        for shape in self.attention_shapes() {
            attention::attention_forward(batch, &a.q, &a.k, &a.v, &a.att, &a.lse, shape).await?;
        }
        self.project(batch, i, Target::O, &a.att, &l.wo, None, &ws.x, true).await?;
        batch.copy(&ws.x, 0, &a.h1, 0, (self.tokens * c.hidden * 4) as u64)?;
        rmsnorm::rmsnorm_forward(batch, &ws.x, &l.ffn_norm, &a.xn2, &a.rstd2, t, d, c.rms_eps).await?;
        self.project(batch, i, Target::Gate, &a.xn2, &l.gate, None, &a.gate, false).await?;
        self.project(batch, i, Target::Up, &a.xn2, &l.up, None, &a.up, false).await?;
        swiglu::swiglu_forward(batch, &a.gate, &a.up, &a.act, t * c.ffn as u32).await?;
        self.project(batch, i, Target::Down, &a.act, &l.down, None, &ws.x, true).await?;
        Ok(())
    }

    /// The attention calls of the packed sequences: one per run of consecutive sequences
    /// of the same length (one dispatch covers them all: on a GPU, four sequences of 256
    /// fill it where one leaves it mostly idle).
    fn attention_shapes(&self) -> Vec<AttentionShape> {
        let c = &self.model.config;
        let (heads, kv_heads, hd) = (c.n_heads as u32, c.n_kv_heads as u32, c.head_dim as u32);
        let mut shapes: Vec<AttentionShape> = Vec::new();
        let mut offset = 0;
        for &n in &self.lengths {
            let n = n as u32;
            match shapes.last_mut() {
                Some(last) if last.n_query == n => last.seqs += 1,
                _ => shapes.push(AttentionShape::new(n, 0, heads, kv_heads, hd).packed(offset, 1, self.tokens as u32)),
            }
            offset += n;
        }
        shapes
    }

    /// The vocabulary chunks of the lm_head: (first row, rows).
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (vocab, chunk) = (self.model.config.vocab, self.ws.vocab_chunk);
        (0..vocab).step_by(chunk).map(move |s| (s, chunk.min(vocab - s)))
    }

    /// Cross-entropy of the next-token targets at the scored positions, chunk by chunk;
    /// leaves per-row log-sum-exp and `totals` = (sum of loss, count, mean, 1 / count).
    /// With `grad = Some(scale)` (this pass's share of the step's target tokens) the
    /// same pass leaves the gradient of `scale · mean loss` with respect to the lm_head's
    /// input in `dxt`, so the lm_head runs once (cross_entropy.wgsl).
    pub(crate) async fn loss(&self, batch: &mut Batch<'_>, grad: Option<f32>) -> Result<(), TrainError> {
        let (ws, t) = (self.ws, self.scored as u32);
        let (d, head, dxt) = (self.model.config.hidden as u32, self.model.lm_head(), &ws.grads.dxt);
        gather::gather_rows(batch, &ws.scored, &ws.xnf, self.tokens as u32, &ws.xt, t, d).await?;
        for (n, (start, rows)) in self.chunks().enumerate() {
            matmul::matmul_rows(batch, &ws.xt, head, start, rows, &ws.logits, rows as u32, t).await?;
            let chunk = VocabChunk::dense(t, start as u32, rows as u32);
            cross_entropy::cross_entropy_forward(batch, &ws.logits, &ws.targets, &ws.ce_state, &ws.ce_factor, chunk, n == 0, grad.is_some())
                .await?;
            if grad.is_some() {
                if n > 0 {
                    cross_entropy::cross_entropy_rescale(batch, &ws.ce_factor, dxt, t, d).await?;
                }
                matmul::matmul_input_grad(batch, &ws.logits, rows as u32, head, start..start + rows, dxt, t, n > 0).await?;
                batch.flush()?;
            }
        }
        cross_entropy::cross_entropy_finalize(batch, &ws.ce_state, &ws.mask, &ws.ce_lse, &ws.ce_loss, &ws.totals, t).await?;
        if let Some(scale) = grad {
            matmul::embedding(batch, head, &ws.targets, &ws.target_rows, t).await?;
            cross_entropy::cross_entropy_input_grad(batch, dxt, &ws.ce_state, &ws.mask, &ws.target_rows, &ws.totals, t, d, scale)
                .await?;
        }
        Ok(())
    }

    /// The backward from the lm_head's input gradient that [`Pass::loss`] left, adding
    /// the LoRA gradients onto `lora.grads`.
    pub(crate) async fn backward(&self, batch: &mut Batch<'_>) -> Result<(), TrainError> {
        let (c, ws, t) = (&self.model.config, self.ws, self.tokens as u32);
        let (g, scored) = (&ws.grads, self.scored as u32);
        let d = c.hidden as u32;
        gather::gather_rows(batch, &ws.slots, &g.dxt, scored, &g.dxn, t, d).await?;
        rmsnorm::rmsnorm_backward(batch, &ws.x, &self.model.output_norm, &ws.rstdf, &g.dxn, &g.dh, t, d, false).await?;
        for i in (0..c.n_layers).rev() {
            if self.recompute() {
                batch.copy(&ws.inputs[i], 0, &ws.x, 0, (self.tokens * c.hidden * 4) as u64)?;
                self.layer_forward(batch, i).await?;
            }
            self.layer_backward(batch, i).await?;
            batch.flush()?;
        }
        Ok(())
    }

    /// dx (+)= dy · W plus the adapter's share, and the adapter's A and B gradients.
    #[allow(clippy::too_many_arguments)]
    async fn project_backward(
        &self,
        batch: &mut Batch<'_>,
        layer: usize,
        target: Target,
        x: &Buffer,
        w: &Weight,
        dy: &Buffer,
        dx: &Buffer,
        accumulate: bool,
    ) -> Result<(), TrainError> {
        let t = self.tokens as u32;
        let Some(slot) = self.lora.slot(layer, target) else {
            matmul::matmul_input_grad(batch, dy, w.rows() as u32, w, 0..w.rows(), dx, t, accumulate).await?;
            return Ok(());
        };
        let (shape, du) = (self.lora.shape(slot, t), &self.ws.grads.du);
        let grads = self.grads()?;
        let u = self.acts(layer).u(target)?;
        lora::lora_backward_u(batch, dy, self.lora.b(slot), du, shape).await?;
        lora::lora_backward_b(batch, dy, u, lora::View::at(grads, slot.b), shape, true).await?;
        let xd = self.dropped(batch, layer, target, x, slot.d_in).await?;
        lora::lora_backward_a(batch, du, xd.unwrap_or(x), lora::View::at(grads, slot.a), shape, true).await?;
        match (self.dropout(layer, target), &self.ws.grads.dropped) {
            // dx += mask ⊙ (du · A) / (1 − p): dropout's backward on the adapter's share.
            (Some((p, seed)), Some((_, dxd))) => {
                matmul::matmul_input_grad(batch, dy, w.rows() as u32, w, 0..w.rows(), dx, t, accumulate).await?;
                lora::lora_backward_input(batch, du, self.lora.a(slot), dxd, shape, false).await?;
                dropout::dropout_forward(batch, dxd, dx, (self.tokens * slot.d_in) as u32, p, seed, true).await?;
            }
            _ => {
                let lora = matmul::LoraDx { du, a: self.lora.a(slot), shape };
                matmul::matmul_input_grad_lora(batch, dy, w, dx, t, accumulate, lora).await?;
            }
        }
        Ok(())
    }

    /// Layer `i`'s backward: `grads.dh` holds dL/d(layer output) and becomes
    /// dL/d(layer input).
    async fn layer_backward(&self, batch: &mut Batch<'_>, i: usize) -> Result<(), TrainError> {
        let (c, ws, t) = (&self.model.config, self.ws, self.tokens as u32);
        let (l, a, g) = (&self.model.layers[i], self.acts(i), &ws.grads);
        let d = c.hidden as u32;
        // MLP: h2 = h1 + down(silu(gate(xn2)) · up(xn2)).
        self.project_backward(batch, i, Target::Down, &a.act, &l.down, &g.dh, &g.dact, false).await?;
        swiglu::swiglu_backward(batch, &a.gate, &a.up, &g.dact, &g.dgate, &g.dup, t * c.ffn as u32).await?;
        self.project_backward(batch, i, Target::Gate, &a.xn2, &l.gate, &g.dgate, &g.dxn, false).await?;
        self.project_backward(batch, i, Target::Up, &a.xn2, &l.up, &g.dup, &g.dxn, true).await?;
        rmsnorm::rmsnorm_backward(batch, &a.h1, &l.ffn_norm, &a.rstd2, &g.dxn, &g.dh, t, d, true).await?;
        // Attention: h1 = h0 + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1))).
        self.project_backward(batch, i, Target::O, &a.att, &l.wo, &g.dh, &g.datt, false).await?;
        for shape in self.attention_shapes() {
            attention::attention_backward(batch, &a.q, &a.k, &a.v, &a.att, &g.datt, &a.lse, &g.dq, &g.dk, &g.dv, shape)
                .await?;
        }
        let (heads, kv_heads, hd) = (c.n_heads as u32, c.n_kv_heads as u32, c.head_dim as u32);
        let style = self.model.rope_style();
        rope::rope_backward(batch, &g.dq, &ws.pos, &self.model.inv_freq, t, heads, hd, style).await?;
        rope::rope_backward(batch, &g.dk, &ws.pos, &self.model.inv_freq, t, kv_heads, hd, style).await?;
        self.project_backward(batch, i, Target::Q, &a.xn1, &l.wq, &g.dq, &g.dxn, false).await?;
        self.project_backward(batch, i, Target::K, &a.xn1, &l.wk, &g.dk, &g.dxn, true).await?;
        self.project_backward(batch, i, Target::V, &a.xn1, &l.wv, &g.dv, &g.dxn, true).await?;
        rmsnorm::rmsnorm_backward(batch, &ws.inputs[i], &l.attn_norm, &a.rstd1, &g.dxn, &g.dh, t, d, true).await?;
        Ok(())
    }
}
