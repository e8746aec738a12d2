//! The CPU decoder forward pass: prefill of whole sequences, and decode of one token per
//! sequence against the KV cache.
//!
//! Each layer is pre-norm: `x += wo(attention(rope(wq·n1), rope(wk·n1), wv·n1))` with
//! `n1 = norm1(x)`, then `x += ffn(norm2(x))`; the logits are `head(norm_f(x))` of the last
//! position of each sequence. RoPE applies when `pos` is `rope`, and learned position rows
//! are added to the token embedding when `pos` is `learned`.

use super::cache::KvCache;
use super::weights::{try_zeros, LayerWeights, Linear, NormWeights, Weights};
use crate::arch::{Ffn, Norm, Pos};
use crate::kernels::attention::cpu::{self as attention, AttentionShape};
use crate::kernels::{activation::cpu as activation, embedding::cpu as embedding, matmul::cpu as matmul};
use crate::kernels::{norm::cpu as norm, rope::cpu as rope};
use crate::{Error, Result};

/// Kernel implementations a [`CpuModel`] calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelMode {
    /// The fast, multi-threaded `f32` kernels.
    #[default]
    Fast,
    /// The `_ref` kernels, which accumulate in `f64`: slow, for parity tests only.
    Reference,
}

/// A decoder model that runs on the CPU.
#[derive(Debug)]
pub struct CpuModel {
    weights: Weights,
    kernels: KernelMode,
    scratch: Scratch,
}

impl CpuModel {
    /// Wraps `weights` with the fast kernels.
    pub fn new(weights: Weights) -> Self {
        Self::with_kernels(weights, KernelMode::Fast)
    }

    /// Wraps `weights` with the chosen kernels.
    pub fn with_kernels(weights: Weights, kernels: KernelMode) -> Self {
        CpuModel { weights, kernels, scratch: Scratch::default() }
    }

    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    pub fn kernels(&self) -> KernelMode {
        self.kernels
    }

    /// Allocates an empty KV cache for `batch` sequences of up to `capacity` positions.
    ///
    /// # Errors
    /// As [`KvCache::new`].
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache> {
        KvCache::new(&self.weights, batch, capacity)
    }

    /// Bytes of scratch buffers held between calls.
    pub fn scratch_bytes(&self) -> u64 {
        self.scratch.bytes()
    }

    /// Grows the scratch buffers for forward passes of up to `n_tokens` tokens at once, so
    /// later calls of that size allocate nothing.
    ///
    /// # Errors
    /// When the buffers cannot be allocated.
    pub fn reserve_scratch(&mut self, n_tokens: usize) -> Result<()> {
        self.scratch.ensure(&self.weights, n_tokens)
    }

    /// Runs `batch` sequences of `seq` tokens (`tokens` is `[batch, seq]`) from an empty
    /// cache, fills the cache with their keys and values, and returns the logits of the last
    /// position of each sequence, `[batch, vocab_size]`.
    ///
    /// # Errors
    /// When the cache is not empty or was allocated for another batch size or fewer
    /// positions, when `tokens.len() != batch·seq`, or when a token id is out of range.
    pub fn prefill(&mut self, tokens: &[u32], batch: usize, seq: usize, cache: &mut KvCache) -> Result<Vec<f32>> {
        if batch == 0 || seq == 0 {
            return Err(Error::Invalid(format!("batch ({batch}) and seq ({seq}) must both be at least 1")));
        }
        if tokens.len() != batch * seq {
            return Err(Error::Invalid(format!(
                "prefill got {} tokens, expected batch·seq = {batch}·{seq} = {}",
                tokens.len(),
                batch * seq
            )));
        }
        if !cache.is_empty() {
            return Err(Error::Invalid(format!(
                "prefill needs an empty KV cache but it contains {} positions; call clear() first",
                cache.len()
            )));
        }
        check_cache_fits(cache, batch, seq)?;
        embedding::check_ids(tokens, self.weights.vocab_size)?;

        let n_tokens = batch * seq;
        self.scratch.ensure(&self.weights, n_tokens)?;
        self.scratch.positions.clear();
        for _ in 0..batch {
            self.scratch.positions.extend(0..seq as u32);
        }

        self.run_layers(tokens, batch, seq, cache)?;
        cache.advance(seq);

        let mut logits = vec![0.0f32; batch * self.weights.vocab_size];
        let last_rows: Vec<usize> = (0..batch).map(|b| b * seq + seq - 1).collect();
        self.compute_logits(&last_rows, &mut logits);
        Ok(logits)
    }

