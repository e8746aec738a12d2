//! GPU token-embedding gather and residual add (`shaders/embedding.wgsl`,
//! `shaders/residual.wgsl`).

use crate::device::{Access, DType, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::kernels::{bind_rows, check_float, check_tensor, row_blocks, to_u32};

pub const SHADER: &str = include_str!("../../../shaders/embedding.wgsl");
pub const RESIDUAL_SHADER: &str = include_str!("../../../shaders/residual.wgsl");

const WORKGROUP_SIZE: usize = 256;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    n_tokens: u32,
    d: u32,
    vocab_start: u32,
    vocab_rows: u32,
    zero_missing: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    n: u32,
    _pad: [u32; 3],
}

/// Records `out[t] = table[ids[t]]` for a `[vocab, d]` table, `n_tokens` ids and a
/// `[n_tokens, d]` output of the table's dtype.
///
/// An id at or beyond `vocab` cannot be checked on the host (the ids live on the GPU), so its
/// output row is zeros instead of reading out of bounds. Tables or outputs larger than
/// `max_storage_buffer_binding_size` are processed in blocks of rows.
pub fn record_gather(rec: &mut Recorder<'_>, table: &GpuTensor, ids: &GpuTensor, out: &GpuTensor, vocab: usize, d: usize) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = table.dtype();
    check_float(ctx, dtype)?;
    let n_tokens = ids.len();
    check_tensor("the embedding table", table, vocab * d, dtype)?;
    check_tensor("the token ids", ids, n_tokens, DType::U32)?;
    check_tensor("the embedding output", out, n_tokens * d, dtype)?;
    to_u32("n_tokens * d", n_tokens * d)?;
    to_u32("vocab", vocab)?;
    if vocab == 0 {
        return Err(crate::Error::Invalid("the embedding table has vocab 0 rows; vocab_size must be at least 1".into()));
    }
    if n_tokens == 0 || d == 0 {
        return Ok(());
    }

    let kernel = ctx.kernel(&KernelSpec::new("embedding", SHADER, "gather", dtype, &[Access::Read, Access::Read, Access::ReadWrite]))?;
    let row_bytes = d * dtype.size();
    let vocab_blocks = row_blocks(ctx, "the embedding table", vocab, row_bytes)?;
    let token_blocks = row_blocks(ctx, "the embedding output", n_tokens, row_bytes.max(4))?;
    let single = vocab_blocks.len() == 1;
    if !single {
        rec.clear(out);
    }

    for tokens in &token_blocks {
        let ids_bind = bind_rows(ids, *tokens, 1);
        let out_bind = bind_rows(out, *tokens, d);
        for block in &vocab_blocks {
            let table_bind = bind_rows(table, *block, d);
            let params = GatherParams {
                n_tokens: tokens.rows as u32,
                d: d as u32,
                vocab_start: block.start as u32,
                vocab_rows: block.rows as u32,
                zero_missing: single as u32,
                _pad: [0; 3],
            };
            let workgroups = to_u32("embedding workgroups", (tokens.rows * d).div_ceil(WORKGROUP_SIZE))?;
            rec.dispatch(&kernel, &params, &[table_bind, ids_bind, out_bind], workgroups)?;
        }
    }
    Ok(())
}

/// Records `out = a + b` over tensors of equal size and dtype.
pub fn record_residual_add(rec: &mut Recorder<'_>, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor) -> crate::Result<()> {
    let ctx = rec.ctx();
    let dtype = a.dtype();
    check_float(ctx, dtype)?;
    let n = a.len();
    check_tensor("residual input b", b, n, dtype)?;
    check_tensor("residual output", out, n, dtype)?;
    if n == 0 {
        return Ok(());
    }
    let kernel = ctx.kernel(&KernelSpec::new("residual", RESIDUAL_SHADER, "residual_add", dtype, &[Access::Read, Access::Read, Access::ReadWrite]))?;
    for block in row_blocks(ctx, "the residual add", n, dtype.size())? {
        let params = ElementwiseParams { n: to_u32("residual elements", block.rows)?, _pad: [0; 3] };
        let workgroups = to_u32("residual workgroups", block.rows.div_ceil(WORKGROUP_SIZE))?;
        rec.dispatch(&kernel, &params, &[bind_rows(a, block, 1), bind_rows(b, block, 1), bind_rows(out, block, 1)], workgroups)?;
    }
    Ok(())
}

/// Uploads a `[vocab, d]` table and `ids`, gathers, and downloads the `[ids.len(), d]` result.
/// Rejects ids at or beyond `vocab`.
pub fn embedding(ctx: &GpuContext, table: &[f32], ids: &[u32], vocab: usize, d: usize, dtype: DType) -> crate::Result<Vec<f32>> {
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(crate::Error::Invalid(format!("token id {bad} is out of range for a vocabulary of {vocab}; ids must be below vocab_size")));
    }
    let table = GpuTensor::from_f32(ctx, table, &[vocab, d], dtype)?;
    let ids_tensor = GpuTensor::from_u32(ctx, ids, &[ids.len()])?;
    let out = GpuTensor::empty(ctx, &[ids.len(), d], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_gather(&mut rec, &table, &ids_tensor, &out, vocab, d)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}

/// Uploads `a` and `b`, adds them, and downloads the result.
pub fn residual_add(ctx: &GpuContext, a: &[f32], b: &[f32], dtype: DType) -> crate::Result<Vec<f32>> {
    if a.len() != b.len() {
        return Err(crate::Error::Invalid(format!("residual inputs differ in length ({} and {})", a.len(), b.len())));
    }
    let a = GpuTensor::from_f32(ctx, a, &[a.len()], dtype)?;
    let b = GpuTensor::from_f32(ctx, b, &[b.len()], dtype)?;
    let out = GpuTensor::empty(ctx, &[a.len()], dtype)?;
    let mut rec = Recorder::new(ctx);
    record_residual_add(&mut rec, &a, &b, &out)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}
