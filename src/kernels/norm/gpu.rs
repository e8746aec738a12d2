//! GPU LayerNorm and RMSNorm (`shaders/norm.wgsl`): one workgroup of 256 invocations per row.

use crate::device::{Access, Bind, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/norm.wgsl");

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad: u32,
}

#[allow(clippy::too_many_arguments)]
fn record_norm(
    rec: &mut Recorder<'_>,
    entry_point: &'static str,
    x: &GpuTensor,
    weight: &GpuTensor,
    bias: Option<&GpuTensor>,
    out: &GpuTensor,
    rows: usize,
    cols: usize,
    eps: f32,
) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = x.dtype();
    check_float(ctx, dtype)?;
    check_tensor("norm input", x, rows * cols, dtype)?;
    check_tensor("norm output", out, rows * cols, dtype)?;
    check_tensor("norm weight", weight, cols, dtype)?;
    if let Some(bias) = bias {
        check_tensor("norm bias", bias, cols, dtype)?;
    }
    to_u32("rows * cols", rows * cols)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(crate::Error::Invalid(format!("norm eps ({eps}) must be finite and non-negative")));
    }
    if rows == 0 || cols == 0 {
        return Ok(());
    }

    let storage: &'static [Access] = if bias.is_some() {
        &[Access::Read, Access::ReadWrite, Access::Read, Access::Read]
    } else {
        &[Access::Read, Access::ReadWrite, Access::Read]
    };
    let kernel = ctx.kernel(&KernelSpec::new("norm", SHADER, entry_point, dtype, storage))?;
    for block in row_blocks(ctx, "norm rows", rows, cols * dtype.size())? {
        let params = Params { rows: block.rows as u32, cols: cols as u32, eps, _pad: 0 };
        let mut bindings = vec![bind_rows(x, block, cols), bind_rows(out, block, cols), Bind::Tensor(weight)];
        if let Some(bias) = bias {
            bindings.push(Bind::Tensor(bias));
        }
        rec.dispatch(&kernel, &params, &bindings, to_u32("norm rows", block.rows)?)?;
    }
    Ok(())
}

/// Records LayerNorm over `rows` rows of `cols` elements: `x` and `out` are `[rows, cols]`,
/// `weight` and `bias` have `cols` elements.
#[allow(clippy::too_many_arguments)]
pub fn record_layernorm(rec: &mut Recorder<'_>, x: &GpuTensor, weight: &GpuTensor, bias: &GpuTensor, out: &GpuTensor, rows: usize, cols: usize, eps: f32) -> crate::Result<()> {
    record_norm(rec, "layer_norm", x, weight, Some(bias), out, rows, cols, eps)
}

/// Records RMSNorm over `rows` rows of `cols` elements.
pub fn record_rmsnorm(rec: &mut Recorder<'_>, x: &GpuTensor, weight: &GpuTensor, out: &GpuTensor, rows: usize, cols: usize, eps: f32) -> crate::Result<()> {
    record_norm(rec, "rms_norm", x, weight, None, out, rows, cols, eps)
}

/// Uploads the operands, applies LayerNorm and downloads the result.
#[allow(clippy::too_many_arguments)]
pub fn layernorm(ctx: &GpuContext, x: &[f32], weight: &[f32], bias: &[f32], rows: usize, cols: usize, eps: f32, dtype: DType) -> crate::Result<Vec<f32>> {
    let tx = GpuTensor::from_f32(ctx, x, &[rows, cols], dtype)?;
    let tw = GpuTensor::from_f32(ctx, weight, &[cols], dtype)?;
    let tb = GpuTensor::from_f32(ctx, bias, &[cols], dtype)?;
    let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_layernorm(&mut rec, &tx, &tw, &tb, &out, rows, cols, eps)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}

/// Uploads the operands, applies RMSNorm and downloads the result.
pub fn rmsnorm(ctx: &GpuContext, x: &[f32], weight: &[f32], rows: usize, cols: usize, eps: f32, dtype: DType) -> crate::Result<Vec<f32>> {
    let tx = GpuTensor::from_f32(ctx, x, &[rows, cols], dtype)?;
    let tw = GpuTensor::from_f32(ctx, weight, &[cols], dtype)?;
    let out = GpuTensor::empty(ctx, &[rows, cols], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_rmsnorm(&mut rec, &tx, &tw, &out, rows, cols, eps)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
