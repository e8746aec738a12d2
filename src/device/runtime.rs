//! GPU tensors and the buffer pool behind them.
//!
//! Buffers are pooled by size class so that repeated kernel calls (timing loops, one forward
//! pass per candidate architecture) reuse memory instead of allocating. A size class rounds a
//! request up to a quarter of its power of two (a request of 5,000 bytes gets a 5,120-byte
//! buffer), which wastes at most 25% and lets nearby sizes share buffers. A buffer goes back
//! to the pool when the last [`GpuTensor`] or [`Recorder`](super::Recorder) that holds it is
//! dropped. Work already submitted on the queue is ordered before any later reuse, so a
//! buffer can be reused as soon as the command that last used it has been submitted.

use super::{DeviceError, GpuContext};
use half::f16;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    #[default]
    F32,
    /// IEEE half precision; on the GPU it needs `SHADER_F16`.
    F16,
    /// Token ids and positions.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// `f32`, `f16` or `u32`, as in JSON outputs and WGSL.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

/// What a pooled buffer is used for; buffers of different kinds are never exchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum BufferKind {
    /// Storage, copy source and destination: tensors.
    Storage,
    /// Uniform parameter structs.
    Uniform,
    /// Map-read staging buffers for downloads.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferKind::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferKind::Uniform => U::UNIFORM | U::COPY_DST,
            BufferKind::Readback => U::MAP_READ | U::COPY_DST,
        }
    }
}

/// Rounds `bytes` up to its size class: a multiple of a quarter of its power of two, and at
/// least 256 bytes.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let floor_power = 1u64 << (63 - bytes.leading_zeros());
    let quarter = (floor_power / 4).max(256);
    bytes.div_ceil(quarter) * quarter
}

#[derive(Debug, Default)]
pub(crate) struct PoolInner {
    idle: Mutex<HashMap<(BufferKind, u64), Vec<wgpu::Buffer>>>,
    allocations: AtomicU64,
    reuses: AtomicU64,
}

/// Buffer pool of one device (see the module docs).
#[derive(Debug, Default)]
pub struct BufferPool {
    inner: Arc<PoolInner>,
}

/// Counters of a [`BufferPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// Buffers created since the device was opened.
    pub allocations: u64,
    /// Requests served from idle buffers.
    pub reuses: u64,
    /// Buffers currently idle in the pool.
    pub idle_buffers: usize,
    /// Bytes held by idle buffers.
    pub idle_bytes: u64,
}

impl BufferPool {
    pub(crate) fn acquire(&self, device: &wgpu::Device, kind: BufferKind, bytes: u64, max_buffer_size: u64) -> Result<Arc<PooledBuffer>, DeviceError> {
        let bytes = bytes.max(4).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        if bytes > max_buffer_size {
            return Err(DeviceError::LimitExceeded {
                what: "a GPU buffer".into(),
                needed: bytes,
                limit_name: "max_buffer_size",
                limit: max_buffer_size,
                fix: "use a smaller batch, sequence length or model dimension".into(),
            });
        }
        // A class larger than the device allows falls back to the exact size.
        let class = size_class(bytes);
        let class = if class > max_buffer_size { bytes } else { class };

        let reused = self.inner.idle.lock().unwrap().get_mut(&(kind, class)).and_then(Vec::pop);
        let buffer = match reused {
            Some(buffer) => {
                self.inner.reuses.fetch_add(1, Ordering::Relaxed);
                buffer
            }
            None => {
                self.inner.allocations.fetch_add(1, Ordering::Relaxed);
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("alphanas pooled buffer"),
                    size: class,
                    usage: kind.usage(),
                    mapped_at_creation: false,
                })
            }
        };
        Ok(Arc::new(PooledBuffer {
            buffer,
            kind,
            class,
            pool: Arc::downgrade(&self.inner),
        }))
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let idle = self.inner.idle.lock().unwrap();
        PoolStats {
            allocations: self.inner.allocations.load(Ordering::Relaxed),
            reuses: self.inner.reuses.load(Ordering::Relaxed),
            idle_buffers: idle.values().map(Vec::len).sum(),
            idle_bytes: idle.iter().map(|((_, class), v)| class * v.len() as u64).sum(),
        }
    }

    /// Releases every idle buffer, for example after measuring a large model.
    pub fn trim(&self) {
        self.inner.idle.lock().unwrap().clear();
    }
}

