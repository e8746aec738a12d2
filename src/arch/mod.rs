//! Decoder-only transformer architectures: the `Architecture` type, its JSON
//! form, validation, and the per-layer view that every other module reads.
//!
//! Analytic metrics (parameters, FLOPs, bytes) live in [`metrics`], and the
//! feature encoding used by the surrogate lives in [`features`].

pub mod features;
pub mod metrics;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

pub use metrics::{Dtype, Metrics, ParamBreakdown};

/// Errors raised while reading or validating an architecture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchError {
    /// A field holds a value that no model can have; the message names the field and the fix.
    #[error("invalid architecture: {0}")]
    Invalid(String),
    /// The JSON text could not be parsed into an architecture.
    #[error("invalid architecture JSON{location}: {message}")]
    Parse { location: String, message: String },
    /// The architecture file could not be read.
    #[error("cannot read architecture file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Feed-forward block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ffn {
    /// Gated SiLU: `down(silu(gate(x)) * up(x))`, three matrices.
    Swiglu,
    /// `down(gelu(up(x)))` with the tanh form of GELU, two matrices.
    Gelu,
    /// `down(relu(up(x)))`, two matrices.
    Relu,
}

impl Ffn {
    /// Number of `d_model × d_ff` matrices in one feed-forward block.
    pub fn matrices(self) -> u64 {
        match self {
            Ffn::Swiglu => 3,
            Ffn::Gelu | Ffn::Relu => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ffn::Swiglu => "swiglu",
            Ffn::Gelu => "gelu",
            Ffn::Relu => "relu",
        }
    }
}

/// Normalisation layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// RMSNorm with a weight vector only.
    Rmsnorm,
    /// LayerNorm with weight and bias vectors (the bias is present whatever `bias` says,
    /// as in GPT-2 and litgpt).
    Layernorm,
}

impl Norm {
    /// Parameters of one norm over `d_model` features.
    pub fn params(self, d_model: u64) -> u64 {
        match self {
            Norm::Rmsnorm => d_model,
            Norm::Layernorm => 2 * d_model,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Norm::Rmsnorm => "rmsnorm",
            Norm::Layernorm => "layernorm",
        }
    }
}

/// Positional encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pos {
    /// Rotary position embedding on queries and keys (needs an even `head_dim`).
    Rope,
    /// A learned `max_seq_len × d_model` table added to the token embedding.
    Learned,
    /// No positional information.
    None,
}

impl Pos {
    pub fn name(self) -> &'static str {
        match self {
            Pos::Rope => "rope",
            Pos::Learned => "learned",
            Pos::None => "none",
        }
    }
}

/// Per-layer overrides; a missing field takes the model-wide value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_heads: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_kv_heads: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_ff: Option<u64>,
}

/// A decoder-only transformer, as written in architecture JSON files.
///
/// Construct it through JSON ([`Architecture::from_json`]) or build the struct and call
/// [`Architecture::validate`]. Every other module assumes a validated value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawArchitecture")]
pub struct Architecture {
    pub vocab_size: u64,
    pub max_seq_len: u64,
    pub d_model: u64,
    pub n_layers: u64,
    pub n_heads: u64,
    /// Key/value heads for grouped-query attention; `None` means `n_heads` (plain MHA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_kv_heads: Option<u64>,
    /// Width of one head; `None` means `d_model / n_heads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<u64>,
    pub d_ff: u64,
    pub ffn: Ffn,
    pub norm: Norm,
    pub pos: Pos,
    /// Biases on the attention and feed-forward projections (never on the output head).
    pub bias: bool,
    /// The output head reuses the token-embedding matrix.
    pub tie_embeddings: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerOverride>>,
}

/// One layer with every default resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerShape {
    pub n_heads: u64,
    pub n_kv_heads: u64,
    pub head_dim: u64,
    pub d_ff: u64,
}

