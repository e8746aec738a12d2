//! Export of architectures as Hugging Face transformers `config.json` files.
//!
//! Two formats are written:
//! - `hf-llama` ([`Format::HfLlama`]): `LlamaConfig`, for SwiGLU + RMSNorm + RoPE models.
//!   Grouped-query attention and an explicit `head_dim` are expressed directly. `bias` maps to
//!   both `attention_bias` (q, k, v, o) and `mlp_bias` (gate, up, down), as this crate counts
//!   biases.
//! - `hf-gpt2` ([`Format::HfGpt2`]): `GPT2Config`, for GELU (tanh form, `gelu_new`) + LayerNorm +
//!   learned positions, with biases and tied embeddings, as GPT-2 always has them.
//!
//! Neither format can hold per-layer shapes, so an architecture whose layers differ is
//! rejected; `layers` entries that repeat the model-wide values are accepted. Every rejection
//! names the field and the fix.

use crate::arch::{Architecture, Ffn, Norm, Pos};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Epsilon written as `rms_norm_eps` (the Llama 2 value).
const LLAMA_RMS_NORM_EPS: f64 = 1e-5;

/// Epsilon written as `layer_norm_epsilon` (the GPT-2 value).
const GPT2_LAYER_NORM_EPS: f64 = 1e-5;

/// RoPE base frequency written as `rope_theta` (the Llama and Llama 2 value).
const LLAMA_ROPE_THETA: f64 = 10000.0;

/// Errors raised while exporting an architecture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The architecture uses something the format cannot express; the message names the field
    /// and the fix.
    #[error("cannot export as {format}: {message}")]
    Unsupported { format: &'static str, message: String },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The format name is unknown.
    #[error("unknown export format `{0}`; use hf-llama or hf-gpt2")]
    UnknownFormat(String),
}

impl From<ExportError> for crate::Error {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Io { path, source } => crate::Error::io(format!("cannot write {path}"), source),
            other => crate::Error::Invalid(other.to_string()),
        }
    }
}

/// A Hugging Face configuration format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `LlamaConfig` (`model_type` "llama").
    HfLlama,
    /// `GPT2Config` (`model_type` "gpt2").
    HfGpt2,
}

impl Format {
    /// The command-line spelling (`hf-llama`, `hf-gpt2`).
    pub fn name(self) -> &'static str {
        match self {
            Format::HfLlama => "hf-llama",
            Format::HfGpt2 => "hf-gpt2",
        }
    }

    /// Parses the command-line spelling.
    pub fn parse(text: &str) -> Result<Format, ExportError> {
        match text {
            "hf-llama" => Ok(Format::HfLlama),
            "hf-gpt2" => Ok(Format::HfGpt2),
            other => Err(ExportError::UnknownFormat(other.into())),
        }
    }

    /// The format that fits `arch` best: `hf-gpt2` for a LayerNorm model with learned
    /// positions, else `hf-llama`.
    pub fn natural_for(arch: &Architecture) -> Format {
        if arch.norm == Norm::Layernorm && arch.pos == Pos::Learned {
            Format::HfGpt2
        } else {
            Format::HfLlama
        }
    }
}

/// The `config.json` object for `arch` in `format`.
pub fn hf_config(arch: &Architecture, format: Format) -> Result<Value, ExportError> {
    match format {
        Format::HfLlama => llama_config(arch),
        Format::HfGpt2 => gpt2_config(arch),
    }
}

/// Writes `dir/config.json` for `arch` in `format`, creating `dir`, and returns the file path.
pub fn write_hf_config(arch: &Architecture, format: Format, dir: &Path) -> Result<PathBuf, ExportError> {
    let config = hf_config(arch, format)?;
    if let Some(file) = crate::error::file_in_the_way(dir) {
        let source = std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} is a file, not a folder; choose another --out", file.display()));
        return Err(ExportError::Io { path: dir.display().to_string(), source });
    }
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Io { path: dir.display().to_string(), source })?;
    let path = dir.join("config.json");
    let mut text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
    text.push('\n');
    std::fs::write(&path, text).map_err(|source| ExportError::Io { path: path.display().to_string(), source })?;
    Ok(path)
}

fn unsupported(format: Format, message: String) -> ExportError {
    ExportError::Unsupported { format: format.name(), message }
}

