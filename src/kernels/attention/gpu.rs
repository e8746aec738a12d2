//! GPU attention: causal prefill with an online softmax (`shaders/attention_prefill.wgsl`),
//! split-K decode against a KV cache (`shaders/attention_decode.wgsl`) and the append of new
//! K/V rows to a cache (`shaders/attention_kv_append.wgsl`).
//!
//! Prefill makes one pass over the keys. On llvmpipe, which stops each shader invocation after
//! [`crate::device::LLVMPIPE_LOOP_ITERATIONS`] loop iterations, long sequences run in several
//! key passes instead, with the online-softmax state kept in a [`PrefillScratch`] between them.
//!
//! Host invariants, checked here before each dispatch (the shader headers state the same):
//! - `n_heads` is a multiple of `n_kv_heads`; query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//! - `head_dim` is at most [`MAX_HEAD_DIM`], because each prefill thread keeps its query row and
//!   output accumulator in private arrays sized by `head_dim` rounded up to a multiple of 4.
//! - Every tensor has exactly the elements its shape needs, and each binding fits
//!   `max_storage_buffer_binding_size` (the [`Recorder`] rejects larger ones). Callers with
//!   larger data split it first: the GPU model runs prefill in chunks of tokens and keeps one
//!   KV cache tensor per layer.
//! - Grids above 65,535 workgroups per dimension are folded by the [`Recorder`]; the shaders
//!   rebuild the linear workgroup index and return for indices past the count in their
//!   parameters.
//!
//! Parameter structs are `#[repr(C)]` u32/f32 fields padded to a multiple of 16 bytes, the
//! size WGSL gives a uniform struct.

use crate::device::{Access, DType, DeviceError, GpuContext, GpuTensor, KernelSpec, Recorder};
use crate::{Error, Result};

/// Largest `head_dim` the kernels accept (private arrays of this many f32 per thread).
pub const MAX_HEAD_DIM: usize = 256;

/// Query rows per prefill workgroup (the shader's `BQ`).
const PREFILL_QUERY_BLOCK: usize = 64;

/// Cache rows per decode split workgroup (the shader's `CHUNK`).
pub const DECODE_CHUNK: usize = 256;

/// Threads per workgroup of the append kernel (the shader's `WG`).
const APPEND_WORKGROUP: usize = 256;

pub const PREFILL_SHADER: &str = include_str!("../../../shaders/attention_prefill.wgsl");
pub const DECODE_SHADER: &str = include_str!("../../../shaders/attention_decode.wgsl");
pub const KV_APPEND_SHADER: &str = include_str!("../../../shaders/attention_kv_append.wgsl");

/// q, k, v, out, acc_state, ml_state.
const PREFILL_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];
/// Both decode entry points share one layout: q, k_cache, v_cache, out, part_o, part_ml.
const DECODE_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite, Access::ReadWrite];
const APPEND_BINDINGS: &[Access] = &[Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite];

/// Shape of one prefill attention dispatch: `n_q` query rows per sequence at absolute
/// positions `q_offset ..`, against the first `kv_len` rows of a KV cache with room for
/// `kv_capacity` rows per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefillShape {
    pub batch: usize,
    pub n_q: usize,
    pub kv_len: usize,
    pub kv_capacity: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub q_offset: usize,
}