    /// Runs one new token per sequence (`tokens` is `[batch]`) against `cache`, appends its
    /// keys and values, and returns the logits, `[batch, vocab_size]`.
    ///
    /// # Errors
    /// As [`CpuModel::decode_into`].
    pub fn decode(&mut self, tokens: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let mut logits = vec![0.0f32; tokens.len() * self.weights.vocab_size];
        self.decode_into(tokens, cache, &mut logits)?;
        Ok(logits)
    }

    /// As [`CpuModel::decode`], writing the logits into `logits` (`[batch, vocab_size]`).
    /// With the fast kernels and scratch already sized for `batch` tokens, this allocates
    /// nothing itself; the `gemm` crate may still allocate packing buffers internally.
    ///
    /// # Errors
    /// When `tokens.len()` differs from the cache's batch, the cache is full, `logits` has the
    /// wrong length, or a token id is out of range.
    pub fn decode_into(&mut self, tokens: &[u32], cache: &mut KvCache, logits: &mut [f32]) -> Result<()> {
        let batch = cache.batch();
        if tokens.len() != batch {
            return Err(Error::Invalid(format!(
                "decode got {} tokens for a KV cache of batch {batch}; pass one token per sequence",
                tokens.len()
            )));
        }
        if cache.len() >= cache.capacity() {
            return Err(Error::Invalid(format!(
                "the KV cache is full ({} of {} positions); allocate a larger cache or clear it",
                cache.len(),
                cache.capacity()
            )));
        }
        if logits.len() != batch * self.weights.vocab_size {
            return Err(Error::Invalid(format!(
                "logits buffer has {} elements, expected batch·vocab_size = {batch}·{}",
                logits.len(),
                self.weights.vocab_size
            )));
        }
        embedding::check_ids(tokens, self.weights.vocab_size)?;

        self.scratch.ensure(&self.weights, batch)?;
        self.scratch.positions.clear();
        self.scratch.positions.resize(batch, cache.len() as u32);

        self.run_layers(tokens, batch, 1, cache)?;
        cache.advance(1);

        // Row b of the decode activations is sequence b, so every row is a last row.
        self.scratch.last_rows.clear();
        self.scratch.last_rows.extend(0..batch);
        let last_rows = std::mem::take(&mut self.scratch.last_rows);
        self.compute_logits(&last_rows, logits);
        self.scratch.last_rows = last_rows;
        Ok(())
    }

