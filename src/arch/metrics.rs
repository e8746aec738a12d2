//! Exact analytic metrics of an [`Architecture`]: parameter counts with a per-component
//! breakdown, FLOPs per token, weight and KV-cache bytes, and a peak-memory estimate.
//!
//! Conventions:
//! - Parameters count every weight and bias the model stores. A LayerNorm has a weight and a
//!   bias, an RMSNorm a weight only. `bias` adds biases to the q, k, v, o and FFN projections,
//!   never to the output head.
//! - Non-embedding parameters exclude the token embedding, the learned position table and an
//!   untied output head, following Kaplan et al. 2020 ("Scaling Laws for Neural Language
//!   Models", section 2.1). This is the "decoder parameters" count of Lightweight Transformer
//!   Search.
//! - FLOPs count 2 per multiply-add of the matrix products: the projections, the FFN, the
//!   output head (for every token), and attention scores (QKᵀ) and values (PV). Norms,
//!   activations, softmax, RoPE and bias adds are not counted; they are O(d_model) per token.
//! - Prefill at sequence length S is causal: token i (1-based) attends to i keys, so the
//!   attention term per token is the average over the sequence, `4·n_heads·head_dim·(S+1)/2`.
//! - Decode at context S has S tokens in the KV cache and one new token that attends to
//!   S + 1 keys.

use super::{Architecture, Ffn, Pos};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Element type of stored weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    Int8,
}

impl Dtype {
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::Bf16, Dtype::Int8];

    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
            Dtype::Int8 => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
            Dtype::Int8 => "int8",
        }
    }

    pub fn parse(text: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == text)
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parameters per component; the fields add up to the total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamBreakdown {
    /// Token embedding, `vocab_size × d_model`.
    pub token_embedding: u64,
    /// Learned position table, `max_seq_len × d_model` (zero for RoPE and none).
    pub position_embedding: u64,
    /// q, k, v and o projections of all layers, with their biases.
    pub attention: u64,
    /// Feed-forward matrices of all layers, with their biases.
    pub ffn: u64,
    /// Two norms per layer plus the final norm.
    pub norms: u64,
    /// Untied output head, `vocab_size × d_model` (zero when tied).
    pub output_head: u64,
}

impl ParamBreakdown {
    pub fn total(&self) -> u64 {
        self.token_embedding + self.position_embedding + self.attention + self.ffn + self.norms + self.output_head
    }

    pub fn non_embedding(&self) -> u64 {
        self.attention + self.ffn + self.norms
    }
}

/// Everything [`Architecture::metrics`] computes, for one sequence length and batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub params: u64,
    pub non_embedding_params: u64,
    pub param_breakdown: ParamBreakdown,
    /// Sequence length S used by the FLOP and memory figures.
    pub seq_len: u64,
    /// Batch B used by the memory figures.
    pub batch: u64,
    /// FLOPs per token: `prefill` averaged over a causal sequence of S tokens, `decode` for one
    /// new token against a cache of S tokens.
    pub flops_per_token: FlopsPerToken,
    /// Bytes of all weights, per dtype.
    pub weight_bytes: BTreeMap<Dtype, u64>,
    /// Bytes of keys and values cached per token, per dtype:
    /// `Σ_layers 2 × n_kv_heads × head_dim × bytes`.
    pub kv_cache_bytes_per_token: BTreeMap<Dtype, u64>,
    /// Estimated peak memory of one forward pass, per dtype.
    pub peak_memory_bytes: BTreeMap<Dtype, PeakMemory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlopsPerToken {
    pub prefill: u64,
    pub decode: u64,
}

/// Peak memory estimate, in bytes, for prefill of B × S tokens and for decode of B tokens
/// against a cache of S.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeakMemory {
    pub prefill: u64,
    pub decode: u64,
}

