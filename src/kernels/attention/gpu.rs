//! GPU attention: causal prefill with an online softmax (`shaders/attention_prefill.wgsl`) and
//! split-K decode against a KV cache (`shaders/attention_decode.wgsl`).
//!
//! Host invariants, checked here before each dispatch (the shader headers state the same):
//! - `n_heads` is a multiple of `n_kv_heads`; query head `h` reads KV head `h / (n_heads / n_kv_heads)`.
//! - `head_dim` is at most [`MAX_HEAD_DIM`], because each prefill thread keeps its query row and
//!   output accumulator in private arrays sized by `head_dim` rounded up to a multiple of 4.
//! - Every bound buffer fits `max_storage_buffer_binding_size`; callers with larger data split
//!   it first (the GPU model runs prefill in chunks of tokens for this reason).
//! - Grids above 65,535 workgroups per dimension are folded into (x, y); the shaders rebuild
//!   the linear index and return for indices past the count passed in their parameters.
//!
//! Uniform parameter structs are 48 bytes, a multiple of 16, because WGSL uniform structs are
//! sized to their 16-byte alignment and wgpu rejects a smaller binding.

use std::collections::HashMap;
use std::sync::Mutex;

use wgpu::util::DeviceExt;

use crate::device::{DeviceError, GpuContext};
use crate::{Error, Result};

/// Largest `head_dim` the kernels accept (private arrays of this many f32 per thread).
pub const MAX_HEAD_DIM: usize = 256;

/// Query rows per prefill workgroup (the shader's `BQ`).
const PREFILL_QUERY_BLOCK: usize = 64;

/// Cache rows per decode split workgroup (the shader's `CHUNK`).
pub const DECODE_CHUNK: usize = 256;

/// Largest workgroup count per grid dimension that WebGPU guarantees.
const MAX_GRID_DIM: u32 = 65_535;

const PREFILL_SOURCE: &str = include_str!("../../../shaders/attention_prefill.wgsl");
const DECODE_SOURCE: &str = include_str!("../../../shaders/attention_decode.wgsl");