impl PrefillShape {
    /// Plain causal self-attention over `seq` tokens with K/V of exactly `seq` rows.
    pub fn causal(batch: usize, seq: usize, n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Self {
        PrefillShape {
            batch,
            n_q: seq,
            kv_len: seq,
            kv_capacity: seq,
            n_heads,
            n_kv_heads,
            head_dim,
            q_offset: 0,
        }
    }

    fn q_len(&self) -> usize {
        self.batch * self.n_q * self.n_heads * self.head_dim
    }

    /// Query rows across heads: one online-softmax state each.
    fn state_rows(&self) -> usize {
        self.batch * self.n_q * self.n_heads
    }

    fn kv_elements(&self) -> usize {
        self.batch * self.kv_capacity * self.n_kv_heads * self.head_dim
    }

    /// Floating-point operations: two per multiply-add of q·k and of p·v over the causal
    /// keys of every query.
    pub fn flops(&self) -> f64 {
        let keys: usize = (0..self.n_q).map(|i| self.q_offset + i + 1).sum();
        4.0 * (self.batch * self.n_heads * keys * self.head_dim) as f64
    }

    fn validate(&self) -> Result<()> {
        check_heads(self.n_heads, self.n_kv_heads, self.head_dim)?;
        if self.batch == 0 || self.n_q == 0 {
            return Err(Error::Invalid(format!(
                "attention prefill needs batch ({}) and query rows ({}) of at least 1",
                self.batch, self.n_q
            )));
        }
        if self.kv_len > self.kv_capacity {
            return Err(Error::Invalid(format!(
                "attention kv_len ({}) exceeds the KV cache capacity ({}); allocate a larger cache",
                self.kv_len, self.kv_capacity
            )));
        }
        if self.q_offset + self.n_q > self.kv_len {
            return Err(Error::Invalid(format!(
                "attention prefill queries end at position {} but only {} KV rows are written; append the chunk's K/V before attention",
                self.q_offset + self.n_q,
                self.kv_len
            )));
        }
        Ok(())
    }
}

/// Shape of one decode attention dispatch: one query token per sequence against the first
/// `cache_len` rows (including the new token) of a cache with room for `cache_capacity` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeShape {
    pub batch: usize,
    pub cache_len: usize,
    pub cache_capacity: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl DecodeShape {
    /// Number of cache chunks the split pass handles per (batch, head).
    pub fn n_chunks(&self) -> usize {
        self.cache_len.div_ceil(DECODE_CHUNK)
    }

    fn q_len(&self) -> usize {
        self.batch * self.n_heads * self.head_dim
    }

    fn cache_elements(&self) -> usize {
        self.batch * self.cache_capacity * self.n_kv_heads * self.head_dim
    }

    /// Floating-point operations: two per multiply-add of q·k and of p·v.
    pub fn flops(&self) -> f64 {
        4.0 * (self.batch * self.n_heads * self.cache_len * self.head_dim) as f64
    }

    fn validate(&self) -> Result<()> {
        check_heads(self.n_heads, self.n_kv_heads, self.head_dim)?;
        if self.batch == 0 || self.cache_len == 0 {
            return Err(Error::Invalid(format!(
                "attention decode needs batch ({}) and cache_len ({}) of at least 1",
                self.batch, self.cache_len
            )));
        }
        if self.cache_len > self.cache_capacity {
            return Err(Error::Invalid(format!(
                "attention cache_len ({}) exceeds the KV cache capacity ({}); allocate a larger cache",
                self.cache_len, self.cache_capacity
            )));
        }
        Ok(())
    }
}

fn check_heads(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Result<()> {
    if n_kv_heads == 0 || n_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(Error::Invalid(format!(
            "attention n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads}) and both must be at least 1"
        )));
    }
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::Invalid(format!(
            "attention head_dim ({head_dim}) must be between 1 and {MAX_HEAD_DIM}; use more heads of a smaller head_dim"
        )));
    }
    Ok(())
}

/// Partial results of the decode split pass: unnormalised outputs `[partials, head_dim]` and
/// (max, sum) pairs `[partials, 2]`, both f32 whatever the model's dtype.
#[derive(Debug)]
pub struct DecodeScratch {
    part_o: GpuTensor,
    part_ml: GpuTensor,
    /// (batch, head, chunk) partials the buffers hold.
    partials: usize,
    head_dim: usize,
}

impl DecodeScratch {
    /// Allocates scratch for exactly `shape`'s number of partials.
    pub fn new(ctx: &GpuContext, shape: &DecodeShape) -> Result<Self> {
        let partials = shape.batch * shape.n_heads * shape.n_chunks();
        let part_o = GpuTensor::empty(ctx, &[partials, shape.head_dim], DType::F32)?;
        let part_ml = GpuTensor::empty(ctx, &[partials, 2], DType::F32)?;
        Ok(DecodeScratch { part_o, part_ml, partials, head_dim: shape.head_dim })
    }

    /// Bytes of the device buffers behind the scratch.
    pub fn allocated_bytes(&self) -> u64 {
        self.part_o.buffer().size() + self.part_ml.buffer().size()
    }
}