impl Architecture {
    /// Parameter counts per component.
    pub fn param_breakdown(&self) -> ParamBreakdown {
        let d = self.d_model;
        let bias = self.bias as u64;
        let mut out = ParamBreakdown {
            token_embedding: self.vocab_size * d,
            position_embedding: if self.pos == Pos::Learned { self.max_seq_len * d } else { 0 },
            output_head: if self.tie_embeddings { 0 } else { self.vocab_size * d },
            norms: (2 * self.n_layers + 1) * self.norm.params(d),
            ..Default::default()
        };

        for layer in self.layer_shapes() {
            let (q, kv) = (layer.q_dim(), layer.kv_dim());
            out.attention += d * q + 2 * d * kv + q * d + bias * (q + 2 * kv + d);

            let hidden_biases = match self.ffn {
                Ffn::Swiglu => 2 * layer.d_ff,
                Ffn::Gelu | Ffn::Relu => layer.d_ff,
            };
            out.ffn += self.ffn.matrices() * d * layer.d_ff + bias * (hidden_biases + d);
        }
        out
    }

    /// Total parameters.
    pub fn params(&self) -> u64 {
        self.param_breakdown().total()
    }

    /// Parameters outside the embeddings and the output head.
    pub fn non_embedding_params(&self) -> u64 {
        self.param_breakdown().non_embedding()
    }

    /// Multiply-adds per token of all matrix products except attention scores and values.
    fn linear_macs_per_token(&self) -> u64 {
        let d = self.d_model;
        let mut macs = self.vocab_size * d;
        for layer in self.layer_shapes() {
            let (q, kv) = (layer.q_dim(), layer.kv_dim());
            macs += d * q + 2 * d * kv + q * d + self.ffn.matrices() * d * layer.d_ff;
        }
        macs
    }

    /// Sum over layers of `n_heads × head_dim`, the width that attention scores and values scale with.
    fn total_q_dim(&self) -> u64 {
        self.layer_shapes().iter().map(|l| l.q_dim()).sum()
    }

    /// FLOPs per token of a causal prefill of `seq_len` tokens (see the module conventions).
    pub fn flops_per_token_prefill(&self, seq_len: u64) -> u64 {
        // Σ_{i=1..S} 4·q·i / S = 2·q·(S+1): exact in integers.
        2 * self.linear_macs_per_token() + 2 * self.total_q_dim() * (seq_len + 1)
    }

    /// FLOPs of one decode step against a KV cache of `context` tokens.
    pub fn flops_per_token_decode(&self, context: u64) -> u64 {
        2 * self.linear_macs_per_token() + 4 * self.total_q_dim() * (context + 1)
    }

    /// Bytes of every weight stored in `dtype`.
    pub fn weight_bytes(&self, dtype: Dtype) -> u64 {
        self.params() * dtype.bytes()
    }

    /// KV-cache bytes per token: `Σ_layers 2 × n_kv_heads × head_dim × bytes`.
    pub fn kv_cache_bytes_per_token(&self, dtype: Dtype) -> u64 {
        let elements: u64 = self.layer_shapes().iter().map(|l| 2 * l.kv_dim()).sum();
        elements * dtype.bytes()
    }

