//! GPU GELU (tanh form), SwiGLU and ReLU (`shaders/activation.wgsl`): one element per invocation.

use crate::device::{Access, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/activation.wgsl");

const WORKGROUP_SIZE: usize = 256;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    _pad: [u32; 3],
}

/// Records `out = gelu_tanh(x)` elementwise.
pub fn record_gelu(rec: &mut Recorder<'_>, x: &GpuTensor, out: &GpuTensor) -> crate::Result<()> {
    record_elementwise(rec, "gelu_tanh", x, None, out)
}

/// Records `out = max(x, 0)` elementwise.
pub fn record_relu(rec: &mut Recorder<'_>, x: &GpuTensor, out: &GpuTensor) -> crate::Result<()> {
    record_elementwise(rec, "relu", x, None, out)
}

/// Records `out = silu(gate) * up` elementwise.
pub fn record_swiglu(rec: &mut Recorder<'_>, gate: &GpuTensor, up: &GpuTensor, out: &GpuTensor) -> crate::Result<()> {
    record_elementwise(rec, "swiglu", gate, Some(up), out)
}

fn record_elementwise(rec: &mut Recorder<'_>, entry_point: &'static str, x: &GpuTensor, up: Option<&GpuTensor>, out: &GpuTensor) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = x.dtype();
    check_float(ctx, dtype)?;
    let n = x.len();
    check_tensor("activation output", out, n, dtype)?;
    if let Some(up) = up {
        check_tensor("swiglu up", up, n, dtype)?;
    }
    if n == 0 {
        return Ok(());
    }
    let storage: &'static [Access] = if up.is_some() {
        &[Access::Read, Access::ReadWrite, Access::Read]
    } else {
        &[Access::Read, Access::ReadWrite]
    };
    let kernel = ctx.kernel(&KernelSpec::new("activation", SHADER, entry_point, dtype, storage))?;
    for block in row_blocks(ctx, entry_point, n, dtype.size())? {
        let params = Params { n: to_u32("activation elements", block.rows)?, _pad: [0; 3] };
        let mut bindings = vec![bind_rows(x, block, 1), bind_rows(out, block, 1)];
        if let Some(up) = up {
            bindings.push(bind_rows(up, block, 1));
        }
        let workgroups = to_u32("activation workgroups", block.rows.div_ceil(WORKGROUP_SIZE))?;
        rec.dispatch(&kernel, &params, &bindings, workgroups)?;
    }
    Ok(())
}

/// Uploads `x`, applies GELU (tanh form) and downloads the result.
pub fn gelu_tanh(ctx: &GpuContext, x: &[f32], dtype: DType) -> crate::Result<Vec<f32>> {
    let tx = GpuTensor::from_f32(ctx, x, &[x.len()], dtype)?;
    let out = GpuTensor::empty(ctx, &[x.len()], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_gelu(&mut rec, &tx, &out)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}

/// Uploads `gate` and `up`, applies SwiGLU and downloads the result.
pub fn swiglu(ctx: &GpuContext, gate: &[f32], up: &[f32], dtype: DType) -> crate::Result<Vec<f32>> {
    if gate.len() != up.len() {
        return Err(crate::Error::Invalid(format!("swiglu gate and up differ in length ({} and {})", gate.len(), up.len())));
    }
    let tg = GpuTensor::from_f32(ctx, gate, &[gate.len()], dtype)?;
    let tu = GpuTensor::from_f32(ctx, up, &[up.len()], dtype)?;
    let out = GpuTensor::empty(ctx, &[gate.len()], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_swiglu(&mut rec, &tg, &tu, &out)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
