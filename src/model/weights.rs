//! Random weights for any validated [`Architecture`], laid out for the CPU and GPU forward
//! passes.
//!
//! Every projection is stored as `[out_features, in_features]` row-major, the layout of a
//! PyTorch `nn.Linear` weight, so `y = x·Wᵀ + b` is a matmul with `transpose_b = true`, and a
//! tied output head is the token-embedding table itself.
//!
//! Values are drawn uniformly with standard deviation [`INIT_STD`], the initialisation scale
//! of GPT-2 and Llama. The distribution is uniform rather than normal because that is several
//! times cheaper to draw, and timing and parity do not depend on its shape. Norm weights
//! are `1 + U` and norm and projection biases are `U` with the same scale: not exactly 1 and
//! 0, so that a test notices a kernel that ignores them. Activations then stay O(1).
//!
//! The stream is a function of the seed, the tensor's index and the element's index only,
//! so the weights do not depend on the thread count.

use rayon::prelude::*;

use crate::arch::{Architecture, Ffn, Norm, Pos};
use crate::{Error, Result};

/// Standard deviation of every random weight.
pub const INIT_STD: f32 = 0.02;

/// Elements drawn from one generator seed; tensors are filled in parallel chunks of this size.
const INIT_CHUNK: usize = 1 << 16;

/// A projection `y = x·Wᵀ + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out_dim, in_dim]` row-major.
    pub weight: Vec<f32>,
    /// `out_dim` entries when the architecture has biases.
    pub bias: Option<Vec<f32>>,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// Weight and optional bias of one LayerNorm or RMSNorm over `d_model` features.
#[derive(Debug, Clone)]
pub struct NormWeights {
    pub weight: Vec<f32>,
    /// Present for LayerNorm only.
    pub bias: Option<Vec<f32>>,
}

/// Resolved sizes of one layer, as `usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerDims {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
}

impl LayerDims {
    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of the keys, and of the values.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// One decoder layer: pre-norm attention and pre-norm feed-forward block.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub dims: LayerDims,
    pub norm1: NormWeights,
    pub norm2: NormWeights,
    /// `[q_dim, d_model]`.
    pub wq: Linear,
    /// `[kv_dim, d_model]`.
    pub wk: Linear,
    /// `[kv_dim, d_model]`.
    pub wv: Linear,
    /// `[d_model, q_dim]`.
    pub wo: Linear,
    /// `[d_ff, d_model]`, SwiGLU only.
    pub ffn_gate: Option<Linear>,
    /// `[d_ff, d_model]`.
    pub ffn_up: Linear,
    /// `[d_model, d_ff]`.
    pub ffn_down: Linear,
}

/// All weights of one decoder model.
#[derive(Debug, Clone)]
pub struct Weights {
    pub arch: Architecture,
    pub d_model: usize,
    pub vocab_size: usize,
    pub max_seq_len: usize,
    /// `[vocab_size, d_model]`.
    pub token_embedding: Vec<f32>,
    /// `[max_seq_len, d_model]`, when `pos` is `learned`.
    pub position_embedding: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
    pub norm_f: NormWeights,
    /// `[vocab_size, d_model]`; `None` when the head is tied to the token embedding.
    pub output_head: Option<Vec<f32>>,
}

impl Weights {
    /// Draws weights for `arch` from `seed`.
    ///
    /// # Errors
    /// When `arch` is invalid, or when the weights do not fit in the memory the operating
    /// system reports as available.
    pub fn random(arch: &Architecture, seed: u64) -> Result<Self> {
        arch.validate()?;
        let bytes = Self::bytes_for(arch);
        check_fits_in_memory("model weights", bytes)?;
        log::debug!("drawing {} MiB of f32 weights for {}", bytes >> 20, arch.summary());

        let d_model = to_usize(arch.d_model);
        let vocab_size = to_usize(arch.vocab_size);
        let max_seq_len = to_usize(arch.max_seq_len);
        let mut init = Initializer { seed, next_tensor: 0 };

        let token_embedding = init.uniform(vocab_size * d_model, 0.0)?;
        let position_embedding = match arch.pos {
            Pos::Learned => Some(init.uniform(max_seq_len * d_model, 0.0)?),
            Pos::Rope | Pos::None => None,
        };

        let mut layers = Vec::with_capacity(to_usize(arch.n_layers));
        for shape in arch.layer_shapes() {
            let dims = LayerDims {
                n_heads: to_usize(shape.n_heads),
                n_kv_heads: to_usize(shape.n_kv_heads),
                head_dim: to_usize(shape.head_dim),
                d_ff: to_usize(shape.d_ff),
            };
            let ffn_gate = match arch.ffn {
                Ffn::Swiglu => Some(init.linear(d_model, dims.d_ff, arch.bias)?),
                Ffn::Gelu | Ffn::Relu => None,
            };
            layers.push(LayerWeights {
                dims,
                norm1: init.norm(d_model, arch.norm)?,
                norm2: init.norm(d_model, arch.norm)?,
                wq: init.linear(d_model, dims.q_dim(), arch.bias)?,
                wk: init.linear(d_model, dims.kv_dim(), arch.bias)?,
                wv: init.linear(d_model, dims.kv_dim(), arch.bias)?,
                wo: init.linear(dims.q_dim(), d_model, arch.bias)?,
                ffn_gate,
                ffn_up: init.linear(d_model, dims.d_ff, arch.bias)?,
                ffn_down: init.linear(dims.d_ff, d_model, arch.bias)?,
            });
        }

        let norm_f = init.norm(d_model, arch.norm)?;
        let output_head = if arch.tie_embeddings {
            None
        } else {
            Some(init.uniform(vocab_size * d_model, 0.0)?)
        };

        Ok(Weights {
            arch: arch.clone(),
            d_model,
            vocab_size,
            max_seq_len,
            token_embedding,
            position_embedding,
            layers,
            norm_f,
            output_head,
        })
    }

