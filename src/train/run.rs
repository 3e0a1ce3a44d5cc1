//! The loop over a dataset: batches in a seeded order, optimizer steps, validation at
//! an interval, early stopping. The data order is a pure function of (seed, step), so
//! a run resumed at step n sees exactly the batches an uninterrupted run would.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::gpu::Gpu;

use super::{Sequence, StepStats, TrainError, Trainer};

/// A tokenized example: ids and loss mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub mask: Vec<u8>,
}

impl Tokens {
    pub fn sequence(&self) -> Sequence<'_> {
        Sequence { ids: &self.ids, mask: &self.mask }
    }
}

/// The training and validation examples.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub train: Vec<Tokens>,
    pub validation: Vec<Tokens>,
}

/// How long to train and how to batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub epochs: usize,
    /// Stop after this many optimizer steps even if epochs remain.
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Validation loss every this many steps and after the last (0: only after the last).
    pub eval_every: usize,
    /// Stop when the validation loss has not improved for this many evaluations.
    pub patience: Option<usize>,
    pub seed: u64,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions { epochs: 3, max_steps: None, batch: 4, grad_accum: 1, eval_every: 20, patience: None, seed: 0 }
    }
}

impl RunOptions {
    /// Sequences per optimizer step.
    pub fn per_step(&self) -> usize {
        self.batch.max(1) * self.grad_accum.max(1)
    }

    /// Optimizer steps the run takes over `n_train` examples (every example once per
    /// epoch; the last batch of an epoch may be smaller).
    pub fn total_steps(&self, n_train: usize) -> usize {
        let per_epoch = n_train.div_ceil(self.per_step());
        let all = per_epoch * self.epochs;
        self.max_steps.map_or(all, |m| m.min(all))
    }

    /// Indices of the examples of optimizer step `step` (0-based): each epoch a fresh
    /// permutation seeded by (seed, epoch).
    pub fn batch_indices(&self, n_train: usize, step: usize) -> Vec<usize> {
        let per_step = self.per_step();
        let per_epoch = n_train.div_ceil(per_step).max(1);
        let (epoch, within) = (step / per_epoch, step % per_epoch);
        let mut order: Vec<usize> = (0..n_train).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        order.shuffle(&mut rng);
        let start = (within * per_step).min(n_train);
        order[start..(start + per_step).min(n_train)].to_vec()
    }
}

/// What the loop reports as it goes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Step {
        #[serde(flatten)]
        stats: StepStats,
        epoch: f64,
        total_steps: usize,
    },
    Validation {
        step: usize,
        val_loss: f64,
    },
}

/// Whether the loop goes on after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Pause or cancel: return after this step (the caller keeps the state).
    Stop,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub steps: usize,
    pub last_loss: Option<f64>,
    /// Validation loss of the base model (before the first step) and the last one.
    pub base_val_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub best_val_loss: Option<f64>,
    /// Early stopping ended the run.
    pub early_stopped: bool,
    /// The caller stopped it.
    pub interrupted: bool,
}

/// Trains from the trainer's current step to the end of the plan.
pub async fn run(
    trainer: &mut Trainer<'_>,
    gpu: &Gpu,
    data: &Dataset,
    options: &RunOptions,
    mut on_event: impl FnMut(&Event) -> Control,
) -> Result<RunSummary, TrainError> {
    let n = data.train.len();
    if n == 0 {
        return Err(TrainError::EmptyData("the training split has no examples".into()));
    }
    let total = options.total_steps(n);
    let val: Vec<Sequence<'_>> = data.validation.iter().map(Tokens::sequence).collect();
    let mut summary = RunSummary {
        steps: trainer.steps_done(),
        last_loss: None,
        base_val_loss: None,
        val_loss: None,
        best_val_loss: None,
        early_stopped: false,
        interrupted: false,
    };
    if trainer.steps_done() == 0 && !val.is_empty() {
        summary.base_val_loss = trainer.evaluate(gpu, &val).await?;
    }
    let mut stale = 0;
    for step in trainer.steps_done()..total {
        let seqs: Vec<Sequence<'_>> =
            options.batch_indices(n, step).into_iter().map(|i| data.train[i].sequence()).collect();
        let stats = trainer.step(gpu, &seqs).await?;
        summary.steps = stats.step;
        summary.last_loss = Some(stats.loss);
        let epoch = stats.step as f64 / n.div_ceil(options.per_step()) as f64;
        let mut control = on_event(&Event::Step { stats, epoch, total_steps: total });
        let last = stats.step == total;
        let due = options.eval_every > 0 && stats.step % options.eval_every == 0;
        if !val.is_empty() && (due || last || control == Control::Stop) {
            if let Some(val_loss) = trainer.evaluate(gpu, &val).await? {
                summary.val_loss = Some(val_loss);
                if summary.best_val_loss.is_none_or(|b| val_loss < b) {
                    summary.best_val_loss = Some(val_loss);
                    stale = 0;
                } else {
                    stale += 1;
                }
                if on_event(&Event::Validation { step: stats.step, val_loss }) == Control::Stop {
                    control = Control::Stop;
                }
                if options.patience.is_some_and(|p| stale >= p) && !last {
                    summary.early_stopped = true;
                    break;
                }
            }
        }
        if control == Control::Stop && !last {
            summary.interrupted = true;
            break;
        }
    }
    Ok(summary)
}