impl LayerShape {
    /// Width of the concatenated query heads, `n_heads × head_dim`.
    pub fn q_dim(&self) -> u64 {
        self.n_heads * self.head_dim
    }

    /// Width of the keys (and of the values), `n_kv_heads × head_dim`.
    pub fn kv_dim(&self) -> u64 {
        self.n_kv_heads * self.head_dim
    }
}

/// Loose mirror of the JSON form, so that negative numbers and missing fields get
/// messages that name the field, instead of serde's generic type errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchitecture {
    #[serde(default = "default_vocab")]
    vocab_size: i64,
    #[serde(default = "default_max_seq_len")]
    max_seq_len: i64,
    d_model: Option<i64>,
    n_layers: Option<i64>,
    n_heads: Option<i64>,
    #[serde(default)]
    n_kv_heads: Option<i64>,
    #[serde(default)]
    head_dim: Option<i64>,
    d_ff: Option<i64>,
    #[serde(default = "default_ffn")]
    ffn: Ffn,
    #[serde(default = "default_norm")]
    norm: Norm,
    #[serde(default = "default_pos")]
    pos: Pos,
    #[serde(default)]
    bias: bool,
    #[serde(default)]
    tie_embeddings: bool,
    #[serde(default)]
    layers: Option<Vec<RawLayer>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    #[serde(default)]
    n_heads: Option<i64>,
    #[serde(default)]
    n_kv_heads: Option<i64>,
    #[serde(default)]
    d_ff: Option<i64>,
}

fn default_vocab() -> i64 {
    32000
}
fn default_max_seq_len() -> i64 {
    2048
}
fn default_ffn() -> Ffn {
    Ffn::Swiglu
}
fn default_norm() -> Norm {
    Norm::Rmsnorm
}
fn default_pos() -> Pos {
    Pos::Rope
}

fn positive(field: &str, value: i64) -> Result<u64, String> {
    if value <= 0 {
        return Err(format!("{field} ({value}) must be a positive integer"));
    }
    Ok(value as u64)
}

fn required(field: &str, value: Option<i64>) -> Result<u64, String> {
    match value {
        Some(v) => positive(field, v),
        None => Err(format!("missing field `{field}`; add it as a positive integer")),
    }
}

fn optional(field: &str, value: Option<i64>) -> Result<Option<u64>, String> {
    value.map(|v| positive(field, v)).transpose()
}

impl TryFrom<RawArchitecture> for Architecture {
    type Error = String;

    fn try_from(raw: RawArchitecture) -> Result<Self, String> {
        let layers = match raw.layers {
            None => None,
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, layer) in list.into_iter().enumerate() {
                    out.push(LayerOverride {
                        n_heads: optional(&format!("layers[{i}].n_heads"), layer.n_heads)?,
                        n_kv_heads: optional(&format!("layers[{i}].n_kv_heads"), layer.n_kv_heads)?,
                        d_ff: optional(&format!("layers[{i}].d_ff"), layer.d_ff)?,
                    });
                }
                Some(out)
            }
        };

        let arch = Architecture {
            vocab_size: positive("vocab_size", raw.vocab_size)?,
            max_seq_len: positive("max_seq_len", raw.max_seq_len)?,
            d_model: required("d_model", raw.d_model)?,
            n_layers: required("n_layers", raw.n_layers)?,
            n_heads: required("n_heads", raw.n_heads)?,
            n_kv_heads: optional("n_kv_heads", raw.n_kv_heads)?,
            head_dim: optional("head_dim", raw.head_dim)?,
            d_ff: required("d_ff", raw.d_ff)?,
            ffn: raw.ffn,
            norm: raw.norm,
            pos: raw.pos,
            bias: raw.bias,
            tie_embeddings: raw.tie_embeddings,
            layers,
        };
        arch.validate().map_err(|e| match e {
            ArchError::Invalid(msg) => msg,
            other => other.to_string(),
        })?;
        Ok(arch)
    }
}