/// Element type of the attention buffers on the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    F32,
    /// IEEE half precision storage; needs `SHADER_F16`. Arithmetic stays f32 in the kernels.
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// `f32` or `f16`, as written to outputs.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }
}

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

    /// Bytes of the f32 partial buffers ([`DecodeScratch`]) this shape needs.
    pub fn scratch_bytes(&self) -> u64 {
        let partials = (self.batch * self.n_heads * self.n_chunks()) as u64;
        partials * (self.head_dim as u64 + 2) * 4
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
    if n_kv_heads == 0 || n_heads == 0 || n_heads % n_kv_heads != 0 {
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

/// Scratch buffers of the decode split pass: partial outputs and (max, sum) pairs, both f32.
#[derive(Debug)]
pub struct DecodeScratch {
    part_o: wgpu::Buffer,
    part_ml: wgpu::Buffer,
    /// Number of (batch, head, chunk) partials the buffers hold.
    capacity: usize,
    head_dim: usize,
}

impl DecodeScratch {
    /// Allocates scratch for `shape` and any smaller shape with the same `head_dim`.
    pub fn new(ctx: &GpuContext, shape: &DecodeShape) -> Result<Self> {
        let capacity = shape.batch * shape.n_heads * shape.n_chunks();
        let part_o_bytes = (capacity * shape.head_dim * 4) as u64;
        ctx.check_binding("decode attention partial outputs", part_o_bytes)?;
        let part_o = storage_buffer(ctx, "attention decode partial outputs", part_o_bytes);
        let part_ml = storage_buffer(ctx, "attention decode partial max and sum", (capacity * 2 * 4) as u64);
        Ok(DecodeScratch { part_o, part_ml, capacity, head_dim: shape.head_dim })
    }

    /// Bytes allocated on the device.
    pub fn bytes(&self) -> u64 {
        self.part_o.size() + self.part_ml.size()
    }
}

/// Pipelines are compiled once per (device, kernel, dtype, tile sizes) and shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Variant {
    Prefill { dtype: Dtype, max_d: u32, block_k: u32 },
    DecodeSplit { dtype: Dtype, max_d: u32 },
    DecodeReduce { dtype: Dtype, max_d: u32 },
}

// NOTE: the cache holds a clone of each wgpu::Device it has seen, so a device stays alive
// until the process ends. The crate opens one shared device, so this is one device.
static PIPELINES: Mutex<Option<HashMap<(wgpu::Device, Variant), wgpu::ComputePipeline>>> = Mutex::new(None);

/// `head_dim` rounded up to a multiple of 4, the size of the shaders' private arrays.
fn padded_head_dim(head_dim: usize) -> u32 {
    head_dim.div_ceil(4) as u32 * 4
}

/// K/V rows per prefill tile: as many as fit twice (K and V) in workgroup memory, 1 to 64.
fn prefill_block_k(ctx: &GpuContext, dtype: Dtype, max_d: u32) -> u32 {
    let budget = ctx.limits.max_compute_workgroup_storage_size as usize;
    let per_row = 2 * dtype.size() * max_d as usize;
    (budget / per_row).clamp(1, 64) as u32
}

/// Rewrites the shader's type alias and tile constants, and enables f16 where needed.
fn specialise(source: &str, dtype: Dtype, constants: &[(&str, u32)]) -> String {
    let mut text = String::with_capacity(source.len() + 32);
    if dtype == Dtype::F16 {
        text.push_str("enable f16;\n");
    }
    for line in source.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("alias T = ") {
            text.push_str(&format!("alias T = {};\n", dtype.name()));
            continue;
        }
        let replaced = constants.iter().find_map(|(name, value)| {
            trimmed
                .starts_with(&format!("const {name}: u32 = "))
                .then(|| format!("const {name}: u32 = {value}u;\n"))
        });
        match replaced {
            Some(line) => text.push_str(&line),
            None => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

/// WGSL source of one kernel variant, exactly as it is compiled (also used by shader tests).
pub fn variant_source(kernel: &str, dtype: Dtype, head_dim: usize, block_k: u32) -> String {
    let max_d = padded_head_dim(head_dim);
    match kernel {
        "prefill" => specialise(PREFILL_SOURCE, dtype, &[("MAX_D", max_d), ("BK", block_k)]),
        _ => specialise(DECODE_SOURCE, dtype, &[("MAX_D", max_d), ("CHUNK", DECODE_CHUNK as u32)]),
    }
}

fn pipeline(ctx: &GpuContext, variant: Variant) -> Result<wgpu::ComputePipeline> {
    let key = (ctx.device.clone(), variant);
    if let Some(found) = PIPELINES.lock().unwrap().as_ref().and_then(|m| m.get(&key)) {
        return Ok(found.clone());
    }

    let (source, entry, label) = match variant {
        Variant::Prefill { dtype, max_d, block_k } => (
            specialise(PREFILL_SOURCE, dtype, &[("MAX_D", max_d), ("BK", block_k)]),
            "main",
            "attention prefill",
        ),
        Variant::DecodeSplit { dtype, max_d } => (
            specialise(DECODE_SOURCE, dtype, &[("MAX_D", max_d), ("CHUNK", DECODE_CHUNK as u32)]),
            "split",
            "attention decode split",
        ),
        Variant::DecodeReduce { dtype, max_d } => (
            specialise(DECODE_SOURCE, dtype, &[("MAX_D", max_d), ("CHUNK", DECODE_CHUNK as u32)]),
            "reduce",
            "attention decode reduce",
        ),
    };
    log::debug!("compiling {label} pipeline {variant:?}");

    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let created = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache: None,
    });
    if let Some(error) = pollster::block_on(scope.pop()) {
        return Err(DeviceError::Uncaptured(format!("creating the {label} pipeline failed: {error}")).into());
    }

    PIPELINES
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(key, created.clone());
    Ok(created)
}

fn storage_buffer(ctx: &GpuContext, label: &str, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Splits `count` workgroups into an (x, y) grid with x at most 65,535, because WebGPU caps
/// each grid dimension there. The shaders skip indices at or past `count`.
fn fold_grid(ctx: &GpuContext, what: &str, count: usize) -> Result<(u32, u32)> {
    let max_dim = ctx.limits.max_compute_workgroups_per_dimension.min(MAX_GRID_DIM) as usize;
    let x = count.min(max_dim);
    let y = count.div_ceil(max_dim);
    if y > max_dim {
        return Err(DeviceError::LimitExceeded {
            what: what.to_string(),
            needed: count as u64,
            limit_name: "max_compute_workgroups_per_dimension squared",
            limit: (max_dim * max_dim) as u64,
            fix: "use a smaller batch or sequence length".into(),
        }
        .into());
    }
    Ok((x as u32, y as u32))
}

fn check_buffer(ctx: &GpuContext, what: &str, buffer: &wgpu::Buffer, needed: u64) -> Result<()> {
    ctx.check_binding(what, needed)?;
    if buffer.size() < needed {
        return Err(Error::Invalid(format!(
            "{what} buffer has {} bytes but the shape needs {needed}; allocate it from the same shape",
            buffer.size()
        )));
    }
    Ok(())
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource: buffer.as_entire_binding() }
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
    _pad: u32,
}

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
    _pad0: u32,
    _pad1: u32,
}

fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM,
    })
}

fn check_dtype(ctx: &GpuContext, dtype: Dtype) -> Result<()> {
    if dtype == Dtype::F16 && !ctx.has_f16() {
        return Err(DeviceError::MissingFeature {
            adapter: ctx.info.name.clone(),
            feature: "SHADER_F16",
            fix: "use --dtype f32",
        }
        .into());
    }
    Ok(())
}

/// Records causal prefill attention into `pass`. `q` and `out` are `[batch, n_q, n_heads,
/// head_dim]`, `k` and `v` are `[batch, kv_capacity, n_kv_heads, head_dim]`, all of `dtype`.
pub fn record_prefill(
    ctx: &GpuContext,
    pass: &mut wgpu::ComputePass<'_>,
    shape: &PrefillShape,
    dtype: Dtype,
    q: &wgpu::Buffer,
    k: &wgpu::Buffer,
    v: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<()> {
    shape.validate()?;
    check_dtype(ctx, dtype)?;
    let element = dtype.size() as u64;
    let q_bytes = (shape.batch * shape.n_q * shape.n_heads * shape.head_dim) as u64 * element;
    let kv_bytes = (shape.batch * shape.kv_capacity * shape.n_kv_heads * shape.head_dim) as u64 * element;
    check_buffer(ctx, "attention prefill queries", q, q_bytes)?;
    check_buffer(ctx, "attention prefill keys", k, kv_bytes)?;
    check_buffer(ctx, "attention prefill values", v, kv_bytes)?;
    check_buffer(ctx, "attention prefill output", out, q_bytes)?;

    let max_d = padded_head_dim(shape.head_dim);
    let block_k = prefill_block_k(ctx, dtype, max_d);
    let pipeline = pipeline(ctx, Variant::Prefill { dtype, max_d, block_k })?;

    let q_blocks = shape.n_q.div_ceil(PREFILL_QUERY_BLOCK);
    let n_workgroups = q_blocks * shape.n_heads * shape.batch;
    let (grid_x, grid_y) = fold_grid(ctx, "attention prefill workgroups", n_workgroups)?;
    let params = PrefillParams {
        batch: shape.batch as u32,
        n_q: shape.n_q as u32,
        kv_len: shape.kv_len as u32,
        kv_capacity: shape.kv_capacity as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        q_offset: shape.q_offset as u32,
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
        q_blocks: q_blocks as u32,
        n_workgroups: n_workgroups as u32,
        _pad: 0,
    };
    let params = uniform(ctx, "attention prefill params", &params);

    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("attention prefill"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[entry(0, &params), entry(1, q), entry(2, k), entry(3, v), entry(4, out)],
    });
    pass.set_pipeline(&pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(grid_x, grid_y, 1);
    Ok(())
}

/// Records decode attention (split pass, then reduce pass) into `pass`. `q` and `out` are
/// `[batch, n_heads, head_dim]`, the caches `[batch, cache_capacity, n_kv_heads, head_dim]`,
/// all of `dtype`; `scratch` must come from a shape at least this large.
#[allow(clippy::too_many_arguments)]
pub fn record_decode(
    ctx: &GpuContext,
    pass: &mut wgpu::ComputePass<'_>,
    shape: &DecodeShape,
    dtype: Dtype,
    q: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    out: &wgpu::Buffer,
    scratch: &DecodeScratch,
) -> Result<()> {
    shape.validate()?;
    check_dtype(ctx, dtype)?;
    let element = dtype.size() as u64;
    let q_bytes = (shape.batch * shape.n_heads * shape.head_dim) as u64 * element;
    let cache_bytes = (shape.batch * shape.cache_capacity * shape.n_kv_heads * shape.head_dim) as u64 * element;
    check_buffer(ctx, "attention decode queries", q, q_bytes)?;
    check_buffer(ctx, "attention decode key cache", k_cache, cache_bytes)?;
    check_buffer(ctx, "attention decode value cache", v_cache, cache_bytes)?;
    check_buffer(ctx, "attention decode output", out, q_bytes)?;

    let split_workgroups = shape.batch * shape.n_heads * shape.n_chunks();
    if split_workgroups > scratch.capacity || shape.head_dim != scratch.head_dim {
        return Err(Error::Invalid(format!(
            "decode attention scratch holds {} partials of head_dim {} but the shape needs {} of head_dim {}; allocate it from this shape",
            scratch.capacity, scratch.head_dim, split_workgroups, shape.head_dim
        )));
    }

    let max_d = padded_head_dim(shape.head_dim);
    let split = pipeline(ctx, Variant::DecodeSplit { dtype, max_d })?;
    let reduce = pipeline(ctx, Variant::DecodeReduce { dtype, max_d })?;

    let reduce_workgroups = shape.batch * shape.n_heads;
    let split_grid = fold_grid(ctx, "attention decode split workgroups", split_workgroups)?;
    let reduce_grid = fold_grid(ctx, "attention decode reduce workgroups", reduce_workgroups)?;
    let params = DecodeParams {
        batch: shape.batch as u32,
        cache_len: shape.cache_len as u32,
        cache_capacity: shape.cache_capacity as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        n_chunks: shape.n_chunks() as u32,
        scale: 1.0 / (shape.head_dim as f32).sqrt(),
        split_workgroups: split_workgroups as u32,
        reduce_workgroups: reduce_workgroups as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let params = uniform(ctx, "attention decode params", &params);

    let split_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("attention decode split"),
        layout: &split.get_bind_group_layout(0),
        entries: &[
            entry(0, &params),
            entry(1, q),
            entry(2, k_cache),
            entry(3, v_cache),
            entry(5, &scratch.part_o),
            entry(6, &scratch.part_ml),
        ],
    });
    let reduce_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("attention decode reduce"),
        layout: &reduce.get_bind_group_layout(0),
        entries: &[entry(0, &params), entry(4, out), entry(5, &scratch.part_o), entry(6, &scratch.part_ml)],
    });

    pass.set_pipeline(&split);
    pass.set_bind_group(0, &split_group, &[]);
    pass.dispatch_workgroups(split_grid.0, split_grid.1, 1);
    pass.set_pipeline(&reduce);
    pass.set_bind_group(0, &reduce_group, &[]);
    pass.dispatch_workgroups(reduce_grid.0, reduce_grid.1, 1);
    Ok(())
}