/// Rejects architectures whose layers differ from each other.
fn require_uniform_layers(arch: &Architecture, format: Format) -> Result<(), ExportError> {
    let first = arch.layer(0);
    for (i, layer) in arch.layer_shapes().iter().enumerate().skip(1) {
        for (field, a, b) in [
            ("n_heads", first.n_heads, layer.n_heads),
            ("n_kv_heads", first.n_kv_heads, layer.n_kv_heads),
            ("d_ff", first.d_ff, layer.d_ff),
        ] {
            if a != b {
                return Err(unsupported(
                    format,
                    format!(
                        "layers[{i}].{field} ({b}) differs from layers[0].{field} ({a}), but {} has one value for all layers; use the same {field} in every layer",
                        format.name()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn llama_config(arch: &Architecture) -> Result<Value, ExportError> {
    let format = Format::HfLlama;
    if arch.ffn != Ffn::Swiglu {
        return Err(unsupported(
            format,
            format!(
                "ffn \"{}\" has no Llama form, because Llama uses a gated SiLU MLP (hidden_act \"silu\"); set ffn to \"swiglu\"{}",
                arch.ffn.name(),
                if arch.ffn == Ffn::Gelu { " or export with --format hf-gpt2" } else { "" }
            ),
        ));
    }
    if arch.norm != Norm::Rmsnorm {
        return Err(unsupported(
            format,
            format!("norm \"{}\" has no Llama form, because Llama uses RMSNorm; set norm to \"rmsnorm\"", arch.norm.name()),
        ));
    }
    if arch.pos != Pos::Rope {
        return Err(unsupported(
            format,
            format!("pos \"{}\" has no Llama form, because Llama uses rotary embeddings; set pos to \"rope\"", arch.pos.name()),
        ));
    }
    require_uniform_layers(arch, format)?;

    let layer = arch.layer(0);
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.d_model,
        "intermediate_size": layer.d_ff,
        "num_hidden_layers": arch.n_layers,
        "num_attention_heads": layer.n_heads,
        "num_key_value_heads": layer.n_kv_heads,
        "head_dim": layer.head_dim,
        "max_position_embeddings": arch.max_seq_len,
        "hidden_act": "silu",
        "rms_norm_eps": LLAMA_RMS_NORM_EPS,
        "rope_theta": LLAMA_ROPE_THETA,
        "attention_bias": arch.bias,
        "mlp_bias": arch.bias,
        "tie_word_embeddings": arch.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": true,
        "torch_dtype": "float32",
    }))
}

fn gpt2_config(arch: &Architecture) -> Result<Value, ExportError> {
    let format = Format::HfGpt2;
    let checks: [(bool, String); 5] = [
        (
            arch.ffn == Ffn::Gelu,
            format!(
                "ffn \"{}\" has no GPT-2 form, because GPT-2 uses a two-matrix GELU MLP; set ffn to \"gelu\"{}",
                arch.ffn.name(),
                if arch.ffn == Ffn::Swiglu { " or export with --format hf-llama" } else { "" }
            ),
        ),
        (
            arch.norm == Norm::Layernorm,
            format!("norm \"{}\" has no GPT-2 form, because GPT-2 uses LayerNorm; set norm to \"layernorm\" or export with --format hf-llama", arch.norm.name()),
        ),
        (
            arch.pos == Pos::Learned,
            format!("pos \"{}\" has no GPT-2 form, because GPT-2 learns a position table; set pos to \"learned\" or export with --format hf-llama", arch.pos.name()),
        ),
        (arch.bias, "bias (false) has no GPT-2 form, because every GPT-2 projection has a bias; set bias to true".into()),
        (
            arch.tie_embeddings,
            "tie_embeddings (false) has no GPT-2 form, because GPT-2 ties its output head to the token embedding; set tie_embeddings to true".into(),
        ),
    ];
    if let Some((_, message)) = checks.into_iter().find(|(ok, _)| !ok) {
        return Err(unsupported(format, message));
    }
    require_uniform_layers(arch, format)?;

    let layer = arch.layer(0);
    if layer.n_kv_heads != layer.n_heads {
        return Err(unsupported(
            format,
            format!(
                "n_kv_heads ({}) differs from n_heads ({}), but GPT-2 has no grouped-query attention; set n_kv_heads to n_heads or export with --format hf-llama",
                layer.n_kv_heads, layer.n_heads
            ),
        ));
    }
    if layer.q_dim() != arch.d_model {
        return Err(unsupported(
            format,
            format!(
                "head_dim ({}) × n_heads ({}) is not d_model ({}), but GPT-2 derives head_dim as d_model / n_heads; drop head_dim or export with --format hf-llama",
                layer.head_dim, layer.n_heads, arch.d_model
            ),
        ));
    }

    Ok(json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": arch.vocab_size,
        "n_positions": arch.max_seq_len,
        "n_embd": arch.d_model,
        "n_layer": arch.n_layers,
        "n_head": layer.n_heads,
        "n_inner": layer.d_ff,
        "activation_function": "gelu_new",
        // GPT2Config defaults both to 50256, GPT-2's last token id, which a smaller vocabulary
        // lacks; the last id of this vocabulary takes that role.
        "bos_token_id": arch.vocab_size - 1,
        "eos_token_id": arch.vocab_size - 1,
        "layer_norm_epsilon": GPT2_LAYER_NORM_EPS,
        "resid_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "attn_pdrop": 0.1,
        "initializer_range": 0.02,
        "tie_word_embeddings": true,
        "use_cache": true,
        "torch_dtype": "float32",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{presets, LayerOverride};

    fn message(result: Result<Value, ExportError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn llama_fields() {
        let arch = presets::llama_100m();
        let config = hf_config(&arch, Format::HfLlama).unwrap();
        assert_eq!(config["model_type"], "llama");
        assert_eq!(config["hidden_size"], 768);
        assert_eq!(config["intermediate_size"], 2048);
        assert_eq!(config["num_hidden_layers"], 12);
        assert_eq!(config["num_attention_heads"], 12);
        assert_eq!(config["num_key_value_heads"], 4);
        assert_eq!(config["head_dim"], 64);
        assert_eq!(config["vocab_size"], 32000);
        assert_eq!(config["max_position_embeddings"], 2048);
        assert_eq!(config["hidden_act"], "silu");
        assert_eq!(config["tie_word_embeddings"], false);
        assert_eq!(config["attention_bias"], false);
        assert_eq!(config["mlp_bias"], false);
        assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    }

    #[test]
    fn gpt2_fields() {
        let config = hf_config(&presets::gpt2_small(), Format::HfGpt2).unwrap();
        assert_eq!(config["model_type"], "gpt2");
        assert_eq!(config["n_embd"], 768);
        assert_eq!(config["n_layer"], 12);
        assert_eq!(config["n_head"], 12);
        assert_eq!(config["n_inner"], 3072);
        assert_eq!(config["n_positions"], 1024);
        assert_eq!(config["vocab_size"], 50257);
        assert_eq!(config["activation_function"], "gelu_new");
    }

    #[test]
    fn llama_rejections_name_field() {
        let gelu = Architecture { ffn: Ffn::Gelu, ..presets::llama_tiny() };
        assert!(message(hf_config(&gelu, Format::HfLlama)).contains("ffn \"gelu\""));
        let relu = Architecture { ffn: Ffn::Relu, ..presets::llama_tiny() };
        assert!(message(hf_config(&relu, Format::HfLlama)).contains("ffn \"relu\""));
        let layernorm = Architecture { norm: Norm::Layernorm, ..presets::llama_tiny() };
        assert!(message(hf_config(&layernorm, Format::HfLlama)).contains("norm \"layernorm\""));
        let learned = Architecture { pos: Pos::Learned, ..presets::llama_tiny() };
        assert!(message(hf_config(&learned, Format::HfLlama)).contains("pos \"learned\""));
    }

    #[test]
    fn gpt2_rejections_name_field() {
        let base = presets::gpt2_small();
        let cases = [
            (Architecture { norm: Norm::Rmsnorm, ..base.clone() }, "norm \"rmsnorm\""),
            (Architecture { tie_embeddings: false, ..base.clone() }, "tie_embeddings"),
            (Architecture { bias: false, ..base.clone() }, "bias"),
            (Architecture { ffn: Ffn::Swiglu, ..base.clone() }, "ffn \"swiglu\""),
            (Architecture { pos: Pos::Rope, ..base.clone() }, "pos \"rope\""),
            (Architecture { n_kv_heads: Some(4), ..base.clone() }, "n_kv_heads (4)"),
            (Architecture { head_dim: Some(32), ..base.clone() }, "head_dim (32)"),
        ];
        for (arch, field) in cases {
            arch.validate().unwrap();
            let text = message(hf_config(&arch, Format::HfGpt2));
            assert!(text.contains(field), "expected `{field}` in: {text}");
        }
    }

    #[test]
    fn per_layer_shapes_rejected() {
        let mut arch = presets::llama_tiny();
        let mut layers = vec![LayerOverride::default(); arch.n_layers as usize];
        layers[2].d_ff = Some(512);
        arch.layers = Some(layers);
        arch.validate().unwrap();
        let text = message(hf_config(&arch, Format::HfLlama));
        assert!(text.contains("layers[2].d_ff (512)"), "{text}");
    }

    #[test]
    fn repeated_layer_values_accepted() {
        let mut arch = presets::llama_tiny();
        let layer = LayerOverride { n_heads: Some(arch.n_heads), n_kv_heads: arch.n_kv_heads, d_ff: Some(arch.d_ff) };
        arch.layers = Some(vec![layer; arch.n_layers as usize]);
        arch.validate().unwrap();
        assert!(hf_config(&arch, Format::HfLlama).is_ok());
    }

    #[test]
    fn config_written_to_dir() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("nested/model");
        let path = write_hf_config(&presets::llama_tiny(), Format::HfLlama, &target).unwrap();
        let value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(value["hidden_size"], 256);
    }

    #[test]
    fn natural_format_choice() {
        assert_eq!(Format::natural_for(&presets::gpt2_small()), Format::HfGpt2);
        assert_eq!(Format::natural_for(&presets::llama_tiny()), Format::HfLlama);
    }
}
