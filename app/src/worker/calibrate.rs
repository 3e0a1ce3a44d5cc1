//! The run's duration, estimated before its first step: a forward and backward pass
//! over the first few tokens of a real example compiles the training shaders (seconds
//! on a CPU-emulated GPU) and is not counted; then a pass is timed, the pace the
//! estimate scales by tokens to every step and validation pass of the plan. On a
//! hardware GPU that is the first step's first pass, its examples packed as the trainer
//! packs them (packing is what makes it fast there); on a CPU-emulated one, the first
//! example alone (as fast per token as any packing, and a pass takes a minute there).
//! The gradients are cleared afterwards, so the run is the same as without it.

use classtune::gpu::Gpu;
use classtune::train::run::{Dataset, RunOptions, Tokens};
use classtune::train::{pack, Sequence, Trainer};

use super::EngineWorker;
use crate::protocol::{Calibration, FromWorker};

/// A validation pass is a forward only: about this share of a training pass's time
/// per token.
const FORWARD_SHARE: f64 = 0.5;
/// Tokens of the warm-up pass: the same kernels as a whole example, a fraction of
/// its cost (SmolLM2 takes about a minute per 64-token pass on SwiftShader).
const WARMUP_TOKENS: usize = 8;

impl EngineWorker {
    /// Times the first training pass and posts [`FromWorker::Calibration`].
    pub(super) async fn calibrate(
        &self,
        trainer: &Trainer<'_>,
        gpu: &Gpu,
        data: &Dataset,
        run: &RunOptions,
        total_steps: usize,
    ) -> Result<(), String> {
        let step: Vec<Sequence<'_>> = run
            .batch_indices(data.train.len(), 0)
            .into_iter()
            .filter_map(|i| data.train.get(i))
            .map(Tokens::sequence)
            .filter(|s| s.targets() > 0)
            .collect();
        let Some(first) = step.first() else {
            return Ok(());
        };
        let packed = pack(&step, trainer.pass_tokens());
        let pass = match packed.first() {
            Some(first_pass) if !gpu.is_software() => first_pass.as_slice(),
            _ => &step[..1],
        };
        let tokens: usize = pass.iter().map(|s| s.ids.len()).sum();
        let short = first.ids.len().min(WARMUP_TOKENS);
        // Every token a target: a chat example's first tokens (its system prompt) are
        // not, and a pass without targets is skipped.
        let all = vec![1u8; short];
        let warmup = Sequence { ids: &first.ids[..short], mask: &all };
        let mut seconds = [0.0; 2];
        for (slot, seqs) in seconds.iter_mut().zip([&[warmup][..], pass]) {
            let targets = seqs.iter().map(Sequence::targets).sum::<usize>().max(1);
            let started = js_sys::Date::now();
            trainer.accumulate(gpu, seqs, targets).await.map_err(|e| e.to_string())?;
            *slot = (js_sys::Date::now() - started) / 1000.0;
        }
        trainer.zero_grad(gpu).map_err(|e| e.to_string())?;

        let tokens = tokens.max(1);
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