/// Uploads `data` as a storage buffer of `dtype` (f16 rounds to nearest).
pub fn upload(ctx: &GpuContext, label: &str, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    let mut bytes: Vec<u8> = match dtype {
        Dtype::F32 => bytemuck::cast_slice(data).to_vec(),
        Dtype::F16 => {
            let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            bytemuck::cast_slice(&halves).to_vec()
        }
    };
    // Buffer sizes and copies must be multiples of 4 bytes.
    bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: &bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

/// Copies `len` elements of `dtype` from `buffer` back to the host as f32 and waits.
pub fn download(ctx: &GpuContext, buffer: &wgpu::Buffer, len: usize, dtype: Dtype) -> Result<Vec<f32>> {
    let bytes = ((len * dtype.size()) as u64).max(4).next_multiple_of(4);
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("attention readback"),
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
    ctx.queue.submit([encoder.finish()]);

    let (sender, receiver) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |result| {
        let _ = sender.send(result);
    });
    ctx.wait()?;
    receiver
        .recv()
        .map_err(|e| DeviceError::Poll(e.to_string()))?
        .map_err(|e| DeviceError::Poll(format!("mapping the readback buffer failed: {e}")))?;

    let view = staging
        .get_mapped_range(..)
        .map_err(|e| DeviceError::Poll(format!("reading the mapped buffer failed: {e}")))?;
    let values = match dtype {
        Dtype::F32 => bytemuck::cast_slice::<u8, f32>(&view)[..len].to_vec(),
        Dtype::F16 => bytemuck::cast_slice::<u8, half::f16>(&view)[..len]
            .iter()
            .map(|x| x.to_f32())
            .collect(),
    };
    drop(view);
    staging.unmap();
    Ok(values)
}

/// Runs one recording closure in a single compute pass and submission.
fn run_pass(ctx: &GpuContext, label: &str, record: impl FnOnce(&mut wgpu::ComputePass<'_>) -> Result<()>) -> Result<()> {
    let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
        record(&mut pass)?;
    }
    ctx.queue.submit([encoder.finish()]);
    Ok(())
}