    /// Returns the output head `[vocab_size, d_model]`: its own matrix, or the token embedding when tied.
    pub fn head(&self) -> &[f32] {
        self.output_head.as_deref().unwrap_or(&self.token_embedding)
    }

    /// Bytes of `f32` weights that [`Weights::random`] allocates for `arch`; a tied head
    /// counts once.
    pub fn bytes_for(arch: &Architecture) -> u64 {
        let d = arch.d_model;
        let norm = arch.norm.params(d);
        let bias = u64::from(arch.bias);
        let mut elements = arch.vocab_size * d;
        if arch.pos == Pos::Learned {
            elements += arch.max_seq_len * d;
        }
        for shape in arch.layer_shapes() {
            let (q, kv, ff) = (shape.q_dim(), shape.kv_dim(), shape.d_ff);
            elements += 2 * norm;
            elements += (q + 2 * kv) * d + d * q + bias * (q + 2 * kv + d);
            elements += arch.ffn.matrices() * d * ff + bias * ((arch.ffn.matrices() - 1) * ff + d);
        }
        elements += norm;
        if !arch.tie_embeddings {
            elements += arch.vocab_size * d;
        }
        elements * 4
    }

    /// Bytes actually held by these weights.
    pub fn bytes(&self) -> u64 {
        let linear = |l: &Linear| l.weight.len() + l.bias.as_ref().map_or(0, Vec::len);
        let norm = |n: &NormWeights| n.weight.len() + n.bias.as_ref().map_or(0, Vec::len);
        let mut elements = self.token_embedding.len();
        elements += self.position_embedding.as_ref().map_or(0, Vec::len);
        for layer in &self.layers {
            elements += norm(&layer.norm1) + norm(&layer.norm2);
            elements += linear(&layer.wq) + linear(&layer.wk) + linear(&layer.wv) + linear(&layer.wo);
            elements += layer.ffn_gate.as_ref().map_or(0, linear);
            elements += linear(&layer.ffn_up) + linear(&layer.ffn_down);
        }
        elements += norm(&self.norm_f);
        elements += self.output_head.as_ref().map_or(0, Vec::len);
        elements as u64 * 4
    }

    /// Bytes a decode step reads from the weights: every matrix and vector once, except the
    /// token and position tables, of which only the rows in use are read (counted as zero).
    /// Dividing this by the memory bandwidth gives the decode latency floor.
    pub fn decode_read_bytes(&self) -> u64 {
        let mut bytes = self.bytes();
        bytes -= self.position_embedding.as_ref().map_or(0, Vec::len) as u64 * 4;
        if self.output_head.is_some() {
            bytes -= self.token_embedding.len() as u64 * 4;
        }
        bytes
    }
}

/// Converts an architecture size to `usize`. Validation caps sizes at `MAX_DIM` (2^24), so
/// this panics only where `usize` has 16 bits.
pub(crate) fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("validated architecture sizes fit in usize")
}

/// Allocates `len` zeros, returning an error instead of aborting when memory runs out.
pub(crate) fn try_zeros(len: usize) -> Result<Vec<f32>> {
    let mut values = Vec::new();
    values.try_reserve_exact(len).map_err(|_| {
        Error::Other(format!(
            "cannot allocate {} MiB for the CPU model; use a smaller architecture, batch or sequence length",
            (len as u64 * 4) >> 20
        ))
    })?;
    values.resize(len, 0.0);
    Ok(values)
}

/// Returns an error when `bytes` exceed the memory available according to
/// `/proc/meminfo`. Where that file cannot be read the check passes and allocation
/// failures are caught by [`try_zeros`] instead.
pub(crate) fn check_fits_in_memory(what: &str, bytes: u64) -> Result<()> {
    check_memory(what, bytes, "use a smaller architecture, batch or sequence length")
}

/// [`check_fits_in_memory`] with `fix` as the advice in the error.
pub(crate) fn check_memory(what: &str, bytes: u64, fix: &str) -> Result<()> {
    let Some(available) = available_memory_bytes() else {
        return Ok(());
    };
    if bytes > available {
        return Err(Error::Invalid(format!(
            "{what} need {} MiB but only {} MiB of memory is available; {fix}",
            bytes >> 20,
            available >> 20
        )));
    }
    Ok(())
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux only).
fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Hands out seeded, reproducible tensors in creation order.
struct Initializer {
    seed: u64,
    next_tensor: u64,
}