/// Largest size accepted for any one dimension. It keeps every product in the metrics
/// far from u64 overflow (2^24 squared times the layer count still fits).
pub const MAX_DIM: u64 = 1 << 24;

/// Largest parameter count, and largest sum of layer widths times `max_seq_len`, an
/// architecture may have: 2^50, about 1.1e15, a thousand times today's largest models.
pub const MAX_SIZE: u64 = 1 << 50;

impl Architecture {
    /// Parses and validates architecture JSON. Errors name the JSON path of the bad field.
    pub fn from_json(text: &str) -> Result<Self, ArchError> {
        if text.trim().is_empty() {
            return Err(ArchError::Parse {
                location: String::new(),
                message: "the input is empty; expected a JSON object such as {\"d_model\": 512, \"n_layers\": 8, \"n_heads\": 8, \"d_ff\": 1408}".into(),
            });
        }
        if !text.trim_start().starts_with('{') {
            return Err(ArchError::Parse {
                location: String::new(),
                message: "expected a JSON object such as {\"d_model\": 512, ...} at the top level".into(),
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let parsed: Result<Architecture, _> = serde_path_to_error::deserialize(&mut de);
        match parsed {
            Ok(arch) => {
                de.end().map_err(|e| ArchError::Parse {
                    location: String::new(),
                    message: format!(
                        "trailing characters after the object ({e}); a file holds one architecture, so split JSON lines (such as `alphanas space sample` output) into one file each"
                    ),
                })?;
                Ok(arch)
            }
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let location = if path == "." || path.is_empty() || path.contains('?') {
                    String::new()
                } else {
                    format!(" at `{path}`")
                };
                Err(ArchError::Parse {
                    location,
                    message: inner.to_string().replace("expected i64", "expected an integer"),
                })
            }
        }
    }

    /// Reads and validates an architecture JSON file.
    pub fn from_file(path: &Path) -> Result<Self, ArchError> {
        let text = std::fs::read_to_string(path).map_err(|source| ArchError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ArchError::Parse { location, message } => ArchError::Parse {
                location: format!(" in {}{}", path.display(), location),
                message,
            },
            other => other,
        })
    }

    /// Serialises to compact JSON (the form used in history files and the evaluator protocol).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("Architecture serialises to JSON")
    }

    /// Number of heads, key/value heads, head width and FFN width of layer `i`.
    pub fn layer(&self, i: usize) -> LayerShape {
        let over = self
            .layers
            .as_ref()
            .and_then(|l| l.get(i))
            .cloned()
            .unwrap_or_default();
        let n_heads = over.n_heads.unwrap_or(self.n_heads);
        let n_kv_heads = over
            .n_kv_heads
            .or(if over.n_heads.is_some() && self.n_kv_heads.is_none() {
                Some(n_heads)
            } else {
                self.n_kv_heads
            })
            .unwrap_or(n_heads);
        // Without an explicit head_dim each layer splits d_model evenly over its own heads,
        // so attention stays d_model wide whatever the layer's head count (as in GPT-2 models
        // with per-layer heads, such as Lightweight Transformer Search's).
        let head_dim = self.head_dim.unwrap_or(self.d_model / n_heads.max(1));
        LayerShape {
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: over.d_ff.unwrap_or(self.d_ff),
        }
    }

    /// Every layer's resolved shape, in order.
    pub fn layer_shapes(&self) -> Vec<LayerShape> {
        (0..self.n_layers as usize).map(|i| self.layer(i)).collect()
    }

    /// Model-wide width of one attention head. With no explicit `head_dim`, it is
    /// `d_model / n_heads` (validation guarantees the division is exact). A layer that
    /// overrides `n_heads` has its own width; read it from [`Architecture::layer`].
    pub fn head_dim(&self) -> u64 {
        self.head_dim.unwrap_or(self.d_model / self.n_heads.max(1))
    }

