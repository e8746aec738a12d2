//! Whole decoder forward passes on the GPU: the same pre-norm decoder as [`super::CpuModel`],
//! with the CPU [`Weights`] uploaded in f32 or f16, so both backends compute the same logits
//! for the same seed and tokens.
//!
//! Data flow: only token ids (and their positions) go up and only the last-position logits
//! `[batch, vocab]` come down. Each forward pass is recorded into one [`Recorder`], so it is
//! one submission and, because K/V rows are appended by a kernel instead of buffer copies,
//! one compute pass.
//!
//! Chunked prefill: activations of `batch * seq` rows can exceed the largest storage binding
//! (GPT-2 small at batch 8 x 2048 has FFN activations of 8 * 2048 * 3072 * 4 B = 201 MB, and
//! lavapipe binds at most 128 MiB). Prefill therefore runs the sequence in chunks of tokens.
//! Each chunk embeds its tokens, appends its K/V rows to the cache after the rows of earlier
//! chunks, and attends over the cache so far with `q_offset` = the chunk's first position,
//! which is exactly causal attention over the whole sequence. The chunk length is the largest
//! that keeps the widest activation (`max(d_model, q_dim, kv_dim, d_ff)` per row) within the
//! binding limit, spread evenly over the chunks.
//!
//! Memory: every buffer the model allocates (weights, KV cache, activation workspace, decode
//! scratch, logits) is a tensor it holds, and [`GpuModel::allocated_bytes`] is their sum. The
//! workspace only grows, so after a pass this is the peak of that pass.

use std::collections::HashMap;
use std::sync::Arc;

use super::weights::{Linear, NormWeights};
use super::{random_tokens, Mode, ModelBenchResult, Weights};
use crate::arch::{Ffn, Norm, Pos};
use crate::device::{time_gpu, DType, GpuContext, GpuTensor, Recorder};
use crate::kernels::attention::gpu::{self as attention, DecodeShape, PrefillShape};
use crate::kernels::rope::gpu::{Positions, RopeShape};
use crate::kernels::{activation::gpu as activation, embedding::gpu as embedding, matmul::gpu as matmul};
use crate::kernels::{norm::gpu as norm, rope::gpu as rope};
use crate::{Architecture, Error, Result};

/// A projection `y = x·Wᵀ + b` on the GPU, `weight` `[out_dim, in_dim]`.
#[derive(Debug)]
struct GpuLinear {
    weight: GpuTensor,
    bias: Option<GpuTensor>,
    in_dim: usize,
    out_dim: usize,
}

#[derive(Debug)]
struct GpuNorm {
    weight: GpuTensor,
    bias: Option<GpuTensor>,
}

#[derive(Debug)]
struct GpuLayer {
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    d_ff: usize,
    norm1: GpuNorm,
    norm2: GpuNorm,
    wq: GpuLinear,
    wk: GpuLinear,
    wv: GpuLinear,
    wo: GpuLinear,
    ffn_gate: Option<GpuLinear>,
    ffn_up: GpuLinear,
    ffn_down: GpuLinear,
}

impl GpuLayer {
    fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// Keys and values of every layer on the GPU, `[batch, capacity, n_kv_heads, head_dim]` each.
#[derive(Debug)]
pub struct GpuKvCache {
    k: Vec<GpuTensor>,
    v: Vec<GpuTensor>,
    batch: usize,
    capacity: usize,
    len: usize,
}

impl GpuKvCache {
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Positions filled so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets all positions; the next prefill writes from position 0.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keeps the first `len` positions (the values stay on the GPU and are overwritten later).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Marks the first `len` positions as filled without writing them, for decode benchmarks
    /// that skip the prefill. Those positions keep the buffer contents (zeros after
    /// [`GpuModel::new_cache`]), which do not change the work a decode step does.
    pub fn assume_filled(&mut self, len: usize) -> Result<()> {
        if len > self.capacity {
            return Err(Error::Invalid(format!(
                "cannot mark {len} positions filled in a KV cache of capacity {}; allocate a larger cache",
                self.capacity
            )));
        }
        self.len = len;
        Ok(())
    }

    /// Bytes allocated on the device.
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(allocated).sum()
    }
}

