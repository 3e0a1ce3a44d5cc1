//! A batch of dispatches and copies recorded up front and submitted as one command
//! buffer. Each dispatch's parameters go into one shared uniform buffer at aligned
//! offsets, so a whole forward pass is one upload and one submit.

use std::num::NonZeroU64;

use super::{Buffer, Gpu, GpuError, Pipeline};

/// A buffer or a range of it, bound to one `@binding` of a kernel.
#[derive(Clone, Copy)]
pub struct Binding<'a> {
    pub buffer: &'a Buffer,
    pub offset: u64,
    pub size: Option<u64>,
}

impl<'a> From<&'a Buffer> for Binding<'a> {
    fn from(buffer: &'a Buffer) -> Self {
        Binding { buffer, offset: 0, size: None }
    }
}

impl Buffer {
    /// `size` bytes from `offset` (offset a multiple of 256, the storage alignment).
    pub fn range(&self, offset: u64, size: u64) -> Binding<'_> {
        Binding { buffer: self, offset, size: Some(size) }
    }
}

enum Op {
    Dispatch {
        pipeline: Pipeline,
        params: (u64, u64),
        bindings: Vec<(wgpu::Buffer, u64, Option<NonZeroU64>)>,
        groups: [u32; 3],
    },
    Copy { src: wgpu::Buffer, src_offset: u64, dst: wgpu::Buffer, dst_offset: u64, size: u64 },
}

/// Work for one submit. Built with [`Gpu::batch`], run with [`Batch::submit`].
pub struct Batch<'g> {
    gpu: &'g Gpu,
    ops: Vec<Op>,
    params: Vec<u8>,
    /// Buffers whose owners are gone but whose contents the recorded work still uses.
    retained: Vec<Buffer>,
}

/// Workgroup counts for `n` groups in a grid that respects the 65535-per-dimension
/// limit; kernels recover the linear index with `group_index()` from common.wgsl.
pub fn grid(n: u32) -> [u32; 3] {
    if n <= 65535 {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(65535);
        [n.div_ceil(y), y, 1]
    }
}

impl<'g> Batch<'g> {
    pub(super) fn new(gpu: &'g Gpu) -> Self {
        Batch { gpu, ops: Vec::new(), params: Vec::new(), retained: Vec::new() }
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Records one dispatch. Binding 0 of the kernel is its `params` uniform; the
    /// buffers bind to 1, 2, … in order.
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        pipeline: &Pipeline,
        params: &P,
        buffers: &[Binding<'_>],
        groups: [u32; 3],
    ) -> Result<(), GpuError> {
        let limits = self.gpu.limits();
        if groups.iter().any(|&g| g > limits.max_compute_workgroups_per_dimension) {
            return Err(GpuError::Validation(format!(
                "{}: {groups:?} workgroups exceed {} per dimension",
                pipeline.name(),
                limits.max_compute_workgroups_per_dimension
            )));
        }
        let align = limits.min_uniform_buffer_offset_alignment as usize;
        let start = self.params.len().next_multiple_of(align);
        let bytes = bytemuck::bytes_of(params);
        self.params.resize(start, 0);
        self.params.extend_from_slice(bytes);
        let bindings = buffers
            .iter()
            .map(|b| {
                let end = b.offset + b.size.unwrap_or(b.buffer.size() - b.offset.min(b.buffer.size()));
                if end > b.buffer.size() {
                    return Err(GpuError::Validation(format!(
                        "{}: binding of `{}` ends at byte {end}, past its {} bytes",
                        pipeline.name(),
                        b.buffer.label(),
                        b.buffer.size()
                    )));
                }
                Ok((b.buffer.raw().clone(), b.offset, b.size.and_then(NonZeroU64::new)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.ops.push(Op::Dispatch {
            pipeline: pipeline.clone(),
            params: (start as u64, bytes.len() as u64),
            bindings,
            groups,
        });
        Ok(())
    }

    /// Keeps `buffers` alive until the batch is submitted: a pooled buffer dropped
    /// earlier could be handed out and overwritten (queue writes run before the batch),
    /// and a dropped owned buffer is destroyed.
    pub fn retain(&mut self, buffers: impl IntoIterator<Item = Buffer>) {
        self.retained.extend(buffers);
    }

    /// Records a buffer-to-buffer copy, ordered with the dispatches around it.
    pub fn copy(&mut self, src: &Buffer, src_offset: u64, dst: &Buffer, dst_offset: u64, size: u64) -> Result<(), GpuError> {
        if src_offset + size > src.size() || dst_offset + size > dst.size() || !size.is_multiple_of(4) {
            return Err(GpuError::Validation(format!(
                "copy of {size} bytes from `{}`+{src_offset} to `{}`+{dst_offset} is out of range",
                src.label(),
                dst.label()
            )));
        }
        self.ops.push(Op::Copy {
            src: src.raw().clone(),
            src_offset,
            dst: dst.raw().clone(),
            dst_offset,
            size,
        });
        Ok(())
    }

    /// Submits what is recorded so far and goes on recording into a fresh batch: the
    /// scratch buffers retained until now return to the pool, so a long graph split
    /// at its layers needs one layer's scratch at a time.
    pub fn flush(&mut self) -> Result<(), GpuError> {
        let next = self.gpu().batch();
        std::mem::replace(self, next).submit()
    }

    /// Encodes and submits everything; device errors raised by it come back here.
    pub fn submit(self) -> Result<(), GpuError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let device = self.gpu.device();
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: (self.params.len().max(16) as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut padded = self.params;
        padded.resize(uniforms.size() as usize, 0);
        self.gpu.queue().write_buffer(&uniforms, 0, &padded);
        let mut encoder = device.create_command_encoder(&Default::default());
        let mut pass: Option<wgpu::ComputePass<'static>> = None;
        #[cfg(not(target_arch = "wasm32"))]
        let profiling = self.gpu.profiling();
        for op in &self.ops {
            match op {
                Op::Dispatch { pipeline, params, bindings, groups } => {
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniforms,
                            offset: params.0,
                            size: NonZeroU64::new(params.1),
                        }),
                    }];
                    for (i, (buffer, offset, size)) in bindings.iter().enumerate() {
                        entries.push(wgpu::BindGroupEntry {
                            binding: i as u32 + 1,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer,
                                offset: *offset,
                                size: *size,
                            }),
                        });
                    }
                    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(pipeline.name()),
                        layout: &pipeline.layout,
                        entries: &entries,
                    });
                    let open = pass.get_or_insert_with(|| {
                        encoder.begin_compute_pass(&Default::default()).forget_lifetime()
                    });
                    open.set_pipeline(&pipeline.raw);
                    open.set_bind_group(0, &group, &[]);
                    open.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    #[cfg(not(target_arch = "wasm32"))]
                    if profiling {
                        drop(pass.take());
                        let done = std::mem::replace(&mut encoder, device.create_command_encoder(&Default::default()));
                        let start = std::time::Instant::now();
                        self.gpu.queue().submit([done.finish()]);
                        device
                            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
                            .map_err(|e| GpuError::Validation(e.to_string()))?;
                        self.gpu.record_dispatch(pipeline.name(), start.elapsed());
                    }
                }
                Op::Copy { src, src_offset, dst, dst_offset, size } => {
                    drop(pass.take());
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                }
            }
        }
        drop(pass);
        self.gpu.queue().submit([encoder.finish()]);
        uniforms.destroy();
        drop(self.retained);
        self.gpu.check_fault()
    }
}
