//! Whole decoder forward passes on the CPU: random weights for any validated architecture,
//! prefill and decode with a KV cache, and the timing harness that measures them.
//!
//! - [`weights`]: [`Weights`], drawn reproducibly from a seed.
//! - [`cache`]: [`KvCache`], preallocated keys and values.
//! - [`forward`]: [`CpuModel`], the pre-norm decoder built from the CPU kernels, with a
//!   reference mode that calls the `_ref` kernels for parity tests.
//! - [`mod@bench`]: [`bench_cpu`], median latency and peak memory of prefill or decode.

pub mod bench;
pub mod cache;
pub mod forward;
pub mod gpu;
pub mod weights;

pub use bench::{bench_cpu, ModelBenchResult};
pub use cache::KvCache;
pub use forward::{CpuModel, KernelMode};
pub use weights::{random_tokens, Weights};

use serde::{Deserialize, Serialize};

/// The phase of inference a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `batch` sequences of `seq` tokens from an empty KV cache.
    Prefill,
    /// One new token per sequence against a KV cache, so that `seq` positions are attended.
    Decode,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Prefill => "prefill",
            Mode::Decode => "decode",
        }
    }
}
