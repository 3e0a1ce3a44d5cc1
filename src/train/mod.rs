//! LoRA fine-tuning on the GPU: the trainable weights ([`LoraWeights`]), one
//! sequence's forward and backward (`graph`), the optimizer step ([`Trainer`]), the
//! learning-rate [`Schedule`] and the loop over a dataset ([`run`]).

pub mod checkpoint;
mod graph;
pub mod run;
mod schedule;

pub use schedule::{Decay, Schedule};

use crate::gpu::{Buffer, Gpu, GpuError};
use crate::kernels::adamw::{self, AdamW, AdamWBuffers, AdamWStep, Clip};
use crate::model::{LoraWeights, Model, ModelError};

use graph::{Pass, Workspace};

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("bad training configuration: {0}")]
    Config(String),
    #[error("nothing to train on: {0}")]
    EmptyData(String),
    #[error("sequence of {tokens} tokens is longer than the {max}-token workspace")]
    TooLong { tokens: usize, max: usize },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("the loss became {value} at step {step}; the weights are kept as they were after step {last_good}")]
    NonFinite { step: usize, value: f64, last_good: usize },
}

/// One training sequence: token ids and the per-token loss mask (1 where the token is
/// a target the model learns to predict, as `data::Example::loss_mask`).
#[derive(Debug, Clone, Copy)]
pub struct Sequence<'a> {
    pub ids: &'a [u32],
    pub mask: &'a [u8],
}

impl Sequence<'_> {
    /// Tokens the loss is computed on (the first token is never predicted).
    pub fn targets(&self) -> usize {
        self.mask.iter().skip(1).filter(|&&m| m != 0).count()
    }
}

/// Tokens per pass for a run whose longest sequence has `longest` tokens and whose
/// micro-batch holds `batch` sequences. On a hardware GPU, as much of the micro-batch
/// as [`PACKED_TOKENS`] holds: one pass launches the same kernels as one sequence,
/// with more work each (on an H100, seq 256 × batch 4 trained at 7,829 tok/s packed
/// against 2,553 a pass per sequence). On a CPU-emulated GPU, one longest sequence
/// (shorter ones still share a pass): its kernels are as fast per token either way.
/// Memory grows with a pass's tokens, so never more than one longest sequence or
/// [`PACKED_TOKENS`], whichever is more.
pub fn default_pass_tokens(gpu: &Gpu, longest: usize, batch: usize) -> usize {
    let longest = longest.max(1);
    match gpu.is_software() {
        true => longest,
        false => longest * batch.clamp(1, (PACKED_TOKENS / longest).max(1)),
    }
}

/// Most tokens [`default_pass_tokens`] packs into one pass on a hardware GPU.
pub const PACKED_TOKENS: usize = 1024;

/// `seqs` in passes of at most `capacity` tokens (a longer sequence gets a pass of its
/// own), first-fit decreasing: longest first (ties in their order), each into the first
/// pass with room. Fewer passes than taking them in order, and sequences of one length
/// side by side, where one attention dispatch covers them. Deterministic.
pub fn pack<'s>(seqs: &[Sequence<'s>], capacity: usize) -> Vec<Vec<Sequence<'s>>> {
    let mut order: Vec<&Sequence<'s>> = seqs.iter().collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.ids.len()));
    let mut passes: Vec<(usize, Vec<Sequence<'s>>)> = Vec::new();
    for seq in order {
        let tokens = seq.ids.len();
        match passes.iter_mut().find(|(used, _)| used + tokens <= capacity) {
            Some((used, pass)) => {
                *used += tokens;
                pass.push(*seq);
            }
            None => passes.push((tokens, vec![*seq])),
        }
    }
    passes.into_iter().map(|(_, pass)| pass).collect()
}