    /// Embeds `tokens` (`[batch, new]`, positions in `scratch.positions`) and runs every layer,
    /// writing the new keys and values into `cache` after its filled positions.
    fn run_layers(&mut self, tokens: &[u32], batch: usize, new: usize, cache: &mut KvCache) -> Result<()> {
        let CpuModel { weights, kernels, scratch } = self;
        let kernels = *kernels;
        let n_tokens = batch * new;
        let d = weights.d_model;
        let past = cache.len();
        let capacity = cache.capacity();

        let x = &mut scratch.x[..n_tokens * d];
        embedding::embedding(x, &weights.token_embedding, tokens, d)?;
        if let Some(table) = &weights.position_embedding {
            for (row, &pos) in x.chunks_exact_mut(d).zip(&scratch.positions) {
                let pos = pos as usize;
                kernels.residual_add(row, &table[pos * d..(pos + 1) * d]);
            }
        }

        for (index, layer) in weights.layers.iter().enumerate() {
            let dims = layer.dims;
            let (q_dim, kv_dim) = (dims.q_dim(), dims.kv_dim());
            let x = &mut scratch.x[..n_tokens * d];
            let h = &mut scratch.h[..n_tokens * d];
            let q = &mut scratch.q[..n_tokens * q_dim];
            let k = &mut scratch.k[..n_tokens * kv_dim];
            let v = &mut scratch.v[..n_tokens * kv_dim];
            let attn = &mut scratch.attn[..n_tokens * q_dim];
            let proj = &mut scratch.proj[..n_tokens * d];

            // Attention block.
            kernels.norm(h, x, &layer.norm1, weights.arch.norm, n_tokens, d);
            kernels.linear(q, h, &layer.wq, n_tokens);
            kernels.linear(k, h, &layer.wk, n_tokens);
            kernels.linear(v, h, &layer.wv, n_tokens);
            if weights.arch.pos == Pos::Rope {
                kernels.rope(q, &scratch.positions, n_tokens, dims.n_heads, dims.head_dim);
                kernels.rope(k, &scratch.positions, n_tokens, dims.n_kv_heads, dims.head_dim);
            }

            let layer_cache = &mut cache.layers[index];
            for b in 0..batch {
                let src = b * new * kv_dim..(b + 1) * new * kv_dim;
                let dst = (b * capacity + past) * kv_dim..(b * capacity + past + new) * kv_dim;
                layer_cache.k[dst.clone()].copy_from_slice(&k[src.clone()]);
                layer_cache.v[dst].copy_from_slice(&v[src]);
            }

            let shape = AttentionShape {
                batch,
                n_heads: dims.n_heads,
                n_kv_heads: dims.n_kv_heads,
                head_dim: dims.head_dim,
            };
            if past == 0 {
                kernels.attention_prefill(attn, q, &layer_cache.k, &layer_cache.v, shape, new, capacity);
            } else {
                debug_assert_eq!(new, 1, "only single-token steps follow a prefill");
                kernels.attention_decode(attn, q, &layer_cache.k, &layer_cache.v, shape, past + 1, capacity);
            }
            kernels.linear(proj, attn, &layer.wo, n_tokens);
            kernels.residual_add(x, proj);

            // Feed-forward block.
            kernels.norm(h, x, &layer.norm2, weights.arch.norm, n_tokens, d);
            let hidden = &mut scratch.ffn_a[..n_tokens * dims.d_ff];
            let gate = &mut scratch.ffn_b[..n_tokens * dims.d_ff];
            run_ffn(kernels, weights.arch.ffn, layer, FfnBuffers { hidden, gate }, h, proj, n_tokens);
            kernels.residual_add(x, proj);
        }
        Ok(())
    }

    /// Normalises rows `rows` of the final activations and multiplies them by the head.
    fn compute_logits(&mut self, rows: &[usize], logits: &mut [f32]) {
        let CpuModel { weights, kernels, scratch } = self;
        let d = weights.d_model;
        let n = rows.len();
        let last = &mut scratch.last[..n * d];
        for (out, &row) in last.chunks_exact_mut(d).zip(rows) {
            out.copy_from_slice(&scratch.x[row * d..(row + 1) * d]);
        }
        let normed = &mut scratch.last_normed[..n * d];
        kernels.norm(normed, last, &weights.norm_f, weights.arch.norm, n, d);
        kernels.matmul(logits, normed, weights.head(), None, n, weights.vocab_size, d);
    }

    /// Returns the bytes of weights, scratch and `cache`, plus the logits of its batch: the
    /// memory one forward pass uses at its peak.
    pub fn peak_memory_bytes(&self, cache: &KvCache) -> u64 {
        let logits = (cache.batch() * self.weights.vocab_size) as u64 * 4;
        self.weights.bytes() + self.scratch.bytes() + cache.bytes() + logits
    }
}

fn check_cache_fits(cache: &KvCache, batch: usize, seq: usize) -> Result<()> {
    if cache.batch() != batch {
        return Err(Error::Invalid(format!(
            "the KV cache was allocated for batch {} but the input has batch {batch}; allocate a matching cache",
            cache.batch()
        )));
    }
    if seq > cache.capacity() {
        return Err(Error::Invalid(format!(
            "seq ({seq}) exceeds the KV cache capacity ({}); allocate a larger cache",
            cache.capacity()
        )));
    }
    Ok(())
}

/// The FFN hidden buffers of one layer, each `[tokens, d_ff]`.
struct FfnBuffers<'a> {
    hidden: &'a mut [f32],
    gate: &'a mut [f32],
}

/// Writes `ffn(h)` into `out`: `down(silu(gate·h) ⊙ up·h)` for SwiGLU, else `down(act(up·h))`.
fn run_ffn(kernels: KernelMode, ffn: Ffn, layer: &LayerWeights, buffers: FfnBuffers<'_>, h: &[f32], out: &mut [f32], n_tokens: usize) {
    let FfnBuffers { hidden, gate } = buffers;
    kernels.linear(hidden, h, &layer.ffn_up, n_tokens);
    match ffn {
        Ffn::Swiglu => {
            let gate_weights = layer.ffn_gate.as_ref().expect("SwiGLU layers have a gate projection");
            kernels.linear(gate, h, gate_weights, n_tokens);
            kernels.swiglu(gate, hidden);
            kernels.linear(out, gate, &layer.ffn_down, n_tokens);
        }
        Ffn::Gelu => {
            kernels.gelu(hidden);
            kernels.linear(out, hidden, &layer.ffn_down, n_tokens);
        }
        Ffn::Relu => {
            kernels.relu(hidden);
            kernels.linear(out, hidden, &layer.ffn_down, n_tokens);
        }
    }
}