impl Initializer {
    /// `len` values `center + U`, where U is uniform with standard deviation [`INIT_STD`].
    fn uniform(&mut self, len: usize, center: f32) -> Result<Vec<f32>> {
        let tensor = self.next_tensor;
        self.next_tensor += 1;
        let mut values = try_zeros(len)?;
        // Uniform on [-a, a] has standard deviation a/sqrt(3).
        let half_width = INIT_STD * 3f32.sqrt();
        let seed = self.seed;
        values.par_chunks_mut(INIT_CHUNK).enumerate().for_each(|(chunk, out)| {
            let mut state = mix(mix(seed ^ 0x5EED) ^ mix((tensor.wrapping_add(1) << 32) | chunk as u64));
            for v in out.iter_mut() {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                // 24 random bits give a uniform value in [0, 1) that f32 represents exactly.
                let unit = (mix(state) >> 40) as f32 / (1u64 << 24) as f32;
                *v = center + (2.0 * unit - 1.0) * half_width;
            }
        });
        Ok(values)
    }

    fn linear(&mut self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Linear> {
        let weight = self.uniform(out_dim * in_dim, 0.0)?;
        let bias = if bias { Some(self.uniform(out_dim, 0.0)?) } else { None };
        Ok(Linear { weight, bias, in_dim, out_dim })
    }

    fn norm(&mut self, d_model: usize, kind: Norm) -> Result<NormWeights> {
        let weight = self.uniform(d_model, 1.0)?;
        let bias = match kind {
            Norm::Layernorm => Some(self.uniform(d_model, 0.0)?),
            Norm::Rmsnorm => None,
        };
        Ok(NormWeights { weight, bias })
    }
}

/// The SplitMix64 output function (Steele, Lea and Flood, 2014).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `values` with uniform numbers in `[-scale, scale]` from `seed`, in parallel; used
/// for random KV caches and token ids.
pub(crate) fn fill_uniform(values: &mut [f32], scale: f32, seed: u64) {
    values.par_chunks_mut(INIT_CHUNK).enumerate().for_each(|(chunk, out)| {
        let mut state = mix(mix(seed ^ 0xCAC4E) ^ chunk as u64);
        for v in out.iter_mut() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let unit = (mix(state) >> 40) as f32 / (1u64 << 24) as f32;
            *v = (2.0 * unit - 1.0) * scale;
        }
    });
}

/// `count` token ids below `vocab_size`, reproducible from `seed`.
pub fn random_tokens(count: usize, vocab_size: usize, seed: u64) -> Vec<u32> {
    let mut state = mix(seed ^ 0x70CE);
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            (mix(state) % vocab_size.max(1) as u64) as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;

    #[test]
    fn bytes_match_metrics_and_allocation() {
        for arch in [presets::llama_tiny(), gpt2_like_tiny()] {
            let weights = Weights::random(&arch, 1).unwrap();
            assert_eq!(weights.bytes(), Weights::bytes_for(&arch), "{}", arch.summary());
            assert_eq!(weights.bytes(), arch.metrics(1, 1).params * 4, "{}", arch.summary());
        }
    }

    #[test]
    fn same_seed_same_weights() {
        let arch = presets::llama_tiny();
        let a = Weights::random(&arch, 7).unwrap();
        let b = Weights::random(&arch, 7).unwrap();
        let c = Weights::random(&arch, 8).unwrap();
        assert_eq!(a.layers[1].wq.weight, b.layers[1].wq.weight);
        assert_ne!(a.layers[1].wq.weight, c.layers[1].wq.weight);
        // Different tensors of one model draw different values.
        assert_ne!(a.layers[0].wk.weight, a.layers[0].wv.weight);
    }

    #[test]
    fn init_scale_is_init_std() {
        let weights = Weights::random(&presets::llama_tiny(), 3).unwrap();
        let values = &weights.layers[0].ffn_up.weight;
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let std = (values.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 1e-3, "mean {mean}");
        assert!((std - f64::from(INIT_STD)).abs() < 1e-3, "std {std}");
        let norm_mean = weights.norm_f.weight.iter().sum::<f32>() / weights.d_model as f32;
        assert!((norm_mean - 1.0).abs() < 0.01, "norm weight mean {norm_mean}");
    }

    #[test]
    fn tied_head_is_embedding() {
        let weights = Weights::random(&gpt2_like_tiny(), 1).unwrap();
        assert!(weights.output_head.is_none());
        assert_eq!(weights.head().as_ptr(), weights.token_embedding.as_ptr());
        assert!(weights.position_embedding.is_some());
        assert!(weights.layers[0].wq.bias.is_some());
        assert!(weights.layers[0].norm1.bias.is_some());
        assert!(weights.layers[0].ffn_gate.is_none());
    }

    fn gpt2_like_tiny() -> Architecture {
        Architecture {
            vocab_size: 500,
            max_seq_len: 64,
            d_model: 48,
            n_layers: 2,
            n_heads: 4,
            d_ff: 96,
            ..presets::gpt2_small()
        }
    }
}
