//! GPU matrix multiply (`shaders/matmul.wgsl`): 64 x 64 output tiles, 4 x 4 outputs per
//! invocation, K staged in steps of 16 through workgroup memory.

use crate::device::{Access, Bind, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/matmul.wgsl");

/// Rows and columns of C computed by one workgroup.
pub const TILE: usize = 64;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    tiles_n: u32,
    tiles_total: u32,
    _pad: [u32; 3],
}

/// The pipeline specification for one variant.
pub fn spec(dtype: DType, transpose_b: bool, has_bias: bool) -> KernelSpec {
    let mut spec = KernelSpec::new("matmul", SHADER, "matmul", dtype, &[Access::Read, Access::Read, Access::Read, Access::ReadWrite]);
    spec.constants = vec![("TRANSPOSE_B", transpose_b as u32), ("HAS_BIAS", has_bias as u32)];
    spec
}

/// Records `out = a · b (+ bias)`: `a` is `[m, k]`, `b` is `[k, n]` or `[n, k]` when
/// `transpose_b`, `bias` has `n` elements and `out` is `[m, n]`, all of one float dtype.
///
/// When `a` or `out` exceeds `max_storage_buffer_binding_size`, the product runs in blocks of
/// rows of A and C; `b` and `bias` must each fit in one binding, else the call fails with
/// `DeviceError::LimitExceeded`.
#[allow(clippy::too_many_arguments)]
pub fn record(
    rec: &mut Recorder<'_>,
    a: &GpuTensor,
    b: &GpuTensor,
    bias: Option<&GpuTensor>,
    out: &GpuTensor,
    m: usize,
    n: usize,
    k: usize,
    transpose_b: bool,
) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = a.dtype();
    check_float(ctx, dtype)?;
    check_tensor("matmul A", a, m * k, dtype)?;
    check_tensor("matmul B", b, k * n, dtype)?;
    check_tensor("matmul C", out, m * n, dtype)?;
    if let Some(bias) = bias {
        check_tensor("matmul bias", bias, n, dtype)?;
    }
    for (what, size) in [("m * k", m * k), ("k * n", k * n), ("m * n", m * n)] {
        to_u32(what, size)?;
    }
    // k = 0 needs no special case: the shader's K loop runs zero steps and C is the bias or 0.
    if m == 0 || n == 0 {
        return Ok(());
    }

    ctx.check_binding("matmul B", b.padded_bytes())?;
    let kernel = ctx.kernel(&spec(dtype, transpose_b, bias.is_some()))?;
    let row_bytes = k.max(n) * dtype.size();
    let tiles_n = n.div_ceil(TILE);

    for block in row_blocks(ctx, "matmul A and C", m, row_bytes)? {
        let tiles_total = block.rows.div_ceil(TILE) * tiles_n;
        let params = Params {
            m: block.rows as u32,
            n: n as u32,
            k: k as u32,
            tiles_n: tiles_n as u32,
            tiles_total: to_u32("matmul tiles", tiles_total)?,
            _pad: [0; 3],
        };
        let a_bind = bind_rows(a, block, k);
        // Without a bias the shader never reads binding 3; A stands in for it.
        let bias_bind = bias.map_or(a_bind, Bind::Tensor);
        let bindings = [a_bind, Bind::Tensor(b), bias_bind, bind_rows(out, block, n)];
        rec.dispatch(&kernel, &params, &bindings, tiles_total as u32)?;
    }
    Ok(())
}

/// Uploads the operands, multiplies, and downloads C (see [`record`] for the layouts).
#[allow(clippy::too_many_arguments)]
pub fn matmul(ctx: &GpuContext, a: &[f32], b: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize, transpose_b: bool, dtype: DType) -> crate::Result<Vec<f32>> {
    let b_shape = if transpose_b { [n, k] } else { [k, n] };
    let ta = GpuTensor::from_f32(ctx, a, &[m, k], dtype)?;
    let tb = GpuTensor::from_f32(ctx, b, &b_shape, dtype)?;
    let tbias = bias.map(|bias| GpuTensor::from_f32(ctx, bias, &[n], dtype)).transpose()?;
    let out = GpuTensor::empty(ctx, &[m, n], dtype)?;
    let mut rec = Recorder::new(ctx);
    record(&mut rec, &ta, &tb, tbias.as_ref(), &out, m, n, k, transpose_b)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