/// Activation buffers, one per (role, rows, width), created on first use and reused after.
/// Kernels check tensor sizes exactly, so chunks of different lengths and layers of different
/// widths get their own buffers.
#[derive(Debug, Default)]
struct Workspace {
    tensors: HashMap<(&'static str, usize, usize), GpuTensor>,
    /// Keyed by (partials, head_dim).
    decode_scratch: HashMap<(usize, usize), attention::DecodeScratch>,
    /// Keyed by (query rows across heads, head_dim).
    prefill_scratch: HashMap<(usize, usize), attention::PrefillScratch>,
}

impl Workspace {
    fn get(&mut self, ctx: &GpuContext, role: &'static str, rows: usize, width: usize, dtype: DType) -> Result<GpuTensor> {
        if let Some(tensor) = self.tensors.get(&(role, rows, width)) {
            return Ok(tensor.clone());
        }
        let tensor = GpuTensor::empty(ctx, &[rows, width], dtype)?;
        self.tensors.insert((role, rows, width), tensor.clone());
        Ok(tensor)
    }

    fn bytes(&self) -> u64 {
        let tensors: u64 = self.tensors.values().map(allocated).sum();
        let decode: u64 = self.decode_scratch.values().map(attention::DecodeScratch::allocated_bytes).sum();
        let prefill: u64 = self.prefill_scratch.values().map(attention::PrefillScratch::allocated_bytes).sum();
        tensors + decode + prefill
    }
}

/// Rows `start .. start + rows` of the output head. The matmul kernel binds its B operand
/// whole, so a head larger than one storage binding (GPT-2's 50257 x 768 f32 head is 154 MB)
/// is kept as several blocks, each producing its own slice of the logits. A tied head that
/// fits is the token embedding tensor itself. A tied head that needs blocks is stored a second
/// time as blocks, and that copy counts in the model's memory.
#[derive(Debug)]
struct HeadBlock {
    weight: GpuTensor,
    start: usize,
    rows: usize,
}

/// A decoder model whose weights live on the GPU.
#[derive(Debug)]
pub struct GpuModel {
    ctx: Arc<GpuContext>,
    arch: Architecture,
    dtype: DType,
    d_model: usize,
    vocab_size: usize,
    max_seq_len: usize,
    token_embedding: GpuTensor,
    position_embedding: Option<GpuTensor>,
    layers: Vec<GpuLayer>,
    norm_f: GpuNorm,
    /// The output head `[vocab, d_model]` in blocks of rows (see [`HeadBlock`]).
    head: Vec<HeadBlock>,
    weight_bytes: u64,
    workspace: Workspace,
    /// Logits of the last `batch`, one `[batch, rows]` tensor per head block.
    logits: Vec<GpuTensor>,
    /// Upper bound on prefill chunk length set by [`GpuModel::set_max_chunk_tokens`].
    chunk_cap: Option<usize>,
}

/// Bytes of the device buffer behind `tensor` (the pool rounds sizes up to a size class).
fn allocated(tensor: &GpuTensor) -> u64 {
    tensor.buffer().size()
}

fn upload(ctx: &GpuContext, data: &[f32], shape: &[usize], dtype: DType) -> Result<GpuTensor> {
    Ok(GpuTensor::from_f32(ctx, data, shape, dtype)?)
}

fn upload_linear(ctx: &GpuContext, linear: &Linear, dtype: DType) -> Result<GpuLinear> {
    let weight = upload(ctx, &linear.weight, &[linear.out_dim, linear.in_dim], dtype)?;
    let bias = match &linear.bias {
        Some(bias) => Some(upload(ctx, bias, &[linear.out_dim], dtype)?),
        None => None,
    };
    Ok(GpuLinear { weight, bias, in_dim: linear.in_dim, out_dim: linear.out_dim })
}

fn upload_norm(ctx: &GpuContext, weights: &NormWeights, dtype: DType) -> Result<GpuNorm> {
    let weight = upload(ctx, &weights.weight, &[weights.weight.len()], dtype)?;
    let bias = match &weights.bias {
        Some(bias) => Some(upload(ctx, bias, &[bias.len()], dtype)?),
        None => None,
    };
    Ok(GpuNorm { weight, bias })
}

fn upload_head(ctx: &GpuContext, weights: &Weights, token_embedding: &GpuTensor, dtype: DType) -> Result<Vec<HeadBlock>> {
    let (vocab, d) = (weights.vocab_size, weights.d_model);
    let blocks = crate::kernels::row_blocks(ctx, "the output head", vocab, d * dtype.size())?;
    if blocks.len() == 1 {
        let weight = match &weights.output_head {
            Some(head) => upload(ctx, head, &[vocab, d], dtype)?,
            None => token_embedding.clone(),
        };
        return Ok(vec![HeadBlock { weight, start: 0, rows: vocab }]);
    }
    log::debug!("output head of {vocab} rows split into {} blocks to fit one storage binding", blocks.len());
    let head = weights.head();
    let mut uploaded = Vec::with_capacity(blocks.len());
    for block in blocks {
        let rows = &head[block.start * d..(block.start + block.rows) * d];
        let weight = upload(ctx, rows, &[block.rows, d], dtype)?;
        uploaded.push(HeadBlock { weight, start: block.start, rows: block.rows });
    }
    Ok(uploaded)
}

fn linear_bytes(linear: &GpuLinear) -> u64 {
    allocated(&linear.weight) + linear.bias.as_ref().map_or(0, allocated)
}

fn norm_bytes(norm: &GpuNorm) -> u64 {
    allocated(&norm.weight) + norm.bias.as_ref().map_or(0, allocated)
}

impl GpuModel {
    /// Uploads `weights` to the GPU in `dtype` (f16 rounds each weight to nearest).
    pub fn new(ctx: Arc<GpuContext>, weights: &Weights, dtype: DType) -> Result<Self> {
        if dtype == DType::U32 {
            return Err(Error::Invalid("the GPU model computes in f32 or f16, not u32; use --dtype f32".into()));
        }
        let d = weights.d_model;
        log::info!("uploading {} MiB of weights to {} as {}", weights.bytes() >> 20, ctx.info.name, dtype.name());

        let token_embedding = upload(&ctx, &weights.token_embedding, &[weights.vocab_size, d], dtype)?;
        let position_embedding = match &weights.position_embedding {
            Some(table) => Some(upload(&ctx, table, &[weights.max_seq_len, d], dtype)?),
            None => None,
        };
        let head = upload_head(&ctx, weights, &token_embedding, dtype)?;
        let mut layers = Vec::with_capacity(weights.layers.len());
        for layer in &weights.layers {
            let ffn_gate = match &layer.ffn_gate {
                Some(gate) => Some(upload_linear(&ctx, gate, dtype)?),
                None => None,
            };
            layers.push(GpuLayer {
                n_heads: layer.dims.n_heads,
                n_kv_heads: layer.dims.n_kv_heads,
                head_dim: layer.dims.head_dim,
                d_ff: layer.dims.d_ff,
                norm1: upload_norm(&ctx, &layer.norm1, dtype)?,
                norm2: upload_norm(&ctx, &layer.norm2, dtype)?,
                wq: upload_linear(&ctx, &layer.wq, dtype)?,
                wk: upload_linear(&ctx, &layer.wk, dtype)?,
                wv: upload_linear(&ctx, &layer.wv, dtype)?,
                wo: upload_linear(&ctx, &layer.wo, dtype)?,
                ffn_gate,
                ffn_up: upload_linear(&ctx, &layer.ffn_up, dtype)?,
                ffn_down: upload_linear(&ctx, &layer.ffn_down, dtype)?,
            });
        }
        let norm_f = upload_norm(&ctx, &weights.norm_f, dtype)?;

        let mut weight_bytes = allocated(&token_embedding) + norm_bytes(&norm_f);
        weight_bytes += position_embedding.as_ref().map_or(0, allocated);
        for block in &head {
            if block.weight.buffer() != token_embedding.buffer() {
                weight_bytes += allocated(&block.weight);
            }
        }
        for layer in &layers {
            weight_bytes += norm_bytes(&layer.norm1) + norm_bytes(&layer.norm2);
            for linear in [&layer.wq, &layer.wk, &layer.wv, &layer.wo, &layer.ffn_up, &layer.ffn_down] {
                weight_bytes += linear_bytes(linear);
            }
            weight_bytes += layer.ffn_gate.as_ref().map_or(0, linear_bytes);
        }
        ctx.wait()?;

        Ok(GpuModel {
            ctx,
            arch: weights.arch.clone(),
            dtype,
            d_model: d,
            vocab_size: weights.vocab_size,
            max_seq_len: weights.max_seq_len,
            token_embedding,
            position_embedding,
            layers,
            norm_f,
            head,
            weight_bytes,
            workspace: Workspace::default(),
            logits: Vec::new(),
            chunk_cap: None,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Bytes of the weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Bytes of all buffers the model allocated (weights, workspace, logits), plus `cache`.
    pub fn allocated_bytes(&self, cache: &GpuKvCache) -> u64 {
        let logits: u64 = self.logits.iter().map(allocated).sum();
        self.weight_bytes + self.workspace.bytes() + logits + cache.bytes()
    }

    /// Returns the logits tensors for `batch` sequences, reallocating them when the batch changes.
    fn logits_for(&mut self, batch: usize) -> Result<Vec<GpuTensor>> {
        let matches = self.logits.first().is_some_and(|t| t.shape()[0] == batch);
        if !matches {
            self.logits.clear();
            for block in &self.head {
                self.logits.push(GpuTensor::empty(&self.ctx, &[batch, block.rows], self.dtype)?);
            }
        }
        Ok(self.logits.clone())
    }

    /// Downloads the logits blocks and interleaves them into `[batch, vocab]`.
    fn download_logits(&self, logits: &[GpuTensor], batch: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; batch * self.vocab_size];
        for (block, tensor) in self.head.iter().zip(logits) {
            let values = tensor.to_f32(&self.ctx)?;
            for b in 0..batch {
                let dst = b * self.vocab_size + block.start;
                out[dst..dst + block.rows].copy_from_slice(&values[b * block.rows..(b + 1) * block.rows]);
            }
        }
        Ok(out)
    }

    /// Allocates a KV cache for `batch` sequences of up to `capacity` positions, zero-filled.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<GpuKvCache> {
        if batch == 0 || capacity == 0 {
            return Err(Error::Invalid(format!("a KV cache needs batch ({batch}) and capacity ({capacity}) of at least 1")));
        }
        let mut k = Vec::with_capacity(self.layers.len());
        let mut v = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let shape = [batch, capacity, layer.n_kv_heads, layer.head_dim];
            let bytes = (batch * capacity * layer.kv_dim() * self.dtype.size()) as u64;
            self.ctx.check_binding("one layer's KV cache", bytes)?;
            k.push(GpuTensor::zeros(&self.ctx, &shape, self.dtype)?);
            v.push(GpuTensor::zeros(&self.ctx, &shape, self.dtype)?);
        }
        Ok(GpuKvCache { k, v, batch, capacity, len: 0 })
    }

