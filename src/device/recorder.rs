//! Recording many kernel dispatches into one command encoder and submitting them together.
//!
//! A [`Recorder`] keeps one compute pass open across dispatches, so a whole forward pass is
//! one pass unless a copy or clear ends it; wgpu inserts the barriers between dependent
//! dispatches inside a pass. Every buffer a dispatch binds is held until [`Recorder::submit`],
//! so a tensor dropped by the caller mid-recording cannot be handed to another tensor of the
//! same recording by the pool.
//!
//! Uniform parameters: each dispatch gets its own small uniform buffer from the pool, written
//! with `Queue::write_buffer` (applied before the next submit's commands). WGSL lays out a
//! uniform struct with 16-byte alignment for vectors and a size rounded to 16 bytes, so every
//! parameter struct on the host is `#[repr(C)]`, made only of 4-byte scalars and padded by hand
//! to a multiple of 16 bytes. [`Recorder::dispatch`] rejects other sizes.
//!
//! Grid folding: a dispatch may have at most `max_compute_workgroups_per_dimension` (65,535
//! on most devices) workgroups per dimension. Kernels compute a linear workgroup index, and
//! [`fold_grid`] spreads it over x and y when it is larger. The shader rebuilds the index as
//! `wid.x + wid.y * num_workgroups.x` and returns early when it is past the real count,
//! because the folded grid `x * y` can exceed it by up to `x - 1` workgroups.

use super::runtime::{BufferKind, PooledBuffer};
use super::{DeviceError, GpuContext, GpuTensor, Kernel};
use std::sync::Arc;

/// Folds `workgroups` into an `[x, y, 1]` grid within `max_per_dim` per dimension.
///
/// Fails with [`DeviceError::LimitExceeded`] beyond `max_per_dim²` workgroups.
pub fn fold_grid(workgroups: u32, max_per_dim: u32) -> Result<[u32; 3], DeviceError> {
    if workgroups <= max_per_dim {
        return Ok([workgroups, 1, 1]);
    }
    let y = workgroups.div_ceil(max_per_dim);
    if y > max_per_dim {
        return Err(DeviceError::LimitExceeded {
            what: format!("a dispatch of {workgroups} workgroups"),
            needed: workgroups as u64,
            limit_name: "max_compute_workgroups_per_dimension (squared)",
            limit: max_per_dim as u64 * max_per_dim as u64,
            fix: "split the work into smaller calls".into(),
        });
    }
    // Spread evenly, so the overshoot past `workgroups` stays below one row of x.
    let x = workgroups.div_ceil(y);
    Ok([x, y, 1])
}

/// One storage binding of a dispatch: a whole tensor or a byte range of its buffer.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'t> {
    Tensor(&'t GpuTensor),
    /// `offset` must be a multiple of `min_storage_buffer_offset_alignment`, `size` of 4.
    Range { tensor: &'t GpuTensor, offset: u64, size: u64 },
}

impl<'t> From<&'t GpuTensor> for Bind<'t> {
    fn from(tensor: &'t GpuTensor) -> Self {
        Bind::Tensor(tensor)
    }
}

impl<'t> Bind<'t> {
    fn tensor(&self) -> &'t GpuTensor {
        match *self {
            Bind::Tensor(t) | Bind::Range { tensor: t, .. } => t,
        }
    }

    fn range(&self) -> (u64, u64) {
        match *self {
            Bind::Tensor(t) => (0, t.padded_bytes()),
            Bind::Range { offset, size, .. } => (offset, size),
        }
    }
}

/// Timestamp query slots for pass-level timing (see [`super::timing`]).
pub(crate) struct TimestampSlots {
    pub(crate) query_set: wgpu::QuerySet,
    /// Number of queries in `query_set`: two per pass.
    pub(crate) capacity: u32,
}