/// The online-softmax state a prefill carries between key passes (see
/// [`record_prefill_passes`]): unnormalised outputs `[batch * n_q * n_heads, head_dim]` and
/// (max, sum) pairs `[batch * n_q * n_heads, 2]`, both f32 whatever the model's dtype. A
/// prefill that runs in one pass binds one-element placeholders instead.
#[derive(Debug)]
pub struct PrefillScratch {
    acc: GpuTensor,
    ml: GpuTensor,
    /// Query rows of state; 0 for the placeholders.
    rows: usize,
    head_dim: usize,
}

impl PrefillScratch {
    /// Scratch for `shape` in `dtype` on this device: state buffers when the device splits its
    /// keys into several passes (llvmpipe, for long sequences), placeholders otherwise.
    pub fn new(ctx: &GpuContext, shape: &PrefillShape, dtype: DType) -> Result<Self> {
        if device_passes(ctx, shape, dtype) > 1 {
            Self::with_state(ctx, shape)
        } else {
            let acc = GpuTensor::empty(ctx, &[1], DType::F32)?;
            let ml = GpuTensor::empty(ctx, &[1], DType::F32)?;
            Ok(PrefillScratch { acc, ml, rows: 0, head_dim: shape.head_dim })
        }
    }

    /// Scratch with state buffers for `shape`, for any number of key passes.
    pub fn with_state(ctx: &GpuContext, shape: &PrefillShape) -> Result<Self> {
        let rows = shape.state_rows();
        let acc = GpuTensor::empty(ctx, &[rows, shape.head_dim], DType::F32)?;
        let ml = GpuTensor::empty(ctx, &[rows, 2], DType::F32)?;
        Ok(PrefillScratch { acc, ml, rows, head_dim: shape.head_dim })
    }

    /// Returns whether this scratch serves `shape` in `dtype` on this device as it is.
    pub fn fits(&self, ctx: &GpuContext, shape: &PrefillShape, dtype: DType) -> bool {
        device_passes(ctx, shape, dtype) == 1 || self.holds_state_for(shape)
    }

    fn holds_state_for(&self, shape: &PrefillShape) -> bool {
        self.head_dim == shape.head_dim && self.rows >= shape.state_rows()
    }

    /// Bytes of the device buffers behind the scratch.
    pub fn allocated_bytes(&self) -> u64 {
        self.acc.buffer().size() + self.ml.buffer().size()
    }
}

/// Shape of one K/V append: `n_new` rows per sequence of `row` elements (`n_kv_heads *
/// head_dim`) written after the first `offset` rows of a cache of `capacity` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvAppendShape {
    pub batch: usize,
    pub n_new: usize,
    pub offset: usize,
    pub capacity: usize,
    pub row: usize,
}

/// `head_dim` rounded up to a multiple of 4, the size of the shaders' private arrays.
fn padded_head_dim(head_dim: usize) -> u32 {
    head_dim.div_ceil(4) as u32 * 4
}

/// K/V rows per prefill tile: as many as fit twice (K and V) in workgroup memory, 1 to 64.
fn prefill_block_k(ctx: &GpuContext, dtype: DType, max_d: u32) -> u32 {
    let budget = ctx.limits.max_compute_workgroup_storage_size as usize;
    let per_row = 2 * dtype.size() * max_d as usize;
    (budget / per_row).clamp(1, 64) as u32
}

fn prefill_spec(dtype: DType, head_dim: usize, block_k: u32) -> KernelSpec {
    let mut spec = KernelSpec::new("attention_prefill", PREFILL_SHADER, "main", dtype, PREFILL_BINDINGS);
    spec.constants = vec![("MAX_D", padded_head_dim(head_dim)), ("BK", block_k)];
    spec
}

fn decode_spec(entry_point: &'static str, dtype: DType, head_dim: usize) -> KernelSpec {
    let mut spec = KernelSpec::new("attention_decode", DECODE_SHADER, entry_point, dtype, DECODE_BINDINGS);
    spec.constants = vec![("MAX_D", padded_head_dim(head_dim)), ("CHUNK", DECODE_CHUNK as u32)];
    spec
}

