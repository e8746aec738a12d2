//! The surrogate: an ensemble of MLPs that predicts an architecture's metrics (latency,
//! perplexity, ...) from features, with an uncertainty from the spread over members.
//!
//! - [`Ensemble`] fits, refits (warm-started), predicts on the CPU, saves and loads.
//! - [`Scorer`] is what the search calls: one batch in, mean and std per target out.
//!   [`CpuScorer`] runs on the CPU, [`GpuScorer`] runs the whole ensemble in one compute
//!   dispatch (`shaders/surrogate_mlp.wgsl`).
//! - [`data`] reads tables (CSV or JSON lines) and encodes them into features.
//! - [`metrics`] scores predictions, and [`ols`] is the linear baseline.

pub mod data;
mod ensemble;
mod gpu;
pub mod metrics;
mod mlp;
pub mod ols;
mod scorer;
mod train;

#[cfg(test)]
mod tests;

pub use ensemble::{Ensemble, EnsembleConfig, Scaling, TargetTransform, FORMAT_VERSION};
pub use gpu::{open_gpu, DispatchTimes, GpuScorer, WeightPrecision};
pub use mlp::{Activation, Dense, Mlp};
pub use scorer::{CpuScorer, Prediction, Scorer};

/// Errors of the surrogate layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SurrogateError {
    /// A setting or an input value is invalid; the message names it and the fix.
    #[error("{0}")]
    Invalid(String),
    /// A table could not be parsed or has a bad cell.
    #[error("invalid table {0}")]
    Table(String),
    /// The data's columns or features differ from the ones the model was fitted on.
    #[error("the data does not match the model's features: {0}")]
    FeatureMismatch(String),
    /// A model file is unreadable, of another version, or inconsistent.
    #[error("invalid surrogate model {0}")]
    Model(String),
    /// No GPU adapter is available.
    #[error("{0}")]
    NoGpu(String),
    /// The GPU could not run the surrogate.
    #[error("surrogate GPU scoring failed: {0}")]
    Gpu(String),
}