// Each method takes the op's buffers and shape, as the kernel functions it calls do.
#[allow(clippy::too_many_arguments)]
impl KernelMode {
    fn matmul(self, out: &mut [f32], x: &[f32], weight: &[f32], bias: Option<&[f32]>, rows: usize, n: usize, k: usize) {
        match self {
            KernelMode::Fast => matmul::matmul_into(out, x, weight, bias, rows, n, k, true),
            KernelMode::Reference => out.copy_from_slice(&matmul::matmul_ref(x, weight, bias, rows, n, k, true)),
        }
    }

    fn linear(self, out: &mut [f32], x: &[f32], linear: &Linear, rows: usize) {
        self.matmul(out, x, &linear.weight, linear.bias.as_deref(), rows, linear.out_dim, linear.in_dim);
    }

    fn norm(self, out: &mut [f32], x: &[f32], weights: &NormWeights, kind: Norm, rows: usize, cols: usize) {
        let eps = norm::NORM_EPS;
        match (kind, self) {
            (Norm::Rmsnorm, KernelMode::Fast) => norm::rmsnorm(out, x, &weights.weight, rows, cols, eps),
            (Norm::Rmsnorm, KernelMode::Reference) => {
                out.copy_from_slice(&norm::rmsnorm_ref(x, &weights.weight, rows, cols, eps));
            }
            (Norm::Layernorm, _) => {
                let bias = weights.bias.as_deref().expect("LayerNorm weights have a bias");
                match self {
                    KernelMode::Fast => norm::layernorm(out, x, &weights.weight, bias, rows, cols, eps),
                    KernelMode::Reference => {
                        out.copy_from_slice(&norm::layernorm_ref(x, &weights.weight, bias, rows, cols, eps));
                    }
                }
            }
        }
    }

    fn rope(self, x: &mut [f32], positions: &[u32], n_tokens: usize, n_heads: usize, head_dim: usize) {
        let theta = rope::ROPE_THETA;
        match self {
            KernelMode::Fast => rope::rope(x, positions, n_tokens, n_heads, head_dim, theta),
            KernelMode::Reference => {
                let rotated = rope::rope_ref(x, positions, n_tokens, n_heads, head_dim, theta);
                x.copy_from_slice(&rotated);
            }
        }
    }

    fn residual_add(self, x: &mut [f32], y: &[f32]) {
        match self {
            KernelMode::Fast => embedding::residual_add(x, y),
            KernelMode::Reference => {
                let sum = embedding::residual_add_ref(x, y);
                x.copy_from_slice(&sum);
            }
        }
    }

    /// `gate = silu(gate) ⊙ up`.
    fn swiglu(self, gate: &mut [f32], up: &[f32]) {
        match self {
            KernelMode::Fast => activation::swiglu_in_place(gate, up),
            KernelMode::Reference => {
                let y = activation::swiglu_ref(gate, up);
                gate.copy_from_slice(&y);
            }
        }
    }

    fn gelu(self, x: &mut [f32]) {
        match self {
            KernelMode::Fast => activation::gelu_tanh(x),
            KernelMode::Reference => {
                let y = activation::gelu_tanh_ref(x);
                x.copy_from_slice(&y);
            }
        }
    }

    fn relu(self, x: &mut [f32]) {
        match self {
            KernelMode::Fast => activation::relu(x),
            KernelMode::Reference => {
                let y = activation::relu_ref(x);
                x.copy_from_slice(&y);
            }
        }
    }

    /// Causal attention of `seq` new positions per sequence, starting at position 0.
    fn attention_prefill(self, out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, seq: usize, capacity: usize) {
        match self {
            KernelMode::Fast => attention::attention_prefill_into(out, q, k, v, shape, seq, capacity),
            KernelMode::Reference => {
                let k = gather_filled(k, shape, seq, capacity);
                let v = gather_filled(v, shape, seq, capacity);
                let AttentionShape { batch, n_heads, n_kv_heads, head_dim } = shape;
                out.copy_from_slice(&attention::attention_prefill_ref(q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim));
            }
        }
    }