    /// Checks every rule a buildable model must satisfy. The first violation is returned as a
    /// one-line message that names the field, its value and the fix.
    pub fn validate(&self) -> Result<(), ArchError> {
        let bad = |msg: String| Err(ArchError::Invalid(msg));

        for (field, value) in [
            ("vocab_size", self.vocab_size),
            ("max_seq_len", self.max_seq_len),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
        ] {
            if value == 0 {
                return bad(format!("{field} (0) must be a positive integer"));
            }
            if value > MAX_DIM {
                return bad(format!("{field} ({value}) exceeds the supported maximum {MAX_DIM}"));
            }
        }
        if self.n_layers > 4096 {
            return bad(format!("n_layers ({}) exceeds the supported maximum 4096", self.n_layers));
        }

        match self.head_dim {
            Some(0) => return bad("head_dim (0) must be a positive integer".into()),
            Some(h) if h > MAX_DIM => {
                return bad(format!("head_dim ({h}) exceeds the supported maximum {MAX_DIM}"))
            }
            Some(_) => {}
            None => {
                if !self.d_model.is_multiple_of(self.n_heads) {
                    return bad(format!(
                        "n_heads ({}) must divide d_model ({}) when head_dim is absent; set head_dim or pick n_heads from the divisors of d_model",
                        self.n_heads, self.d_model
                    ));
                }
            }
        }
        let head_dim = self.head_dim();
        if self.pos == Pos::Rope && !head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim ({head_dim}) must be even with pos \"rope\", which rotates pairs of features; use an even head_dim or another pos"
            ));
        }
        if let Some(kv) = self.n_kv_heads {
            check_kv("", self.n_heads, kv)?;
        }

        if let Some(layers) = &self.layers {
            if layers.len() as u64 != self.n_layers {
                return bad(format!(
                    "layers has {} but n_layers is {}; give exactly one entry per layer or drop `layers`",
                    crate::error::plural(layers.len(), "entry", "entries"),
                    self.n_layers
                ));
            }
            for (i, over) in layers.iter().enumerate() {
                for (field, value) in [
                    ("n_heads", over.n_heads),
                    ("n_kv_heads", over.n_kv_heads),
                    ("d_ff", over.d_ff),
                ] {
                    match value {
                        Some(0) => return bad(format!("layers[{i}].{field} (0) must be a positive integer")),
                        Some(v) if v > MAX_DIM => {
                            return bad(format!("layers[{i}].{field} ({v}) exceeds the supported maximum {MAX_DIM}"))
                        }
                        _ => {}
                    }
                }
                let shape = self.layer(i);
                if self.head_dim.is_none() && over.n_heads.is_some() && !self.d_model.is_multiple_of(shape.n_heads) {
                    return bad(format!(
                        "layers[{i}].n_heads ({}) must divide d_model ({}) when head_dim is absent; set head_dim or use a divisor of d_model",
                        shape.n_heads, self.d_model
                    ));
                }
                check_kv(&format!("layers[{i}]."), shape.n_heads, shape.n_kv_heads)?;
                if self.pos == Pos::Rope && !shape.head_dim.is_multiple_of(2) {
                    return bad(format!(
                        "layers[{i}] has head_dim {} (d_model / layers[{i}].n_heads), which must be even with pos \"rope\"; pick n_heads so that d_model / n_heads is even, or set head_dim",
                        shape.head_dim
                    ));
                }
            }
        }
        self.check_size()
    }

    /// Rejects a model too large for the integer metrics: more than [`MAX_SIZE`] parameters, or
    /// more than [`MAX_SIZE`] values of per-layer width over the context (which bounds the
    /// attention FLOPs, the KV cache and the activations). Estimated in f64, which cannot
    /// overflow here; the limits leave the exact u64 sums far from overflowing.
    fn check_size(&self) -> Result<(), ArchError> {
        let d = self.d_model as f64;
        let mut params = (2 * self.vocab_size + self.max_seq_len) as f64 * d;
        let mut width = 0.0;
        for shape in self.layer_shapes() {
            let (q, kv, ff) = (shape.q_dim() as f64, (shape.n_kv_heads * shape.head_dim) as f64, shape.d_ff as f64);
            params += d * (2.0 * q + 2.0 * kv + 3.0 * ff + 4.0);
            width += q + 2.0 * kv + 2.0 * ff + d;
        }
        let context = width * self.max_seq_len as f64;
        let limit = MAX_SIZE as f64;
        if params > limit || context > limit {
            return Err(ArchError::Invalid(format!(
                "the architecture is too large for its metrics to be computed exactly: about {params:.2e} parameters and {context:.2e} values of layer width over max_seq_len, where each may be at most {limit:.2e}; reduce d_model, d_ff, n_layers, vocab_size or max_seq_len"
            )));
        }
        Ok(())
    }

    /// Short human-readable summary such as `L12 d768 h12/kv12 ff3072 swiglu`.
    pub fn summary(&self) -> String {
        let first = self.layer(0);
        let per_layer = if self.layers.is_some() { " (per-layer)" } else { "" };
        format!(
            "L{} d{} h{}/kv{} hd{} ff{} {}{}",
            self.n_layers,
            self.d_model,
            first.n_heads,
            first.n_kv_heads,
            first.head_dim,
            first.d_ff,
            self.ffn.name(),
            per_layer
        )
    }
}

