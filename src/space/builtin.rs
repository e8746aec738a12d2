//! The built-in spaces, their lookup by name or path, and the HW-GPT-Bench architecture
//! builder.
//!
//! Each built-in space is a TOML file under `spaces/`, embedded in the binary:
//! - `llama` (the default): Llama-style models with grouped-query attention, SwiGLU,
//!   RMSNorm, RoPE and an untied head, about 8M to 0.95B parameters.
//! - `hwgpt-s`: the small space of HW-GPT-Bench (Sukthanker et al., NeurIPS 2024 Datasets
//!   and Benchmarks), 1,903,784,282,946 architectures.
//! - `lts-gpt2`: the GPT-2 space of Lightweight Transformer Search (Javaheripi et al.,
//!   NeurIPS 2022). It differs from LTS in one way: LTS searches adaptive input embeddings
//!   (`div_val`), and this space has a plain tied embedding. As in LTS, each layer's
//!   attention is `d_model` wide whatever its head count.

use super::{spec, Space, SpaceError};
use crate::arch::{Architecture, Ffn, LayerOverride, Norm, Pos};
use std::path::Path;

/// Names of the built-in spaces; the first is the default.
pub const BUILTIN_NAMES: [&str; 3] = ["llama", "hwgpt-s", "lts-gpt2"];

/// Returns the TOML text of a built-in space.
pub fn builtin_text(name: &str) -> Option<&'static str> {
    match name {
        "llama" => Some(include_str!("../../spaces/llama.toml")),
        "hwgpt-s" => Some(include_str!("../../spaces/hwgpt-s.toml")),
        "lts-gpt2" => Some(include_str!("../../spaces/lts-gpt2.toml")),
        _ => None,
    }
}

impl Space {
    /// Parses space TOML. `default_name` names the space when the text has no `name` key,
    /// and `source` is the origin shown in descriptions (`built-in` or a path).
    pub fn from_toml_str(text: &str, default_name: &str, source: &str) -> Result<Space, SpaceError> {
        Space::from_spec(spec::parse(text, default_name)?, source)
    }

    /// Reads a space file. Errors name the file.
    pub fn from_file(path: &Path) -> Result<Space, SpaceError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpaceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("space");
        Space::from_toml_str(&text, stem, &path.display().to_string()).map_err(|e| match e {
            SpaceError::Invalid(message) => SpaceError::Invalid(format!("{}: {message}", path.display())),
            other => other,
        })
    }

    /// Builds a built-in space by name, or returns `None` for an unknown name.
    pub fn builtin(name: &str) -> Option<Space> {
        let text = builtin_text(name)?;
        let space = Space::from_toml_str(text, name, "built-in")
            .unwrap_or_else(|e| panic!("built-in space `{name}` is invalid: {e}"));
        Some(space)
    }

    /// Builds the built-in space `name_or_path` names, else reads the TOML file at that path.
    /// Returns [`SpaceError::Io`] for a missing file named like a path (a `.toml` extension or a
    /// directory separator), and [`SpaceError::Unknown`] for any other unknown name.
    pub fn resolve(name_or_path: &str) -> Result<Space, SpaceError> {
        if let Some(space) = Space::builtin(name_or_path) {
            return Ok(space);
        }
        let path = Path::new(name_or_path);
        if path.is_file() {
            return Space::from_file(path);
        }
        if path.is_dir() {
            return Err(SpaceError::Io {
                path: name_or_path.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a folder; give a space's TOML file or a built-in name"),
            });
        }
        if path.extension().is_some_and(|e| e == "toml") || name_or_path.contains(std::path::MAIN_SEPARATOR) {
            return Err(SpaceError::Io {
                path: name_or_path.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found; check the path"),
            });
        }
        Err(SpaceError::Unknown(name_or_path.to_string()))
    }
}

/// Builds the `hwgpt-s` architecture of one HW-GPT-Bench row: embedding dimension
/// `embed_dim`, `n_layer` layers, biases on or off, and one MLP ratio and one head count per
/// layer. The model is litgpt's GPT with 64-wide heads at every width, a gated three-matrix
/// MLP of hidden size `ratio × embed_dim`, RoPE, LayerNorm, an untied head, a 50254-token
/// vocabulary and 1024 positions. Values outside the space's choices are accepted when
/// the model is valid.
pub fn hwgpt_s_architecture(
    embed_dim: u64,
    n_layer: u64,
    bias: bool,
    mlp_ratios: &[u64],
    heads: &[u64],
) -> Result<Architecture, SpaceError> {
    for (what, len) in [("mlp_ratios", mlp_ratios.len()), ("heads", heads.len())] {
        if len as u64 != n_layer || len == 0 {
            return Err(SpaceError::Invalid(format!(
                "hwgpt-s architecture: {what} has {len} entries but n_layer is {n_layer}; give one value per layer"
            )));
        }
    }
    let layers: Vec<LayerOverride> = heads
        .iter()
        .zip(mlp_ratios)
        .map(|(&h, &r)| LayerOverride {
            n_heads: Some(h),
            n_kv_heads: None,
            d_ff: Some(r * embed_dim),
        })
        .collect();
    let arch = Architecture {
        vocab_size: 50254,
        max_seq_len: 1024,
        d_model: embed_dim,
        n_layers: n_layer,
        n_heads: heads[0],
        n_kv_heads: None,
        head_dim: Some(64),
        d_ff: mlp_ratios[0] * embed_dim,
        ffn: Ffn::Swiglu,
        norm: Norm::Layernorm,
        pos: Pos::Rope,
        bias,
        tie_embeddings: false,
        layers: Some(layers),
    };
    arch.validate()
        .map_err(|e| SpaceError::Invalid(format!("hwgpt-s architecture: {e}")))?;
    Ok(arch)
}