/// Optimizer settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerOptions {
    pub schedule: Schedule,
    pub adamw: AdamW,
    /// Global gradient-norm clipping (0 turns it off).
    pub max_grad_norm: f32,
    /// Seeds the LoRA dropout masks (a function of this, the step and the sequence).
    pub seed: u64,
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepStats {
    /// 1-based, as AdamW counts.
    pub step: usize,
    /// Mean cross-entropy over the step's target tokens, before the update.
    pub loss: f64,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Input tokens the step processed.
    pub tokens: usize,
    /// Of those, tokens the loss was computed on.
    pub targets: usize,
}

/// The optimizer state around [`LoraWeights`] and the buffers of its passes.
pub struct Trainer<'m> {
    model: &'m Model,
    lora: LoraWeights,
    ws: Workspace,
    options: OptimizerOptions,
    /// Optimizer steps taken.
    step: usize,
    norm_sq: Buffer,
}

impl<'m> Trainer<'m> {
    /// `pass_tokens`: the tokens one forward and backward pass holds, the longest
    /// sequence at least; a step's shorter sequences are packed into passes of up to
    /// this many tokens.
    /// `recompute`: keep only layer inputs and run each layer's forward again in the
    /// backward (less memory).
    pub fn new(
        gpu: &Gpu,
        model: &'m Model,
        mut lora: LoraWeights,
        options: OptimizerOptions,
        pass_tokens: usize,
        recompute: bool,
    ) -> Result<Trainer<'m>, TrainError> {
        lora.optimizer(gpu)?;
        let ws = Workspace::new(gpu, model, &lora, pass_tokens, recompute)?;
        let norm_sq = gpu.buffer("train.norm_sq", 4)?;
        Ok(Trainer { model, lora, ws, options, step: 0, norm_sq })
    }

    pub fn lora(&self) -> &LoraWeights {
        &self.lora
    }

    pub fn into_lora(self) -> LoraWeights {
        self.lora
    }

    /// The step, weights and AdamW moments, read back from the GPU.
    pub async fn state(&self, gpu: &Gpu) -> Result<checkpoint::TrainState, TrainError> {
        let n = self.lora.len();
        let opt = self.lora.optimizer_state().ok_or_else(|| TrainError::Config("no optimizer state".into()))?;
        Ok(checkpoint::TrainState {
            step: self.step,
            params: gpu.read_f32_prefix(self.lora.params(), n).await?,
            m: gpu.read_f32_prefix(&opt.m, n).await?,
            v: gpu.read_f32_prefix(&opt.v, n).await?,
        })
    }

    /// A trainer continuing from `state` (weights, moments and step of an earlier run
    /// with the same LoRA configuration and options).
    pub fn restore(
        gpu: &Gpu,
        model: &'m Model,
        config: &crate::adapter::LoraConfig,
        options: OptimizerOptions,
        state: &checkpoint::TrainState,
        pass_tokens: usize,
        recompute: bool,
    ) -> Result<Trainer<'m>, TrainError> {
        let lora = LoraWeights::from_flat(gpu, &model.config, config, &state.params)?;
        let mut trainer = Trainer::new(gpu, model, lora, options, pass_tokens, recompute)?;
        let opt = trainer.lora.optimizer_state().ok_or_else(|| TrainError::Config("no optimizer state".into()))?;
        gpu.write(&opt.m, 0, bytemuck::cast_slice(&state.m))?;
        gpu.write(&opt.v, 0, bytemuck::cast_slice(&state.v))?;
        trainer.step = state.step;
        Ok(trainer)
    }

    /// Tokens one pass holds: the step's sequences are packed into passes this long.
    pub fn pass_tokens(&self) -> usize {
        self.ws.max_tokens()
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Continues a run after `steps` optimizer steps (the schedule and bias correction
    /// pick up from there).
    pub fn set_steps_done(&mut self, steps: usize) {
        self.step = steps;
    }

    /// The sequences with targets in passes of up to the workspace's tokens ([`pack`]).
    fn packs<'s>(&self, seqs: &[Sequence<'s>]) -> Result<Vec<Vec<Sequence<'s>>>, TrainError> {
        let (max, context) = (self.ws.max_tokens(), self.model.config.context);
        let mut scored = Vec::with_capacity(seqs.len());
        for seq in seqs {
            let tokens = seq.ids.len();
            if seq.mask.len() != tokens {
                return Err(TrainError::Config(format!("{tokens} tokens but {} mask values", seq.mask.len())));
            }
            if tokens > max {
                return Err(TrainError::TooLong { tokens, max });
            }
            if tokens > context {
                return Err(TrainError::Config(format!("a sequence of {tokens} tokens exceeds the model's context of {context}")));
            }
            if seq.targets() > 0 {
                scored.push(*seq);
            }
        }
        Ok(pack(&scored, max))
    }

    /// `dropout`: the pass's index in the step, for a training pass (masks differ per
    /// step and pass); None for evaluation.
    fn pass(&self, seqs: &[Sequence<'_>], dropout: Option<usize>) -> Pass<'_> {
        let dropout_seed = dropout.map(|i| {
            let key = self.options.seed ^ ((self.step as u64) << 20) ^ i as u64;
            (key ^ (key >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
        });
        let lengths: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
        let (tokens, scored) = (lengths.iter().sum(), seqs.iter().map(Sequence::targets).sum());
        Pass { model: self.model, lora: &self.lora, ws: &self.ws, lengths, tokens, scored, dropout_seed }
    }

    /// Forward and backward of every sequence, adding `d(mean loss)/dθ` onto the
    /// gradients, the mean taken over the target tokens of all `seqs` and `total`
    /// more (other micro-batches of the same step). Returns the summed loss.
    pub async fn accumulate(&self, gpu: &Gpu, seqs: &[Sequence<'_>], total: usize) -> Result<f64, TrainError> {
        let packs = self.packs(seqs)?;
        if packs.is_empty() {
            return Ok(0.0);
        }
        let sums = gpu.buffer("train.sums", (packs.len() * 4) as u64)?;
        for (i, pack) in packs.iter().enumerate() {
            let pass = self.pass(pack, Some(i));
            pass.upload(gpu, pack)?;
            let mut batch = gpu.batch();
            pass.forward(&mut batch).await?;
            pass.loss(&mut batch, Some((pass.scored as f64 / total as f64) as f32)).await?;
            batch.copy(self.ws.totals(), 0, &sums, (4 * i) as u64, 4)?;
            pass.backward(&mut batch).await?;
            batch.submit()?;
        }
        let sums = gpu.read_f32_prefix(&sums, packs.len()).await?;
        Ok(sums.iter().map(|&v| v as f64).sum())
    }

    /// Clears the accumulated gradients without a step: after passes that only measure
    /// (the app times one before a run to estimate its duration).
    pub fn zero_grad(&self, gpu: &Gpu) -> Result<(), TrainError> {
        let state = self
            .lora
            .optimizer_state()
            .ok_or_else(|| TrainError::Config("the adapter has no optimizer state".into()))?;
        gpu.write(&state.grads, 0, &vec![0u8; self.lora.len() * 4])?;
        Ok(())
    }

    /// One optimizer step over `seqs` (the whole batch, gradient-accumulation
    /// micro-batches included): the mean loss over all their target tokens.
    pub async fn step(&mut self, gpu: &Gpu, seqs: &[Sequence<'_>]) -> Result<StepStats, TrainError> {
        let targets: usize = seqs.iter().map(Sequence::targets).sum();
        if targets == 0 {
            return Err(TrainError::EmptyData(format!(
                "the step's {} sequences have no target tokens (all masked or single tokens)",
                seqs.len()
            )));
        }
        let loss_sum = self.accumulate(gpu, seqs, targets).await?;
        let loss = loss_sum / targets as f64;
        let n = self.lora.len() as u32;
        let state = self
            .lora
            .optimizer_state()
            .ok_or_else(|| TrainError::Config("the adapter has no optimizer state".into()))?;
        let mut batch = gpu.batch();
        adamw::grad_norm_sq(&mut batch, &state.grads, &self.norm_sq, n, false).await?;
        batch.submit()?;
        let norm_sq = gpu.read_f32_prefix(&self.norm_sq, 1).await?[0] as f64;
        let step = self.step + 1;
        if !loss.is_finite() || !norm_sq.is_finite() {
            let zeros = vec![0u8; n as usize * 4];
            gpu.write(&state.grads, 0, &zeros)?;
            let value = if loss.is_finite() { norm_sq.sqrt() } else { loss };
            return Err(TrainError::NonFinite { step, value, last_good: self.step });
        }
        let lr = self.options.schedule.lr(self.step);
        let clip = (self.options.max_grad_norm > 0.0)
            .then_some(Clip { norm_sq: &self.norm_sq, max_norm: self.options.max_grad_norm });
        let buffers = AdamWBuffers { param: &self.lora.params, grad: &state.grads, m: &state.m, v: &state.v };
        let mut batch = gpu.batch();
        let update = AdamWStep { step: step as u32, lr, zero_grad: true };
        adamw::adamw_step(&mut batch, buffers, clip, n, &self.options.adamw, &update).await?;
        batch.submit()?;
        self.step = step;
        Ok(StepStats {
            step,
            loss,
            lr,
            grad_norm: norm_sq.sqrt(),
            tokens: seqs.iter().map(|s| s.ids.len()).sum(),
            targets,
        })
    }

    /// Mean loss over the target tokens of `seqs` with the current weights (no
    /// gradients): the validation loss. `None` when they have no target tokens.
    pub async fn evaluate(&self, gpu: &Gpu, seqs: &[Sequence<'_>]) -> Result<Option<f64>, TrainError> {
        let packs = self.packs(seqs)?;
        if packs.is_empty() {
            return Ok(None);
        }
        let sums = gpu.buffer("eval.sums", (packs.len() * 4) as u64)?;
        let mut targets = 0;
        for (i, pack) in packs.iter().enumerate() {
            let pass = self.pass(pack, None);
            targets += pass.scored;
            pass.upload(gpu, pack)?;
            let mut batch = gpu.batch();
            pass.forward(&mut batch).await?;
            pass.loss(&mut batch, None).await?;
            batch.copy(self.ws.totals(), 0, &sums, (4 * i) as u64, 4)?;
            batch.submit()?;
        }
        let sums = gpu.read_f32_prefix(&sums, packs.len()).await?;
        Ok(Some(sums.iter().map(|&v| v as f64).sum::<f64>() / targets as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::{pack, Sequence};

    fn lengths(passes: &[Vec<Sequence<'_>>]) -> Vec<Vec<usize>> {
        passes.iter().map(|p| p.iter().map(|s| s.ids.len()).collect()).collect()
    }

    #[test]
    fn passes_are_packed_first_fit_decreasing() {
        let ids = vec![1u32; 1100];
        let mask = vec![1u8; 1100];
        let seqs = |ls: &[usize]| ls.iter().map(|&n| Sequence { ids: &ids[..n], mask: &mask[..n] }).collect::<Vec<_>>();
        // In order these would take three passes: [300], [500, 400], [600].
        assert_eq!(lengths(&pack(&seqs(&[300, 500, 400, 600]), 1024)), [vec![600, 400], vec![500, 300]]);
        // Equal lengths end up side by side; a sequence past the capacity is alone.
        assert_eq!(lengths(&pack(&seqs(&[9, 30, 5, 30, 1100]), 44)), [vec![1100], vec![30, 9, 5], vec![30]]);
        assert_eq!(lengths(&pack(&seqs(&[9, 30, 5, 30]), 87)), [vec![30, 30, 9, 5]]);
        assert!(pack(&seqs(&[]), 64).is_empty());
        // Ties keep their order: the same data always packs the same way.
        let two = [Sequence { ids: &ids[..4], mask: &mask[..4] }, Sequence { ids: &ids[1..5], mask: &mask[..4] }];
        let packed = pack(&two, 4);
        assert!(std::ptr::eq(packed[0][0].ids, two[0].ids) && std::ptr::eq(packed[1][0].ids, two[1].ids));
    }
}
