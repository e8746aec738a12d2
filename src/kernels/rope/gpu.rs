//! GPU rotary position embedding, rotate-half form (`shaders/rope.wgsl`).

use crate::device::{Access, Bind, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/rope.wgsl");

const WORKGROUP_SIZE: usize = 256;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    use_positions: u32,
    pos_offset: u32,
    log2_theta: f32,
    _pad: [u32; 2],
}

/// Source of the token positions.
#[derive(Debug, Clone, Copy)]
pub enum Positions<'t> {
    /// A `U32` tensor with one position per token.
    Buffer(&'t GpuTensor),
    /// Token `t` is at position `offset + t` (for example a decode step at a cache length).
    Offset(u32),
}

/// The shape of a RoPE call: `x` is `[n_tokens, n_heads * head_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct RopeShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    /// The base of the frequencies, for example 10000.
    pub theta: f32,
}

/// Records RoPE of `x` into `out`; with `out` = `None` it rotates `x` in place.
pub fn record(rec: &mut Recorder<'_>, x: &GpuTensor, positions: Positions<'_>, out: Option<&GpuTensor>, shape: RopeShape) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = x.dtype();
    let RopeShape { n_tokens, n_heads, head_dim, theta } = shape;
    check_float(ctx, dtype)?;
    if head_dim % 2 != 0 {
        return Err(crate::Error::Invalid(format!("RoPE needs an even head_dim, got {head_dim}")));
    }
    if !(theta.is_finite() && theta > 1.0) {
        return Err(crate::Error::Invalid(format!("RoPE theta ({theta}) must be finite and greater than 1")));
    }
    let row = n_heads * head_dim;
    check_tensor("RoPE input", x, n_tokens * row, dtype)?;
    if let Some(out) = out {
        check_tensor("RoPE output", out, n_tokens * row, dtype)?;
    }
    if let Positions::Buffer(p) = positions {
        check_tensor("RoPE positions", p, n_tokens, DType::U32)?;
    }
    to_u32("n_tokens * n_heads * head_dim", n_tokens * row)?;
    if n_tokens == 0 || row == 0 {
        return Ok(());
    }

    let (entry_point, storage): (&'static str, &'static [Access]) = match out {
        Some(_) => ("rope", &[Access::Read, Access::ReadWrite, Access::Read]),
        None => ("rope_in_place", &[Access::Read, Access::ReadWrite, Access::Read]),
    };
    let kernel = ctx.kernel(&KernelSpec::new("rope", SHADER, entry_point, dtype, storage))?;
    // Unread bindings still need a buffer that does not alias the written one.
    let placeholder = match (positions, out) {
        (Positions::Buffer(_), _) | (_, Some(_)) => None,
        (Positions::Offset(_), None) => Some(GpuTensor::zeros(ctx, &[1], DType::U32)?),
    };

    for block in row_blocks(ctx, "RoPE tokens", n_tokens, row * dtype.size())? {
        let (use_positions, pos_offset) = match positions {
            Positions::Buffer(_) => (1, 0),
            Positions::Offset(offset) => (0, offset.checked_add(to_u32("RoPE token index", block.start)?).ok_or_else(|| {
                crate::Error::Invalid(format!("RoPE position offset {offset} + {} exceeds u32", block.start))
            })?),
        };
        let params = Params {
            n_tokens: block.rows as u32,
            n_heads: n_heads as u32,
            head_dim: head_dim as u32,
            use_positions,
            pos_offset,
            log2_theta: theta.log2(),
            _pad: [0; 2],
        };
        let written = bind_rows(out.unwrap_or(x), block, row);
        let positions_bind = match (positions, &placeholder) {
            (Positions::Buffer(p), _) => bind_rows(p, block, 1),
            (Positions::Offset(_), Some(placeholder)) => Bind::Tensor(placeholder),
            (Positions::Offset(_), None) => bind_rows(x, block, row),
        };
        let source = match out {
            Some(_) => bind_rows(x, block, row),
            None => positions_bind,
        };
        let workgroups = to_u32("RoPE workgroups", (block.rows * n_heads * head_dim / 2).div_ceil(WORKGROUP_SIZE))?;
        rec.dispatch(&kernel, &params, &[source, written, positions_bind], workgroups)?;
    }
    Ok(())
}

/// Uploads `x` and `positions`, applies RoPE and downloads the result.
// The arguments are the op's inputs and shape, as in the CPU twin `rope_ref`.
#[allow(clippy::too_many_arguments)]
pub fn rope(ctx: &GpuContext, x: &[f32], positions: &[u32], n_tokens: usize, n_heads: usize, head_dim: usize, theta: f32, dtype: DType) -> crate::Result<Vec<f32>> {
    let tx = GpuTensor::from_f32(ctx, x, &[n_tokens, n_heads * head_dim], dtype)?;
    let tp = GpuTensor::from_u32(ctx, positions, &[positions.len()])?;
    let out = GpuTensor::empty(ctx, &[n_tokens, n_heads * head_dim], dtype)?;
    let mut rec = Recorder::new(ctx);
    record(&mut rec, &tx, Positions::Buffer(&tp), Some(&out), RopeShape { n_tokens, n_heads, head_dim, theta })?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