/// Returns (label, source) of the specialised WGSL of every kernel variant for `dtype` and
/// `head_dim`, as the pipelines compile it, for shader validation tests.
pub fn specialised_sources(dtype: DType, head_dim: usize) -> Vec<(String, String)> {
    let mut specs = vec![decode_spec("split", dtype, head_dim)];
    for block_k in [1, 8, 64] {
        specs.push(prefill_spec(dtype, head_dim, block_k));
    }
    specs.push(KernelSpec::new("attention_kv_append", KV_APPEND_SHADER, "main", dtype, APPEND_BINDINGS));
    specs
        .into_iter()
        .map(|spec| {
            let label = format!("{}[{}, head_dim {head_dim}, {:?}]", spec.shader, dtype.name(), spec.constants);
            let text = crate::device::specialize_wgsl(spec.source, dtype, &spec.constants).expect("attention shaders declare their constants");
            (label, text)
        })
        .collect()
}

fn check_tensor(what: &str, tensor: &GpuTensor, expected: usize, dtype: DType) -> Result<()> {
    if tensor.len() != expected {
        return Err(Error::Invalid(format!(
            "{what} has {} elements (shape {:?}) but the shape needs {expected}; allocate it from the same shape",
            tensor.len(),
            tensor.shape()
        )));
    }
    if tensor.dtype() != dtype {
        return Err(Error::Invalid(format!("{what} is {} but the attention runs in {}", tensor.dtype().name(), dtype.name())));
    }
    Ok(())
}

fn check_dtype(ctx: &GpuContext, dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 => Ok(()),
        DType::F16 if ctx.has_f16() => Ok(()),
        DType::F16 => Err(DeviceError::MissingFeature {
            adapter: ctx.info.name.clone(),
            feature: "SHADER_F16",
            fix: "use --dtype f32",
        }
        .into()),
        DType::U32 => Err(Error::Invalid("attention computes in f32 or f16, not u32".into())),
    }
}

fn to_u32(what: &str, value: usize) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::Invalid(format!("{what} ({value}) exceeds the u32 range of GPU kernel parameters")))
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PrefillParams {
    batch: u32,
    n_q: u32,
    kv_len: u32,
    kv_capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    q_offset: u32,
    scale: f32,
    q_blocks: u32,
    n_workgroups: u32,
    kv_start: u32,
    kv_stop: u32,
    flags: u32,
    _pad: [u32; 2],
}

/// `PrefillParams::flags` bits (the shader's FIRST and LAST).
const PASS_FIRST: u32 = 1;
const PASS_LAST: u32 = 2;

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    batch: u32,
    cache_len: u32,
    cache_capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    n_chunks: u32,
    scale: f32,
    split_workgroups: u32,
    reduce_workgroups: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AppendParams {
    n_new: u32,
    capacity: u32,
    row: u32,
    offset: u32,
    total: u32,
    _pad: [u32; 3],
}

/// Returns the loop iterations one prefill invocation runs over `keys` keys: two loops over
/// the head per key (scores, then values) plus the key loops themselves, per tile of `block_k`
/// keys the cooperative load and the rescaling, and three loops over the head (query load,
/// state load, store). On Mesa 22.3.6 (lavapipe), a single pass at head_dim 64 was correct up
/// to 484 keys and wrong from 488, before the state loops existed. Counting two loops over the
/// head, as that kernel had, this gives 64,088 and 64,608 there, a few percent low, which the
/// loop budget's 10% margin covers.
fn prefill_loop_iterations(keys: usize, head_dim: usize, block_k: usize) -> usize {
    let tiles = keys.div_ceil(block_k);
    2 * (head_dim + 1) * keys + tiles * (block_k * head_dim / PREFILL_QUERY_BLOCK + head_dim + 2) + 3 * head_dim
}

/// Returns the keys one prefill pass may cover on this device. That is all of them
/// (`usize::MAX`) unless the device bounds loop iterations per invocation
/// ([`GpuContext::loop_budget`]). Then it is the most keys within that bound, rounded down to a
/// multiple of the K/V tile where one tile fits, and at least 1. Recording rejects a head too
/// wide for even one key.
fn default_pass_keys(ctx: &GpuContext, dtype: DType, head_dim: usize) -> usize {
    let Some(budget) = ctx.loop_budget() else {
        return usize::MAX;
    };
    let block_k = prefill_block_k(ctx, dtype, padded_head_dim(head_dim)) as usize;
    pass_keys_within(budget, head_dim, block_k)
}

