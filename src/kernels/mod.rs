//! Transformer kernels, one module per op family. Each family has its GPU dispatch
//! (`gpu.rs`, with the WGSL in `shaders/`) and its CPU twin (`cpu.rs`: a plain reference that
//! tests use as the oracle, and a fast multi-threaded path that is the CPU fallback).
//!
//! Layout conventions shared by both sides: tensors are dense row-major `f32` (or `f16` on
//! the GPU where `SHADER_F16` is present); attention activations are `[batch, seq, heads,
//! head_dim]` and KV caches `[batch, cache_len, n_kv_heads, head_dim]`.
//!
//! GPU entry points come in two forms: `record*` functions add dispatches to a
//! [`Recorder`](crate::device::Recorder) over tensors already on the device, and plain
//! functions upload slices, run one op and download the result (for tests and `bench op`).
//! Data larger than `max_storage_buffer_binding_size` is processed in blocks of rows, each
//! bound at its own offset (see [`row_blocks`]); a single row larger than the limit is
//! rejected with `DeviceError::LimitExceeded`.

pub mod activation;
pub mod attention;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod softmax;

#[doc(hidden)]
pub mod test_util;

use crate::device::{Bind, DType, DeviceError, GpuContext, GpuTensor};

/// Every WGSL file in `shaders/` that this module owns, by name, for the validation tests.
pub const SHADERS: &[(&str, &str)] = &[
    ("activation", activation::gpu::SHADER),
    ("embedding", embedding::gpu::SHADER),
    ("matmul", matmul::gpu::SHADER),
    ("matvec", matmul::gpu::MATVEC_SHADER),
    ("norm", norm::gpu::SHADER),
    ("residual", embedding::gpu::RESIDUAL_SHADER),
    ("rope", rope::gpu::SHADER),
    ("softmax", softmax::gpu::SHADER),
];

/// Rows per block are a multiple of this, so every block's byte offset is a multiple of 256,
/// the largest `min_storage_buffer_offset_alignment` WebGPU allows.
const BLOCK_ROW_MULTIPLE: usize = 256;

/// A block of rows processed by one dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowBlock {
    pub start: usize,
    pub rows: usize,
}

/// Splits `rows` rows of at most `row_bytes` bytes each (over all bindings that are split by
/// row) into blocks whose bindings fit `max_storage_buffer_binding_size`. Fails with
/// [`DeviceError::LimitExceeded`] when even one block of 256 rows does not fit.
pub fn row_blocks(ctx: &GpuContext, what: &str, rows: usize, row_bytes: usize) -> Result<Vec<RowBlock>, DeviceError> {
    let limit = ctx.limits.max_storage_buffer_binding_size;
    row_blocks_for_limit(what, rows, row_bytes, limit)
}

fn row_blocks_for_limit(what: &str, rows: usize, row_bytes: usize, limit: u64) -> Result<Vec<RowBlock>, DeviceError> {
    // Bindings are rounded up to 4 bytes, so leave room for that.
    let usable = limit.saturating_sub(4);
    let row_bytes = row_bytes.max(1) as u64;
    let max_rows = usable / row_bytes;
    if max_rows >= rows as u64 {
        return Ok(vec![RowBlock { start: 0, rows }]);
    }
    let block = (max_rows as usize / BLOCK_ROW_MULTIPLE) * BLOCK_ROW_MULTIPLE;
    if block == 0 {
        return Err(DeviceError::LimitExceeded {
            what: format!("{what} with rows of {row_bytes} bytes"),
            needed: row_bytes * BLOCK_ROW_MULTIPLE as u64,
            limit_name: "max_storage_buffer_binding_size",
            limit,
            fix: "use smaller rows (a smaller model dimension) or a GPU with larger storage bindings".into(),
        });
    }
    let blocks = (0..rows)
        .step_by(block)
        .map(|start| RowBlock { start, rows: block.min(rows - start) })
        .collect();
    Ok(blocks)
}

/// Binds rows `block` of `tensor`, whose rows have `row_elems` elements.
pub(crate) fn bind_rows(tensor: &GpuTensor, block: RowBlock, row_elems: usize) -> Bind<'_> {
    let elem = tensor.dtype().size() as u64;
    let offset = (block.start * row_elems) as u64 * elem;
    let size = ((block.rows * row_elems) as u64 * elem).max(4).next_multiple_of(4);
    if offset == 0 && size >= tensor.padded_bytes() {
        Bind::Tensor(tensor)
    } else {
        Bind::Range { tensor, offset, size }
    }
}

/// Fails unless `tensor` has `expected` elements and element type `dtype`.
pub(crate) fn check_tensor(name: &str, tensor: &GpuTensor, expected: usize, dtype: DType) -> crate::Result<()> {
    if tensor.len() != expected {
        return Err(crate::Error::Invalid(format!(
            "{name} has {} elements (shape {:?}) but the op needs {expected}",
            tensor.len(),
            tensor.shape()
        )));
    }
    if tensor.dtype() != dtype {
        return Err(crate::Error::Invalid(format!("{name} is {} but the op needs {}", tensor.dtype().name(), dtype.name())));
    }
    Ok(())
}

/// Fails unless `dtype` is a float type the device computes in.
pub(crate) fn check_float(ctx: &GpuContext, dtype: DType) -> crate::Result<()> {
    match dtype {
        DType::F32 => Ok(()),
        DType::F16 if ctx.has_f16() => Ok(()),
        DType::F16 => Err(DeviceError::MissingFeature {
            adapter: ctx.info.name.clone(),
            feature: "SHADER_F16",
            fix: "use --dtype f32",
        }
        .into()),
        DType::U32 => Err(crate::Error::Invalid("this op computes in f32 or f16, not u32".into())),
    }
}

/// Converts a size to the `u32` a shader parameter holds, naming `what` when it does not fit.
pub(crate) fn to_u32(what: &str, value: usize) -> crate::Result<u32> {
    u32::try_from(value).map_err(|_| crate::Error::Invalid(format!("{what} ({value}) exceeds the u32 range of GPU kernel parameters")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_blocks_single_when_fits() {
        let blocks = row_blocks_for_limit("x", 1000, 64, 1 << 20).unwrap();
        assert_eq!(blocks, vec![RowBlock { start: 0, rows: 1000 }]);
    }

    #[test]
    fn row_blocks_split_aligned() {
        // 64-byte rows under a 64 KiB limit: at most 1023 rows, so blocks of 768.
        let blocks = row_blocks_for_limit("x", 2000, 64, 1 << 16).unwrap();
        assert_eq!(blocks.len(), 3);
        assert!(blocks.iter().all(|b| b.start % BLOCK_ROW_MULTIPLE == 0));
        assert!(blocks.iter().all(|b| (b.rows * 64) as u64 <= 1 << 16));
        assert_eq!(blocks.iter().map(|b| b.rows).sum::<usize>(), 2000);
        assert_eq!(blocks[2], RowBlock { start: 1536, rows: 464 });
    }

    #[test]
    fn row_blocks_reject_huge_rows() {
        let err = row_blocks_for_limit("softmax", 1000, 1 << 20, 1 << 24).unwrap_err();
        assert!(err.to_string().contains("max_storage_buffer_binding_size"), "{err}");
    }
}
