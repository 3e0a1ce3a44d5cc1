//! Device buffers with size accounting and a pool for transient scratch buffers.
//!
//! Every byte a [`Buffer`] holds counts in [`MemoryStats`] until it is destroyed, pooled
//! buffers included, so the printed peak is what the device really had to hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Live and peak bytes of every buffer created by one [`super::Gpu`].
#[derive(Debug, Default)]
pub struct MemoryStats {
    live: AtomicU64,
    peak: AtomicU64,
    largest: AtomicU64,
}

impl MemoryStats {
    pub fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    /// The largest single buffer ever created: every binding is at most this.
    pub fn largest_buffer_bytes(&self) -> u64 {
        self.largest.load(Ordering::Relaxed)
    }
    /// Forget the peak so a benchmark can measure one phase.
    pub fn reset_peak(&self) {
        self.peak.store(self.live_bytes(), Ordering::Relaxed);
    }
    pub(super) fn add(&self, bytes: u64) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.largest.fetch_max(bytes, Ordering::Relaxed);
    }
    fn sub(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// Free scratch buffers by size class, shared by all buffers of one device.
#[derive(Debug, Default)]
pub(super) struct Pool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

impl Pool {
    /// Size classes step by an eighth of the next power of two, so a buffer is reused
    /// for requests up to 12.5% smaller while waste stays bounded.
    pub(super) fn class(size: u64) -> u64 {
        let size = size.max(256);
        let step = (size.next_power_of_two() / 8).max(256);
        size.div_ceil(step) * step
    }
    pub(super) fn take(&self, class: u64) -> Option<wgpu::Buffer> {
        self.free.lock().ok()?.get_mut(&class)?.pop()
    }
    fn put(&self, class: u64, raw: wgpu::Buffer) {
        if let Ok(mut free) = self.free.lock() {
            free.entry(class).or_default().push(raw);
        }
    }
    /// Destroys every free buffer; returns the bytes released.
    pub(super) fn clear(&self, stats: &MemoryStats) {
        if let Ok(mut free) = self.free.lock() {
            for (class, buffers) in free.drain() {
                for raw in buffers {
                    raw.destroy();
                    stats.sub(class);
                }
            }
        }
    }
}

/// A storage buffer on the device. Dropping it frees the memory, or returns it to the
/// pool when it came from [`super::Gpu::scratch`].
#[derive(Debug)]
pub struct Buffer {
    raw: wgpu::Buffer,
    size: u64,
    label: String,
    stats: Arc<MemoryStats>,
    pool: Option<Arc<Pool>>,
}

impl Buffer {
    /// A buffer owned outright; counts toward the stats from now on.
    pub(super) fn new(raw: wgpu::Buffer, label: String, stats: Arc<MemoryStats>) -> Self {
        let size = raw.size();
        stats.add(size);
        Buffer { raw, size, label, stats, pool: None }
    }
    /// A buffer on loan from the pool (already counted when first created).
    pub(super) fn pooled(raw: wgpu::Buffer, label: String, stats: Arc<MemoryStats>, pool: Arc<Pool>) -> Self {
        let size = raw.size();
        Buffer { raw, size, label, stats, pool: Some(pool) }
    }
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.raw
    }
    /// Size in bytes (a multiple of 4; pooled buffers may be larger than requested).
    pub fn size(&self) -> u64 {
        self.size
    }
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match &self.pool {
            // wgpu buffers are reference-counted handles: the pool keeps the allocation.
            Some(pool) => pool.put(self.size, self.raw.clone()),
            None => {
                self.raw.destroy();
                self.stats.sub(self.size);
            }
        }
    }
}