/// Returns the most keys per prefill pass whose loop iterations stay within `budget`: a
/// multiple of `block_k` where one tile fits, and at least 1.
fn pass_keys_within(budget: usize, head_dim: usize, block_k: usize) -> usize {
    let fits = |keys: usize| prefill_loop_iterations(keys, head_dim, block_k) <= budget;
    if fits(block_k) {
        let mut keys = block_k;
        while fits(keys + block_k) {
            keys += block_k;
        }
        keys
    } else {
        (1..block_k).rev().find(|&keys| fits(keys)).unwrap_or(1)
    }
}

/// Returns the number of key passes this device makes for `shape` in `dtype`.
fn device_passes(ctx: &GpuContext, shape: &PrefillShape, dtype: DType) -> usize {
    prefill_passes(shape.kv_len, default_pass_keys(ctx, dtype, shape.head_dim))
}

/// Returns the number of key passes over `kv_len` keys of at most `pass_keys` each.
fn prefill_passes(kv_len: usize, pass_keys: usize) -> usize {
    kv_len.div_ceil(pass_keys).max(1)
}

/// Records causal prefill attention. `q` and `out` are `[batch, n_q, n_heads, head_dim]`, `k`
/// and `v` are `[batch, kv_capacity, n_kv_heads, head_dim]`, all of `q`'s dtype. The keys run
/// in one pass, or on llvmpipe in as many as its loop budget needs, with the state between
/// passes in `scratch` (from [`PrefillScratch::new`] for this shape).
pub fn record_prefill(
    rec: &mut Recorder<'_>,
    shape: &PrefillShape,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    scratch: &PrefillScratch,
) -> Result<()> {
    let pass_keys = default_pass_keys(rec.ctx(), q.dtype(), shape.head_dim);
    record_prefill_passes(rec, shape, q, k, v, out, scratch, pass_keys)
}

/// Records causal prefill attention as [`record_prefill`] does, with the keys split into passes
/// of at most `pass_keys` each, dispatched back to back. Tests use it to run several passes on
/// a device that needs only one. `scratch` must contain state for `shape` (see
/// [`PrefillScratch::with_state`]) when there is more than one pass.
#[allow(clippy::too_many_arguments)]
pub fn record_prefill_passes(
    rec: &mut Recorder<'_>,
    shape: &PrefillShape,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    scratch: &PrefillScratch,
    pass_keys: usize,
) -> Result<()> {
    shape.validate()?;
    let ctx = rec.ctx();
    let dtype = q.dtype();
    check_dtype(ctx, dtype)?;
    check_tensor("attention prefill queries", q, shape.q_len(), dtype)?;
    check_tensor("attention prefill keys", k, shape.kv_elements(), dtype)?;
    check_tensor("attention prefill values", v, shape.kv_elements(), dtype)?;
    check_tensor("attention prefill output", out, shape.q_len(), dtype)?;
    if pass_keys == 0 {
        return Err(Error::Invalid("attention prefill pass_keys (0) must be at least 1".into()));
    }
    let passes = prefill_passes(shape.kv_len, pass_keys);
    if passes > 1 && !scratch.holds_state_for(shape) {
        return Err(Error::Invalid(format!(
            "attention prefill runs in {passes} key passes and needs state for {} query rows of head_dim {}, but its scratch has room for {} of head_dim {}; allocate the scratch from this shape",
            shape.state_rows(),
            shape.head_dim,
            scratch.rows,
            scratch.head_dim
        )));
    }

    let block_k = prefill_block_k(ctx, dtype, padded_head_dim(shape.head_dim));
    let iterations = prefill_loop_iterations(pass_keys.min(shape.kv_len), shape.head_dim, block_k as usize);
    ctx.check_loop_budget(
        &format!("causal prefill over passes of {} keys with head_dim {}", pass_keys.min(shape.kv_len), shape.head_dim),
        iterations,
        "use --backend cpu, or a smaller head_dim",
    )?;
    let kernel = ctx.kernel(&prefill_spec(dtype, shape.head_dim, block_k))?;

    let q_blocks = shape.n_q.div_ceil(PREFILL_QUERY_BLOCK);
    let n_workgroups = to_u32("attention prefill workgroups", q_blocks * shape.n_heads * shape.batch)?;
    let params = PrefillParams {
        batch: to_u32("batch", shape.batch)?,
        n_q: to_u32("query rows", shape.n_q)?,
        kv_len: to_u32("kv_len", shape.kv_len)?,
        kv_capacity: to_u32("kv_capacity", shape.kv_capacity)?,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        q_offset: to_u32("q_offset", shape.q_offset)?,
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
        q_blocks: q_blocks as u32,
        n_workgroups,
        kv_start: 0,
        kv_stop: 0,
        flags: 0,
        _pad: [0; 2],
    };
    for pass in 0..passes {
        let start = pass * pass_keys;
        let stop = shape.kv_len.min(start.saturating_add(pass_keys));
        let first = if pass == 0 { PASS_FIRST } else { 0 };
        let last = if pass + 1 == passes { PASS_LAST } else { 0 };
        let params = PrefillParams { kv_start: start as u32, kv_stop: stop as u32, flags: first | last, ..params };
        let bindings = [q.into(), k.into(), v.into(), out.into(), (&scratch.acc).into(), (&scratch.ml).into()];
        rec.dispatch(&kernel, &params, &bindings, n_workgroups)?;
    }
    Ok(())
}

