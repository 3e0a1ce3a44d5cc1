//! The device: adapter choice, explicitly requested limits, buffers, pipelines, readback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::buffer::{Buffer, MemoryStats, Pool};
use super::pipeline::{Kernel, Pipeline};
use super::profile::Profile;
use super::{Batch, GpuError};

/// What to ask the adapter for.
#[derive(Debug, Clone)]
pub struct GpuOptions {
    /// Use subgroup operations where the adapter offers them (faster matmul on lavapipe).
    pub subgroups: bool,
    /// Most bytes of buffers alive at once: an allocation past it fails at once with
    /// [`GpuError::OutOfMemory`] naming the buffer. Neither WebGPU nor wgpu tells how
    /// much memory a GPU has, and a device that really runs out reports it later and
    /// asynchronously; None leaves it to the device.
    pub memory_limit: Option<u64>,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions { subgroups: true, memory_limit: None }
    }
}

/// The largest binding and buffer we ever rely on: the WebGPU defaults, so a kernel
/// that works natively also works on any browser.
pub const MAX_BINDING_BYTES: u64 = 128 << 20;
pub const MAX_BUFFER_BYTES: u64 = 256 << 20;

/// One GPU device with its queue, pipeline cache, buffer pool and memory accounting.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    subgroups: bool,
    memory_limit: Option<u64>,
    pipelines: Mutex<HashMap<Kernel, Pipeline>>,
    stats: Arc<MemoryStats>,
    pool: Arc<Pool>,
    /// First error the device reported outside an error scope (or its loss).
    fault: Arc<Mutex<Option<GpuError>>>,
    /// Why the device is gone (driver reset, `destroy()`), once it is: nothing on it can
    /// be used again, whatever error came first.
    lost: Arc<Mutex<Option<String>>>,
    /// Per-kernel times while profiling (native only, see profile.rs).
    profile: Mutex<Option<Profile>>,
}

