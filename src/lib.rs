//! AlphaNAS finds efficient decoder-only transformer architectures for a given piece of
//! hardware. A Monte Carlo Tree Search walks the decisions of a search space, an MLP-ensemble
//! surrogate scores batches of candidates in one GPU dispatch, and WGSL kernels measure real
//! latencies on the device (with a CPU fallback that computes the same results).
//!
//! Module map:
//! - [`arch`]: `Architecture`, validation, analytic metrics, feature encoding.
//! - [`space`]: search spaces (built-in, TOML, tabular), counting and sampling.
//! - [`device`]: backend choice (GPU through wgpu, or CPU), adapters, limits, timing.
//! - [`kernels`]: one module per op family, GPU dispatch and CPU twin side by side.
//! - [`model`]: whole decoder forward passes (prefill, decode with a KV cache).
//! - [`surrogate`]: the MLP ensemble.
//! - [`cost`]: hardware cost tables, latency prediction and calibration.
//! - [`search`]: MCTS, baselines, Pareto fronts, the search driver and its journal.
//! - [`eval`]: evaluators of a candidate's true metrics.
//! - [`export`]: Hugging Face `config.json` export.

pub mod arch;
pub mod cli;
pub mod cost;
pub mod device;
pub mod error;
pub mod eval;
pub mod export;
pub mod kernels;
pub mod model;
pub mod search;
pub mod space;
pub mod stats;
pub mod surrogate;

pub use arch::Architecture;
pub use error::{Error, Result};

/// Folder of the public measured data sets used by examples, benches and validation reports:
/// `ALPHANAS_DATA_DIR` when set, else `../shared/data` beside the crate. Returns `None` when the
/// folder does not exist, so callers can skip.
pub fn shared_data_dir() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("ALPHANAS_DATA_DIR").map(std::path::PathBuf::from),
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_dir())
}