/// Records decode attention: the split pass, then the reduce pass. `q` and `out` are
/// `[batch, n_heads, head_dim]`, the caches `[batch, cache_capacity, n_kv_heads, head_dim]`,
/// all of `q`'s dtype; `scratch` must come from a shape with the same number of partials.
#[allow(clippy::too_many_arguments)]
pub fn record_decode(
    rec: &mut Recorder<'_>,
    shape: &DecodeShape,
    q: &GpuTensor,
    k_cache: &GpuTensor,
    v_cache: &GpuTensor,
    out: &GpuTensor,
    scratch: &DecodeScratch,
) -> Result<()> {
    shape.validate()?;
    let ctx = rec.ctx();
    let dtype = q.dtype();
    check_dtype(ctx, dtype)?;
    check_tensor("attention decode queries", q, shape.q_len(), dtype)?;
    check_tensor("attention decode key cache", k_cache, shape.cache_elements(), dtype)?;
    check_tensor("attention decode value cache", v_cache, shape.cache_elements(), dtype)?;
    check_tensor("attention decode output", out, shape.q_len(), dtype)?;

    let split_workgroups = shape.batch * shape.n_heads * shape.n_chunks();
    if split_workgroups != scratch.partials || shape.head_dim != scratch.head_dim {
        return Err(Error::Invalid(format!(
            "decode attention scratch has {} partials of head_dim {} but the shape needs {} of head_dim {}; allocate it from this shape",
            scratch.partials, scratch.head_dim, split_workgroups, shape.head_dim
        )));
    }

    let split = ctx.kernel(&decode_spec("split", dtype, shape.head_dim))?;
    let reduce = ctx.kernel(&decode_spec("reduce", dtype, shape.head_dim))?;
    let split_workgroups = to_u32("attention decode split workgroups", split_workgroups)?;
    let reduce_workgroups = to_u32("attention decode reduce workgroups", shape.batch * shape.n_heads)?;
    let params = DecodeParams {
        batch: to_u32("batch", shape.batch)?,
        cache_len: to_u32("cache_len", shape.cache_len)?,
        cache_capacity: to_u32("cache_capacity", shape.cache_capacity)?,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        n_chunks: shape.n_chunks() as u32,
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
        split_workgroups,
        reduce_workgroups,
        _pad: [0; 2],
    };
    let bindings = [
        q.into(),
        k_cache.into(),
        v_cache.into(),
        out.into(),
        (&scratch.part_o).into(),
        (&scratch.part_ml).into(),
    ];
    rec.dispatch(&split, &params, &bindings, split_workgroups)?;
    rec.dispatch(&reduce, &params, &bindings, reduce_workgroups)?;
    Ok(())
}

