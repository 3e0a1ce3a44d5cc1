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

impl Dataset {
    /// Whole documents are held out so validation measures unseen material; with few
    /// documents one side may stay empty (a single document falls on one side whole).
    /// Then this splits by example instead: every example back in training, and a
    /// seeded `fraction` of them held out (at least one, keeping their order); returns
    /// how many. 0 when both sides already have examples or there are fewer than two.
    pub fn hold_out_examples(&mut self, fraction: f64, seed: u64) -> usize {
        if self.train.is_empty() {
            self.train = std::mem::take(&mut self.validation);
        }
        if !self.validation.is_empty() || self.train.len() < 2 || fraction <= 0.0 {
            return 0;
        }
        let keep = (self.train.len() as f64 * fraction).round().max(1.0) as usize;
        let mut ranked: Vec<(f64, usize)> = self
            .train
            .iter()
            .enumerate()
            .map(|(i, t)| (crate::data::split::unit_fraction(seed, &format!("{i}:{:?}", &t.ids[..t.ids.len().min(16)])), i))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut held = vec![false; self.train.len()];
        for &(_, i) in &ranked[..keep] {
            held[i] = true;
        }
        let (validation, train) = std::mem::take(&mut self.train).into_iter().zip(held).partition::<Vec<_>, _>(|(_, h)| *h);
        self.train = train.into_iter().map(|(t, _)| t).collect();
        self.validation = validation.into_iter().map(|(t, _)| t).collect();
        keep
    }
}

/// How long to train and how to batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// What one step of the loop did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub stats: StepStats,
    /// Epochs done, fractional.
    pub epoch: f64,
    pub total_steps: usize,
    /// The validation loss, on the steps that compute it.
    pub val_loss: Option<f64>,
    /// The validation loss stopped improving: the run ends here.
    pub early_stop: bool,
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

/// The loop, one optimizer step per [`Runner::next`] call, so the caller can pause,
/// checkpoint or report between steps. It holds no GPU state: the trainer and the
/// data are passed to each call.
pub struct Runner {
    options: RunOptions,
    summary: RunSummary,
    stale: usize,
}

impl Runner {
    /// Continues from the trainer's step; `best_val_loss` from a checkpoint keeps early
    /// stopping's memory across a resume.
    pub fn new(options: RunOptions, best_val_loss: Option<f64>) -> Runner {
        let summary = RunSummary {
            steps: 0,
            last_loss: None,
            base_val_loss: None,
            val_loss: None,
            best_val_loss,
            early_stopped: false,
            interrupted: false,
        };
        Runner { options, summary, stale: 0 }
    }

    pub fn options(&self) -> &RunOptions {
        &self.options
    }

    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }

    /// The validation loss of the weights as they are (the base model before the
    /// first step), kept as the summary's base loss when no step was taken yet.
    pub async fn validate(&mut self, trainer: &Trainer<'_>, gpu: &Gpu, data: &Dataset) -> Result<Option<f64>, TrainError> {
        let val: Vec<Sequence<'_>> = data.validation.iter().map(Tokens::sequence).collect();
        let loss = if val.is_empty() { None } else { trainer.evaluate(gpu, &val).await? };
        if trainer.steps_done() == 0 {
            self.summary.base_val_loss = loss;
        }
        Ok(loss)
    }

    /// Takes the next optimizer step; None when the plan is done or early stopping
    /// ended it. `force_eval` computes the validation loss on this step (e.g. before
    /// a pause).
    pub async fn next(
        &mut self,
        trainer: &mut Trainer<'_>,
        gpu: &Gpu,
        data: &Dataset,
        force_eval: bool,
    ) -> Result<Option<Report>, TrainError> {
        let n = data.train.len();
        if n == 0 {
            return Err(TrainError::EmptyData("the training split has no examples".into()));
        }
        let total = self.options.total_steps(n);
        let step = trainer.steps_done();
        if step >= total || self.summary.early_stopped {
            return Ok(None);
        }
        let seqs: Vec<Sequence<'_>> =
            self.options.batch_indices(n, step).into_iter().map(|i| data.train[i].sequence()).collect();
        let stats = trainer.step(gpu, &seqs).await?;
        self.summary.steps = stats.step;
        self.summary.last_loss = Some(stats.loss);
        let last = stats.step == total;
        let due = self.options.eval_every > 0 && stats.step % self.options.eval_every == 0;
        let mut report = Report {
            stats,
            epoch: stats.step as f64 / n.div_ceil(self.options.per_step()) as f64,
            total_steps: total,
            val_loss: None,
            early_stop: false,
        };
        if !data.validation.is_empty() && (due || last || force_eval) {
            report.val_loss = self.validate(trainer, gpu, data).await?;
            if let Some(v) = report.val_loss {
                self.summary.val_loss = Some(v);
                if self.summary.best_val_loss.is_none_or(|b| v < b) {
                    self.summary.best_val_loss = Some(v);
                    self.stale = 0;
                } else {
                    self.stale += 1;
                }
                if self.options.patience.is_some_and(|p| self.stale >= p) && !last {
                    self.summary.early_stopped = true;
                    report.early_stop = true;
                }
            }
        }
        Ok(Some(report))
    }
}

#[cfg(test)]
mod tests {
    use super::{Dataset, Tokens};

    fn examples(n: u32) -> Vec<Tokens> {
        (0..n).map(|i| Tokens { ids: vec![i, i + 1], mask: vec![1, 1] }).collect()
    }

    /// Whichever side a lone document fell on, training keeps examples and validation
    /// gets a seeded share of them; a split with both sides is left alone.
    #[test]
    fn an_empty_side_is_filled_by_example() {
        for (train, validation) in [(examples(10), vec![]), (vec![], examples(10))] {
            let mut data = Dataset { train, validation };
            assert_eq!(data.hold_out_examples(0.3, 7), 3);
            assert_eq!((data.train.len(), data.validation.len()), (7, 3));
            let mut again = Dataset { train: examples(10), validation: vec![] };
            again.hold_out_examples(0.3, 7);
            assert_eq!(data.validation.iter().map(|t| t.ids[0]).collect::<Vec<_>>(), again.validation.iter().map(|t| t.ids[0]).collect::<Vec<_>>());
        }
        let mut both = Dataset { train: examples(4), validation: examples(2) };
        assert_eq!(both.hold_out_examples(0.3, 7), 0);
        assert_eq!((both.train.len(), both.validation.len()), (4, 2));
    }
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// Pause or cancel: return after this step (the caller keeps the state).
    Stop,
}

/// Trains from the trainer's current step to the end of the plan (the base model's
/// validation loss first, on a fresh run), calling `on_step` after each step.
pub async fn run(
    trainer: &mut Trainer<'_>,
    gpu: &Gpu,
    data: &Dataset,
    options: &RunOptions,
    mut on_step: impl FnMut(&Report) -> Control,
) -> Result<RunSummary, TrainError> {
    let mut runner = Runner::new(options.clone(), None);
    if trainer.steps_done() == 0 {
        runner.validate(trainer, gpu, data).await?;
    }
    while let Some(report) = runner.next(trainer, gpu, data, false).await? {
        if on_step(&report) == Control::Stop && report.stats.step < report.total_steps && !report.early_stop {
            runner.summary.interrupted = true;
            break;
        }
    }
    Ok(runner.summary)
}