/// Records dispatches into one command encoder; see the module docs.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    keep: Vec<Arc<PooledBuffer>>,
    passes: u32,
    dispatches: u32,
    timestamps: Option<&'a TimestampSlots>,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        let encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("alphanas recorder") });
        Recorder {
            ctx,
            encoder,
            pass: None,
            keep: Vec::new(),
            passes: 0,
            dispatches: 0,
            timestamps: None,
        }
    }

    /// Creates a recorder whose passes write begin and end timestamps into `slots`.
    pub(crate) fn with_timestamps(ctx: &'a GpuContext, slots: &'a TimestampSlots) -> Self {
        let mut recorder = Self::new(ctx);
        recorder.timestamps = Some(slots);
        recorder
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Compute passes begun so far.
    pub fn pass_count(&self) -> u32 {
        self.passes
    }

    /// Dispatches recorded so far.
    pub fn dispatch_count(&self) -> u32 {
        self.dispatches
    }

    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let index = self.passes;
            let timestamp_writes = self.timestamps.and_then(|slots| {
                (2 * index + 1 < slots.capacity).then_some(wgpu::ComputePassTimestampWrites {
                    query_set: &slots.query_set,
                    beginning_of_pass_write_index: Some(2 * index),
                    end_of_pass_write_index: Some(2 * index + 1),
                })
            });
            let pass = self
                .encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("alphanas pass"), timestamp_writes })
                .forget_lifetime();
            self.pass = Some(pass);
            self.passes += 1;
        }
        self.pass.as_mut().expect("a pass was just begun")
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Records one dispatch of `kernel` over `workgroups` workgroups (folded, see the module
    /// docs), with `params` at binding 0 and `bindings` at 1..=N.
    ///
    /// Fails when `params` is not a multiple of 16 bytes, the binding count does not match the
    /// kernel, a binding exceeds `max_storage_buffer_binding_size`, or an offset is misaligned.
    pub fn dispatch<P: bytemuck::Pod>(&mut self, kernel: &Kernel, params: &P, bindings: &[Bind<'_>], workgroups: u32) -> Result<(), DeviceError> {
        let param_bytes = bytemuck::bytes_of(params);
        if !param_bytes.len().is_multiple_of(16) || param_bytes.is_empty() {
            return Err(DeviceError::Uncaptured(format!(
                "{}: the parameter struct is {} bytes, not a non-zero multiple of 16 as WGSL uniform layout needs",
                kernel.name,
                param_bytes.len()
            )));
        }
        if bindings.len() != kernel.storage_bindings {
            return Err(DeviceError::Uncaptured(format!(
                "{}: {} storage bindings given, the kernel declares {}",
                kernel.name,
                bindings.len(),
                kernel.storage_bindings
            )));
        }
        self.check_bindings(kernel, bindings)?;
        if workgroups == 0 {
            return Ok(());
        }
        let grid = fold_grid(workgroups, self.ctx.limits.max_compute_workgroups_per_dimension)?;

        let uniform = self.ctx.pool.acquire(&self.ctx.device, BufferKind::Uniform, param_bytes.len() as u64, self.ctx.limits.max_buffer_size)?;
        self.ctx.queue.write_buffer(uniform.buffer(), 0, param_bytes);

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform.buffer(),
                offset: 0,
                size: wgpu::BufferSize::new(param_bytes.len() as u64),
            }),
        }];
        for (i, bind) in bindings.iter().enumerate() {
            let (offset, size) = bind.range();
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: bind.tensor().buffer(),
                    offset,
                    size: wgpu::BufferSize::new(size),
                }),
            });
        }
        let bind_group = self.ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.name),
            layout: &kernel.layout,
            entries: &entries,
        });

        self.keep.push(uniform);
        for bind in bindings {
            self.keep.push(Arc::clone(bind.tensor().pooled()));
        }

        let pass = self.pass();
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        self.dispatches += 1;
        log::trace!("dispatch {} grid {:?}", kernel.name, grid);
        Ok(())
    }

    fn check_bindings(&self, kernel: &Kernel, bindings: &[Bind<'_>]) -> Result<(), DeviceError> {
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        for (i, bind) in bindings.iter().enumerate() {
            let (offset, size) = bind.range();
            let what = format!("binding {} of {}", i + 1, kernel.name);
            self.ctx.check_binding(&what, size)?;
            let fits = offset.checked_add(size).is_some_and(|end| end <= bind.tensor().buffer().size());
            if offset % align != 0 || size % 4 != 0 || size == 0 || !fits {
                return Err(DeviceError::Uncaptured(format!(
                    "{what}: range {offset}+{size} bytes is misaligned (offsets must be multiples of {align}, sizes of 4) or outside the buffer"
                )));
            }
        }
        Ok(())
    }

    /// Records a buffer copy; this ends the open compute pass.
    pub fn copy(&mut self, src: &GpuTensor, src_offset: u64, dst: &GpuTensor, dst_offset: u64, bytes: u64) {
        self.end_pass();
        self.encoder.copy_buffer_to_buffer(src.buffer(), src_offset, dst.buffer(), dst_offset, bytes);
        self.keep.push(Arc::clone(src.pooled()));
        self.keep.push(Arc::clone(dst.pooled()));
    }

    /// Records zero-filling `tensor`; this ends the open compute pass.
    pub fn clear(&mut self, tensor: &GpuTensor) {
        self.end_pass();
        self.encoder.clear_buffer(tensor.buffer(), 0, Some(tensor.padded_bytes()));
        self.keep.push(Arc::clone(tensor.pooled()));
    }

    /// Ends the pass and returns the encoder, for the timing code to append query resolves.
    pub(crate) fn into_parts(mut self) -> (wgpu::CommandEncoder, Vec<Arc<PooledBuffer>>) {
        self.end_pass();
        (self.encoder, self.keep)
    }

    /// Finishes the encoder and submits it. Validation errors of the recorded commands are
    /// caught in an error scope and returned. Does not wait for the GPU; call
    /// [`GpuContext::wait`] or download a tensor for that.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex, DeviceError> {
        let ctx = self.ctx;
        let (encoder, keep) = self.into_parts();
        submit_encoder(ctx, encoder, keep)
    }
}