/// Causal prefill attention on the GPU: uploads `q` `[batch, seq, n_heads, head_dim]` and `k`,
/// `v` `[batch, seq, n_kv_heads, head_dim]`, runs the kernel and returns the output `[batch,
/// seq, n_heads, head_dim]`. The GPU twin of `cpu::attention_prefill_ref`.
#[allow(clippy::too_many_arguments)]
pub fn attention_prefill(
    ctx: &GpuContext,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: &PrefillShape,
    dtype: Dtype,
) -> Result<Vec<f32>> {
    shape.validate()?;
    check_lengths(q, k, v, shape.batch * shape.n_q * shape.n_heads * shape.head_dim, shape.batch * shape.kv_capacity * shape.n_kv_heads * shape.head_dim)?;
    let q_buffer = upload(ctx, "attention q", q, dtype);
    let k_buffer = upload(ctx, "attention k", k, dtype);
    let v_buffer = upload(ctx, "attention v", v, dtype);
    let out_len = q.len();
    let out = storage_buffer(ctx, "attention output", (out_len * dtype.size()) as u64);

    run_pass(ctx, "attention prefill", |pass| {
        record_prefill(ctx, pass, shape, dtype, &q_buffer, &k_buffer, &v_buffer, &out)
    })?;
    download(ctx, &out, out_len, dtype)
}

/// Decode attention on the GPU: `q` `[batch, n_heads, head_dim]` against caches `[batch,
/// cache_capacity, n_kv_heads, head_dim]` whose first `cache_len` rows are valid. Returns
/// `[batch, n_heads, head_dim]`. The GPU twin of `cpu::attention_decode_ref`.
pub fn attention_decode(
    ctx: &GpuContext,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: &DecodeShape,
    dtype: Dtype,
) -> Result<Vec<f32>> {
    shape.validate()?;
    check_lengths(
        q,
        k_cache,
        v_cache,
        shape.batch * shape.n_heads * shape.head_dim,
        shape.batch * shape.cache_capacity * shape.n_kv_heads * shape.head_dim,
    )?;
    let q_buffer = upload(ctx, "attention q", q, dtype);
    let k_buffer = upload(ctx, "attention k cache", k_cache, dtype);
    let v_buffer = upload(ctx, "attention v cache", v_cache, dtype);
    let out = storage_buffer(ctx, "attention output", (q.len() * dtype.size()) as u64);
    let scratch = DecodeScratch::new(ctx, shape)?;

    run_pass(ctx, "attention decode", |pass| {
        record_decode(ctx, pass, shape, dtype, &q_buffer, &k_buffer, &v_buffer, &out, &scratch)
    })?;
    download(ctx, &out, q.len(), dtype)
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

    fn validate_wgsl(source: &str) -> std::result::Result<(), String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .map_err(|e| e.emit_to_string(source))?;
        Ok(())
    }

    #[test]
    fn shaders_validate_as_written() {
        validate_wgsl(PREFILL_SOURCE).unwrap();
        validate_wgsl(DECODE_SOURCE).unwrap();
    }

    #[test]
    fn specialised_variants_validate() {
        for dtype in [Dtype::F32, Dtype::F16] {
            for head_dim in [1, 7, 64, 128, 256] {
                for block_k in [1, 8, 64] {
                    validate_wgsl(&variant_source("prefill", dtype, head_dim, block_k)).unwrap();
                }
                validate_wgsl(&variant_source("decode", dtype, head_dim, 0)).unwrap();
            }
        }
    }

    #[test]
    fn specialise_rewrites_constants() {
        let text = variant_source("prefill", Dtype::F16, 30, 12);
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
    fn decode_chunks_cover_cache() {
        let shape = DecodeShape { batch: 2, cache_len: 4097, cache_capacity: 5000, n_heads: 3, n_kv_heads: 1, head_dim: 64 };
        assert_eq!(shape.n_chunks(), 17);
        assert_eq!(shape.scratch_bytes(), (2 * 3 * 17 * 66 * 4) as u64);
        let one = DecodeShape { cache_len: 1, ..shape };
        assert_eq!(one.n_chunks(), 1);
    }

    #[test]
    fn decode_shape_rejects_empty_cache() {
        let shape = DecodeShape { batch: 1, cache_len: 0, cache_capacity: 4, n_heads: 2, n_kv_heads: 2, head_dim: 8 };
        assert!(shape.validate().is_err());
    }
}