/// Records the append of new K/V rows: `k_new`, `v_new` `[batch, n_new, row]` go to rows
/// `offset .. offset + n_new` of the caches `[batch, capacity, row]`.
pub fn record_kv_append(rec: &mut Recorder<'_>, shape: &KvAppendShape, k_new: &GpuTensor, v_new: &GpuTensor, k_cache: &GpuTensor, v_cache: &GpuTensor) -> Result<()> {
    let ctx = rec.ctx();
    let dtype = k_new.dtype();
    check_dtype(ctx, dtype)?;
    if shape.offset + shape.n_new > shape.capacity {
        return Err(Error::Invalid(format!(
            "appending {} rows after {} exceeds the KV cache capacity ({}); allocate a larger cache",
            shape.n_new, shape.offset, shape.capacity
        )));
    }
    let total = shape.batch * shape.n_new * shape.row;
    let cache_len = shape.batch * shape.capacity * shape.row;
    check_tensor("new keys", k_new, total, dtype)?;
    check_tensor("new values", v_new, total, dtype)?;
    check_tensor("the key cache", k_cache, cache_len, dtype)?;
    check_tensor("the value cache", v_cache, cache_len, dtype)?;
    if total == 0 {
        return Ok(());
    }

    let kernel = ctx.kernel(&KernelSpec::new("attention_kv_append", KV_APPEND_SHADER, "main", dtype, APPEND_BINDINGS))?;
    let params = AppendParams {
        n_new: to_u32("new rows", shape.n_new)?,
        capacity: to_u32("cache capacity", shape.capacity)?,
        row: to_u32("cache row", shape.row)?,
        offset: to_u32("cache offset", shape.offset)?,
        total: to_u32("appended elements", total)?,
        _pad: [0; 3],
    };
    let workgroups = to_u32("append workgroups", total.div_ceil(APPEND_WORKGROUP))?;
    rec.dispatch(&kernel, &params, &[k_new.into(), v_new.into(), k_cache.into(), v_cache.into()], workgroups)?;
    Ok(())
}

/// Runs causal prefill attention on the GPU: uploads `q` `[batch, n_q, n_heads, head_dim]` and `k`,
/// `v` `[batch, kv_capacity, n_kv_heads, head_dim]` as `dtype` (f16 rounds to nearest), runs
/// the kernel and returns the output `[batch, n_q, n_heads, head_dim]` as f32. The GPU twin
/// of `cpu::attention_prefill_ref` when `shape` is [`PrefillShape::causal`].
pub fn attention_prefill(ctx: &GpuContext, q: &[f32], k: &[f32], v: &[f32], shape: &PrefillShape, dtype: DType) -> Result<Vec<f32>> {
    shape.validate()?;
    check_lengths(q, k, v, shape.q_len(), shape.kv_elements())?;
    let q = GpuTensor::from_f32(ctx, q, &[q.len()], dtype)?;
    let k = GpuTensor::from_f32(ctx, k, &[k.len()], dtype)?;
    let v = GpuTensor::from_f32(ctx, v, &[v.len()], dtype)?;
    let out = GpuTensor::empty(ctx, &[q.len()], dtype)?;
    let scratch = PrefillScratch::new(ctx, shape, dtype)?;

    let mut rec = Recorder::new(ctx);
    record_prefill(&mut rec, shape, &q, &k, &v, &out, &scratch)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}

/// Runs decode attention on the GPU: `q` `[batch, n_heads, head_dim]` against caches `[batch,
/// cache_capacity, n_kv_heads, head_dim]` whose first `cache_len` rows are valid, uploaded as
/// `dtype`. Returns `[batch, n_heads, head_dim]` as f32. The GPU twin of
/// `cpu::attention_decode_ref` when `cache_capacity == cache_len`.
pub fn attention_decode(ctx: &GpuContext, q: &[f32], k_cache: &[f32], v_cache: &[f32], shape: &DecodeShape, dtype: DType) -> Result<Vec<f32>> {
    shape.validate()?;
    check_lengths(q, k_cache, v_cache, shape.q_len(), shape.cache_elements())?;
    let q = GpuTensor::from_f32(ctx, q, &[q.len()], dtype)?;
    let k = GpuTensor::from_f32(ctx, k_cache, &[k_cache.len()], dtype)?;
    let v = GpuTensor::from_f32(ctx, v_cache, &[v_cache.len()], dtype)?;
    let out = GpuTensor::empty(ctx, &[q.len()], dtype)?;
    let scratch = DecodeScratch::new(ctx, shape)?;

    let mut rec = Recorder::new(ctx);
    record_decode(&mut rec, shape, &q, &k, &v, &out, &scratch)?;
    rec.submit()?;
    Ok(out.to_f32(ctx)?)
}