impl Gpu {
    /// Opens the best adapter: Vulkan natively (lavapipe on CPU-only machines), WebGPU
    /// in the browser.
    pub async fn new(options: GpuOptions) -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = if cfg!(target_arch = "wasm32") {
            wgpu::Backends::BROWSER_WEBGPU
        } else {
            wgpu::Backends::VULKAN
        };
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let offered = adapter.limits();
        let info = adapter.get_info();
        // Subgroup kernels assume lanes in a power of two between 4 and 64.
        let subgroups = options.subgroups
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size >= 4
            && info.subgroup_max_size <= 64;
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: offered.max_storage_buffer_binding_size.min(MAX_BINDING_BYTES),
            max_buffer_size: offered.max_buffer_size.min(MAX_BUFFER_BYTES),
            max_storage_buffers_per_shader_stage: offered.max_storage_buffers_per_shader_stage.min(10),
            max_compute_workgroup_storage_size: offered.max_compute_workgroup_storage_size.min(32 << 10),
            max_compute_invocations_per_workgroup: offered.max_compute_invocations_per_workgroup.min(256),
            max_compute_workgroup_size_x: offered.max_compute_workgroup_size_x.min(256),
            max_compute_workgroup_size_y: offered.max_compute_workgroup_size_y.min(256),
            max_compute_workgroups_per_dimension: 65535,
            ..wgpu::Limits::default()
        };
        let required_features =
            if subgroups { wgpu::Features::SUBGROUP } else { wgpu::Features::empty() };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("classtune"),
                required_features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;
        let fault = Arc::new(Mutex::new(None));
        let sink = fault.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            let error = match error {
                wgpu::Error::OutOfMemory { .. } => {
                    GpuError::OutOfMemory { label: "device".into(), size: 0 }
                }
                other => GpuError::Validation(other.to_string()),
            };
            record(&sink, error);
        }));
        let sink = fault.clone();
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let why = format!("{reason:?}: {message}");
            if let Ok(mut slot) = lost_sink.lock() {
                *slot = Some(why.clone());
            }
            record(&sink, GpuError::DeviceLost(why));
        });
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            subgroups,
            memory_limit: options.memory_limit,
            pipelines: Mutex::new(HashMap::new()),
            stats: Arc::new(MemoryStats::default()),
            // Pooled buffers hand themselves back from any clone; on wasm wgpu's handles
            // are not Send, and there is one thread.
            #[allow(clippy::arc_with_non_send_sync)]
            pool: Arc::new(Pool::default()),
            fault,
            lost,
            profile: Mutex::new(None),
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// Whether subgroup kernels may be used on this device.
    pub fn has_subgroups(&self) -> bool {
        self.subgroups
    }
    pub fn memory(&self) -> &MemoryStats {
        &self.stats
    }
    /// Whether the adapter runs on the CPU (lavapipe, SwiftShader): expect it to be
    /// slow. wgpu maps WebGPU's `isFallbackAdapter` to this device type.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// A one-line description: adapter name, backend, and whether it is a CPU emulation.
    /// Browsers often leave the name empty (wgpu maps only `GPUAdapterInfo.description`);
    /// then the vendor id and driver (where known) stand in for it, or the backend alone.
    pub fn describe(&self) -> String {
        let name = if !self.info.name.trim().is_empty() {
            self.info.name.trim().to_string()
        } else {
            let vendor = if self.info.vendor != 0 { format!("vendor {:#06x}", self.info.vendor) } else { String::new() };
            let parts: Vec<&str> =
                [vendor.as_str(), self.info.driver.trim(), self.info.driver_info.trim()].into_iter().filter(|p| !p.is_empty()).collect();
            match (parts.is_empty(), self.is_software()) {
                (false, _) => parts.join(" "),
                (true, true) => format!("software {:?} adapter", self.info.backend),
                (true, false) => format!("{:?} adapter", self.info.backend),
            }
        };
        format!(
            "{} ({:?}, {:?}{})",
            name,
            self.info.backend,
            self.info.device_type,
            if self.subgroups {
                format!(", subgroups {}-{}", self.info.subgroup_min_size, self.info.subgroup_max_size)
            } else {
                String::new()
            }
        )
    }

    /// A zeroed storage buffer of `size` bytes (rounded up to 4), owned by the caller.
    pub fn buffer(&self, label: &str, size: u64) -> Result<Buffer, GpuError> {
        self.check_size(label, size)?;
        self.check_memory(label, size)?;
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4).next_multiple_of(4),
            usage: storage_usage(),
            mapped_at_creation: false,
        });
        Ok(Buffer::new(raw, label.to_string(), self.stats.clone()))
    }

    /// A scratch buffer of at least `size` bytes from the pool; its contents are undefined.
    pub fn scratch(&self, label: &str, size: u64) -> Result<Buffer, GpuError> {
        self.check_size(label, size)?;
        let class = Pool::class(size).min(self.limits.max_storage_buffer_binding_size);
        let raw = match self.pool.take(class) {
            Some(raw) => raw,
            None => {
                self.check_memory(label, class)?;
                self.stats.add(class);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: class,
                    usage: storage_usage(),
                    mapped_at_creation: false,
                })
            }
        };
        Ok(Buffer::pooled(raw, label.to_string(), self.stats.clone(), self.pool.clone()))
    }

    /// Releases the pool's free buffers.
    pub fn trim(&self) {
        self.pool.clear(&self.stats);
    }

    /// A storage buffer holding `bytes` (zero-padded to a multiple of 4).
    pub fn upload(&self, label: &str, bytes: &[u8]) -> Result<Buffer, GpuError> {
        self.check_size(label, bytes.len() as u64)?;
        self.check_memory(label, bytes.len() as u64)?;
        let raw = if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: storage_usage(),
            })
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().max(4).next_multiple_of(4), 0);
            self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &padded,
                usage: storage_usage(),
            })
        };
        Ok(Buffer::new(raw, label.to_string(), self.stats.clone()))
    }

    /// Overwrites the start of `buffer` with `bytes` (ordered before the next submit).
    pub fn write(&self, buffer: &Buffer, offset: u64, bytes: &[u8]) -> Result<(), GpuError> {
        if offset + bytes.len() as u64 > buffer.size() || !bytes.len().is_multiple_of(4) || !offset.is_multiple_of(4) {
            return Err(GpuError::shape(
                "write",
                format!(
                    "{} bytes at offset {offset} do not fit 4-byte aligned into `{}` ({} bytes)",
                    bytes.len(),
                    buffer.label(),
                    buffer.size()
                ),
            ));
        }
        self.queue.write_buffer(buffer.raw(), offset, bytes);
        Ok(())
    }

    fn check_size(&self, label: &str, size: u64) -> Result<(), GpuError> {
        let limit = self.limits.max_storage_buffer_binding_size;
        if size > limit {
            return Err(GpuError::TooLarge { label: label.to_string(), size, limit });
        }
        Ok(())
    }

    /// A new buffer of `size` bytes must fit [`GpuOptions::memory_limit`], after the
    /// pool's free buffers are released if that makes room.
    fn check_memory(&self, label: &str, size: u64) -> Result<(), GpuError> {
        let Some(limit) = self.memory_limit else { return Ok(()) };
        if self.stats.live_bytes() + size > limit {
            self.trim();
        }
        if self.stats.live_bytes() + size > limit {
            return Err(GpuError::OutOfMemory { label: label.to_string(), size });
        }
        Ok(())
    }

    /// The compiled pipeline for `kernel`, compiling it on first use. A WGSL error is
    /// returned, not raised as a device fault.
    pub async fn pipeline(&self, kernel: &Kernel) -> Result<Pipeline, GpuError> {
        if let Some(found) = self.pipelines.lock().ok().and_then(|p| p.get(kernel).cloned()) {
            return Ok(found);
        }
        if kernel.subgroups && !self.subgroups {
            return Err(GpuError::Shader {
                kernel: kernel.name(),
                message: "needs subgroups, which this device does not offer".into(),
            });
        }
        let name = kernel.name();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(kernel.wgsl(cfg!(target_arch = "wasm32")).into()),
        });
        let raw = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: None,
            module: &module,
            entry_point: Some(kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        if let Some(error) = scope.pop().await {
            return Err(GpuError::Shader { kernel: name, message: error.to_string() });
        }
        let layout = raw.get_bind_group_layout(0);
        let pipeline = Pipeline { name, raw, layout };
        if let Ok(mut cache) = self.pipelines.lock() {
            cache.insert(kernel.clone(), pipeline.clone());
        }
        Ok(pipeline)
    }

    /// A new, empty batch of work for this device.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }

    /// Why the device was lost, if it was: a new [`Gpu`] is needed then, and everything
    /// uploaded again.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// The first fault the device reported since the last call, if any.
    pub fn take_fault(&self) -> Option<GpuError> {
        self.fault.lock().ok().and_then(|mut f| f.take())
    }

    pub(super) fn check_fault(&self) -> Result<(), GpuError> {
        match self.take_fault() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host, without blocking.
    pub async fn read(&self, buffer: &Buffer, offset: u64, size: u64) -> Result<Vec<u8>, GpuError> {
        let readback_error =
            |message: String| GpuError::Readback { label: buffer.label().to_string(), message };
        if !offset.is_multiple_of(4) || !size.is_multiple_of(4) || offset + size > buffer.size() {
            return Err(readback_error(format!(
                "range {offset}+{size} is not 4-byte aligned inside {} bytes",
                buffer.size()
            )));
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer.raw(), offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (sender, receiver) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            let _ = sender.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| readback_error(e.to_string()))?;
        let mapped = receiver.await.map_err(|_| readback_error("device dropped the mapping".into()))?;
        self.check_fault()?;
        mapped.map_err(|e| readback_error(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| readback_error(e.to_string()))?
            .to_vec();
        staging.unmap();
        staging.destroy();
        Ok(bytes[..size as usize].to_vec())
    }

    /// The whole buffer as f32 values.
    pub async fn read_f32(&self, buffer: &Buffer) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read(buffer, 0, buffer.size()).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The first `count` f32 values of a buffer.
    pub async fn read_f32_prefix(&self, buffer: &Buffer, count: usize) -> Result<Vec<f32>, GpuError> {
        let bytes = self.read(buffer, 0, 4 * count as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The first `count` u32 values of a buffer.
    pub async fn read_u32_prefix(&self, buffer: &Buffer, count: usize) -> Result<Vec<u32>, GpuError> {
        let bytes = self.read(buffer, 0, 4 * count as u64).await?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Starts timing every dispatch on its own (see [`Profile`]); natively only, since
    /// it waits for each dispatch.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn start_profile(&self) {
        if let Ok(mut p) = self.profile.lock() {
            *p = Some(Profile::default());
        }
    }

    /// Stops profiling and returns what was measured since [`Gpu::start_profile`].
    pub fn take_profile(&self) -> Option<Profile> {
        self.profile.lock().ok().and_then(|mut p| p.take())
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn profiling(&self) -> bool {
        self.profile.lock().map(|p| p.is_some()).unwrap_or(false)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(super) fn record_dispatch(&self, name: &str, time: std::time::Duration) {
        if let Ok(mut guard) = self.profile.lock() {
            if let Some(p) = guard.as_mut() {
                p.record(name, time);
            }
        }
    }

    /// Waits until the device has finished all submitted work (natively); in the browser
    /// a readback is the way to wait.
    pub async fn finish(&self) -> Result<(), GpuError> {
        let (sender, receiver) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = sender.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| GpuError::Validation(e.to_string()))?;
        receiver.await.map_err(|_| GpuError::DeviceLost("queue dropped".into()))?;
        self.check_fault()
    }
}

/// Every buffer may also bind as a uniform: the matrix-vector kernel reads small
/// activations that way (see kernels/matmul).
fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

fn record(sink: &Mutex<Option<GpuError>>, error: GpuError) {
    if let Ok(mut slot) = sink.lock() {
        slot.get_or_insert(error);
    }
}
