//! Copies back to the host recorded inside a batch and read once that batch has run,
//! whatever was submitted after it: decoding reads one token's id while the GPU already
//! computes the next (model/generate.rs).

use std::sync::{Arc, OnceLock};

use super::{Buffer, Gpu, GpuError};

/// `size` bytes copied into a mappable buffer by the batch that recorded it.
pub struct Readback {
    label: String,
    staging: wgpu::Buffer,
    size: u64,
    /// Set when the batch is submitted.
    submission: Arc<OnceLock<wgpu::SubmissionIndex>>,
}

impl Readback {
    /// The mappable copy of `size` bytes at `offset` of `buffer`; the batch records the
    /// copy into it and fills `submission`.
    pub(super) fn new(gpu: &Gpu, buffer: &Buffer, offset: u64, size: u64) -> Result<Readback, GpuError> {
        if !offset.is_multiple_of(4) || !size.is_multiple_of(4) || offset + size > buffer.size() {
            return Err(GpuError::Readback {
                label: buffer.label().to_string(),
                message: format!("range {offset}+{size} is not 4-byte aligned inside {} bytes", buffer.size()),
            });
        }
        let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Readback { label: buffer.label().to_string(), staging, size, submission: Arc::new(OnceLock::new()) })
    }

    pub(super) fn staging(&self) -> &wgpu::Buffer {
        &self.staging
    }

    pub(super) fn submission(&self) -> Arc<OnceLock<wgpu::SubmissionIndex>> {
        self.submission.clone()
    }

    /// The bytes, once the batch that copied them has finished (natively this waits for
    /// that submission only, not for later ones; in the browser the mapping resolves
    /// from the event loop).
    pub async fn read(self, gpu: &Gpu) -> Result<Vec<u8>, GpuError> {
        let error = |message: String| GpuError::Readback { label: self.label.clone(), message };
        let Some(submitted) = self.submission.get().cloned() else {
            return Err(error("read before its batch was submitted".into()));
        };
        let (sender, receiver) = futures_channel::oneshot::channel();
        self.staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        gpu.device()
            .poll(wgpu::PollType::Wait { submission_index: Some(submitted), timeout: None })
            .map_err(|e| error(e.to_string()))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submitted;
        let mapped = receiver.await.map_err(|_| error("device dropped the mapping".into()))?;
        gpu.check_fault()?;
        mapped.map_err(|e| error(e.to_string()))?;
        let bytes = self.staging.get_mapped_range(..).map_err(|e| error(e.to_string()))?.to_vec();
        self.staging.unmap();
        self.staging.destroy();
        Ok(bytes[..self.size as usize].to_vec())
    }
}