/// Finishes and submits `encoder` inside a validation error scope, then releases `keep`.
pub(crate) fn submit_encoder(ctx: &GpuContext, encoder: wgpu::CommandEncoder, keep: Vec<Arc<PooledBuffer>>) -> Result<wgpu::SubmissionIndex, DeviceError> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let index = ctx.queue.submit([encoder.finish()]);
    if let Some(error) = pollster::block_on(scope.pop()) {
        return Err(DeviceError::Uncaptured(format!("recorded GPU commands are invalid: {}", error.to_string().replace('\n', " "))));
    }
    // The buffers may return to the pool now: later uses are ordered after this submission.
    drop(keep);
    ctx.check()?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_grid_within_limit() {
        assert_eq!(fold_grid(1, 65_535).unwrap(), [1, 1, 1]);
        assert_eq!(fold_grid(65_535, 65_535).unwrap(), [65_535, 1, 1]);
    }

    #[test]
    fn fold_grid_beyond_limit() {
        for total in [65_536u32, 100_000, 1 << 24, 65_535 * 65_535] {
            let [x, y, z] = fold_grid(total, 65_535).unwrap();
            assert!(x <= 65_535 && y <= 65_535, "{total}: {x}x{y}");
            assert_eq!(z, 1);
            assert!(x as u64 * y as u64 >= total as u64, "{total}: {x}x{y} too small");
            assert!((x as u64 * y as u64) < total as u64 + x as u64, "{total}: {x}x{y} overshoots");
        }
    }

    #[test]
    fn fold_grid_rejects_too_many() {
        assert!(matches!(fold_grid(u32::MAX, 65_535), Err(DeviceError::LimitExceeded { .. })));
        assert!(fold_grid(17, 4).unwrap_err().to_string().contains("max_compute_workgroups_per_dimension"));
    }
}