fn check_kv(prefix: &str, n_heads: u64, n_kv_heads: u64) -> Result<(), ArchError> {
    if n_kv_heads > n_heads || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(ArchError::Invalid(format!(
            "{prefix}n_kv_heads ({n_kv_heads}) must divide {prefix}n_heads ({n_heads}) for grouped-query attention; pick a divisor of n_heads"
        )));
    }
    Ok(())
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Builders for well-known published shapes, used by tests, examples and benches.
pub mod presets {
    use super::*;

    fn base(d_model: u64, n_layers: u64, n_heads: u64, d_ff: u64) -> Architecture {
        Architecture {
            vocab_size: 32000,
            max_seq_len: 2048,
            d_model,
            n_layers,
            n_heads,
            n_kv_heads: None,
            head_dim: None,
            d_ff,
            ffn: Ffn::Swiglu,
            norm: Norm::Rmsnorm,
            pos: Pos::Rope,
            bias: false,
            tie_embeddings: false,
            layers: None,
        }
    }

    /// GPT-2 small (124M): 12 layers, d_model 768, learned positions, GELU, LayerNorm, biases,
    /// tied embeddings, vocabulary 50257, context 1024.
    pub fn gpt2_small() -> Architecture {
        Architecture {
            vocab_size: 50257,
            max_seq_len: 1024,
            ffn: Ffn::Gelu,
            norm: Norm::Layernorm,
            pos: Pos::Learned,
            bias: true,
            tie_embeddings: true,
            ..base(768, 12, 12, 3072)
        }
    }

    /// A Llama-style model of about 100M parameters: 12 layers, d_model 768, 12 heads with
    /// 4 key/value heads, SwiGLU 2048, vocabulary 32000, untied.
    pub fn llama_100m() -> Architecture {
        Architecture {
            n_kv_heads: Some(4),
            ..base(768, 12, 12, 2048)
        }
    }

    /// A small Llama-style model for quick tests (about 10M parameters with its 32000 vocabulary).
    pub fn llama_tiny() -> Architecture {
        Architecture {
            n_kv_heads: Some(2),
            max_seq_len: 512,
            ..base(256, 4, 4, 704)
        }
    }

    /// Llama 2 7B.
    pub fn llama2_7b() -> Architecture {
        base(4096, 32, 32, 11008)
    }
}

#[cfg(test)]
mod tests;