fn check_lengths(q: &[f32], k: &[f32], v: &[f32], q_len: usize, kv_len: usize) -> Result<()> {
    if q.len() != q_len || k.len() != kv_len || v.len() != kv_len {
        return Err(Error::Invalid(format!(
            "attention inputs have q {} / k {} / v {} elements but the shape needs q {q_len} and k, v {kv_len}",
            q.len(),
            k.len(),
            v.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On llvmpipe's budget (90% of 65,535), head_dim 64 with 64-key tiles gets 384 keys per
    /// pass: 6 tiles fit, 7 do not. A head of 256 in 16-key tiles still gets whole tiles, and a
    /// budget below one tile falls back to single keys.
    #[test]
    fn pass_keys_fit_the_budget() {
        let budget = crate::device::LLVMPIPE_LOOP_ITERATIONS * 9 / 10;
        assert_eq!(pass_keys_within(budget, 64, 64), 384);
        assert!(prefill_loop_iterations(384, 64, 64) <= budget);
        assert!(prefill_loop_iterations(448, 64, 64) > budget);

        let wide = pass_keys_within(budget, 256, 16);
        assert_eq!(wide % 16, 0);
        assert!(prefill_loop_iterations(wide, 256, 16) <= budget);
        assert!(prefill_loop_iterations(wide + 16, 256, 16) > budget);

        let small = pass_keys_within(2_000, 64, 64);
        assert!((1..64).contains(&small), "{small}");
        assert!(prefill_loop_iterations(small, 64, 64) <= 2_000);
        assert_eq!(prefill_passes(2048, 384), 6);
        assert_eq!(prefill_passes(2048, usize::MAX), 1);
    }

    fn validate_wgsl(label: &str, source: &str) {
        let module = naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(source)));
    }

    #[test]
    fn shaders_validate_as_written() {
        validate_wgsl("attention_prefill.wgsl", PREFILL_SHADER);
        validate_wgsl("attention_decode.wgsl", DECODE_SHADER);
        validate_wgsl("attention_kv_append.wgsl", KV_APPEND_SHADER);
    }

    #[test]
    fn specialised_variants_validate() {
        for dtype in [DType::F32, DType::F16] {
            for head_dim in [1, 7, 64, 128, 256] {
                for (label, source) in specialised_sources(dtype, head_dim) {
                    validate_wgsl(&label, &source);
                }
            }
        }
    }

    #[test]
    fn prefill_spec_sets_tile_constants() {
        let spec = prefill_spec(DType::F16, 30, 12);
        let text = crate::device::specialize_wgsl(spec.source, spec.dtype, &spec.constants).unwrap();
        assert!(text.starts_with("enable f16;"));
        assert!(text.contains("alias T = f16;"));
        assert!(text.contains("const MAX_D: u32 = 32u;"));
        assert!(text.contains("const BK: u32 = 12u;"));
    }

    #[test]
    fn prefill_shape_rejects_bad_heads() {
        let shape = PrefillShape::causal(1, 4, 6, 4, 8);
        let message = shape.validate().unwrap_err().to_string();
        assert!(message.contains("n_kv_heads (4) must divide n_heads (6)"), "{message}");
    }

    #[test]
    fn prefill_shape_rejects_missing_kv_rows() {
        let mut shape = PrefillShape::causal(1, 4, 2, 2, 8);
        shape.q_offset = 2;
        shape.kv_capacity = 8;
        assert!(shape.validate().is_err());
        shape.kv_len = 6;
        assert!(shape.validate().is_ok());
    }

    #[test]
    fn prefill_flops_count_causal_keys() {
        let shape = PrefillShape::causal(2, 3, 4, 4, 8);
        // Keys per query: 1 + 2 + 3 = 6.
        assert_eq!(shape.flops(), 4.0 * (2 * 4 * 6 * 8) as f64);
    }

    #[test]
    fn decode_chunks_cover_cache() {
        let shape = DecodeShape { batch: 2, cache_len: 4097, cache_capacity: 5000, n_heads: 3, n_kv_heads: 1, head_dim: 64 };
        assert_eq!(shape.n_chunks(), 17);
        let one = DecodeShape { cache_len: 1, ..shape };
        assert_eq!(one.n_chunks(), 1);
    }

    #[test]
    fn decode_shape_rejects_empty_cache() {
        let shape = DecodeShape { batch: 1, cache_len: 0, cache_capacity: 4, n_heads: 2, n_kv_heads: 2, head_dim: 8 };
        assert!(shape.validate().is_err());
    }
}