/// A buffer on loan from the pool; it returns there when dropped.
#[derive(Debug)]
pub struct PooledBuffer {
    buffer: wgpu::Buffer,
    kind: BufferKind,
    class: u64,
    pool: Weak<PoolInner>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            let mut idle = pool.idle.lock().unwrap();
            idle.entry((self.kind, self.class)).or_default().push(self.buffer.clone());
        }
    }
}

/// A dense row-major tensor in a GPU buffer.
///
/// The buffer may be larger than the tensor (pool size classes); kernels bind only the
/// tensor's bytes. Cloning shares the buffer.
#[derive(Debug, Clone)]
pub struct GpuTensor {
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

fn element_count(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl GpuTensor {
    /// A tensor with unspecified contents (a reused buffer keeps old data).
    pub fn empty(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Result<GpuTensor, DeviceError> {
        let bytes = (element_count(shape) * dtype.size()) as u64;
        let buffer = ctx.pool.acquire(&ctx.device, BufferKind::Storage, bytes, ctx.limits.max_buffer_size)?;
        Ok(GpuTensor { buffer, shape: shape.to_vec(), dtype })
    }

    /// A tensor of zeros.
    pub fn zeros(ctx: &GpuContext, shape: &[usize], dtype: DType) -> Result<GpuTensor, DeviceError> {
        let tensor = Self::empty(ctx, shape, dtype)?;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("zeros") });
        encoder.clear_buffer(tensor.buffer(), 0, Some(tensor.padded_bytes()));
        ctx.queue.submit([encoder.finish()]);
        Ok(tensor)
    }

    /// Uploads `data` (row-major, `shape`) as `dtype`: `F32` as is, `F16` rounded to nearest.
    /// Fails when the lengths disagree or `dtype` is `U32` (use [`GpuTensor::from_u32`]).
    pub fn from_f32(ctx: &GpuContext, data: &[f32], shape: &[usize], dtype: DType) -> Result<GpuTensor, DeviceError> {
        check_len(data.len(), shape)?;
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                bytemuck::cast_slice(&halves).to_vec()
            }
            DType::U32 => return Err(DeviceError::Unavailable("GpuTensor::from_f32 cannot create a u32 tensor; use GpuTensor::from_u32".into())),
        };
        let tensor = Self::empty(ctx, shape, dtype)?;
        tensor.write_bytes(ctx, bytes);
        Ok(tensor)
    }

    /// Uploads token ids or positions.
    pub fn from_u32(ctx: &GpuContext, data: &[u32], shape: &[usize]) -> Result<GpuTensor, DeviceError> {
        check_len(data.len(), shape)?;
        let tensor = Self::empty(ctx, shape, DType::U32)?;
        tensor.write_bytes(ctx, bytemuck::cast_slice(data).to_vec());
        Ok(tensor)
    }

    fn write_bytes(&self, ctx: &GpuContext, mut bytes: Vec<u8>) {
        // Queue writes must be multiples of 4 bytes; an odd f16 count gets one padding half.
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        if !bytes.is_empty() {
            ctx.queue.write_buffer(self.buffer(), 0, &bytes);
        }
    }

    /// Copies the tensor back, converting f16 to f32. Waits for all submitted work.
    pub fn to_f32(&self, ctx: &GpuContext) -> Result<Vec<f32>, DeviceError> {
        let bytes = self.read_bytes(ctx)?;
        let n = self.len();
        Ok(match self.dtype {
            DType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes)[..n].to_vec(),
            DType::F16 => bytemuck::cast_slice::<u8, f16>(&bytes)[..n].iter().map(|h| h.to_f32()).collect(),
            DType::U32 => bytemuck::cast_slice::<u8, u32>(&bytes)[..n].iter().map(|&v| v as f32).collect(),
        })
    }

    /// Copies a `U32` tensor back. Waits for all submitted work.
    pub fn to_u32(&self, ctx: &GpuContext) -> Result<Vec<u32>, DeviceError> {
        if self.dtype != DType::U32 {
            return Err(DeviceError::Unavailable(format!("to_u32 needs a u32 tensor, this one is {}", self.dtype.name())));
        }
        let bytes = self.read_bytes(ctx)?;
        Ok(bytemuck::cast_slice::<u8, u32>(&bytes)[..self.len()].to_vec())
    }

    fn read_bytes(&self, ctx: &GpuContext) -> Result<Vec<u8>, DeviceError> {
        let size = self.padded_bytes();
        let staging = ctx.pool.acquire(&ctx.device, BufferKind::Readback, size, ctx.limits.max_buffer_size)?;
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("download") });
        encoder.copy_buffer_to_buffer(self.buffer(), 0, staging.buffer(), 0, size);
        ctx.queue.submit([encoder.finish()]);
        read_mapped(ctx, staging.buffer(), size)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        element_count(&self.shape)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the elements.
    pub fn bytes(&self) -> u64 {
        (self.len() * self.dtype.size()) as u64
    }

    /// Bytes rounded up to 4, the unit of copies and storage bindings.
    pub fn padded_bytes(&self) -> u64 {
        self.bytes().max(4).next_multiple_of(4)
    }

    /// The underlying buffer (possibly larger than the tensor).
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.buffer()
    }

    pub(crate) fn pooled(&self) -> &Arc<PooledBuffer> {
        &self.buffer
    }

    /// The same buffer with another shape of the same element count, for example a
    /// `[batch, seq, d_model]` activation seen as `[batch, seq, n_heads, head_dim]`.
    pub fn reshaped(&self, shape: &[usize]) -> Result<GpuTensor, DeviceError> {
        if element_count(shape) != self.len() {
            return Err(DeviceError::Unavailable(format!(
                "cannot reshape a tensor of shape {:?} ({} elements) to {:?} ({} elements)",
                self.shape,
                self.len(),
                shape,
                element_count(shape)
            )));
        }
        Ok(GpuTensor { buffer: Arc::clone(&self.buffer), shape: shape.to_vec(), dtype: self.dtype })
    }
}

