//! A dispatch and readback with a known answer (shaders/scale.wgsl), which a host runs
//! before trusting a device: the app's worker does at start-up and reports a failure.

use super::batch::grid;
use super::{Gpu, GpuError, Kernel};

/// The kernel y = x · factor.
pub fn scale_kernel() -> Kernel {
    Kernel::new("scale", include_str!("../../shaders/scale.wgsl"), "scale")
}

/// Parameters of [`scale_kernel`]: `n` values scaled by `factor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ScaleParams {
    pub n: u32,
    pub factor: f32,
}

impl Gpu {
    /// Scales 1000 values by 2 on the device and checks every one on the host.
    pub async fn self_test(&self) -> Result<(), GpuError> {
        let n = 1000u32;
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let xb = self.upload("self_test.x", bytemuck::cast_slice(&x))?;
        let yb = self.scratch("self_test.y", 4 * n as u64)?;
        let pipeline = self.pipeline(&scale_kernel()).await?;
        let mut batch = self.batch();
        batch.dispatch(&pipeline, &ScaleParams { n, factor: 2.0 }, &[(&xb).into(), (&yb).into()], grid(n.div_ceil(64)))?;
        batch.submit()?;
        let y = self.read_f32_prefix(&yb, n as usize).await?;
        match y.iter().enumerate().find(|(i, v)| **v != 2.0 * *i as f32) {
            None => Ok(()),
            Some((i, v)) => Err(GpuError::Validation(format!("self-test value {i} is {v}, expected {}", 2 * i))),
        }
    }
}
