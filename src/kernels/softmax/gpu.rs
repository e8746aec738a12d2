//! GPU row softmax (`shaders/softmax.wgsl`): one workgroup of 256 invocations per row.

use crate::device::{Access, GpuContext, GpuTensor, KernelSpec, Recorder, DType};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/softmax.wgsl");

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    _pad: [u32; 2],
}

/// Records a softmax over each of the `rows` rows of `cols` elements of `x` into `out`.
pub fn record(rec: &mut Recorder<'_>, x: &GpuTensor, out: &GpuTensor, rows: usize, cols: usize) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = x.dtype();
    check_float(ctx, dtype)?;
    check_tensor("softmax input", x, rows * cols, dtype)?;
    check_tensor("softmax output", out, rows * cols, dtype)?;
    to_u32("rows * cols", rows * cols)?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let kernel = ctx.kernel(&KernelSpec::new("softmax", SHADER, "softmax_rows", dtype, &[Access::Read, Access::ReadWrite]))?;
    for block in row_blocks(ctx, "softmax rows", rows, cols * dtype.size())? {
        let params = Params { rows: block.rows as u32, cols: cols as u32, _pad: [0; 2] };
        rec.dispatch(&kernel, &params, &[bind_rows(x, block, cols), bind_rows(out, block, cols)], to_u32("softmax rows", block.rows)?)?;
    }
    Ok(())
}

/// Uploads `x`, applies the row softmax and downloads the result.
pub fn softmax_rows(ctx: &GpuContext, x: &[f32], rows: usize, cols: usize, dtype: DType) -> crate::Result<Vec<f32>> {
    let tx = GpuTensor::from_f32(ctx, x, &[rows, cols], dtype)?;
    let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
    let mut rec = Recorder::new(ctx);
    record(&mut rec, &tx, &out, rows, cols)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
