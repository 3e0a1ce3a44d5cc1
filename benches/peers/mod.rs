//! Shared by the benches: the median of timed runs, and numpy's sgemm as the CPU's
//! practical ceiling, measured in the same run as our kernels.
#![allow(dead_code)] // each bench uses a part

use std::process::Command;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// numpy sgemm GFLOP/s of X[m×k]·W[n×k]ᵀ (median of 5 after a warm-up), with this
/// machine's `OPENBLAS_*` overrides removed for that process only.
pub fn numpy_gflops(m: usize, n: usize, k: usize) -> Option<f64> {
    let script = format!(
        "import numpy as np, time\n\
         x=np.random.rand({m},{k}).astype(np.float32); w=np.random.rand({n},{k}).astype(np.float32)\n\
         x@w.T\n\
         ts=[]\n\
         for _ in range(5):\n    t=time.perf_counter(); x@w.T; ts.append(time.perf_counter()-t)\n\
         print(2*{m}*{n}*{k}/sorted(ts)[2]/1e9)"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