    /// Attention of one new query per sequence against `cache_len` cached positions.
    fn attention_decode(self, out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, cache_len: usize, capacity: usize) {
        match self {
            KernelMode::Fast => attention::attention_decode_into(out, q, k, v, shape, cache_len, capacity),
            KernelMode::Reference => {
                let k = gather_filled(k, shape, cache_len, capacity);
                let v = gather_filled(v, shape, cache_len, capacity);
                let AttentionShape { batch, n_heads, n_kv_heads, head_dim } = shape;
                out.copy_from_slice(&attention::attention_decode_ref(q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim));
            }
        }
    }
}

/// Copies the first `len` positions of each sequence out of a `[batch, capacity, ...]`
/// cache into a dense `[batch, len, ...]` buffer, the layout the reference kernels take.
fn gather_filled(cache: &[f32], shape: AttentionShape, len: usize, capacity: usize) -> Vec<f32> {
    let row = shape.n_kv_heads * shape.head_dim;
    let mut out = Vec::with_capacity(shape.batch * len * row);
    for b in 0..shape.batch {
        out.extend_from_slice(&cache[b * capacity * row..(b * capacity + len) * row]);
    }
    out
}

/// Activation buffers reused across layers and calls, sized for the widest layer.
#[derive(Debug, Default)]
struct Scratch {
    /// Tokens the buffers are sized for.
    n_tokens: usize,
    /// Residual stream `[tokens, d_model]`.
    x: Vec<f32>,
    /// Normalised activations `[tokens, d_model]`.
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    /// Output of `wo` and of the FFN down projection `[tokens, d_model]`.
    proj: Vec<f32>,
    ffn_a: Vec<f32>,
    ffn_b: Vec<f32>,
    /// Rows whose logits are computed `[rows, d_model]`, before and after the final norm.
    last: Vec<f32>,
    last_normed: Vec<f32>,
    positions: Vec<u32>,
    last_rows: Vec<usize>,
}

impl Scratch {
    fn ensure(&mut self, weights: &Weights, n_tokens: usize) -> Result<()> {
        if n_tokens <= self.n_tokens {
            return Ok(());
        }
        let d = weights.d_model;
        let max_q = weights.layers.iter().map(|l| l.dims.q_dim()).max().unwrap_or(0);
        let max_kv = weights.layers.iter().map(|l| l.dims.kv_dim()).max().unwrap_or(0);
        let max_ff = weights.layers.iter().map(|l| l.dims.d_ff).max().unwrap_or(0);
        let bytes = (n_tokens * (5 * d + 2 * max_q + 2 * max_kv + 2 * max_ff)) as u64 * 4;
        super::weights::check_fits_in_memory("activation buffers", bytes)?;

        // Free the old buffers first so the peak is not old plus new.
        *self = Scratch::default();
        self.x = try_zeros(n_tokens * d)?;
        self.h = try_zeros(n_tokens * d)?;
        self.q = try_zeros(n_tokens * max_q)?;
        self.k = try_zeros(n_tokens * max_kv)?;
        self.v = try_zeros(n_tokens * max_kv)?;
        self.attn = try_zeros(n_tokens * max_q)?;
        self.proj = try_zeros(n_tokens * d)?;
        self.ffn_a = try_zeros(n_tokens * max_ff)?;
        self.ffn_b = try_zeros(n_tokens * max_ff)?;
        self.last = try_zeros(n_tokens * d)?;
        self.last_normed = try_zeros(n_tokens * d)?;
        self.positions = Vec::with_capacity(n_tokens);
        self.last_rows = Vec::with_capacity(n_tokens);
        self.n_tokens = n_tokens;
        Ok(())
    }

    fn bytes(&self) -> u64 {
        let floats = self.x.len()
            + self.h.len()
            + self.q.len()
            + self.k.len()
            + self.v.len()
            + self.attn.len()
            + self.proj.len()
            + self.ffn_a.len()
            + self.ffn_b.len()
            + self.last.len()
            + self.last_normed.len();
        let indices = self.positions.capacity() * 4 + self.last_rows.capacity() * std::mem::size_of::<usize>();
        floats as u64 * 4 + indices as u64
    }
}