fn check_len(len: usize, shape: &[usize]) -> Result<(), DeviceError> {
    if len != element_count(shape) {
        return Err(DeviceError::Unavailable(format!(
            "the data has {len} elements but the shape {shape:?} needs {}",
            element_count(shape)
        )));
    }
    Ok(())
}

/// Maps `buffer` (already holding the copied data once submitted work finishes), waits, and
/// returns its first `size` bytes.
pub(crate) fn read_mapped(ctx: &GpuContext, buffer: &wgpu::Buffer, size: u64) -> Result<Vec<u8>, DeviceError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    buffer.slice(..size).map_async(wgpu::MapMode::Read, move |result| {
        let _ = sender.send(result);
    });
    ctx.wait()?;
    match receiver.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DeviceError::Poll(format!("cannot map a readback buffer: {e}"))),
        Err(_) => return Err(DeviceError::Poll("the readback mapping never completed".into())),
    }
    let bytes = {
        let view = buffer
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| DeviceError::Poll(format!("cannot read a mapped buffer: {e}")))?;
        view.to_vec()
    };
    buffer.unmap();
    Ok(bytes)
}

impl GpuContext {
    /// The buffer pool of this device.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_round_up() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class(5000), 5120);
        assert_eq!(size_class(4096), 4096);
        assert_eq!(size_class(4097), 5120);
        for bytes in [1u64, 300, 1000, 65_537, 10_000_000] {
            let class = size_class(bytes);
            assert!(class >= bytes, "class {class} < {bytes}");
            assert!(class as f64 <= (bytes.max(256) as f64) * 1.25 + 256.0, "class {class} wastes too much for {bytes}");
        }
    }
}