    /// Tokens per prefill chunk for `batch` sequences: the most whose widest activation fits
    /// one storage binding.
    pub fn max_chunk_tokens(&self, batch: usize) -> usize {
        let widest = self
            .layers
            .iter()
            .map(|l| l.q_dim().max(l.kv_dim()).max(l.d_ff))
            .max()
            .unwrap_or(0)
            .max(self.d_model);
        let row_bytes = (widest * self.dtype.size()) as u64;
        let limit = self.ctx.limits.max_storage_buffer_binding_size;
        let fitting = ((limit / row_bytes) as usize / batch.max(1)).max(1);
        self.chunk_cap.map_or(fitting, |cap| fitting.min(cap.max(1)))
    }

    /// Caps the prefill chunk length below what the binding limit allows (`None` removes the
    /// cap), for example to exercise chunked prefill on small inputs.
    pub fn set_max_chunk_tokens(&mut self, cap: Option<usize>) {
        self.chunk_cap = cap;
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is out of range for vocab_size {}; ids must be below vocab_size",
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// Runs prefill of `batch` sequences of `seq` tokens (`tokens` is `[batch, seq]`) from an
    /// empty `cache`, fills the cache and returns the last-position logits `[batch, vocab]`.
    pub fn prefill(&mut self, tokens: &[u32], batch: usize, seq: usize, cache: &mut GpuKvCache) -> Result<Vec<f32>> {
        let inputs = self.prefill_inputs(tokens, batch, seq, cache)?;
        let logits = self.logits_for(batch)?;
        let ctx = Arc::clone(&self.ctx);
        let mut rec = Recorder::new(&ctx);
        self.record_prefill(&mut rec, &inputs, cache, &logits)?;
        rec.submit()?;
        cache.len = seq;
        self.download_logits(&logits, batch)
    }

    /// Runs one decode step with one new token per sequence in `tokens`, so the cache grows by
    /// one position. Returns the logits `[batch, vocab]`.
    pub fn decode(&mut self, tokens: &[u32], cache: &mut GpuKvCache) -> Result<Vec<f32>> {
        let inputs = self.decode_inputs(tokens, cache)?;
        let logits = self.logits_for(cache.batch)?;
        let ctx = Arc::clone(&self.ctx);
        let mut rec = Recorder::new(&ctx);
        self.record_decode(&mut rec, &inputs, cache, &logits)?;
        rec.submit()?;
        cache.len += 1;
        self.download_logits(&logits, cache.batch)
    }

    /// Splits the prompt into chunks and uploads each chunk's token ids and positions.
    fn prefill_inputs(&self, tokens: &[u32], batch: usize, seq: usize, cache: &GpuKvCache) -> Result<Vec<StepInput>> {
        if batch == 0 || seq == 0 {
            return Err(Error::Invalid(format!("prefill needs batch ({batch}) and seq ({seq}) of at least 1")));
        }
        if tokens.len() != batch * seq {
            return Err(Error::Invalid(format!(
                "prefill got {} tokens, expected batch·seq = {batch}·{seq}",
                tokens.len()
            )));
        }
        if cache.batch != batch || cache.capacity < seq {
            return Err(Error::Invalid(format!(
                "the KV cache has batch {} and {} positions but prefill needs batch {batch} and {seq}; allocate a matching cache",
                cache.batch, cache.capacity
            )));
        }
        self.check_positions(seq)?;
        self.check_tokens(tokens)?;

        let n_chunks = seq.div_ceil(self.max_chunk_tokens(batch));
        let chunk = seq.div_ceil(n_chunks);
        log::debug!("prefill of batch {batch} x {seq} tokens in {n_chunks} chunks of up to {chunk}");

        let mut inputs = Vec::with_capacity(n_chunks);
        for start in (0..seq).step_by(chunk) {
            let new = chunk.min(seq - start);
            let mut ids = Vec::with_capacity(batch * new);
            let mut positions = Vec::with_capacity(batch * new);
            for b in 0..batch {
                ids.extend_from_slice(&tokens[b * seq + start..b * seq + start + new]);
                positions.extend((start..start + new).map(|p| p as u32));
            }
            inputs.push(self.step_input(batch, new, start, &ids, &positions)?);
        }
        Ok(inputs)
    }

    fn decode_inputs(&self, tokens: &[u32], cache: &GpuKvCache) -> Result<StepInput> {
        let batch = cache.batch;
        if tokens.len() != batch {
            return Err(Error::Invalid(format!(
                "decode got {} tokens for a KV cache of batch {batch}; pass one token per sequence",
                tokens.len()
            )));
        }
        if cache.len >= cache.capacity {
            return Err(Error::Invalid(format!(
                "the KV cache is full ({} of {} positions); allocate a larger cache or clear it",
                cache.len, cache.capacity
            )));
        }
        self.check_positions(cache.len + 1)?;
        self.check_tokens(tokens)?;
        let positions = vec![cache.len as u32; batch];
        self.step_input(batch, 1, cache.len, tokens, &positions)
    }

    fn check_positions(&self, end: usize) -> Result<()> {
        if self.arch.pos == Pos::Learned && end > self.max_seq_len {
            return Err(Error::Invalid(format!(
                "position {} is beyond max_seq_len ({}) of the learned position table; use a shorter sequence",
                end - 1,
                self.max_seq_len
            )));
        }
        Ok(())
    }

    fn step_input(&self, batch: usize, new: usize, past: usize, ids: &[u32], positions: &[u32]) -> Result<StepInput> {
        let last_rows: Vec<u32> = (0..batch).map(|b| (b * new + new - 1) as u32).collect();
        Ok(StepInput {
            batch,
            new,
            past,
            ids: GpuTensor::from_u32(&self.ctx, ids, &[ids.len()])?,
            positions: GpuTensor::from_u32(&self.ctx, positions, &[positions.len()])?,
            last_rows: GpuTensor::from_u32(&self.ctx, &last_rows, &[batch])?,
        })
    }

    fn record_prefill(&mut self, rec: &mut Recorder<'_>, chunks: &[StepInput], cache: &GpuKvCache, logits: &[GpuTensor]) -> Result<()> {
        for (index, chunk) in chunks.iter().enumerate() {
            let x = self.record_layers(rec, chunk, cache)?;
            if index + 1 == chunks.len() {
                self.record_logits(rec, chunk, &x, logits)?;
            }
        }
        Ok(())
    }

    fn record_decode(&mut self, rec: &mut Recorder<'_>, step: &StepInput, cache: &GpuKvCache, logits: &[GpuTensor]) -> Result<()> {
        let x = self.record_layers(rec, step, cache)?;
        self.record_logits(rec, step, &x, logits)
    }

    /// Records the embedding and every layer for one step (a prefill chunk or a decode token)
    /// and returns the tensor holding the final activations `[batch * new, d_model]`.
    fn record_layers(&mut self, rec: &mut Recorder<'_>, step: &StepInput, cache: &GpuKvCache) -> Result<GpuTensor> {
        let ctx = Arc::clone(&self.ctx);
        let (dtype, d) = (self.dtype, self.d_model);
        let rows = step.batch * step.new;
        let ws = &mut self.workspace;
        let mut x = ws.get(&ctx, "x_a", rows, d, dtype)?;
        let mut x_next = ws.get(&ctx, "x_b", rows, d, dtype)?;
        let h = ws.get(&ctx, "h", rows, d, dtype)?;
        let proj = ws.get(&ctx, "proj", rows, d, dtype)?;

        // Token embedding, plus learned positions.
        embedding::record_gather(rec, &self.token_embedding, &step.ids, &x, self.vocab_size, d)?;
        if let Some(table) = &self.position_embedding {
            embedding::record_gather(rec, table, &step.positions, &h, self.max_seq_len, d)?;
            embedding::record_residual_add(rec, &x, &h, &x_next)?;
            std::mem::swap(&mut x, &mut x_next);
        }

        for (index, layer) in self.layers.iter().enumerate() {
            let (q_dim, kv_dim) = (layer.q_dim(), layer.kv_dim());
            let q = ws.get(&ctx, "q", rows, q_dim, dtype)?;
            let k = ws.get(&ctx, "k", rows, kv_dim, dtype)?;
            let v = ws.get(&ctx, "v", rows, kv_dim, dtype)?;
            let attn = ws.get(&ctx, "attn", rows, q_dim, dtype)?;

            // Attention block.
            record_norm(rec, self.arch.norm, &x, &layer.norm1, &h, rows, d)?;
            record_linear(rec, &h, &layer.wq, &q, rows)?;
            record_linear(rec, &h, &layer.wk, &k, rows)?;
            record_linear(rec, &h, &layer.wv, &v, rows)?;
            if self.arch.pos == Pos::Rope {
                let theta = crate::kernels::rope::cpu::ROPE_THETA;
                let positions = Positions::Buffer(&step.positions);
                let q_shape = RopeShape { n_tokens: rows, n_heads: layer.n_heads, head_dim: layer.head_dim, theta };
                let k_shape = RopeShape { n_heads: layer.n_kv_heads, ..q_shape };
                rope::record(rec, &q, positions, None, q_shape)?;
                rope::record(rec, &k, positions, None, k_shape)?;
            }

            let append = attention::KvAppendShape {
                batch: step.batch,
                n_new: step.new,
                offset: step.past,
                capacity: cache.capacity,
                row: kv_dim,
            };
            attention::record_kv_append(rec, &append, &k, &v, &cache.k[index], &cache.v[index])?;

            if step.past == 0 || step.new > 1 {
                let shape = PrefillShape {
                    batch: step.batch,
                    n_q: step.new,
                    kv_len: step.past + step.new,
                    kv_capacity: cache.capacity,
                    n_heads: layer.n_heads,
                    n_kv_heads: layer.n_kv_heads,
                    head_dim: layer.head_dim,
                    q_offset: step.past,
                };
                let key = (shape.batch * shape.n_q * shape.n_heads, shape.head_dim);
                if !ws.prefill_scratch.get(&key).is_some_and(|scratch| scratch.fits(&ctx, &shape, dtype)) {
                    ws.prefill_scratch.insert(key, attention::PrefillScratch::new(&ctx, &shape, dtype)?);
                }
                attention::record_prefill(rec, &shape, &q, &cache.k[index], &cache.v[index], &attn, &ws.prefill_scratch[&key])?;
            } else {
                let shape = DecodeShape {
                    batch: step.batch,
                    cache_len: step.past + 1,
                    cache_capacity: cache.capacity,
                    n_heads: layer.n_heads,
                    n_kv_heads: layer.n_kv_heads,
                    head_dim: layer.head_dim,
                };
                let key = (step.batch * layer.n_heads * shape.n_chunks(), layer.head_dim);
                if let std::collections::hash_map::Entry::Vacant(e) = ws.decode_scratch.entry(key) {
                    e.insert(attention::DecodeScratch::new(&ctx, &shape)?);
                }
                let scratch = &ws.decode_scratch[&key];
                attention::record_decode(rec, &shape, &q, &cache.k[index], &cache.v[index], &attn, scratch)?;
            }
            record_linear(rec, &attn, &layer.wo, &proj, rows)?;
            embedding::record_residual_add(rec, &x, &proj, &x_next)?;
            std::mem::swap(&mut x, &mut x_next);

            // Feed-forward block.
            record_norm(rec, self.arch.norm, &x, &layer.norm2, &h, rows, d)?;
            let hidden = ws.get(&ctx, "ffn_a", rows, layer.d_ff, dtype)?;
            let activated = ws.get(&ctx, "ffn_b", rows, layer.d_ff, dtype)?;
            record_linear(rec, &h, &layer.ffn_up, &hidden, rows)?;
            match self.arch.ffn {
                Ffn::Swiglu => {
                    let gate_weights = layer.ffn_gate.as_ref().expect("SwiGLU layers have a gate projection");
                    let gate = ws.get(&ctx, "ffn_gate", rows, layer.d_ff, dtype)?;
                    record_linear(rec, &h, gate_weights, &gate, rows)?;
                    activation::record_swiglu(rec, &gate, &hidden, &activated)?;
                }
                Ffn::Gelu => activation::record_gelu(rec, &hidden, &activated)?,
                Ffn::Relu => activation::record_relu(rec, &hidden, &activated)?,
            }
            record_linear(rec, &activated, &layer.ffn_down, &proj, rows)?;
            embedding::record_residual_add(rec, &x, &proj, &x_next)?;
            std::mem::swap(&mut x, &mut x_next);
        }
        Ok(x)
    }

    /// Gathers the last row of each sequence, normalises it and multiplies by the head.
    fn record_logits(&mut self, rec: &mut Recorder<'_>, step: &StepInput, x: &GpuTensor, logits: &[GpuTensor]) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        let (dtype, d) = (self.dtype, self.d_model);
        let rows = step.batch * step.new;
        let last = self.workspace.get(&ctx, "last", step.batch, d, dtype)?;
        let last_normed = self.workspace.get(&ctx, "last_normed", step.batch, d, dtype)?;

        // The gather kernel indexes rows of a table, here the rows of the activations.
        embedding::record_gather(rec, x, &step.last_rows, &last, rows, d)?;
        record_norm(rec, self.arch.norm, &last, &self.norm_f, &last_normed, step.batch, d)?;
        for (block, out) in self.head.iter().zip(logits) {
            matmul::record(rec, &last_normed, &block.weight, None, out, step.batch, block.rows, d, true)?;
        }
        Ok(())
    }
}

/// Inputs of one recorded step, uploaded before recording.
#[derive(Debug)]
struct StepInput {
    batch: usize,
    /// Tokens per sequence in this step.
    new: usize,
    /// Positions already in the cache.
    past: usize,
    /// `[batch * new]` token ids.
    ids: GpuTensor,
    /// `[batch * new]` absolute positions.
    positions: GpuTensor,
    /// `[batch]` index of each sequence's last row in the step's activations.
    last_rows: GpuTensor,
}

fn record_linear(rec: &mut Recorder<'_>, x: &GpuTensor, linear: &GpuLinear, out: &GpuTensor, rows: usize) -> Result<()> {
    matmul::record(rec, x, &linear.weight, linear.bias.as_ref(), out, rows, linear.out_dim, linear.in_dim, true)
}

fn record_norm(rec: &mut Recorder<'_>, kind: Norm, x: &GpuTensor, weights: &GpuNorm, out: &GpuTensor, rows: usize, cols: usize) -> Result<()> {
    let eps = crate::kernels::norm::cpu::NORM_EPS;
    match kind {
        Norm::Layernorm => {
            let bias = weights.bias.as_ref().expect("LayerNorm weights have a bias");
            norm::record_layernorm(rec, x, &weights.weight, bias, out, rows, cols, eps)
        }
        Norm::Rmsnorm => norm::record_rmsnorm(rec, x, &weights.weight, out, rows, cols, eps),
    }
}

/// Times `runs` GPU forward passes of `arch` after `warmup` untimed ones, with the same random
/// weights and tokens as [`super::bench_cpu`] for `seed`. Timing follows
/// [`crate::device::time_gpu`] (timestamp queries where usable, at least 3 warm-ups and 10
/// runs).
///
/// - `Mode::Prefill`: `batch` sequences of `seq` tokens from an empty cache, in chunks (see
///   the module docs).
/// - `Mode::Decode`: one token per sequence against a cache holding `seq - 1` positions, so
///   `seq` positions are attended. No prefill fills the cache, so it contains zeros, which
///   do not change the work done.
///
/// `peak_memory_bytes` is the bytes of all buffers the model allocated: weights, KV cache,
/// activation workspace, decode scratch and logits.
#[allow(clippy::too_many_arguments)]
pub fn bench_gpu(
    ctx: &Arc<GpuContext>,
    arch: &Architecture,
    mode: Mode,
    batch: usize,
    seq: usize,
    dtype: DType,
    warmup: usize,
    runs: usize,
    seed: u64,
) -> Result<ModelBenchResult> {
    arch.validate()?;
    if batch == 0 || seq == 0 {
        return Err(Error::Invalid(format!("batch ({batch}) and seq ({seq}) must be at least 1")));
    }
    if seq as u64 > arch.max_seq_len {
        return Err(Error::Invalid(format!(
            "seq ({seq}) exceeds max_seq_len ({}) of the architecture; use --seq {} or less",
            arch.max_seq_len, arch.max_seq_len
        )));
    }

    log::info!("building GPU model {} (seed {seed}, {})", arch.summary(), dtype.name());
    let weights = Weights::random(arch, seed)?;
    let mut model = GpuModel::new(Arc::clone(ctx), &weights, dtype)?;
    let vocab_size = weights.vocab_size;
    drop(weights);
    let mut cache = model.new_cache(batch, seq)?;
    let logits = model.logits_for(batch)?;

    log::info!("timing GPU {} at batch {batch}, seq {seq}", mode.name());
    let stats = match mode {
        Mode::Prefill => {
            let tokens = random_tokens(batch * seq, vocab_size, seed);
            let chunks = model.prefill_inputs(&tokens, batch, seq, &cache)?;
            time_gpu(ctx, warmup, runs, |rec| model.record_prefill(rec, &chunks, &cache, &logits))?
        }
        Mode::Decode => {
            let tokens = random_tokens(batch, vocab_size, seed);
            cache.assume_filled(seq - 1)?;
            let step = model.decode_inputs(&tokens, &cache)?;
            time_gpu(ctx, warmup, runs, |rec| model.record_decode(rec, &step, &cache, &logits))?
        }
    };

    let tokens_per_run = match mode {
        Mode::Prefill => batch * seq,
        Mode::Decode => batch,
    };
    Ok(ModelBenchResult {
        median_ns: stats.median_ns,
        p10_ns: stats.p10_ns,
        p90_ns: stats.p90_ns,
        runs: stats.runs,
        latency_ms: stats.median_ns / 1e6,
        peak_memory_bytes: model.allocated_bytes(&cache),
        tokens_per_s: tokens_per_run as f64 / (stats.median_ns / 1e9),
        backend: "gpu".into(),
        dtype: dtype.name().into(),
        mode,
        batch,
        seq,
    })
}