    /// Estimated peak memory of a forward pass, as a sum of what is live at the widest point:
    /// all weights, the KV cache, the residual stream and its normed copy, the widest layer's
    /// intermediate (q, k, v and the attention output, or the FFN hidden state), and the
    /// output logits of the last position of each sequence. Attention is assumed tiled, so no
    /// S × S score matrix is counted. It is an estimate: allocator padding and temporary
    /// buffers of a particular runtime are not included.
    pub fn peak_memory(&self, dtype: Dtype, batch: u64, seq_len: u64) -> PeakMemory {
        let bytes = dtype.bytes();
        let d = self.d_model;
        let widest = self
            .layer_shapes()
            .iter()
            .map(|l| {
                let attention = l.q_dim() * 2 + 2 * l.kv_dim();
                let ffn = match self.ffn {
                    Ffn::Swiglu => 2 * l.d_ff,
                    Ffn::Gelu | Ffn::Relu => l.d_ff,
                };
                attention.max(ffn)
            })
            .max()
            .unwrap_or(0);
        let per_token_activations = 2 * d + widest;
        let weights = self.weight_bytes(dtype);
        let kv = self.kv_cache_bytes_per_token(dtype);
        // A large batch times a long sequence can overflow u64, so the sums saturate: a result
        // of u64::MAX means "at least that much".
        let product = |factors: &[u64]| factors.iter().fold(1u64, |acc, &f| acc.saturating_mul(f));
        let logits = product(&[batch, self.vocab_size, bytes]);
        let prefill = [weights, product(&[kv, batch, seq_len]), product(&[per_token_activations, batch, seq_len, bytes]), logits];
        let decode = [weights, product(&[kv, batch, seq_len.saturating_add(1)]), product(&[per_token_activations, batch, bytes]), logits];
        let sum = |terms: [u64; 4]| terms.iter().fold(0u64, |acc, &t| acc.saturating_add(t));
        PeakMemory { prefill: sum(prefill), decode: sum(decode) }
    }

    /// All analytic metrics at sequence length (or decode context) `seq_len` and batch `batch`.
    pub fn metrics(&self, seq_len: u64, batch: u64) -> Metrics {
        let breakdown = self.param_breakdown();
        let per_dtype = |f: &dyn Fn(Dtype) -> u64| Dtype::ALL.into_iter().map(|d| (d, f(d))).collect();
        Metrics {
            params: breakdown.total(),
            non_embedding_params: breakdown.non_embedding(),
            param_breakdown: breakdown,
            seq_len,
            batch,
            flops_per_token: FlopsPerToken {
                prefill: self.flops_per_token_prefill(seq_len),
                decode: self.flops_per_token_decode(seq_len),
            },
            weight_bytes: per_dtype(&|d| self.weight_bytes(d)),
            kv_cache_bytes_per_token: per_dtype(&|d| self.kv_cache_bytes_per_token(d)),
            peak_memory_bytes: Dtype::ALL
                .into_iter()
                .map(|d| (d, self.peak_memory(d, batch, seq_len)))
                .collect(),
        }
    }

    /// Flat metric map with the shared metric names, for objectives and history files: one
    /// entry per row of [`ANALYTIC_METRICS`].
    pub fn metric_map(&self, dtype: Dtype, seq_len: u64, batch: u64) -> BTreeMap<String, f64> {
        ANALYTIC_METRICS.iter().map(|&(name, f)| (name.to_string(), f(self, dtype, seq_len, batch) as f64)).collect()
    }
}

/// An analytic metric of an architecture, given the element type, the sequence length (the
/// KV-cache context for decode figures) and the batch.
pub type AnalyticMetric = fn(&Architecture, Dtype, u64, u64) -> u64;

/// The metrics of [`Architecture::metric_map`] by their shared names: `params`,
/// `non_embedding_params`, `flops_per_token` (prefill at the sequence length),
/// `flops_per_token_decode`, `weight_bytes`, `kv_cache_bytes_per_token` and `peak_memory_bytes`
/// (decode), the byte figures in the given element type.
pub const ANALYTIC_METRICS: [(&str, AnalyticMetric); 7] = [
    ("params", |a, _, _, _| a.params()),
    ("non_embedding_params", |a, _, _, _| a.non_embedding_params()),
    ("flops_per_token", |a, _, seq, _| a.flops_per_token_prefill(seq)),
    ("flops_per_token_decode", |a, _, seq, _| a.flops_per_token_decode(seq)),
    ("weight_bytes", |a, dtype, _, _| a.weight_bytes(dtype)),
    ("kv_cache_bytes_per_token", |a, dtype, _, _| a.kv_cache_bytes_per_token(dtype)),
    ("peak_memory_bytes", |a, dtype, seq, batch| a.peak_memory(dtype, batch, seq).decode),
];
