//! Space-independent numeric features of an architecture, for the surrogate.
//!
//! The vector mixes raw shape values (means and extremes over layers, so per-layer
//! architectures of any depth map to one fixed length) with log-scaled analytic metrics,
//! which make latency and quality close to linear in the inputs. Standardisation happens in
//! the surrogate, which stores it with the model.

use super::{Architecture, Dtype, Ffn, Norm, Pos};

/// Names of the values [`encode`] returns, in order.
pub const FEATURE_NAMES: &[&str] = &[
    "n_layers",
    "d_model",
    "head_dim",
    "mean_n_heads",
    "mean_n_kv_heads",
    "mean_d_ff",
    "min_d_ff",
    "max_d_ff",
    "min_n_heads",
    "max_n_heads",
    "ffn_swiglu",
    "ffn_gelu",
    "ffn_relu",
    "norm_layernorm",
    "pos_rope",
    "pos_learned",
    "bias",
    "tie_embeddings",
    "log_params",
    "log_non_embedding_params",
    "log_flops_prefill",
    "log_flops_decode",
    "log_kv_bytes_per_token",
    "vocab_size",
];

/// Sequence length at which FLOP features are taken.
pub const FEATURE_SEQ_LEN: u64 = 1024;

/// Encodes `arch` into `FEATURE_NAMES.len()` values.
pub fn encode(arch: &Architecture) -> Vec<f64> {
    let layers = arch.layer_shapes();
    let n = layers.len().max(1) as f64;
    let mean = |f: &dyn Fn(&super::LayerShape) -> u64| layers.iter().map(|l| f(l) as f64).sum::<f64>() / n;
    let min = |f: &dyn Fn(&super::LayerShape) -> u64| layers.iter().map(f).min().unwrap_or(0) as f64;
    let max = |f: &dyn Fn(&super::LayerShape) -> u64| layers.iter().map(f).max().unwrap_or(0) as f64;
    let flag = |b: bool| if b { 1.0 } else { 0.0 };

    vec![
        arch.n_layers as f64,
        arch.d_model as f64,
        arch.head_dim() as f64,
        mean(&|l| l.n_heads),
        mean(&|l| l.n_kv_heads),
        mean(&|l| l.d_ff),
        min(&|l| l.d_ff),
        max(&|l| l.d_ff),
        min(&|l| l.n_heads),
        max(&|l| l.n_heads),
        flag(arch.ffn == Ffn::Swiglu),
        flag(arch.ffn == Ffn::Gelu),
        flag(arch.ffn == Ffn::Relu),
        flag(arch.norm == Norm::Layernorm),
        flag(arch.pos == Pos::Rope),
        flag(arch.pos == Pos::Learned),
        flag(arch.bias),
        flag(arch.tie_embeddings),
        (arch.params() as f64).ln(),
        (arch.non_embedding_params().max(1) as f64).ln(),
        (arch.flops_per_token_prefill(FEATURE_SEQ_LEN) as f64).ln(),
        (arch.flops_per_token_decode(FEATURE_SEQ_LEN) as f64).ln(),
        (arch.kv_cache_bytes_per_token(Dtype::F32) as f64).ln(),
        arch.vocab_size as f64,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;

    #[test]
    fn encode_length_matches_names() {
        let values = encode(&presets::gpt2_small());
        assert_eq!(values.len(), FEATURE_NAMES.len());
        assert!(values.iter().all(|v| v.is_finite()));
    }
}
