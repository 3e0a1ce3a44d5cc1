//! Learning-rate schedules, the same functions as transformers'
//! `get_{linear,cosine,constant}_schedule_with_warmup`, so a run here and a run there
//! use the same rate at every step.

use serde::{Deserialize, Serialize};

/// How the rate decays after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

impl Decay {
    pub fn from_name(name: &str) -> Option<Decay> {
        match name {
            "cosine" => Some(Decay::Cosine),
            "linear" => Some(Decay::Linear),
            "constant" => Some(Decay::Constant),
            _ => None,
        }
    }
}

/// Linear warmup from 0 over `warmup` steps, then `decay` to 0 at `total` steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub lr: f32,
    pub warmup: usize,
    pub total: usize,
    pub decay: Decay,
}

impl Schedule {
    /// The rate of optimizer step `step` (0-based), as transformers' LambdaLR gives it:
    /// its scheduler is stepped after each optimizer step, so step 0 uses factor(0)
    /// (0 during warmup).
    pub fn lr(&self, step: usize) -> f32 {
        (self.lr as f64 * self.factor(step)) as f32
    }

    fn factor(&self, step: usize) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = (step - self.warmup) as f64 / span;
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => ((self.total as f64 - step as f64) / span).max(0.0),
            Decay::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_as_transformers() {
        let s = Schedule { lr: 1.0, warmup: 5, total: 50, decay: Decay::Cosine };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(1) - 0.2).abs() < 1e-7);
        assert_eq!(s.lr(5), 1.0);
        // Halfway through the decay the cosine is at one half.
        assert!((s.lr(5 + 45 / 2) as f64 - 0.5 * (1.0 + (std::f64::consts::PI * 22.0 / 45.0).cos())).abs() < 1e-6);
        let l = Schedule { decay: Decay::Linear, ..s };
        assert!((l.lr(41) - 9.0 / 45.0).abs() < 1e-7);
        assert_eq!(l.lr(50), 0.0);
        let c = Schedule { decay: Decay::Constant, ..s };
        assert_eq!(c.lr(49), 1.0);
    }
}
