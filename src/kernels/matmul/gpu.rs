//! GPU matrix multiply (`shaders/matmul.wgsl`): 64 x 64 output tiles, 4 x 4 outputs per
//! invocation, K staged in steps of 16 through workgroup memory.
//!
//! Products with at most [`MATVEC_MAX_ROWS`] rows of A, such as the projections of a decode
//! step, run `shaders/matvec.wgsl` instead. A 64-row tile would compute 64 rows for each real
//! one there, while the thin kernel splits K over a workgroup and reads B once.

use crate::device::{Access, Bind, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/matmul.wgsl");
pub const MATVEC_SHADER: &str = include_str!("../../../shaders/matvec.wgsl");

/// Products with at most this many rows of A run the thin kernel of `shaders/matvec.wgsl`
/// (its `MAX_ROWS`).
pub const MATVEC_MAX_ROWS: usize = 8;

/// Columns of C per workgroup of `matvec_nk` (B is `[n, k]`) and `matvec_kn` (B is `[k, n]`).
const MATVEC_NK_COLS: usize = 4;
const MATVEC_KN_COLS: usize = 16;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatvecParams {
    m: u32,
    n: u32,
    k: u32,
    groups: u32,
}

/// Rows and columns of C computed by one workgroup.
pub const TILE: usize = 64;

/// Depth of one K step of `shaders/matmul.wgsl` (its `TILE_K`).
const TILE_K: usize = 16;

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

/// Returns the pipeline specification of one variant.
pub fn spec(dtype: DType, transpose_b: bool, has_bias: bool) -> KernelSpec {
    let mut spec = KernelSpec::new("matmul", SHADER, "matmul", dtype, &[Access::Read, Access::Read, Access::Read, Access::ReadWrite]);
    spec.constants = vec![("TRANSPOSE_B", transpose_b as u32), ("HAS_BIAS", has_bias as u32)];
    spec
}

/// Returns the pipeline specification of one variant of the thin kernel.
pub fn matvec_spec(dtype: DType, transpose_b: bool, has_bias: bool) -> KernelSpec {
    let entry = if transpose_b { "matvec_nk" } else { "matvec_kn" };
    let mut spec = KernelSpec::new("matvec", MATVEC_SHADER, entry, dtype, &[Access::Read, Access::Read, Access::Read, Access::ReadWrite]);
    spec.constants = vec![("HAS_BIAS", has_bias as u32)];
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
    if m <= MATVEC_MAX_ROWS {
        return record_matvec(rec, a, b, bias, out, m, n, k, transpose_b);
    }
    // Each invocation steps over K in tiles of TILE_K, with a loop over the tile inside.
    ctx.check_loop_budget(&format!("a matmul with k = {k}"), k.div_ceil(TILE_K) * (TILE_K + 1), "use --backend cpu")?;
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
        // Without a bias the shader never reads binding 3, so A is bound in its place.
        let bias_bind = bias.map_or(a_bind, Bind::Tensor);
        let bindings = [a_bind, Bind::Tensor(b), bias_bind, bind_rows(out, block, n)];
        rec.dispatch(&kernel, &params, &bindings, tiles_total as u32)?;
    }
    Ok(())
}

/// Records a product of at most [`MATVEC_MAX_ROWS`] rows with the thin kernel. The caller has
/// checked the operands, and A and C of so few rows fit in one binding when B does.
#[allow(clippy::too_many_arguments)]
fn record_matvec(
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
    ctx.check_binding("matmul A", a.padded_bytes())?;
    ctx.check_binding("matmul C", out.padded_bytes())?;
    let kernel = ctx.kernel(&matvec_spec(a.dtype(), transpose_b, bias.is_some()))?;
    let cols = if transpose_b { MATVEC_NK_COLS } else { MATVEC_KN_COLS };
    let groups = to_u32("matvec workgroups", n.div_ceil(cols))?;
    let params = MatvecParams { m: m as u32, n: n as u32, k: k as u32, groups };
    // Without a bias the shader never reads binding 3, so A is bound in its place.
    let bias_bind = bias.map_or(Bind::Tensor(a), Bind::Tensor);
    let bindings = [Bind::Tensor(a), Bind::Tensor(b), bias_bind, Bind::Tensor(out)];
    rec.dispatch(&kernel, &params, &bindings, groups)?;
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
