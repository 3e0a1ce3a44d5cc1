//! The run's duration, estimated before its first step: a forward and backward pass
//! over the first few tokens of a real example compiles the training shaders (seconds
//! on a CPU-emulated GPU) and is not counted; then the whole example's pass is timed,
//! the pace the estimate scales by tokens to every step and validation pass of the
//! plan. The gradients are cleared afterwards, so the run is the same as without it.

use classtune::gpu::Gpu;
use classtune::train::run::{Dataset, RunOptions};
use classtune::train::{Sequence, Trainer};

use super::EngineWorker;
use crate::protocol::{Calibration, FromWorker};

/// A validation pass is a forward only: about this share of a training pass's time
/// per token.
const FORWARD_SHARE: f64 = 0.5;
/// Tokens of the warm-up pass: the same kernels as a whole example, a fraction of
/// its cost (SmolLM2 takes about a minute per 64-token pass on SwiftShader).
const WARMUP_TOKENS: usize = 8;

impl EngineWorker {
    /// Times the first training example and posts [`FromWorker::Calibration`].
    pub(super) async fn calibrate(
        &self,
        trainer: &Trainer<'_>,
        gpu: &Gpu,
        data: &Dataset,
        run: &RunOptions,
        total_steps: usize,
    ) -> Result<(), String> {
        let Some(first) = run.batch_indices(data.train.len(), 0).first().and_then(|&i| data.train.get(i)) else {
            return Ok(());
        };
        let short = first.ids.len().min(WARMUP_TOKENS);
        // Every token a target: a chat example's first tokens (its system prompt) are
        // not, and a pass without targets is skipped.
        let all = vec![1u8; short];
        let warmup = Sequence { ids: &first.ids[..short], mask: &all };
        let whole = first.sequence();
        let mut seconds = [0.0; 2];
        for (slot, seq) in seconds.iter_mut().zip([warmup, whole]) {
            let started = js_sys::Date::now();
            trainer.accumulate(gpu, &[seq], seq.targets().max(1)).await.map_err(|e| e.to_string())?;
            *slot = (js_sys::Date::now() - started) / 1000.0;
        }
        trainer.zero_grad(gpu).map_err(|e| e.to_string())?;

        let tokens = first.ids.len().max(1);
        let per_token = seconds[1] / tokens as f64;
        let mean = |split: &[classtune::train::run::Tokens]| {
            split.iter().map(|t| t.ids.len()).sum::<usize>() as f64 / split.len().max(1) as f64
        };
        let training = per_token * mean(&data.train) * (run.per_step() * total_steps) as f64;
        let evaluations = match run.eval_every {
            0 => 0,
            every => total_steps.div_ceil(every),
        };
        let validation_tokens = mean(&data.validation) * data.validation.len() as f64;
        let validation = per_token * FORWARD_SHARE * validation_tokens * evaluations as f64;
        self.post(&FromWorker::Calibration(Calibration {
            tokens: tokens as u32,
            warmup_seconds: seconds[0],
            seconds: seconds[1],
            total_steps: total_steps as u32,
            batch: run.per_step() as u32,
            estimate_seconds: training + validation,
        }));
        Ok(())
    }
}
