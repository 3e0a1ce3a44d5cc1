//! Where a run's GPU time goes, kernel by kernel (native only). While a profile is on,
//! [`Batch::submit`](super::Batch::submit) submits each dispatch on its own and waits
//! for it, so each kernel's wall time is its own. That costs a submit and a wait per
//! dispatch: use it to find what to optimise, not for headline numbers (the benches
//! print it with TRAIN_PROFILE=1 and ENGINE_PROFILE=1).

use std::collections::HashMap;
use std::time::Duration;

/// One kernel's share of a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTime {
    /// The pipeline's name: `lora.lora_forward_up[REGISTERS=true,WX=64u,WY=1u]`.
    pub name: String,
    pub time: Duration,
    pub dispatches: u64,
}

/// Times by pipeline name.
#[derive(Debug, Default)]
pub struct Profile {
    kernels: HashMap<String, (Duration, u64)>,
}

impl Profile {
    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn record(&mut self, name: &str, time: Duration) {
        let entry = self.kernels.entry(name.to_string()).or_default();
        entry.0 += time;
        entry.1 += 1;
    }

    /// The kernels, the most time first.
    pub fn kernels(&self) -> Vec<KernelTime> {
        let mut list: Vec<KernelTime> = self
            .kernels
            .iter()
            .map(|(name, &(time, dispatches))| KernelTime { name: name.clone(), time, dispatches })
            .collect();
        list.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| a.name.cmp(&b.name)));
        list
    }

    pub fn total(&self) -> Duration {
        self.kernels.values().map(|&(time, _)| time).sum()
    }

    /// The `top` kernels as lines of a table: seconds, share, dispatches, name.
    pub fn table(&self, top: usize) -> String {
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        let mut out = format!("{:>9} {:>6} {:>10}  kernel (per-dispatch wall time, {total:.2} s in all)\n", "seconds", "share", "dispatches");
        for k in self.kernels().iter().take(top) {
            let s = k.time.as_secs_f64();
            out += &format!("{s:>9.3} {:>5.1}% {:>10}  {}\n", 100.0 * s / total, k.dispatches, k.name);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_sum_by_name_most_time_first() {
        let mut p = Profile::default();
        p.record("a", Duration::from_millis(3));
        p.record("b", Duration::from_millis(5));
        p.record("a", Duration::from_millis(4));
        let k = p.kernels();
        assert_eq!(k[0], KernelTime { name: "a".into(), time: Duration::from_millis(7), dispatches: 2 });
        assert_eq!(k[1].name, "b");
        assert_eq!(p.total(), Duration::from_millis(12));
        assert!(p.table(1).contains(" a\n") && !p.table(1).contains(" b\n"));
    }
}
